// The change tracker: records per Service, nets out changes that undo themselves, and syncs only
// the frontends whose content changed. Ends with the 10,000-Service timing (printed, not asserted).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1EndpointSlice, V1Service, V1ServiceSpec } from '@kubernetes/client-node';
import { ServiceChangeTracker, type SyncResult } from '../../src/proxy/tracker.js';
import { computeFrontends } from '../../src/proxy/services.js';
import type { DesiredFrontend } from '../../src/proxy/model.js';

const NODE = 'node-1';
const NODE_IP = '192.168.1.11';

function svc(name: string, spec: Partial<V1ServiceSpec> = {}, rv = '1', created?: string): V1Service {
  return {
    metadata: {
      name,
      namespace: 'default',
      resourceVersion: rv,
      creationTimestamp: created ? new Date(created) : undefined,
    },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }], ...spec },
  };
}

interface Ep {
  ip: string;
  node?: string;
  ready?: boolean;
}

function slice(service: string, name: string, eps: Ep[], rv = '1', port = 8080): V1EndpointSlice {
  return {
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service }, resourceVersion: rv },
    addressType: 'IPv4',
    ports: [{ name: 'http', port, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      nodeName: e.node ?? 'node-2',
      conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
    })),
  };
}

const tracker = () => new ServiceChangeTracker({ nodeName: NODE, nodeIPs: [NODE_IP] });
const upsertKeys = (r: SyncResult) => r.upserts.map((f) => f.key).sort();
const KEY = 'default/web:http/TCP@10.96.0.10:80';

test('initial sync returns every frontend; a sync with nothing changed returns nothing', () => {
  const t = tracker();
  t.onServiceUpdate(undefined, svc('web', { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }));
  t.onEndpointSliceUpdate(undefined, slice('web', 'web-a', [{ ip: '10.65.2.4' }]));
  assert.equal(t.pendingCount, 1);
  const r = t.sync();
  assert.deepEqual(upsertKeys(r), ['default/web:http/TCP@*:30080', KEY]);
  assert.deepEqual([r.deletes, r.errors], [[], []]);
  assert.deepEqual(
    r.upserts[0].backends.map((b) => b.addr),
    ['10.65.2.4'],
  );
  assert.equal(t.pendingCount, 0);
  assert.deepEqual(t.sync(), { upserts: [], deletes: [], errors: [] });
  assert.equal(t.frontends().length, 2);
});

test('changes that net to nothing are dropped: resourceVersion-only updates, add then delete, a change and its undo', () => {
  const t = tracker();
  const s1 = svc('web');
  const e1 = slice('web', 'web-a', [{ ip: '10.65.2.4' }]);
  t.onServiceUpdate(undefined, s1);
  t.onEndpointSliceUpdate(undefined, e1);
  t.sync();

  const s2 = svc('web', {}, '2');
  const e2 = slice('web', 'web-a', [{ ip: '10.65.2.4' }], '2');
  t.onServiceUpdate(s1, s2);
  t.onEndpointSliceUpdate(e1, e2);
  assert.equal(t.pendingCount, 0, 'resourceVersion only');

  const e3 = slice('web', 'web-a', [{ ip: '10.65.2.4', ready: false }], '3');
  t.onEndpointSliceUpdate(e2, e3);
  assert.equal(t.pendingCount, 1);
  t.onEndpointSliceUpdate(e3, slice('web', 'web-a', [{ ip: '10.65.2.4' }], '4'));
  assert.equal(t.pendingCount, 0, 'undone before the sync');

  const other = svc('other', { clusterIP: '10.96.0.20' });
  t.onServiceUpdate(undefined, other);
  t.onEndpointSliceUpdate(undefined, slice('other', 'other-a', [{ ip: '10.65.2.9' }]));
  t.onEndpointSliceUpdate(slice('other', 'other-a', [{ ip: '10.65.2.9' }]), undefined);
  t.onServiceUpdate(other, undefined);
  assert.equal(t.pendingCount, 0, 'added then deleted');
  assert.deepEqual(t.sync(), { upserts: [], deletes: [], errors: [] });

  // A change that does reach the sync but computes the same frontends (an unused selector) is recomputed and yields nothing.
  t.onServiceUpdate(s2, svc('web', { selector: { app: 'web2' } }, '5'));
  assert.equal(t.pendingCount, 1);
  assert.deepEqual(t.sync(), { upserts: [], deletes: [], errors: [] });
});

