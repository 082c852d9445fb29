// The packet harness itself: frames built with the packet library go through real programs;
// rewritten addresses, checksums and map changes come back, and a stale checksum is caught.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadObjectFile } from '../../src/bpf/spec.js';
import { Collection } from '../../src/bpf/collection.js';
import { runPacket, TcAct } from '../../src/bpf/test-run.js';
import { bpfObjectPath } from '../../src/paths.js';
import { requirePrivileges } from '../../src/testing/netns.js';
import { eth, frame, ipv4, payload, tcp, udp } from '../../src/packet/index.js';
import { countersKey, countersValue } from '../../src/datapath/counters.js';
import { ipv4Constant } from '../../src/bpf/codec.js';

for (const [name, l4] of [
  ['TCP', () => tcp({ sport: 40000, dport: 80, flags: 'S' })],
  ['UDP', () => udp({ sport: 40000, dport: 53 })],
] as const) {
  test(`a correct ${name} destination rewrite passes every checksum; a stale L4 checksum is reported`, (t) => {
    if (!requirePrivileges(t)) return;
    const coll = Collection.load(loadObjectFile(bpfObjectPath('test/rewrite')), {
      constants: { new_daddr: ipv4Constant('10.96.0.99') },
    });
    t.after(() => coll.close());
    const input = frame(eth(), ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }), l4(), payload('hello'));

    const ok = runPacket(coll.program('rewrite_ok'), input);
    assert.equal(ok.retval, TcAct.OK);
    assert.equal(ok.parsed?.ipv4?.dst, '10.96.0.99');
    assert.equal(ok.parsed?.ipv4?.src, '10.0.0.1');
    assert.deepEqual(ok.checksumProblems, []);

    const bad = runPacket(coll.program('rewrite_stale_l4'), input);
    assert.equal(bad.parsed?.ipv4?.dst, '10.96.0.99');
    assert.equal(bad.checksumProblems.length, 1, 'exactly the L4 checksum is wrong');
    assert.equal(bad.checksumProblems[0].layer, name.toLowerCase());
  });
}

test('map changes made by a program are reported per key', (t) => {
  if (!requirePrivileges(t)) return;
  const coll = Collection.load(loadObjectFile(bpfObjectPath('tc_count')), { constants: { sl_hook: 1 } });
  t.after(() => coll.close());
  const counters = coll.map('sl_counters_v1');
  const input = frame(eth(), ipv4(), udp(), payload(10));
  const r = runPacket(coll.program('sl_tc_count'), input, { watch: [counters], repeat: 1 });
  assert.equal(r.retval, TcAct.UNSPEC);
  assert.ok(r.out.equals(input), 'the counting program does not touch the packet');
  assert.equal(r.mapChanges.length, 1);
  const key = countersKey.decode(r.mapChanges[0].key, 0);
  assert.deepEqual(key, { ifindex: 1, hook: 1 }, 'test-run delivers on loopback; hook from .rodata');
  assert.equal(r.mapChanges[0].before, undefined);
  // Sum the per-CPU slots of the new entry: one UDP packet.
  const slot = countersValue.size;
  let udpCount = 0;
  for (let off = 0; off < r.mapChanges[0].after!.length; off += slot)
    udpCount += countersValue.decode(r.mapChanges[0].after!, off).c[4];
  assert.equal(udpCount, 1);
});
