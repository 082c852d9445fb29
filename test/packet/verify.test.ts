import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ChecksumError,
  checkChecksums,
  eth,
  frame,
  icmp,
  internetChecksum,
  ipv4,
  packet,
  payload,
  tcp,
  udp,
  verifyChecksums,
  vxlan,
  type ChecksumProblem,
} from '../../src/packet/index.js';

const paths = (problems: readonly ChecksumProblem[]): string[] => problems.map((p) => p.path);

test('clean frames have no problems', () => {
  for (const f of [
    frame(eth(), ipv4(), tcp(), payload('x')),
    frame(eth(), ipv4(), udp(), payload(3)),
    frame(eth(), ipv4(), udp({ checksum: 0 }), payload(3)),
    frame(eth(), ipv4(), icmp(), payload(5)),
    frame(eth({ type: 0x86dd }), payload(40)),
  ]) {
    assert.deepEqual(checkChecksums(f), []);
    verifyChecksums(f);
  }
});

test("a 'bad' checksum is detected at each layer, with expected and actual", () => {
  const cases: [Buffer, string, number][] = [
    [frame(eth(), ipv4({ checksum: 'bad' }), tcp()), 'ipv4', 24],
    [frame(eth(), ipv4(), tcp({ checksum: 'bad' }), payload('x')), 'tcp', 50],
    [frame(eth(), ipv4(), udp({ checksum: 'bad' }), payload('x')), 'udp', 40],
    [frame(eth(), ipv4(), icmp({ checksum: 'bad' }), payload('x')), 'icmp', 36],
  ];
  for (const [f, layer, at] of cases) {
    const problems = checkChecksums(f);
    assert.deepEqual(paths(problems), [layer]);
    const [p] = problems;
    assert.equal(p.layer, layer);
    assert.equal(p.actual, f.readUInt16BE(at));
    // Writing the expected value back must make the frame verify.
    assert.ok(p.expected !== undefined);
    const fixed = Buffer.from(f);
    fixed.writeUInt16BE(p.expected, at);
    assert.deepEqual(checkChecksums(fixed), [], layer);
  }
});

test('flipping a covered byte is detected by exactly the covering checksum', () => {
  const base = frame(eth(), ipv4(), tcp(), payload('hello'));
  const ttl = Buffer.from(base);
  ttl[22] ^= 1; // TTL is in the IP header but not the TCP pseudo-header.
  assert.deepEqual(paths(checkChecksums(ttl)), ['ipv4']);
  const data = Buffer.from(base);
  data[base.length - 1] ^= 0x80;
  assert.deepEqual(paths(checkChecksums(data)), ['tcp']);
  const addr = Buffer.from(base);
  addr[33] ^= 1; // Destination address: in both the IP header and the pseudo-header.
  assert.deepEqual(paths(checkChecksums(addr)), ['ipv4', 'tcp']);

  const u = frame(eth(), ipv4(), udp(), payload('hello'));
  u[u.length - 1] ^= 1;
  assert.deepEqual(paths(checkChecksums(u)), ['udp']);
  const ic = frame(eth(), ipv4(), icmp(), payload('hello'));
  ic[ic.length - 1] ^= 1;
  assert.deepEqual(paths(checkChecksums(ic)), ['icmp']);
});

test('verifyChecksums throws a readable error', () => {
  const f = frame(eth(), ipv4({ checksum: 0x1234 }), udp({ checksum: 0xbeef }), payload('x'));
  const expectedIp = internetChecksum(Buffer.concat([f.subarray(14, 24), f.subarray(26, 34)]));
  assert.throws(
    () => verifyChecksums(f),
    (err: unknown) => {
      assert.ok(err instanceof ChecksumError);
      assert.equal(err.problems.length, 2);
      assert.match(
        err.message,
        new RegExp(`ipv4 checksum is 0x1234, expected 0x${expectedIp.toString(16).padStart(4, '0')}`),
      );
      assert.match(err.message, /udp checksum is 0xbeef, expected 0x[0-9a-f]{4} \(header at byte 34\)/);
      return true;
    },
  );
});

test('UDP: zero means none; 0xffff stands for a computed zero', () => {
  assert.deepEqual(checkChecksums(frame(eth(), ipv4(), udp({ checksum: 0 }), payload('anything'))), []);
  const c = frame(eth(), ipv4(), udp(), payload(Buffer.alloc(2))).readUInt16BE(40);
  const zeroSum = frame(eth(), ipv4(), udp(), payload(Buffer.from([c >> 8, c & 0xff])));
  assert.equal(zeroSum.readUInt16BE(40), 0xffff);
  assert.deepEqual(checkChecksums(zeroSum), []);
});