test('one endpoint change upserts only the frontends of that service port, with the new backends', () => {
  const t = tracker();
  for (let i = 0; i < 5; i++) {
    t.onServiceUpdate(undefined, svc(`s${i}`, { clusterIP: `10.96.0.${i + 1}` }));
    t.onEndpointSliceUpdate(undefined, slice(`s${i}`, `s${i}-a`, [{ ip: `10.65.2.${i + 1}` }]));
  }
  assert.equal(t.sync().upserts.length, 5);
  const prev = slice('s3', 's3-a', [{ ip: '10.65.2.4' }]);
  t.onEndpointSliceUpdate(prev, slice('s3', 's3-a', [{ ip: '10.65.2.4' }, { ip: '10.65.1.7', node: NODE }], '2'));
  const r = t.sync();
  assert.deepEqual(upsertKeys(r), ['default/s3:http/TCP@10.96.0.4:80']);
  assert.deepEqual(
    r.upserts[0].backends.map((b) => [b.addr, b.local]),
    [
      ['10.65.1.7', true],
      ['10.65.2.4', false],
    ],
  );
  assert.deepEqual(r.deletes, []);
});

test('deleting a Service deletes its frontends; its slices stay and serve it when it comes back', () => {
  const t = tracker();
  const s = svc('web', { externalIPs: ['198.51.100.1'] });
  t.onServiceUpdate(undefined, s);
  t.onEndpointSliceUpdate(undefined, slice('web', 'web-a', [{ ip: '10.65.2.4' }]));
  t.sync();
  t.onServiceUpdate(s, undefined);
  const r = t.sync();
  assert.deepEqual(r.deletes.sort(), ['default/web:http/TCP@10.96.0.10:80', 'default/web:http/TCP@198.51.100.1:80']);
  assert.deepEqual(r.upserts, []);
  t.onServiceUpdate(undefined, s);
  const back = t.sync();
  assert.equal(back.upserts.length, 2);
  assert.deepEqual(
    back.upserts[0].backends.map((b) => b.addr),
    ['10.65.2.4'],
  );
});

test('a slice that arrives before its Service, and a slice moving between Services', () => {
  const t = tracker();
  const e = slice('web', 'web-a', [{ ip: '10.65.2.4' }]);
  t.onEndpointSliceUpdate(undefined, e);
  assert.deepEqual(t.sync().upserts, []);
  t.onServiceUpdate(undefined, svc('web'));
  t.onServiceUpdate(undefined, svc('api', { clusterIP: '10.96.0.11' }));
  const r = t.sync();
  assert.deepEqual(
    r.upserts.find((f) => f.key === KEY)?.backends.map((b) => b.addr),
    ['10.65.2.4'],
  );
  t.onEndpointSliceUpdate(e, slice('api', 'web-a', [{ ip: '10.65.2.4' }], '2'));
  const moved = t.sync();
  const byKey = new Map(moved.upserts.map((f) => [f.key, f.backends.map((b) => b.addr)]));
  assert.deepEqual(byKey.get(KEY), []);
  assert.deepEqual(byKey.get('default/api:http/TCP@10.96.0.11:80'), ['10.65.2.4']);
});

test('an address two Services claim passes to the other one when its holder goes (delete then upsert in one sync)', () => {
  const t = tracker();
  const old = svc('old', { clusterIP: '10.96.0.1', externalIPs: ['198.51.100.1'] }, '1', '2025-01-01T00:00:00Z');
  const young = svc('young', { clusterIP: '10.96.0.2', externalIPs: ['198.51.100.1'] }, '1', '2026-01-01T00:00:00Z');
  t.onServiceUpdate(undefined, old);
  t.sync();
  t.onServiceUpdate(undefined, young);
  const r1 = t.sync();
  assert.deepEqual(upsertKeys(r1), ['default/young:http/TCP@10.96.0.2:80']);
  assert.deepEqual(
    r1.errors.map((e) => `${e.object} ${e.field}`),
    ['Service default/young spec.externalIPs[0]'],
  );
  t.onServiceUpdate(old, undefined);
  const r2 = t.sync();
  assert.deepEqual(r2.deletes.sort(), ['default/old:http/TCP@10.96.0.1:80', 'default/old:http/TCP@198.51.100.1:80']);
  assert.deepEqual(upsertKeys(r2), ['default/young:http/TCP@198.51.100.1:80']);
  assert.deepEqual(r2.errors, []);
});

