// The NAT writer keeps the kernel's NAT maps equal to the desired frontends by difference, in a
// safe order, and adopts what a previous agent left in the maps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Collection } from '../../src/bpf/collection.js';
import { loadObjectFile } from '../../src/bpf/spec.js';
import { bpfObjectPath } from '../../src/paths.js';
import {
  natMaps,
  frontendKey,
  FrontendFlags,
  NAT_BE_MAP,
  NAT_FE_MAP,
  Proto,
  type NatMaps,
} from '../../src/datapath/nat.js';
import { NatWriter, type NatFrontend } from '../../src/proxy/nat-writer.js';
import { requirePrivileges } from '../../src/testing/netns.js';

function load(): { coll: Collection; nat: NatMaps } {
  const coll = Collection.load(loadObjectFile(bpfObjectPath('tc')), { programs: [] });
  return { coll, nat: natMaps(coll) };
}

const web = (backends: NatFrontend['backends']): NatFrontend[] => [
  {
    key: 'default/web:http/TCP@10.96.0.10:80',
    group: 'default/web:http/TCP',
    addr: '10.96.0.10',
    port: 80,
    proto: Proto.TCP,
    flags: 0,
    affinityTimeout: 0,
    backends,
  },
  {
    key: 'default/web:http/TCP@*:30080',
    group: 'default/web:http/TCP',
    addr: '0.0.0.0',
    port: 30080,
    proto: Proto.TCP,
    flags: FrontendFlags.NODEPORT,
    affinityTimeout: 0,
    backends,
  },
];

const B = (n: number, local = false) => ({ addr: `10.65.${local ? 1 : 2}.${n}`, port: 8080, local });

test('frontends of one service port share backends, local ones first; unchanged work is not redone', (t) => {
  if (!requirePrivileges(t)) return;
  const { coll, nat } = load();
  t.after(() => coll.close());
  const w = new NatWriter(nat);
  for (const f of web([B(1), B(2, true), B(3)])) w.upsert(f);
  const r1 = w.flush();
  assert.deepEqual([r1.frontendsWritten, r1.backendsWritten], [2, 3]);
  // The metrics' entry counts come from the writer's state: they must agree with the maps.
  const counted = () => [w.frontendEntries, w.backendEntries];
  const inMaps = () => [nat.frontends.map.count(), nat.backends.map.count()];
  assert.deepEqual(counted(), [2, 3]);
  assert.deepEqual(inMaps(), [2, 3]);
  const fe = nat.frontends.get(frontendKey('10.96.0.10', 80, Proto.TCP))!;
  const np = nat.frontends.get(frontendKey('0.0.0.0', 30080, Proto.TCP))!;
  assert.equal(fe.svcId, np.svcId);
  assert.deepEqual([fe.count, fe.localCount], [3, 1]);
  assert.equal(nat.backends.get({ svcId: fe.svcId, ordinal: 0 })?.addr, '10.65.1.2', 'the local backend first');

  // Same content again: nothing written.
  for (const f of web([B(1), B(2, true), B(3)])) w.upsert(f);
  const r2 = w.flush();
  assert.deepEqual([r2.frontendsWritten, r2.backendsWritten, r2.backendsDeleted], [0, 0, 0]);

  // One backend replaced: one backend entry, no frontend (the counts did not change).
  for (const f of web([B(1), B(2, true), B(4)])) w.upsert(f);
  const r3 = w.flush();
  assert.deepEqual([r3.frontendsWritten, r3.backendsWritten, r3.backendsDeleted], [0, 1, 0]);
  assert.deepEqual(r3.removedBackends, [{ addr: '10.65.2.3', port: 8080, proto: Proto.TCP }]);

  // Shrink: the frontends' counts change, the stale ordinal goes after them.
  for (const f of web([B(2, true)])) w.upsert(f);
  const r4 = w.flush();
  assert.deepEqual([r4.frontendsWritten, r4.backendsDeleted], [2, 2]);
  assert.equal(nat.frontends.get(frontendKey('10.96.0.10', 80, Proto.TCP))?.count, 1);
  assert.equal([...nat.backends.keys()].length, 1);
  assert.deepEqual(counted(), inMaps());
  assert.deepEqual(counted(), [2, 1]);

  // Gone: every entry removed.
  for (const f of web([])) w.remove(f.key);
  w.flush();
  assert.equal([...nat.frontends.keys()].length, 0);
  assert.equal([...nat.backends.keys()].length, 0);
  assert.deepEqual(counted(), [0, 0]);
});

