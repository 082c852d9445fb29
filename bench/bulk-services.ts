// Services in bulk for the scale benchmarks, written straight to the lab's API server. Run inside
// the control-plane namespace (the API server's address exists only in the lab):
//   nsenter --net=/run/netns/sl-LAB-cp node dist/bench/bulk-services.js KUBECONFIG JSON-COMMAND
// and prints one JSON line.
//
// Bulk Services are selectorless ClusterIP Services (namespace `bench`, `svc-<i>`) with one
// hand-made EndpointSlice each (E endpoints on made-up addresses of the pod network, which
// nothing sends to): kube-proxy and Sluice both read EndpointSlices, and no pods are needed.
// The `sentinel` Service (one endpoint: the real echo pod) is written after a batch; once it
// answers through the dataplane, everything written before it has been programmed, because
// every proxy applies a watch's events in order.
import { KubeApi, isStatus } from '../src/lab/kubernetes/api.js';

export const BENCH_NS = 'bench';
const SVC = `/api/v1/namespaces/${BENCH_NS}/services`;
const EPS = `/apis/discovery.k8s.io/v1/namespaces/${BENCH_NS}/endpointslices`;

/** `sentinelPort`: after the batch, point the sentinel's endpoint at this port, in the same process (no gap). */
export type BulkCommand = (
  | { op: 'create'; from: number; to: number; endpoints: number; concurrency: number }
  | { op: 'delete'; from: number; to: number; concurrency: number }
  | { op: 'change'; count: number; services: number; endpoints: number; concurrency: number }
  | { op: 'sentinel'; ip: string; port: number }
  | { op: 'sentinel-port'; port: number }
) & { sentinelPort?: number };

export interface BulkResult {
  seconds: number;
  writes: number;
  /** The largest resourceVersion the API server returned (an etcd revision). */
  maxRv: number;
  clusterIP?: string;
  /** Wall clock (ms since the epoch) when the batch's last write was answered, before the sentinel's. */
  lastWriteAt: number;
}

/** The i-th made-up endpoint address: 10.65.128.0/17, outside every lab node's pod CIDR. */
export function fakeEndpoint(k: number): string {
  const n = k % 32768;
  return `10.65.${128 + (n >> 8)}.${n & 255}`;
}

export function bulkService(i: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `svc-${i}`, namespace: BENCH_NS },
    spec: { type: 'ClusterIP', ports: [{ name: 'tcp', port: 80, protocol: 'TCP', targetPort: 8080 }] },
  };
}

/** Service i's EndpointSlice; `salt` moves one endpoint (the single-endpoint change). */
export function bulkSlice(i: number, endpoints: number, salt?: { endpoint: number; k: number }): object {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `svc-${i}-1`,
      namespace: BENCH_NS,
      labels: { 'kubernetes.io/service-name': `svc-${i}`, 'endpointslice.kubernetes.io/managed-by': 'sluice-bench' },
    },
    addressType: 'IPv4',
    ports: [{ name: 'tcp', port: 8080, protocol: 'TCP' }],
    endpoints: Array.from({ length: endpoints }, (_, e) => ({
      addresses: [fakeEndpoint(salt && salt.endpoint === e ? 16384 + salt.k : i * endpoints + e)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: 'node2',
    })),
  };
}

type Meta = { metadata?: { resourceVersion?: string }; spec?: { clusterIP?: string } };

/** Runs `work(i)` for i in [0, n) with `concurrency` requests in flight. */
async function pool(n: number, concurrency: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) await work(next++);
    }),
  );
}

/** One write, retried on the API server's overload answers (429, 5xx) and dropped connections. */
async function write<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const retry = isStatus(err, 429) || isStatus(err, 500) || isStatus(err, 503) || isStatus(err, 504);
      const net = !(err as { status?: number }).status;
      if (attempt >= 8 || !(retry || net)) throw err;
      await new Promise((r) => setTimeout(r, 100 * 2 ** Math.min(attempt, 5)));
    }
  }
}