test("TCP: 0x0000 and 0xffff are the same one's-complement value", () => {
  const c = frame(eth(), ipv4(), tcp(), payload(Buffer.alloc(2))).readUInt16BE(50);
  const word = payload(Buffer.from([c >> 8, c & 0xff]));
  const computed = frame(eth(), ipv4(), tcp(), word);
  assert.equal(computed.readUInt16BE(50), 0);
  assert.deepEqual(checkChecksums(computed), []);
  assert.deepEqual(checkChecksums(frame(eth(), ipv4(), tcp({ checksum: 0xffff }), word)), []);
});

test('VXLAN inner frames are verified recursively', () => {
  const build = (inner: Parameters<typeof tcp>[0], innerIp: Parameters<typeof ipv4>[0] = {}): Buffer =>
    frame(eth(), ipv4(), udp({ checksum: 0 }), vxlan({ vni: 9 }), eth(), ipv4(innerIp), tcp(inner), payload('in'));
  assert.deepEqual(checkChecksums(build({})), []);
  assert.deepEqual(paths(checkChecksums(build({ checksum: 'bad' }))), ['vxlan.inner.tcp']);
  assert.deepEqual(paths(checkChecksums(build({}, { checksum: 'bad' }))), ['vxlan.inner.ipv4']);
  // With an outer UDP checksum, corrupting inner bytes afterwards trips both levels.
  const f = frame(eth(), ipv4(), udp(), vxlan(), eth(), ipv4(), udp(), payload('in'));
  f[f.length - 1] ^= 1;
  assert.deepEqual(paths(checkChecksums(f)), ['udp', 'vxlan.inner.udp']);
});

test('ICMP error quotes: only the inner IP header is checked', () => {
  const inner = [ipv4({ src: '10.0.0.2' }), tcp({ checksum: 'bad' }), payload(500)];
  // The quoted TCP header is cut and even wrong; that is not reported.
  const ok = frame(eth(), ipv4(), icmp({ type: 3, code: 4, mtu: 1400, inner }));
  assert.deepEqual(checkChecksums(ok), []);
  const all = frame(eth(), ipv4(), icmp({ type: 3, inner, innerLength: Infinity }));
  assert.deepEqual(checkChecksums(all), []);
  const badInner = frame(eth(), ipv4(), icmp({ type: 11, inner: [ipv4({ checksum: 'bad' }), udp()] }));
  const problems = checkChecksums(badInner);
  assert.deepEqual(paths(problems), ['icmp.inner.ipv4']);
  assert.equal(problems[0].offset, 42);
  const badOuter = frame(eth(), ipv4(), icmp({ type: 11, checksum: 'bad', inner: [ipv4(), udp()] }));
  assert.deepEqual(paths(checkChecksums(badOuter)), ['icmp']);
});

test('fragments skip L4 checksums', () => {
  // The L4 checksum of a fragment covers the whole datagram; a deliberately
  // wrong one on a first fragment must not be reported.
  const first = frame(eth(), ipv4({ mf: true }), udp({ checksum: 'bad', length: 1000 }), payload(32));
  assert.deepEqual(checkChecksums(first), []);
  const later = frame(eth(), ipv4({ fragOffset: 4, proto: 'tcp' }), payload(32));
  assert.deepEqual(checkChecksums(later), []);
  const badIp = frame(eth(), ipv4({ fragOffset: 4, proto: 'tcp', checksum: 'bad' }), payload(32));
  assert.deepEqual(paths(checkChecksums(badIp)), ['ipv4']);
});

test('truncated or inconsistent lengths are reported rather than ignored', () => {
  const f = frame(eth(), ipv4(), tcp(), payload(20));
  const cut = checkChecksums(f.subarray(0, f.length - 5));
  assert.equal(cut.length, 1);
  assert.equal(cut[0].layer, 'ipv4');
  assert.match(cut[0].message, /total length 60 exceeds the 55 bytes present/);
  const udpLen = checkChecksums(frame(eth(), ipv4(), udp({ length: 200 }), payload(4)));
  assert.deepEqual(paths(udpLen), ['udp']);
  assert.match(udpLen[0].message, /length field 200/);
  const tcpOff = checkChecksums(frame(eth(), ipv4(), tcp({ dataOffset: 15 })));
  assert.deepEqual(paths(tcpOff), ['tcp']);
  assert.match(tcpOff[0].message, /truncated/);
});

test("from: 'ip' checks a packet without Ethernet", () => {
  assert.deepEqual(checkChecksums(packet(ipv4(), tcp()), { from: 'ip' }), []);
  assert.deepEqual(paths(checkChecksums(packet(ipv4(), tcp({ checksum: 'bad' })), { from: 'ip' })), ['tcp']);
});