test('backends are written before frontends and removed after them', (t) => {
  if (!requirePrivileges(t)) return;
  const { coll, nat } = load();
  t.after(() => coll.close());
  const log: string[] = [];
  const spy = <T extends object>(name: string, m: T): T =>
    new Proxy(m, {
      get(target, prop, recv) {
        const v = Reflect.get(target, prop, recv);
        if (typeof v !== 'function' || !['setMany', 'deleteMany'].includes(String(prop)))
          return typeof v === 'function' ? v.bind(target) : v;
        return (...args: unknown[]) => {
          log.push(`${name}.${String(prop)}`);
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  const w = new NatWriter({ ...nat, frontends: spy('fe', nat.frontends), backends: spy('be', nat.backends) });
  for (const f of web([B(1), B(2)])) w.upsert(f);
  w.flush();
  for (const f of web([B(1)])) w.upsert(f);
  w.flush();
  assert.deepEqual(log, ['be.setMany', 'fe.setMany', 'fe.setMany', 'be.deleteMany']);
});

test('a restarted writer adopts the maps: nothing rewritten, stale entries pruned', (t) => {
  if (!requirePrivileges(t)) return;
  const { coll, nat } = load();
  t.after(() => coll.close());
  const first = new NatWriter(nat);
  for (const f of web([B(1), B(2)])) first.upsert(f);
  first.upsert({
    key: 'old/gone:x/UDP@10.96.0.99:53',
    group: 'old/gone:x/UDP',
    addr: '10.96.0.99',
    port: 53,
    proto: Proto.UDP,
    flags: 0,
    affinityTimeout: 0,
    backends: [B(9)],
  });
  first.flush();
  const svcId = nat.frontends.get(frontendKey('10.96.0.10', 80, Proto.TCP))!.svcId;

  const second = new NatWriter(nat);
  for (const f of web([B(1), B(2)])) second.upsert(f);
  const r = second.flush({ prune: true });
  assert.deepEqual([r.frontendsWritten, r.backendsWritten], [0, 0], 'unchanged Services are not rewritten');
  assert.equal(r.frontendsDeleted, 1, 'the Service that disappeared meanwhile is removed');
  assert.equal(nat.frontends.get(frontendKey('10.96.0.10', 80, Proto.TCP))!.svcId, svcId, 'same svc id');
  assert.equal(nat.frontends.get(frontendKey('10.96.0.99', 53, Proto.UDP)), undefined);
  assert.equal([...nat.backends.keys()].length, 2);
});

test('loadBalancerSourceRanges become allowed-source entries plus a deny entry', (t) => {
  if (!requirePrivileges(t)) return;
  const { coll, nat } = load();
  t.after(() => coll.close());
  const w = new NatWriter(nat);
  w.upsert({
    key: 'lb',
    group: 'g',
    addr: '192.168.77.64',
    port: 443,
    proto: Proto.TCP,
    flags: FrontendFlags.EXTERNAL,
    affinityTimeout: 0,
    sourceRanges: ['192.168.77.0/24', '10.0.0.0/8'],
    backends: [B(1)],
  });
  w.flush();
  const entries = [...nat.frontends.entries()]
    .map(([k, v]) => `${k.src}/${k.prefixlen - 64} ${v.flags & FrontendFlags.SRC_DENIED ? 'deny' : 'allow'}`)
    .sort();
  assert.deepEqual(entries, ['0.0.0.0/0 deny', '10.0.0.0/8 allow', '192.168.77.0/24 allow']);
});

/** A writer over maps of the given sizes, and Service `i` of `n` backends on 10.96.<net>.<i>. */
function smallMaps(t: { after: (fn: () => void) => void }, maxEntries: Record<string, number>, net: number) {
  const coll = Collection.load(loadObjectFile(bpfObjectPath('tc')), { programs: [], maxEntries });
  t.after(() => coll.close());
  const nat = natMaps(coll);
  const svc = (i: number, n = 1): NatFrontend => ({
    key: `default/s${i}:http/TCP@10.96.${net}.${i}:80`,
    group: `default/s${i}:http/TCP`,
    addr: `10.96.${net}.${i}`,
    port: 80,
    proto: Proto.TCP,
    flags: 0,
    affinityTimeout: 0,
    backends: Array.from({ length: n }, (_, k) => ({ addr: `10.65.${i}.${k + 1}`, port: 8080, local: false })),
  });
  const fe = (i: number) => nat.frontends.get(frontendKey(`10.96.${net}.${i}`, 80, Proto.TCP));
  return { nat, w: new NatWriter(nat), svc, fe };
}

test('a full backend map leaves the Services that do not fit as they were, and programs them once room is made', (t) => {
  if (!requirePrivileges(t)) return;
  const { nat, w, svc, fe } = smallMaps(t, { [NAT_BE_MAP]: 8 }, 1);
  // 3 + 4 backends fit in 8; the third Service's 3 more do not.
  for (const f of [svc(1, 3), svc(2, 4), svc(3, 3)]) w.upsert(f);
  const r1 = w.flush();
  assert.deepEqual(r1.backendMapFull, [{ group: 'default/s3:http/TCP', backends: 3, capacity: 8 }]);
  assert.equal(fe(1)?.count, 3);
  assert.equal(fe(2)?.count, 4);
  assert.equal(fe(3), undefined, 'no frontend that counts backends the map does not hold');
  assert.deepEqual([w.frontendEntries, w.backendEntries], [nat.frontends.map.count(), nat.backends.map.count()]);

  // A Service that grows beyond the room keeps its old backends and count.
  w.upsert(svc(1, 5));
  const r2 = w.flush();
  assert.deepEqual(r2.backendMapFull.map((f) => f.group).sort(), ['default/s1:http/TCP', 'default/s3:http/TCP']);
  assert.equal(fe(1)?.count, 3, 'the old count, with its backends still in the map');
  assert.equal(nat.backends.get({ svcId: fe(1)!.svcId, ordinal: 2 })?.addr, '10.65.1.3');

  // Room made: the waiting Services are programmed at the next flush, without being upserted again.
  w.remove(svc(2, 4).key);
  const r3 = w.flush();
  assert.deepEqual(r3.backendMapFull, []);
  assert.equal(fe(1)?.count, 5);
  assert.equal(fe(3)?.count, 3);
  assert.equal(nat.backends.map.count(), 8);
  assert.deepEqual([w.frontendEntries, w.backendEntries], [2, 8]);
});

test('a full frontend map leaves the frontends that do not fit unwritten, and writes them once room is made', (t) => {
  if (!requirePrivileges(t)) return;
  const { nat, w, svc, fe } = smallMaps(t, { [NAT_FE_MAP]: 2 }, 2);
  for (const i of [1, 2, 3]) w.upsert(svc(i));
  const r1 = w.flush();
  assert.equal(r1.frontendMapFull.length, 1);
  const left = Number(r1.frontendMapFull[0].key.match(/s(\d)/)![1]);
  assert.equal(fe(left), undefined);
  assert.equal(nat.frontends.map.count(), 2);
  assert.equal(w.frontendEntries, 2);

  // One removed: the one left out is written in the same flush, without being upserted again.
  const gone = left === 1 ? 2 : 1;
  w.remove(svc(gone).key);
  const r2 = w.flush();
  assert.deepEqual(r2.frontendMapFull, []);
  assert.equal(fe(left)?.count, 1);
  assert.equal(fe(gone), undefined);
  assert.deepEqual([w.frontendEntries, nat.frontends.map.count()], [2, 2]);
});
