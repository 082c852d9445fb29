import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  eth,
  frame,
  icmp,
  ipv4,
  packet,
  parseFrame,
  parsePacket,
  payload,
  tcp,
  udp,
  vxlan,
  verifyChecksums,
  type Layer,
  type ParsedFrame,
} from '../../src/packet/index.js';
import { hex } from './helpers.js';

/** Build, parse, and insist the result also verifies: every round-trip doubles as a checksum test. */
function roundTrip(...layers: Layer[]): ParsedFrame {
  const buf = frame(...layers);
  verifyChecksums(buf);
  return parseFrame(buf);
}

test('parses a literal frame written out by hand', () => {
  const p = parseFrame(
    hex(`020000000002 020000000001 0800
      4500 002c 1234 4000 4006 5c85 c0a8010a 0a600001
      c738 0050 01020304 00000000 6002 faf0 0594 0000 020405b4`),
  );
  assert.deepEqual(p.eth, { offset: 0, dst: '02:00:00:00:00:02', src: '02:00:00:00:00:01', type: 0x0800 });
  assert.equal(p.ipv4?.src, '192.168.1.10');
  assert.equal(p.ipv4?.dst, '10.96.0.1');
  assert.equal(p.ipv4?.id, 0x1234);
  assert.equal(p.ipv4?.df, true);
  assert.equal(p.ipv4?.checksum, 0x5c85);
  assert.equal(p.tcp?.sport, 51000);
  assert.equal(p.tcp?.seq, 0x01020304);
  assert.equal(p.tcp?.flags, 'S');
  assert.equal(p.tcp?.window, 64240);
  assert.equal(p.tcp?.checksum, 0x0594);
  assert.equal(p.tcp?.options.toString('hex'), '020405b4');
  assert.equal(p.payload.length, 0);
});

test('eth / ipv4 / tcp / payload round-trip', () => {
  const p = roundTrip(
    eth({ src: 'aa:bb:cc:dd:ee:01', dst: 'aa:bb:cc:dd:ee:02' }),
    ipv4({ src: '10.244.1.5', dst: '10.96.0.10', ttl: 63, id: 4242, tos: 0x10, df: true }),
    tcp({
      sport: 33000,
      dport: 8080,
      seq: 1000,
      ack: 2000,
      flags: 'PA',
      window: 501,
      options: hex('0101080a0000000100000002'),
    }),
    payload('GET / HTTP/1.1\r\n\r\n'),
  );
  assert.deepEqual(p.eth, { offset: 0, src: 'aa:bb:cc:dd:ee:01', dst: 'aa:bb:cc:dd:ee:02', type: 0x0800 });
  const ip = p.ipv4;
  assert.ok(ip);
  assert.equal(ip.offset, 14);
  assert.equal(ip.version, 4);
  assert.equal(ip.ihl, 5);
  assert.equal(ip.tos, 0x10);
  assert.equal(ip.totalLength, 20 + 32 + 18);
  assert.equal(ip.id, 4242);
  assert.equal(ip.flags, 2);
  assert.equal(ip.df, true);
  assert.equal(ip.mf, false);
  assert.equal(ip.fragOffset, 0);
  assert.equal(ip.ttl, 63);
  assert.equal(ip.proto, 6);
  assert.equal(ip.src, '10.244.1.5');
  assert.equal(ip.dst, '10.96.0.10');
  assert.equal(ip.options.length, 0);
  assert.equal(ip.truncated, false);
  const t = p.tcp;
  assert.ok(t);
  assert.equal(t.offset, 34);
  assert.equal(t.sport, 33000);
  assert.equal(t.dport, 8080);
  assert.equal(t.seq, 1000);
  assert.equal(t.ack, 2000);
  assert.equal(t.flags, 'PA');
  assert.equal(t.flagBits, 0x18);
  assert.equal(t.dataOffset, 8);
  assert.equal(t.window, 501);
  assert.equal(t.options.toString('hex'), '0101080a0000000100000002');
  assert.equal(t.truncated, false);
  assert.equal(p.payload.toString(), 'GET / HTTP/1.1\r\n\r\n');
  assert.equal(p.udp, undefined);
  assert.equal(p.icmp, undefined);
  assert.equal(p.trailer.length, 0);
});

