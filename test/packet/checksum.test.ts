import { test } from 'node:test';
import assert from 'node:assert/strict';
import { finishChecksum, foldSum, internetChecksum, ipv4PseudoHeaderSum, onesSum } from '../../src/packet/index.js';

/**
 * Deliberately different algorithm from the library: sum even (high) and odd
 * (low) bytes separately, combine, then fold with BigInt.
 */
function referenceChecksum(bytes: Uint8Array): number {
  let hi = 0n;
  let lo = 0n;
  bytes.forEach((v, i) => {
    if (i % 2 === 0) hi += BigInt(v);
    else lo += BigInt(v);
  });
  let sum = hi * 256n + lo;
  while (sum > 0xffffn) sum = (sum & 0xffffn) + (sum >> 16n);
  return Number(~sum & 0xffffn);
}

test('RFC 1071 section 3 worked example', () => {
  // 0001 + f203 + f4f5 + f6f7 = 2ddf0 -> fold -> ddf2; checksum = ~ddf2 = 220d.
  const data = Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(onesSum(data), 0x2ddf0);
  assert.equal(foldSum(onesSum(data)), 0xddf2);
  assert.equal(internetChecksum(data), 0x220d);
});

test('known IPv4 header checksum', () => {
  // 192.168.0.1 -> 192.168.0.199, UDP, len 0x73, DF; checksum on the wire is b861.
  const hdr = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
  assert.equal(internetChecksum(hdr), 0xb861);
  hdr.writeUInt16BE(0xb861, 10);
  // A header with a correct checksum sums to 0xffff, i.e. checksums to 0.
  assert.equal(internetChecksum(hdr), 0);
});

test('odd length pads the last byte as a high byte', () => {
  assert.equal(internetChecksum(Buffer.from([0x12])), ~0x1200 & 0xffff);
  assert.equal(internetChecksum(Buffer.from([0x12, 0x34, 0x56])), ~(0x1234 + 0x5600) & 0xffff);
  assert.equal(internetChecksum(Buffer.alloc(0)), 0xffff);
});

test('sub-ranges, initial sums and split ranges', () => {
  const buf = Buffer.from([0xff, 0xff, 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0xee]);
  assert.equal(internetChecksum(buf, 2, 10), 0x220d);
  // Splitting at an even boundary gives the same result.
  assert.equal(finishChecksum(onesSum(buf, 2, 6) + onesSum(buf, 6, 10)), 0x220d);
  assert.equal(internetChecksum(buf, 4, 10, 0x0001), 0x220d);
  assert.throws(() => onesSum(buf, 0, 12), RangeError);
  assert.throws(() => onesSum(buf, 5, 4), RangeError);
});

test('matches an independent reference on random buffers', () => {
  let seed = 12345;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed >>> 16;
  };
  for (let n = 0; n < 300; n++) {
    const len = rand() % 1600;
    const buf = Buffer.alloc(len);
    for (let i = 0; i < len; i++) buf[i] = rand() & 0xff;
    assert.equal(internetChecksum(buf), referenceChecksum(buf), `length ${len}`);
  }
  // Worst case for carries: a maximal IP packet of 0xff bytes.
  const ones = Buffer.alloc(65535, 0xff);
  assert.equal(internetChecksum(ones), referenceChecksum(ones));
});

test('IPv4 pseudo-header sum, hand-worked', () => {
  // 10.0.0.1 -> 10.0.0.2, UDP, length 10:
  // 0a00 + 0001 + 0a00 + 0002 + 0011 + 000a = 141e
  assert.equal(foldSum(ipv4PseudoHeaderSum(0x0a000001, 0x0a000002, 17, 10)), 0x141e);
  // High addresses produce carries that must fold.
  const sum = ipv4PseudoHeaderSum(0xffffffff, 0xffffffff, 6, 0xffff);
  assert.equal(foldSum(sum), foldSum(0xffff * 4 + 6 + 0xffff));
});
