import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eth, frame, icmp, ipv4, packet, payload, tcp, udp, vxlan, type IcmpOptions } from '../../src/packet/index.js';
import { hex } from './helpers.js';

// Reference frames written out byte by byte; their checksums were worked out
// independently of this library (and tcpdump -vv reports them correct).

const ETH = '020000000002 020000000001 0800';

test('TCP SYN with MSS option matches literal bytes', () => {
  const expected = hex(`${ETH}
    4500 002c 1234 4000 4006 5c85 c0a8010a 0a600001
    c738 0050 01020304 00000000 6002 faf0 0594 0000 020405b4`);
  const built = frame(
    eth(),
    ipv4({ src: '192.168.1.10', dst: '10.96.0.1', id: 0x1234, df: true }),
    tcp({
      sport: 51000,
      dport: 80,
      seq: 0x01020304,
      flags: 'S',
      window: 64240,
      options: hex('020405b4'),
    }),
  );
  assert.equal(built.toString('hex'), expected.toString('hex'));
});

test('UDP datagram matches literal bytes (hand-worked checksum)', () => {
  // Pseudo-header 0a00+0001+0a00+0002+0011+000a = 141e
  // UDP 9c40+0035+000a+0000+6869 = 104e8
  // 141e + 104e8 = 11906 -> fold 1907 -> checksum ~1907 = e6f8
  const expected = hex(`${ETH}
    4500 001e 0000 0000 4011 66cd 0a000001 0a000002
    9c40 0035 000a e6f8 6869`);
  const built = frame(eth(), ipv4(), udp({ sport: 40000, dport: 53 }), payload('hi'));
  assert.equal(built.toString('hex'), expected.toString('hex'));
});

test('ICMP echo request matches literal bytes', () => {
  const expected = hex(`${ETH}
    4500 0020 0000 0000 4001 66db 0a000001 0a000002
    08 00 06fa 1234 0001 70696e67`);
  const built = frame(eth(), ipv4(), icmp({ type: 8, id: 0x1234, seq: 1 }), payload('ping'));
  assert.equal(built.toString('hex'), expected.toString('hex'));
});

test('defaults: MACs, addresses, ttl, next-protocol fields', () => {
  const f = frame(eth(), ipv4(), tcp());
  assert.equal(f.length, 14 + 20 + 20);
  assert.equal(f.subarray(0, 12).toString('hex'), '020000000002020000000001');
  assert.equal(f.readUInt16BE(12), 0x0800);
  assert.equal(f[14 + 8], 64, 'ttl');
  assert.equal(f[14 + 9], 6, 'proto from tcp()');
  assert.equal(f[34 + 13], 0x02, 'default flags S');
  assert.equal(frame(eth(), ipv4(), udp())[14 + 9], 17);
  assert.equal(frame(eth(), ipv4(), icmp())[14 + 9], 1);
  assert.equal(frame(eth(), ipv4(), ipv4(), udp())[14 + 9], 4, 'IP-in-IP');
  assert.equal(frame(eth(), ipv4({ proto: 'udp' }), payload(8))[14 + 9], 17);
  assert.equal(frame(eth(), ipv4({ proto: 132 }), payload(8))[14 + 9], 132);
});

test('UDP dport defaults to 4789 before vxlan(), VNI and flags are written', () => {
  const f = frame(eth(), ipv4(), udp(), vxlan({ vni: 4096 }), eth(), ipv4(), tcp());
  const udpAt = 34;
  assert.equal(f.readUInt16BE(udpAt + 2), 4789);
  assert.equal(f.readUInt16BE(udpAt + 4), f.length - udpAt);
  assert.equal(f.subarray(42, 50).toString('hex'), '0800000000100000');
  assert.equal(f.length, 14 + 20 + 8 + 8 + 14 + 20 + 20);
  const custom = frame(
    eth(),
    ipv4(),
    udp({ dport: 8472 }),
    vxlan({ vni: 0xabcdef, flags: 0x0c }),
    eth(),
    ipv4(),
    tcp(),
  );
  assert.equal(custom.readUInt16BE(36), 8472);
  assert.equal(custom.subarray(42, 50).toString('hex'), '0c000000abcdef00');
});