export async function runBulk(api: KubeApi, cmd: BulkCommand): Promise<BulkResult> {
  const t0 = performance.now();
  let maxRv = 0;
  let writes = 0;
  const seen = (o: unknown): void => {
    writes++;
    const rv = Number((o as Meta)?.metadata?.resourceVersion ?? 0);
    if (rv > maxRv) maxRv = rv;
  };
  const done = async (extra: Partial<BulkResult> = {}): Promise<BulkResult> => {
    const seconds = (performance.now() - t0) / 1000;
    const lastWriteAt = Date.now();
    if (cmd.sentinelPort !== undefined) await sentinelPort(api, cmd.sentinelPort);
    return { seconds, writes, maxRv, lastWriteAt, ...extra };
  };
  if ((await api.find(`/api/v1/namespaces/${BENCH_NS}`)) === undefined)
    await api.post('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: BENCH_NS } });

  switch (cmd.op) {
    case 'create':
      await pool(cmd.to - cmd.from, cmd.concurrency, async (j) => {
        const i = cmd.from + j;
        seen(await write(() => api.createOrReplace(SVC, bulkService(i) as Meta)));
        seen(await write(() => api.createOrReplace(EPS, bulkSlice(i, cmd.endpoints) as Meta)));
      });
      return done();
    case 'delete':
      await pool(cmd.to - cmd.from, cmd.concurrency, async (j) => {
        const i = cmd.from + j;
        for (const p of [`${EPS}/svc-${i}-1`, `${SVC}/svc-${i}`]) {
          try {
            seen(await write(() => api.delete(p)));
          } catch (err) {
            if (!isStatus(err, 404)) throw err;
          }
        }
      });
      return done();
    case 'change': {
      // Service (c * 7919) mod N: distinct Services for count <= N (7919 is prime), spread out.
      await pool(cmd.count, cmd.concurrency, async (c) => {
        const i = (c * 7919) % cmd.services;
        const s = bulkSlice(i, cmd.endpoints, { endpoint: c % cmd.endpoints, k: c }) as { endpoints: unknown };
        seen(await write(() => api.patch(`${EPS}/svc-${i}-1`, { endpoints: s.endpoints })));
      });
      return done();
    }
    case 'sentinel': {
      const svc = await write(() =>
        api.createOrReplace(SVC, {
          ...(bulkService(0) as Meta),
          metadata: { name: 'sentinel', namespace: BENCH_NS },
        } as Meta),
      );
      seen(svc);
      seen(
        await write(() =>
          api.createOrReplace(EPS, {
            apiVersion: 'discovery.k8s.io/v1',
            kind: 'EndpointSlice',
            metadata: {
              name: 'sentinel-1',
              namespace: BENCH_NS,
              labels: {
                'kubernetes.io/service-name': 'sentinel',
                'endpointslice.kubernetes.io/managed-by': 'sluice-bench',
              },
            },
            addressType: 'IPv4',
            ports: [{ name: 'tcp', port: cmd.port, protocol: 'TCP' }],
            endpoints: [{ addresses: [cmd.ip], conditions: { ready: true }, nodeName: 'node2' }],
          } as Meta),
        ),
      );
      return done({ clusterIP: svc.spec?.clusterIP });
    }
    case 'sentinel-port':
      seen(await sentinelPort(api, cmd.port));
      return done();
  }
}

function sentinelPort(api: KubeApi, port: number): Promise<unknown> {
  return write(() => api.patch(`${EPS}/sentinel-1`, { ports: [{ name: 'tcp', port, protocol: 'TCP' }] }));
}

if (process.argv[1]?.endsWith('bulk-services.js')) {
  const api = KubeApi.fromFile(process.argv[2]);
  runBulk(api, JSON.parse(process.argv[3]) as BulkCommand)
    .then((r) => process.stdout.write(JSON.stringify(r) + '\n'))
    .catch((err: unknown) => {
      process.stderr.write(`bulk-services: ${(err as Error).message}\n`);
      process.exitCode = 1;
    })
    .finally(() => api.close());
}