test('TCP flags come back in canonical order', () => {
  for (const [given, parsed] of [
    ['S', 'S'],
    ['AS', 'SA'],
    ['A', 'A'],
    ['AF', 'FA'],
    ['R', 'R'],
    ['RA', 'RA'],
    ['AP', 'PA'],
    ['CE', 'EC'],
    ['', ''],
  ]) {
    assert.equal(roundTrip(eth(), ipv4(), tcp({ flags: given })).tcp?.flags, parsed, given);
  }
  assert.equal(roundTrip(eth(), ipv4(), tcp({ flags: 0x112 })).tcp?.flagBits, 0x112, 'NS bit');
});

test('eth / ipv4 / udp / payload round-trip', () => {
  const p = roundTrip(eth(), ipv4({ src: '10.0.0.5', dst: '10.0.0.53' }), udp({ sport: 5353, dport: 53 }), payload(40));
  assert.deepEqual(
    { ...p.udp, checksum: 0 },
    { offset: 34, sport: 5353, dport: 53, length: 48, checksum: 0, truncated: false },
  );
  assert.notEqual(p.udp?.checksum, 0);
  assert.equal(p.ipv4?.proto, 17);
  assert.equal(p.payload.length, 40);
  assert.equal(p.payload[39], 39);
  const none = roundTrip(eth(), ipv4(), udp({ checksum: 0 }), payload('x'));
  assert.equal(none.udp?.checksum, 0);
});

test('ICMP echo request and reply round-trip', () => {
  const req = roundTrip(eth(), ipv4(), icmp({ id: 77, seq: 3 }), payload('abcdefgh'));
  assert.equal(req.icmp?.type, 8);
  assert.equal(req.icmp?.code, 0);
  assert.equal(req.icmp?.id, 77);
  assert.equal(req.icmp?.seq, 3);
  assert.equal(req.icmp?.rest, (77 << 16) | 3);
  assert.equal(req.icmp?.inner, undefined);
  assert.equal(req.icmp?.mtu, undefined);
  assert.equal(req.payload.toString(), 'abcdefgh');
  const rep = roundTrip(eth(), ipv4({ src: '10.0.0.2', dst: '10.0.0.1' }), icmp({ type: 0, id: 77, seq: 3 }));
  assert.equal(rep.icmp?.type, 0);
  assert.equal(rep.payload.length, 0);
});

test('ICMP frag-needed quoting a TCP segment: inner parsed, L4 truncated', () => {
  const p = roundTrip(
    eth(),
    ipv4({ src: '10.0.0.254', dst: '10.0.0.2' }),
    icmp({
      type: 3,
      code: 4,
      mtu: 1400,
      inner: [
        ipv4({ src: '10.0.0.2', dst: '10.96.0.1', df: true, id: 9 }),
        tcp({ sport: 40001, dport: 443, seq: 123456, flags: 'PA' }),
        payload(1460),
      ],
    }),
  );
  const ic = p.icmp;
  assert.ok(ic);
  assert.equal(ic.type, 3);
  assert.equal(ic.code, 4);
  assert.equal(ic.mtu, 1400);
  assert.equal(ic.rest, 1400);
  assert.equal(p.payload.length, 28, 'payload is the quote');
  const inner = ic.inner;
  assert.ok(inner);
  assert.equal(inner.ipv4?.offset, 42);
  assert.equal(inner.ipv4?.src, '10.0.0.2');
  assert.equal(inner.ipv4?.dst, '10.96.0.1');
  assert.equal(inner.ipv4?.totalLength, 20 + 20 + 1460);
  assert.equal(inner.ipv4?.truncated, true);
  assert.equal(inner.ipv4?.id, 9);
  assert.equal(inner.tcp?.sport, 40001);
  assert.equal(inner.tcp?.dport, 443);
  assert.equal(inner.tcp?.seq, 123456);
  assert.equal(inner.tcp?.truncated, true);
  assert.equal(inner.tcp?.flags, '', 'flags lie beyond the 8 quoted bytes');
});