test('errors come with the sync that recomputes the Service; health-check node ports are reported when they change', () => {
  const t = tracker();
  const spec: Partial<V1ServiceSpec> = {
    type: 'LoadBalancer',
    externalTrafficPolicy: 'Local',
    healthCheckNodePort: 32000,
    ports: [
      { name: 'http', port: 80, nodePort: 30080 },
      { name: 'bad', port: 0 },
    ],
  };
  t.onServiceUpdate(undefined, svc('web', spec));
  t.onEndpointSliceUpdate(undefined, slice('web', 'web-a', [{ ip: '10.65.2.4' }]));
  const r1 = t.sync();
  assert.deepEqual(
    r1.errors.map((e) => e.field),
    ['spec.ports[1].port'],
  );
  assert.deepEqual(r1.healthCheckNodePorts, [
    { port: 32000, service: { namespace: 'default', name: 'web' }, localEndpoints: 0 },
  ]);
  t.onEndpointSliceUpdate(
    slice('web', 'web-a', [{ ip: '10.65.2.4' }]),
    slice('web', 'web-a', [{ ip: '10.65.2.4' }, { ip: '10.65.1.5', node: NODE }], '2'),
  );
  const r2 = t.sync();
  assert.deepEqual(r2.healthCheckNodePorts?.[0].localEndpoints, 1);
  assert.deepEqual(
    r2.errors.map((e) => e.field),
    ['spec.ports[1].port'],
    'the Service was recomputed',
  );
  assert.deepEqual(t.healthCheckNodePorts().length, 1);
});

test('node addresses changing recomputes every Service (host-network endpoints become local)', () => {
  const t = new ServiceChangeTracker({ nodeName: NODE, nodeIPs: [] });
  const e = slice('web', 'web-a', [{ ip: NODE_IP }]);
  e.endpoints[0].nodeName = undefined;
  t.onServiceUpdate(undefined, svc('web'));
  t.onEndpointSliceUpdate(undefined, e);
  assert.equal(t.sync().upserts[0].backends[0].local, false);
  t.setNodeIPs([NODE_IP]);
  t.onEndpointSliceUpdate(e, { ...e, metadata: { ...e.metadata, resourceVersion: '2' } });
  assert.equal(t.pendingCount, 1, 'a netted-out event does not cancel the recompute');
  const r = t.sync();
  assert.equal(r.upserts[0].backends[0].local, true);
});

// A small deterministic generator, so a failure is reproducible.
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

test('random event sequences: the synced state always equals computing everything from scratch', () => {
  const rand = rng(42);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const names = ['a', 'b', 'c', 'd', 'e', 'f'];
  const services = new Map<string, V1Service>();
  const slices = new Map<string, V1EndpointSlice>();
  const t = tracker();
  const state = new Map<string, DesiredFrontend>();
  let rv = 1;
  const randomService = (name: string): V1Service =>
    svc(
      name,
      {
        clusterIP: `10.96.0.${names.indexOf(name) + 1}`,
        type: pick(['ClusterIP', 'NodePort', 'LoadBalancer']),
        externalIPs: rand() < 0.4 ? [pick(['198.51.100.1', '198.51.100.2', '10.96.0.1'])] : undefined,
        externalTrafficPolicy: rand() < 0.5 ? 'Local' : 'Cluster',
        internalTrafficPolicy: rand() < 0.3 ? 'Local' : undefined,
        sessionAffinity: rand() < 0.3 ? 'ClientIP' : undefined,
        ports: [{ name: 'http', port: 80, nodePort: 30000 + names.indexOf(name) }],
      },
      String(rv++),
      pick(['2025-01-01T00:00:00Z', '2026-01-01T00:00:00Z']),
    );
  const randomSlice = (id: string): V1EndpointSlice => {
    const [svcName, n] = id.split('/');
    const eps: Ep[] = [];
    const count = Math.floor(rand() * 4);
    for (let i = 0; i < count; i++) {
      eps.push({
        ip: `10.65.${pick([1, 2])}.${Math.floor(rand() * 6)}`,
        node: pick([NODE, 'node-2']),
        ready: rand() < 0.7,
      });
    }
    return slice(svcName, `${svcName}-${n}`, eps, String(rv++));
  };
  for (let step = 0; step < 3000; step++) {
    const r = rand();
    if (r < 0.35) {
      const name = pick(names);
      const prev = services.get(name);
      const cur =
        rand() < 0.2
          ? undefined
          : rand() < 0.3 && prev
            ? { ...prev, metadata: { ...prev.metadata, resourceVersion: String(rv++) } }
            : randomService(name);
      if (cur) services.set(name, cur);
      else services.delete(name);
      t.onServiceUpdate(prev, cur);
    } else {
      const id = `${pick(names)}/${pick(['x', 'y'])}`;
      const prev = slices.get(id);
      const cur = rand() < 0.2 ? undefined : randomSlice(id);
      if (cur) slices.set(id, cur);
      else slices.delete(id);
      t.onEndpointSliceUpdate(prev, cur);
    }
    if (rand() < 0.2) {
      const res = t.sync();
      for (const k of res.deletes) state.delete(k);
      for (const f of res.upserts) state.set(f.key, f);
      const want = computeFrontends({
        services: [...services.values()],
        endpointSlices: [...slices.values()],
        nodeName: NODE,
        nodeIPs: [NODE_IP],
      });
      const got = [...state.values()].sort((x, y) => (x.key < y.key ? -1 : 1));
      const exp = want.frontends.sort((x, y) => (x.key < y.key ? -1 : 1));
      assert.deepEqual(got, exp, `step ${step}`);
      assert.equal(t.pendingCount, 0);
    }
  }
});