test('IPv4 fields: tos, id, flags, fragment offset, options padding, overrides', () => {
  const f = packet(
    ipv4({ tos: 0xb8, id: 0xbeef, df: true, mf: true, fragOffset: 0x123, ttl: 3, options: Buffer.from([1]) }),
    udp(),
  );
  assert.equal(f[0], 0x46, 'ihl grows to 6 for one padded option word');
  assert.equal(f[1], 0xb8);
  assert.equal(f.readUInt16BE(2), 24 + 8);
  assert.equal(f.readUInt16BE(4), 0xbeef);
  assert.equal(f.readUInt16BE(6), 0x6000 | 0x123);
  assert.equal(f[8], 3);
  assert.deepEqual([...f.subarray(20, 24)], [1, 0, 0, 0]);
  const raw = packet(ipv4({ flags: 0b100, ihl: 7, totalLength: 999, checksum: 0x1234 }), udp());
  assert.equal(raw.readUInt16BE(6), 0x8000, 'reserved bit via raw flags');
  assert.equal(raw[0], 0x47);
  assert.equal(raw.readUInt16BE(2), 999);
  assert.equal(raw.readUInt16BE(10), 0x1234);
  assert.throws(() => ipv4({ options: Buffer.alloc(44) }), /exceed 40/);
  assert.throws(() => ipv4({ ttl: 256 }), /ttl 256/);
  assert.throws(() => ipv4({ fragOffset: 0x2000 }), /fragOffset/);
  assert.throws(() => ipv4({ src: '10.0.0' }), /invalid IPv4/);
});

test('TCP fields: flags strings, options, data offset, urgent', () => {
  const seg = (flags: string | number): number => packet(ipv4(), tcp({ flags }))[33];
  assert.equal(seg('S'), 0x02);
  assert.equal(seg('SA'), 0x12);
  assert.equal(seg('AS'), 0x12, 'letter order does not matter');
  assert.equal(seg('A'), 0x10);
  assert.equal(seg('FA'), 0x11);
  assert.equal(seg('R'), 0x04);
  assert.equal(seg('PA'), 0x18);
  assert.equal(seg('FSRPAUEC'), 0xff);
  assert.equal(seg(''), 0);
  assert.equal(seg(0x29), 0x29);
  assert.throws(() => tcp({ flags: 'SX' }), /unknown TCP flag "X"/);

  const p = packet(ipv4(), tcp({ seq: 0xffffffff, ack: 7, window: 512, urgent: 9, options: hex('020405b40103') }));
  assert.equal(p.readUInt32BE(24), 0xffffffff);
  assert.equal(p.readUInt32BE(28), 7);
  assert.equal(p[32] >> 4, 7, '20 + 8 bytes of padded options');
  assert.equal(p.readUInt16BE(34), 512);
  assert.equal(p.readUInt16BE(38), 9);
  assert.equal(p.subarray(40, 48).toString('hex'), '020405b401030000');
  assert.equal(packet(ipv4(), tcp({ dataOffset: 15 }))[32] >> 4, 15);
});

test('payload forms', () => {
  assert.equal(packet(payload('héllo')).toString('utf8'), 'héllo');
  assert.deepEqual([...packet(payload(4))], [0, 1, 2, 3]);
  assert.equal(packet(payload(300))[257], 1);
  const src = new Uint8Array([1, 2, 3]);
  const layer = payload(src);
  src[0] = 9;
  assert.deepEqual([...packet(layer)], [1, 2, 3], 'payload copies its input');
  assert.equal(packet(payload(''), payload('ab'), payload(Buffer.from('c'))).toString(), 'abc');
});

test('Ethernet padding and explicit type', () => {
  const f = frame(eth({ padTo: 60 }), ipv4(), udp(), payload('x'));
  assert.equal(f.length, 60);
  assert.equal(f.readUInt16BE(16), 29, 'IP total length excludes padding');
  assert.ok(f.subarray(43).every((b) => b === 0));
  assert.equal(frame(eth({ padTo: 60 }), ipv4(), udp(), payload(100)).length, 142);
  const arp = frame(eth({ dst: 'ff:ff:ff:ff:ff:ff', src: 'aa:bb:cc:dd:ee:01', type: 0x0806 }), payload(28));
  assert.equal(arp.subarray(0, 14).toString('hex'), 'ffffffffffffaabbccddee010806');
});

test('ICMP rest field: id/seq, mtu, raw', () => {
  const rest = (opts: IcmpOptions): string => packet(ipv4(), icmp(opts)).subarray(24, 28).toString('hex');
  assert.equal(rest({ id: 0xabcd, seq: 0x0102 }), 'abcd0102');
  assert.equal(rest({ type: 3, code: 4, mtu: 1400 }), '00000578');
  assert.equal(rest({ type: 12, rest: 0x14000000 }), '14000000');
  assert.equal(rest({ rest: Buffer.from([1, 2, 3, 4]) }), '01020304');
  assert.throws(() => icmp({ rest: Buffer.alloc(3) }), /4 bytes/);
});