test('ICMP errors with a longer quote, and quoting UDP and ICMP', () => {
  const long = roundTrip(
    eth(),
    ipv4(),
    icmp({ type: 11, inner: [ipv4({ ttl: 1 }), tcp({ flags: 'S', window: 1234 }), payload(100)], innerLength: 60 }),
  );
  assert.equal(long.icmp?.inner?.tcp?.truncated, false);
  assert.equal(long.icmp?.inner?.tcp?.flags, 'S');
  assert.equal(long.icmp?.inner?.tcp?.window, 1234);
  assert.equal(long.icmp?.inner?.payload.length, 20);
  assert.equal(long.icmp?.inner?.ipv4?.ttl, 1);

  const u = roundTrip(
    eth(),
    ipv4(),
    icmp({ type: 3, code: 3, inner: [ipv4(), udp({ sport: 1, dport: 2 }), payload(50)] }),
  );
  assert.deepEqual(
    { ...u.icmp?.inner?.udp, checksum: 0 },
    { offset: 62, sport: 1, dport: 2, length: 58, checksum: 0, truncated: true },
  );

  const e = roundTrip(eth(), ipv4(), icmp({ type: 3, code: 1, inner: [ipv4(), icmp({ id: 5, seq: 6 }), payload(56)] }));
  assert.equal(e.icmp?.code, 1);
  assert.equal(e.icmp?.mtu, undefined);
  assert.equal(e.icmp?.inner?.icmp?.type, 8);
  assert.equal(e.icmp?.inner?.icmp?.id, 5);
  assert.equal(e.icmp?.inner?.icmp?.seq, 6);

  // A quote too short for an IP header leaves inner undefined.
  const stub = roundTrip(eth(), ipv4(), icmp({ type: 3, inner: [ipv4(), udp()], innerLength: 12 }));
  assert.equal(stub.icmp?.inner, undefined);
  assert.equal(stub.payload.length, 12);
});

test('VXLAN inner frame is parsed recursively', () => {
  const p = roundTrip(
    eth(),
    ipv4({ src: '192.168.0.1', dst: '192.168.0.2' }),
    udp({ sport: 51234 }),
    vxlan({ vni: 4096 }),
    eth({ src: '0a:58:0a:f4:01:05', dst: '0a:58:0a:f4:02:07' }),
    ipv4({ src: '10.244.1.5', dst: '10.244.2.7' }),
    tcp({ sport: 12345, dport: 80, flags: 'SA' }),
    payload('inner'),
  );
  assert.equal(p.udp?.dport, 4789);
  assert.equal(p.vxlan?.offset, 42);
  assert.equal(p.vxlan?.flags, 0x08);
  assert.equal(p.vxlan?.vni, 4096);
  assert.equal(p.tcp, undefined);
  const inner = p.vxlan?.inner;
  assert.ok(inner);
  assert.equal(inner.eth.offset, 50);
  assert.equal(inner.eth.src, '0a:58:0a:f4:01:05');
  assert.equal(inner.ipv4?.src, '10.244.1.5');
  assert.equal(inner.ipv4?.dst, '10.244.2.7');
  assert.equal(inner.tcp?.flags, 'SA');
  assert.equal(inner.tcp?.dport, 80);
  assert.equal(inner.payload.toString(), 'inner');
  assert.equal(p.payload.length, 14 + 20 + 20 + 5, 'outer payload is the inner frame');

  for (const proto of [udp({ dport: 53 }), icmp({ id: 1 })]) {
    const q = roundTrip(eth(), ipv4(), udp({ checksum: 0 }), vxlan({ vni: 1 }), eth(), ipv4(), proto, payload(3));
    assert.ok(q.vxlan?.inner.udp ?? q.vxlan?.inner.icmp);
  }
});

test('VXLAN port is configurable', () => {
  const f = frame(eth(), ipv4(), udp({ dport: 8472 }), vxlan({ vni: 7 }), eth(), ipv4(), udp(), payload(1));
  assert.equal(parseFrame(f).vxlan, undefined);
  assert.equal(parseFrame(f, { vxlanPorts: [8472] }).vxlan?.vni, 7);
  const std = frame(eth(), ipv4(), udp(), vxlan(), eth(), ipv4(), udp());
  assert.equal(parseFrame(std, { vxlanPorts: [] }).vxlan, undefined);
  assert.equal(parseFrame(std, { vxlanPorts: [] }).payload.length, 8 + 14 + 20 + 8);
});

test('IPv4 options round-trip', () => {
  const ra = roundTrip(eth(), ipv4({ options: Buffer.from([0x94, 0x04, 0x00, 0x00]) }), udp(), payload('x'));
  assert.equal(ra.ipv4?.ihl, 6);
  assert.equal(ra.ipv4?.options.toString('hex'), '94040000');
  assert.equal(ra.udp?.offset, 14 + 24);
  assert.equal(ra.payload.toString(), 'x');
  // Record route, 39 bytes, padded to 40: the maximum header.
  const rr = Buffer.alloc(39);
  rr[0] = 7;
  rr[1] = 39;
  rr[2] = 4;
  const big = roundTrip(eth(), ipv4({ options: rr }), tcp());
  assert.equal(big.ipv4?.ihl, 15);
  assert.equal(big.ipv4?.options.length, 40);
  assert.equal(big.tcp?.offset, 14 + 60);
});