test('scale: 10,000 Services x 10 endpoints, initial sync and single endpoint changes (timings printed)', () => {
  const N = 10000;
  const services: V1Service[] = [];
  const slices: V1EndpointSlice[] = [];
  // A change: the first endpoint is no longer ready.
  const eps = (i: number, changed: boolean): Ep[] =>
    Array.from({ length: 10 }, (_, j) => ({
      ip: `10.${64 + (i >> 12)}.${(i >> 4) & 0xff}.${((i & 0xf) << 4) + j}`,
      node: j % 3 === 0 ? NODE : `node-${j % 3}`,
      ready: !(changed && j === 0),
    }));
  for (let i = 0; i < N; i++) {
    const ip = `10.96.${i >> 8}.${i & 0xff}`;
    services.push(svc(`svc-${i}`, { clusterIP: ip }));
    slices.push(slice(`svc-${i}`, `svc-${i}-abcde`, eps(i, false)));
  }
  const t = tracker();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (const s of services) t.onServiceUpdate(undefined, s);
  for (const s of slices) t.onEndpointSliceUpdate(undefined, s);
  const t1 = process.hrtime.bigint();
  const first = t.sync();
  const t2 = process.hrtime.bigint();
  const cpu = process.cpuUsage(cpu0);
  assert.equal(first.upserts.length, N);
  assert.ok(first.upserts.every((f) => f.backends.length === 10));

  const times: number[] = [];
  const current = [...slices];
  for (let k = 0; k < 1000; k++) {
    const i = (k * 7919) % N;
    const prev = current[i];
    const cur = slice(`svc-${i}`, `svc-${i}-abcde`, eps(i, true), String(k + 2));
    current[i] = cur;
    const a = process.hrtime.bigint();
    t.onEndpointSliceUpdate(prev, cur);
    const r = t.sync();
    const b = process.hrtime.bigint();
    times.push(Number(b - a) / 1e6);
    assert.equal(r.upserts.length, 1, `change ${k}`);
    assert.equal(r.upserts[0].key, `default/svc-${i}:http/TCP@10.96.${i >> 8}.${i & 0xff}:80`);
    assert.equal(r.upserts[0].backends.length, 9);
  }
  times.sort((x, y) => x - y);
  const ms = (n: bigint) => (Number(n) / 1e6).toFixed(1);
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(3);
  console.log(
    `tracker scale: ${N} Services x 10 endpoints: events ${ms(t1 - t0)} ms + sync ${ms(t2 - t1)} ms = ${ms(t2 - t0)} ms ` +
      `(CPU ${((cpu.user + cpu.system) / 1000).toFixed(1)} ms); ` +
      `one endpoint change (event + sync): median ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${times.at(-1)!.toFixed(3)} ms`,
  );
});
