import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesToMac, ipv4ToU32, macToBytes, u32ToIpv4 } from '../../src/packet/index.js';

test('ipv4ToU32 / u32ToIpv4 round-trip known values', () => {
  assert.equal(ipv4ToU32('0.0.0.0'), 0);
  assert.equal(ipv4ToU32('10.0.0.1'), 0x0a000001);
  assert.equal(ipv4ToU32('192.168.1.200'), 0xc0a801c8);
  assert.equal(ipv4ToU32('255.255.255.255'), 0xffffffff);
  assert.equal(u32ToIpv4(0xc0a801c8), '192.168.1.200');
  assert.equal(u32ToIpv4(0xffffffff), '255.255.255.255');
  for (const a of ['1.2.3.4', '10.96.0.10', '172.16.254.1', '0.0.0.0']) {
    assert.equal(u32ToIpv4(ipv4ToU32(a)), a);
  }
});

test('ipv4ToU32 rejects malformed addresses', () => {
  for (const bad of [
    '',
    '1.2.3',
    '1.2.3.4.',
    '.1.2.3',
    '1.2.3.4.5',
    '256.0.0.1',
    '1..2.3',
    '1.2.3.a',
    '1.2.3.1000',
    ' 1.2.3.4',
  ]) {
    assert.throws(() => ipv4ToU32(bad), /invalid IPv4 address/, bad);
  }
  assert.throws(() => u32ToIpv4(-1));
  assert.throws(() => u32ToIpv4(2 ** 32));
});

test('MAC strings <-> bytes', () => {
  assert.deepEqual([...macToBytes('aa:bb:cc:dd:ee:ff')], [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
  assert.deepEqual([...macToBytes('02-00-5E-10-00-01')], [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
  assert.equal(bytesToMac(Buffer.from([0, 1, 0xab, 0xcd, 0xef, 0x10])), '00:01:ab:cd:ef:10');
  assert.equal(bytesToMac(Buffer.from([9, 9, 1, 2, 3, 4, 5, 6]), 2), '01:02:03:04:05:06');
  assert.equal(bytesToMac(macToBytes('AA:BB:CC:00:11:22')), 'aa:bb:cc:00:11:22');
  for (const bad of [
    'aa:bb:cc:dd:ee',
    'aa:bb:cc:dd:ee:fg',
    'aa:bb-cc:dd:ee:ff',
    'aabbccddeeff',
    'aa:bb:cc:dd:ee:ff:00',
  ]) {
    assert.throws(() => macToBytes(bad), /invalid MAC address/, bad);
  }
  assert.throws(() => bytesToMac(Buffer.alloc(5)), RangeError);
});