test('fragments: first fragment has L4, later fragments do not', () => {
  // Fragment a 8 + 100 byte UDP datagram at 48 bytes of IP payload.
  const whole = packet(ipv4({ id: 77 }), udp({ sport: 9, dport: 10 }), payload(100));
  const l4 = whole.subarray(20);
  const first = frame(eth(), ipv4({ id: 77, mf: true, proto: 'udp' }), payload(l4.subarray(0, 48)));
  const middle = frame(eth(), ipv4({ id: 77, mf: true, fragOffset: 6, proto: 'udp' }), payload(l4.subarray(48, 96)));
  const last = frame(eth(), ipv4({ id: 77, fragOffset: 12, proto: 'udp' }), payload(l4.subarray(96)));
  for (const f of [first, middle, last]) verifyChecksums(f);

  const p1 = parseFrame(first);
  assert.equal(p1.ipv4?.mf, true);
  assert.equal(p1.ipv4?.flags, 1);
  assert.equal(p1.udp?.sport, 9);
  assert.equal(p1.udp?.length, 108);
  assert.equal(p1.udp?.truncated, true);
  assert.equal(p1.payload.length, 40);

  const p2 = parseFrame(middle);
  assert.equal(p2.ipv4?.fragOffset, 6);
  assert.equal(p2.udp, undefined, 'bytes at offset 48 of the datagram are not a UDP header');
  assert.deepEqual(p2.payload, l4.subarray(48, 96));

  const p3 = parseFrame(last);
  assert.equal(p3.ipv4?.fragOffset, 12);
  assert.equal(p3.ipv4?.mf, false);
  assert.equal(p3.udp, undefined);
  assert.equal(p3.payload.length, 12);

  // A non-first TCP fragment whose bytes happen to look like a header is still not parsed.
  const fake = frame(eth(), ipv4({ fragOffset: 100, proto: 'tcp' }), tcp(), payload(4));
  assert.equal(parseFrame(fake).tcp, undefined);
  assert.equal(parseFrame(fake).payload.length, 24);
});

test('Ethernet padding becomes the trailer, not payload', () => {
  const p = roundTrip(eth({ padTo: 60 }), ipv4(), udp(), payload('x'));
  assert.equal(p.payload.toString(), 'x');
  assert.equal(p.trailer.length, 60 - 14 - 29);
  const t = roundTrip(eth({ padTo: 60 }), ipv4(), tcp({ flags: 'R' }));
  assert.equal(t.payload.length, 0);
  assert.equal(t.trailer.length, 6);
});

test('non-IP, truncated and odd inputs', () => {
  const arp = parseFrame(frame(eth({ type: 0x0806 }), payload(28)));
  assert.equal(arp.eth.type, 0x0806);
  assert.equal(arp.ipv4, undefined);
  assert.equal(arp.payload.length, 28);

  assert.throws(() => parseFrame(Buffer.alloc(13)), /too short for Ethernet: 13/);
  const bare = parseFrame(frame(eth({ type: 0x0800 })));
  assert.equal(bare.ipv4, undefined);

  // Cut mid-header: no IPv4 layer, bytes surface as payload.
  const f = frame(eth(), ipv4(), tcp());
  const cut = parseFrame(f.subarray(0, 30));
  assert.equal(cut.ipv4, undefined);
  assert.equal(cut.payload.length, 16);

  // Cut inside TCP: IPv4 marked truncated, TCP header partially read.
  const short = parseFrame(f.subarray(0, 14 + 20 + 10));
  assert.equal(short.ipv4?.truncated, true);
  assert.equal(short.tcp?.truncated, true);
  assert.equal(short.tcp?.dport, 80);

  // Not version 4.
  const v6ish = Buffer.from(f);
  v6ish[14] = 0x65;
  assert.equal(parseFrame(v6ish).ipv4, undefined);

  // Accepts a plain Uint8Array view with an offset.
  const backing = new Uint8Array(f.length + 3);
  backing.set(f, 3);
  assert.equal(parseFrame(backing.subarray(3)).tcp?.dport, 80);
});

test('parsePacket starts at the IP header', () => {
  const p = parsePacket(
    packet(ipv4({ src: '1.1.1.1' }), udp({ dport: 4789 }), vxlan({ vni: 3 }), eth(), ipv4(), icmp()),
  );
  assert.equal(p.ipv4?.offset, 0);
  assert.equal(p.ipv4?.src, '1.1.1.1');
  assert.equal(p.vxlan?.vni, 3);
  assert.equal(p.vxlan?.inner.icmp?.type, 8);
  assert.equal(parsePacket(Buffer.from('hello')).payload.toString(), 'hello');
});
