// Control-plane cost at scale: 10,000 Services x 10 endpoints from nothing into the real BPF
// maps, then 1,000 single-endpoint changes, each timed from the event to the maps written, as the
// agent does it (change tracker -> NAT writer with batch calls). Memory is the process's RSS.
import { Collection } from '../src/bpf/collection.js';
import { loadObjectFile } from '../src/bpf/spec.js';
import { bpfObjectPath } from '../src/paths.js';
import { natMaps } from '../src/datapath/nat.js';
import { ServiceChangeTracker } from '../src/proxy/tracker.js';
import { toNatFrontend } from '../src/proxy/model.js';
import { NatWriter } from '../src/proxy/nat-writer.js';
import { median } from './stats.js';

export interface AgentSyncResult {
  services: number;
  endpointsPerService: number;
  initialSyncSeconds: number;
  frontends: number;
  backends: number;
  changes: number;
  changeMs: { p50: number; p99: number; max: number };
  rssMB: number;
  heapMB: number;
}

function service(i: number) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'bench', name: `svc-${i}`, resourceVersion: '1', uid: `u${i}` },
    spec: {
      type: 'ClusterIP',
      clusterIP: `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
      ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }],
      selector: { app: `a${i}` },
    },
  };
}

function slice(i: number, n: number, rv: number, salt = 0) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: 'bench',
      name: `svc-${i}-x`,
      resourceVersion: String(rv),
      labels: { 'kubernetes.io/service-name': `svc-${i}` },
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: Array.from({ length: n }, (_, e) => ({
      addresses: [
        `10.${64 + ((i * n + e + salt) >> 16)}.${((i * n + e + salt) >> 8) & 255}.${(i * n + e + salt) & 255}`,
      ],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: e % 3 === 0 ? 'node1' : `node${(e % 3) + 1}`,
    })),
  };
}

export function benchAgentSync(services = 10_000, perService = 10, changes = 1000): AgentSyncResult {
  const coll = Collection.load(loadObjectFile(bpfObjectPath('tc')), { programs: [] });
  try {
    const nat = natMaps(coll);
    const tracker = new ServiceChangeTracker({ nodeName: 'node1', nodeIPs: ['192.168.77.11'] });
    const writer = new NatWriter(nat);
    const svcs = Array.from({ length: services }, (_, i) => service(i));
    const slices = Array.from({ length: services }, (_, i) => slice(i, perService, 1));
    const t0 = performance.now();
    for (const s of svcs) tracker.onServiceUpdate(undefined, s as never);
    for (const s of slices) tracker.onEndpointSliceUpdate(undefined, s as never);
    const first = tracker.sync();
    for (const f of first.upserts) writer.upsert(toNatFrontend(f));
    const r = writer.flush({ prune: true });
    const initialSyncSeconds = (performance.now() - t0) / 1000;

    const times: number[] = [];
    for (let c = 0; c < changes; c++) {
      const i = (c * 7919) % services;
      const prev = slices[i];
      const next = slice(i, perService, 2 + c, 1_000_000 + c);
      slices[i] = next;
      const t = performance.now();
      tracker.onEndpointSliceUpdate(prev as never, next as never);
      const d = tracker.sync();
      for (const key of d.deletes) writer.remove(key);
      for (const f of d.upserts) writer.upsert(toNatFrontend(f));
      writer.flush();
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    // Live state only (tracker, writer and the objects, as the agent holds them), not garbage.
    (globalThis as { gc?: () => void }).gc?.();
    const mem = process.memoryUsage();
    return {
      services,
      endpointsPerService: perService,
      initialSyncSeconds,
      frontends: r.frontendsWritten,
      backends: r.backendsWritten,
      changes,
      changeMs: { p50: median(times), p99: times[Math.floor(times.length * 0.99)], max: times[times.length - 1] },
      rssMB: mem.rss / 2 ** 20,
      heapMB: mem.heapUsed / 2 ** 20,
    };
  } finally {
    coll.close();
  }
}