test('ICMP error quotes the inner datagram, truncated as asked', () => {
  const inner = [ipv4({ src: '10.0.0.2', dst: '10.0.0.9' }), udp({ sport: 1000, dport: 2000 }), payload(100)];
  const full = packet(...inner);
  const quoteOf = (f: Buffer): Buffer => f.subarray(20 + 8);
  // Default: IP header + 8 bytes (RFC 792).
  const def = packet(ipv4(), icmp({ type: 3, code: 3, inner }));
  assert.deepEqual(quoteOf(def), full.subarray(0, 28));
  assert.equal(quoteOf(def).readUInt16BE(2), 128, 'quote keeps the original total length');
  assert.deepEqual(quoteOf(packet(ipv4(), icmp({ type: 11, inner, innerLength: 60 }))), full.subarray(0, 60));
  assert.deepEqual(quoteOf(packet(ipv4(), icmp({ type: 3, inner, innerLength: Infinity }))), full);
  assert.deepEqual(quoteOf(packet(ipv4(), icmp({ type: 3, inner: full, innerLength: 10 }))), full.subarray(0, 10));
  // Inner header with options: default quote grows with it.
  const withOpts = packet(ipv4({ options: Buffer.from([0x94, 4, 0, 0]) }), tcp());
  assert.equal(quoteOf(packet(ipv4(), icmp({ type: 3, inner: withOpts }))).length, 24 + 8);
});

test("checksum overrides: explicit values, 'bad', UDP zero", () => {
  const good = frame(eth(), ipv4(), tcp(), payload('x'));
  const ipCk = good.readUInt16BE(24);
  const tcpCk = good.readUInt16BE(50);
  const bad = frame(eth(), ipv4({ checksum: 'bad' }), tcp({ checksum: 'bad' }), payload('x'));
  assert.notEqual(bad.readUInt16BE(24), ipCk);
  assert.notEqual(bad.readUInt16BE(50), tcpCk);
  assert.deepEqual(bad.subarray(0, 24), good.subarray(0, 24), 'nothing else changes');
  assert.equal(frame(eth(), ipv4(), tcp({ checksum: 0xdead }), payload('x')).readUInt16BE(50), 0xdead);
  assert.equal(frame(eth(), ipv4(), udp({ checksum: 0 }), payload('x')).readUInt16BE(40), 0);
  const badUdp = frame(eth(), ipv4(), udp({ checksum: 'bad' }), payload('x')).readUInt16BE(40);
  assert.notEqual(badUdp, 0, "a bad UDP checksum is never the 'none' value");
});

test('UDP sends a computed zero checksum as 0xffff', () => {
  // Appending the 16-bit word equal to the checksum of the rest drives the
  // one's-complement sum to 0xffff, i.e. a computed checksum of 0.
  const c = frame(eth(), ipv4(), udp(), payload(Buffer.alloc(2))).readUInt16BE(40);
  const word = Buffer.from([c >> 8, c & 0xff]);
  assert.equal(frame(eth(), ipv4(), udp(), payload(word)).readUInt16BE(40), 0xffff);
});

test('errors name the layer when defaults cannot be inferred', () => {
  assert.throws(() => frame(eth(), payload(4)), /eth: cannot infer EtherType from next layer \(payload\)/);
  assert.throws(() => frame(eth()), /eth: cannot infer EtherType from next layer \(none\)/);
  assert.throws(() => frame(eth(), ipv4(), payload(4)), /ipv4: cannot infer protocol/);
  assert.throws(() => packet(tcp()), /tcp: checksum needs an enclosing IP layer/);
  assert.equal(packet(udp({ checksum: 0 }), payload(2)).length, 10, 'no IP needed when checksum is given');
  assert.throws(() => eth({ src: 'nope' }), /invalid MAC/);
  assert.throws(() => udp({ sport: 65536 }), /sport 65536/);
  assert.throws(() => vxlan({ vni: 1 << 24 }), /vni/);
  assert.throws(() => payload(-1), /bad length/);
});

test('layers are reusable across frames', () => {
  const layers = [eth(), ipv4({ src: '1.2.3.4' }), tcp({ flags: 'PA' }), payload('abc')];
  assert.deepEqual(frame(...layers), frame(...layers));
});
