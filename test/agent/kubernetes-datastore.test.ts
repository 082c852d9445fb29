// Tests of the Kubernetes API datastore against the fake API server (HTTPS on 127.0.0.1, no
// privileges): the initial list and sync, live changes, watch restarts that resume from the last
// resourceVersion, 410 Gone relists that deliver only real differences, a missing CRD, errors
// and backoff, stopping, resuming a watch, and where the API server is found (the
// kubernetes-services-endpoint override).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { resolveApiServer } from '../../src/agent/datastore/endpoint.js';
import { KubernetesDatastore, type KubernetesDatastoreOptions } from '../../src/agent/datastore/kubernetes.js';
import {
  AGENT_KINDS,
  DatastoreError,
  isDatastoreError,
  type DatastoreLogger,
  type Kind,
  type KubeObject,
  type WatchEvent,
} from '../../src/agent/datastore/types.js';
import { FakeApiServer, type FakeApiServerOptions, type FakeObject } from '../../src/testing/fake-apiserver.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const TOKEN = 'sluice-test-token';

async function startServer(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
  const s = await FakeApiServer.start({ token: TOKEN, ...opts });
  cleanups.push(() => s.close());
  return s;
}

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-k8s-ds-'));
  cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

interface LogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  obj: object;
}

function captureLogger(): { logger: DatastoreLogger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at =
    (level: LogLine['level']) =>
    (obj: object, msg: string): void => {
      lines.push({ level, msg, obj });
    };
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines };
}

const FAST: KubernetesDatastoreOptions['backoff'] = { initialMs: 10, maxMs: 100, jitter: 0, resetAfterMs: 1000 };

function datastore(
  server: FakeApiServer,
  extra: Partial<KubernetesDatastoreOptions> = {},
): { ds: KubernetesDatastore; lines: LogLine[] } {
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig());
  const { logger, lines } = captureLogger();
  const ds = new KubernetesDatastore({ kubeConfig: kc, logger, backoff: FAST, ...extra });
  cleanups.push(() => ds.close());
  return { ds, lines };
}

/** What a watch delivered, in order: object events and onSynced calls. */
class Recorder {
  readonly entries: Array<{ type: string; kind?: Kind; key?: string; rv?: string; object?: KubeObject }> = [];
  readonly errors: Error[] = [];

  readonly handler = (e: WatchEvent): void => {
    const m = e.object.metadata;
    const key = m?.namespace ? `${m.namespace}/${m.name}` : (m?.name ?? '');
    this.entries.push({ type: e.type, kind: e.kind, key, rv: e.resourceVersion, object: e.object });
  };

  readonly opts = {
    onSynced: (rv: string): void => void this.entries.push({ type: 'SYNCED', rv }),
    onError: (err: Error): void => void this.errors.push(err),
  };

  /** `TYPE Kind ns/name` lines from `from` on (SYNCED lines as `SYNCED`). */
  lines(from = 0): string[] {
    return this.entries.slice(from).map((e) => (e.type === 'SYNCED' ? 'SYNCED' : `${e.type} ${e.kind} ${e.key}`));
  }

  objectLines(from = 0): string[] {
    return this.lines(from).filter((l) => l !== 'SYNCED');
  }

  get length(): number {
    return this.entries.length;
  }
}

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const settle = (ms = 150): Promise<void> => new Promise((r) => setTimeout(r, ms));

function withTimeout<T>(p: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]);
}

function svc(name: string, clusterIP: string, namespace = 'default'): FakeObject {
  return {
    metadata: { name, namespace, labels: { app: name } },
    spec: { clusterIP, ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] },
  };
}

function slice(name: string, service: string, ips: string[], namespace = 'default'): FakeObject {
  return {
    metadata: { name, namespace, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false } })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

/** One object of every kind the agent watches, and a Deployment it does not. */
function seed(s: FakeApiServer, opts: { felix?: boolean } = {}): void {
  s.create('Namespace', { metadata: { name: 'default' } });
  s.create('Node', { metadata: { name: 'node-1' }, spec: { podCIDR: '10.244.1.0/24' } });
  s.create('Pod', { metadata: { name: 'web-1', namespace: 'default' }, spec: { nodeName: 'node-1' } });
  s.create('Service', svc('web', '10.96.0.10'));
  s.create('EndpointSlice', slice('web-abc', 'web', ['10.244.1.5']));
  s.create('NetworkPolicy', { metadata: { name: 'deny-all', namespace: 'default' }, spec: { podSelector: {} } });
  if (opts.felix !== false)
    s.create('FelixConfiguration', { metadata: { name: 'default' }, spec: { bpfEnabled: true } });
  s.create('Deployment', { metadata: { name: 'web', namespace: 'default' }, spec: { replicas: 1 } });
}

const SEEDED = [
  'ADDED Namespace default',
  'ADDED Node node-1',
  'ADDED Pod default/web-1',
  'ADDED Service default/web',
  'ADDED EndpointSlice default/web-abc',
  'ADDED NetworkPolicy default/deny-all',
  'ADDED FelixConfiguration default',
];

async function syncedWatch(
  ds: KubernetesDatastore,
  rec: Recorder,
  kinds: readonly Kind[] = AGENT_KINDS,
): Promise<ReturnType<KubernetesDatastore['watch']>> {
  const w = ds.watch(kinds, rec.handler, rec.opts);
  await withTimeout(w.synced, 'the initial sync');
  return w;
}

test('initial list: ADDED for every object of every kind, then one SYNCED', async () => {
  const s = await startServer();
  seed(s);
  const { ds } = datastore(s);
  const rec = new Recorder();
  const w = await syncedWatch(ds, rec);

  const lines = rec.lines();
  assert.equal(lines[lines.length - 1], 'SYNCED', 'SYNCED comes after the initial objects');
  assert.equal(lines.filter((l) => l === 'SYNCED').length, 1);
  assert.deepEqual(lines.slice(0, -1).sort(), [...SEEDED].sort());
  for (const e of rec.entries.filter((x) => x.object)) {
    assert.equal(e.object?.kind, e.kind, 'object.kind is set (list items have none on the wire)');
    assert.equal(e.rv, e.object?.metadata?.resourceVersion);
  }
  const felix = rec.entries.find((e) => e.kind === 'FelixConfiguration')?.object;
  assert.equal(felix?.apiVersion, 'projectcalico.org/v3', 'presented as the lab stores it');
  assert.equal(rec.entries.find((e) => e.kind === 'EndpointSlice')?.object?.apiVersion, 'discovery.k8s.io/v1');

  // One list and one watch per kind, from the list's resourceVersion, with bookmarks.
  assert.equal(s.countRequests({ verb: 'list' }), AGENT_KINDS.length);
  await s.waitForWatches(AGENT_KINDS.length);
  for (const r of s.requests.filter((x) => x.verb === 'watch')) {
    assert.equal(r.query.resourceVersion, s.resourceVersion);
    assert.equal(r.query.allowWatchBookmarks, 'true');
    assert.ok(Number(r.query.timeoutSeconds) >= 300);
  }
  assert.equal(w.resourceVersion, AGENT_KINDS.map((k) => `${k}=${s.resourceVersion}`).join(','));
  assert.equal(s.countRequests({ kind: 'Deployment' }), 0);
});

test('lists are paged with limit/continue; a continue token that expires restarts the list', async () => {
  const s = await startServer();
  for (let i = 0; i < 5; i++) s.create('Service', svc(`s${i}`, `10.96.0.${10 + i}`));
  let injected = false;
  s.onRequest = (r) => {
    // Between the first and second page: a change, then compaction, so the token's snapshot is gone.
    if (r.kind === 'Service' && r.verb === 'list' && r.query.continue && !injected) {
      injected = true;
      s.create('Service', svc('late', '10.96.0.99'));
      s.compact();
    }
  };
  const { ds, lines } = datastore(s, { pageSize: 2 });
  const rec = new Recorder();
  await syncedWatch(ds, rec, ['Service']);

  assert.deepEqual(
    rec.objectLines().sort(),
    ['s0', 's1', 's2', 's3', 's4', 'late'].map((n) => `ADDED Service default/${n}`).sort(),
  );
  const lists = s.requests.filter((r) => r.verb === 'list');
  assert.deepEqual(
    lists.map((r) => [r.query.limit, r.query.continue ? 'continue' : 'first', r.status]),
    [
      ['2', 'first', 200],
      ['2', 'continue', 410],
      ['2', 'first', 200],
      ['2', 'continue', 200],
      ['2', 'continue', 200],
    ],
  );
  assert.ok(lines.some((l) => /continue token expired/.test(l.msg)));
  const page = await ds.list('Service');
  assert.equal(page.items.length, 6);
  assert.equal(page.resourceVersion, s.resourceVersion);
});

test('live changes arrive as they happen; waitFor follows bookmarks on quiet kinds', async () => {
  const s = await startServer();
  seed(s);
  const { ds } = datastore(s);
  const rec = new Recorder();
  const w = await syncedWatch(ds, rec);
  await s.waitForWatches(AGENT_KINDS.length);
  const mark = rec.length;

  s.create('Service', svc('api', '10.96.0.20'));
  const ep = s.get('EndpointSlice', 'default', 'web-abc') as FakeObject;
  s.update('EndpointSlice', { ...ep, endpoints: [{ addresses: ['10.244.1.6'], conditions: { ready: true } }] });
  s.delete('Pod', 'default', 'web-1');
  s.update('FelixConfiguration', { metadata: { name: 'default' }, spec: { bpfEnabled: false } });
  await until(() => rec.length >= mark + 4, 'four live events');
  // Each kind is its own stream: the order across kinds is the order of arrival.
  assert.deepEqual(rec.lines(mark).sort(), [
    'ADDED Service default/api',
    'DELETED Pod default/web-1',
    'MODIFIED EndpointSlice default/web-abc',
    'MODIFIED FelixConfiguration default',
  ]);
  const live = rec.entries.slice(mark);
  const deleted = live.find((e) => e.type === 'DELETED');
  assert.equal(
    deleted?.rv,
    deleted?.object?.metadata?.resourceVersion,
    'DELETED: the event and object carry one revision',
  );
  assert.ok(Number(deleted?.rv) > Number(live.find((e) => e.kind === 'EndpointSlice')?.rv), 'the deletion revision');
  const felix = live.find((e) => e.kind === 'FelixConfiguration')?.object as { spec?: { bpfEnabled?: boolean } };
  assert.equal(felix.spec?.bpfEnabled, false, 'the new state');

  // Namespaces, Nodes and NetworkPolicies saw no change: only bookmarks move them to the latest revision.
  s.sendBookmarks();
  await withTimeout(w.waitFor(s.resourceVersion, 5000), 'waitFor');
  assert.equal(w.resourceVersion, AGENT_KINDS.map((k) => `${k}=${s.resourceVersion}`).join(','));
  assert.equal(s.countRequests({ verb: 'list' }), AGENT_KINDS.length, 'nothing was listed again');
});

test('a dropped watch resumes from the last resourceVersion: no relist, no duplicates', async () => {
  const s = await startServer();
  seed(s);
  const { ds, lines } = datastore(s);
  const rec = new Recorder();
  const w = await syncedWatch(ds, rec);
  await s.waitForWatches(AGENT_KINDS.length);
  s.update('Service', {
    ...svc('web', '10.96.0.10'),
    metadata: { name: 'web', namespace: 'default', labels: { v: '2' } },
  });
  await until(() => rec.objectLines().length === SEEDED.length + 1, 'the first change');
  const before = new Map(w.stats().map((x) => [x.kind, x.resourceVersion]));
  const listsBefore = s.countRequests({ verb: 'list' });
  const watchesBefore = s.requests.length;
  const mark = rec.length;

  // Cut every connection, then change things before the agent can reconnect (same tick).
  assert.equal(s.dropWatches(), AGENT_KINDS.length);
  s.create('Service', svc('gap', '10.96.0.30'));
  s.delete('EndpointSlice', 'default', 'web-abc');
  await until(() => rec.length >= mark + 2, 'the changes made while disconnected');
  await s.waitForWatches(AGENT_KINDS.length);
  s.create('Pod', { metadata: { name: 'after', namespace: 'default' } });
  await until(() => rec.length >= mark + 3, 'a change after reconnecting');
  await settle();

  // Kinds are separate streams: their order relative to each other is not defined.
  assert.deepEqual(rec.lines(mark).slice(0, 2).sort(), [
    'ADDED Service default/gap',
    'DELETED EndpointSlice default/web-abc',
  ]);
  assert.deepEqual(rec.lines(mark).slice(2), ['ADDED Pod default/after']);
  assert.equal(s.countRequests({ verb: 'list' }), listsBefore, 'no relist');
  const rewatches = s.requests.slice(watchesBefore).filter((r) => r.verb === 'watch');
  assert.equal(rewatches.length, AGENT_KINDS.length);
  for (const r of rewatches) assert.equal(r.query.resourceVersion, before.get(r.kind as Kind), `${r.kind} resumed`);
  for (const st of w.stats()) assert.equal(st.drops, 1, `${st.kind} counted one drop`);
  assert.ok(lines.some((l) => l.level === 'info' && /resuming from resourceVersion/.test(l.msg)));
  assert.deepEqual(rec.errors, []);
});

test('a watch the server ends (its timeout) resumes at once, from the last bookmark', async () => {
  const s = await startServer();
  seed(s);
  const { ds } = datastore(s);
  const rec = new Recorder();
  const w = await syncedWatch(ds, rec, ['Namespace', 'Service']);
  await s.waitForWatches(2);
  s.create('Service', svc('other', '10.96.0.40'));
  await until(() => rec.objectLines().length === 3, 'the new Service');
  s.sendBookmarks();
  await w.waitFor(s.resourceVersion);
  const at = s.resourceVersion;
  const from = s.requests.length;
  s.endWatches();
  await until(() => s.activeWatches() === 2 && s.requests.length >= from + 2, 're-watches');
  assert.deepEqual(
    s.requests
      .slice(from)
      .map((r) => `${r.verb} ${r.kind} ${r.query.resourceVersion}`)
      .sort(),
    [`watch Namespace ${at}`, `watch Service ${at}`],
  );
  await settle(50);
  assert.equal(rec.objectLines().length, 3, 'nothing re-delivered');
  for (const st of w.stats()) assert.equal(st.drops, 0);
});

for (const mode of ['error-event', 'http'] as const) {
  test(`410 Gone (${mode === 'http' ? 'HTTP 410' : 'ERROR event'}) relists and delivers only the real differences`, async () => {
    const s = await startServer({ expiredWatch: mode });
    seed(s);
    s.create('Service', svc('a', '10.96.1.1'));
    s.create('Service', svc('b', '10.96.1.2'));
    s.create('Service', svc('c', '10.96.1.3'));
    const { ds, lines } = datastore(s);
    const rec = new Recorder();
    const w = await syncedWatch(ds, rec);
    await s.waitForWatches(AGENT_KINDS.length);
    const lastB = rec.entries.find((e) => e.key === 'default/b')?.object;
    const listsBefore = s.countRequests({ verb: 'list' });
    const mark = rec.length;
    const watchFrom = s.requests.length;

    // The gap: disconnected, changes, and the history compacted away.
    s.dropWatches();
    s.update('Service', { ...svc('a', '10.96.1.1'), spec: { clusterIP: '10.96.1.1', ports: [{ port: 443 }] } });
    s.delete('Service', 'default', 'b');
    s.create('Service', svc('d', '10.96.1.4'));
    s.create('Service', svc('e', '10.96.1.5'));
    s.delete('Service', 'default', 'e'); // born and gone within the gap: never seen
    const c = s.get('Service', 'default', 'c') as FakeObject;
    s.compact();

    await until(() => w.stats().every((x) => x.relists === 1), 'every kind relisted');
    await until(
      () => rec.lines(mark).filter((l) => l === 'SYNCED').length === AGENT_KINDS.length,
      'onSynced per relist',
    );
    await settle();
    assert.deepEqual(rec.objectLines(mark), [
      'DELETED Service default/b',
      'MODIFIED Service default/a',
      'ADDED Service default/d',
    ]);
    const del = rec.entries.slice(mark).find((e) => e.type === 'DELETED');
    assert.deepEqual(
      (del?.object as { spec?: unknown }).spec,
      (lastB as { spec?: unknown }).spec,
      'a deletion during the gap carries the last known state',
    );
    assert.equal(s.countRequests({ verb: 'list' }), listsBefore + AGENT_KINDS.length, 'one relist per kind');
    const refused = s.requests.slice(watchFrom).filter((r) => r.verb === 'watch' && r.kind === 'Service')[0];
    assert.equal(refused.status, mode === 'http' ? 410 : 200);
    assert.ok(lines.some((l) => /expired \(410 Gone\): relisting/.test(l.msg)));
    assert.ok(lines.some((l) => /relisted services: 1 added, 1 modified, 1 deleted/.test(l.msg)));
    for (const st of w.stats()) assert.equal(st.expired, 1);
    assert.equal(c.metadata.resourceVersion, s.get('Service', 'default', 'c')?.metadata.resourceVersion);

    // After the relist the watch continues from the list's revision.
    await s.waitForWatches(AGENT_KINDS.length);
    const next = rec.length;
    s.delete('Service', 'default', 'c');
    await until(() => rec.length > next, 'a live change after the relist');
    assert.deepEqual(rec.lines(next), ['DELETED Service default/c']);
  });
}

test('a missing FelixConfiguration CRD (404) holds up nothing; the objects arrive once it is installed', async () => {
  const s = await startServer({ notInstalled: ['FelixConfiguration'] });
  seed(s, { felix: false });
  const { ds, lines } = datastore(s, { missingApiRetryMs: 30 });
  const rec = new Recorder();
  const w = await syncedWatch(ds, rec);

  assert.deepEqual(rec.objectLines().sort(), SEEDED.filter((l) => !l.includes('Felix')).sort());
  const felix = w.stats().find((x) => x.kind === 'FelixConfiguration');
  assert.equal(felix?.apiMissing, true);
  assert.equal(felix?.synced, true);
  const warns = lines.filter((l) => l.level === 'warn' && /FelixConfiguration API/.test(l.msg));
  assert.equal(warns.length, 1, 'said once');
  assert.match(warns[0].msg, /\(felixconfigurations\.crd\.projectcalico\.org\/v1\) is not served/);
  await s.waitForWatches(AGENT_KINDS.length - 1);

  // The other kinds keep working meanwhile; the CRD list is retried.
  s.create('Service', svc('while-missing', '10.96.0.50'));
  await until(() => rec.objectLines().includes('ADDED Service default/while-missing'), 'a Service');
  await until(() => s.countRequests({ kind: 'FelixConfiguration', verb: 'list' }) >= 3, 'retries of the CRD list');

  s.install('FelixConfiguration');
  s.create('FelixConfiguration', { metadata: { name: 'default' }, spec: { bpfEnabled: true } });
  await until(() => rec.objectLines().includes('ADDED FelixConfiguration default'), 'the FelixConfiguration');
  assert.ok(lines.some((l) => /is served now/.test(l.msg)));
  await s.waitForWatches(AGENT_KINDS.length);

  // And if the CRD is removed again, its objects go away.
  s.uninstall('FelixConfiguration');
  await until(() => rec.objectLines().includes('DELETED FelixConfiguration default'), 'the deletion');
  await until(() => w.stats().find((x) => x.kind === 'FelixConfiguration')?.apiMissing === true, 'missing again');
  assert.deepEqual(rec.errors, [], 'a missing optional API is not an error');
});

test('errors back off and recover; the handler learns of them through onError', async () => {
  const s = await startServer();
  seed(s);
  s.failNext({ status: 500, verb: 'list', kind: 'Service', count: 3 });
  s.failNext({ status: 403, verb: 'watch', kind: 'EndpointSlice', message: 'endpointslices is forbidden' });
  const { ds, lines } = datastore(s);
  const rec = new Recorder();
  const started = Date.now();
  const w = await syncedWatch(ds, rec);
  await s.waitForWatches(AGENT_KINDS.length);

  assert.deepEqual(rec.objectLines().sort(), [...SEEDED].sort());
  const svcStats = w.stats().find((x) => x.kind === 'Service');
  assert.equal(svcStats?.failures, 3);
  assert.equal(s.countRequests({ kind: 'Service', verb: 'list' }), 4);
  // 10 + 20 + 40 ms of backoff at least.
  assert.ok(Date.now() - started >= 70, 'backed off');
  const codes = rec.errors.map((e) => (isDatastoreError(e) ? e.code : e.message)).sort();
  assert.deepEqual(codes, ['EAPI', 'EAPI', 'EAPI', 'EFORBIDDEN']);
  const forbidden = rec.errors.find((e) => isDatastoreError(e, 'EFORBIDDEN')) as DatastoreError;
  assert.match(forbidden.message, /^watch endpointslices: 403 Forbidden: endpointslices is forbidden: .*ClusterRole/);
  assert.ok(lines.some((l) => l.level === 'warn' && /retrying in \d+ ms/.test(l.msg)));
});

test('refused credentials are reported and retried, and the watch does not claim to be synced', async () => {
  const s = await startServer();
  const kc = new KubeConfig();
  kc.loadFromString(s.kubeconfig('wrong-token'));
  const ds = new KubernetesDatastore({ kubeConfig: kc, backoff: FAST });
  cleanups.push(() => ds.close());
  const rec = new Recorder();
  const w = ds.watch(['Service'], rec.handler, rec.opts);
  await until(() => rec.errors.length >= 2, 'two failures');
  assert.ok(rec.errors.every((e) => isDatastoreError(e, 'EUNAUTHORIZED')));
  w.stop();
  await assert.rejects(w.synced, (e: unknown) => isDatastoreError(e, 'ESTOPPED'));
  await w.closed;
});

test('the handler runs for one event at a time (a promise is awaited); one that throws stops nothing', async () => {
  const s = await startServer();
  for (let i = 0; i < 5; i++) s.create('Service', svc(`s${i}`, `10.96.3.${i}`));
  s.create('Node', { metadata: { name: 'n1' } });
  const { ds } = datastore(s);
  let running = 0;
  let overlapped = false;
  const seen: string[] = [];
  const errors: Error[] = [];
  const w = ds.watch(
    ['Service', 'Node'],
    async (e) => {
      running++;
      if (running > 1) overlapped = true;
      await new Promise((r) => setTimeout(r, 2));
      running--;
      seen.push(`${e.type} ${e.object.metadata?.name}`);
      if (e.object.metadata?.name === 's2') throw new Error('handler failed on s2');
    },
    { onError: (err) => void errors.push(err) },
  );
  await withTimeout(w.synced, 'sync');
  assert.equal(seen.length, 6, 'synced resolves after the handler finished every initial event');
  s.create('Service', svc('s9', '10.96.3.9'));
  await until(() => seen.includes('ADDED s9'), 'a live event after the failure');
  assert.equal(overlapped, false);
  assert.deepEqual(
    errors.map((e) => e.message),
    ['handler failed on s2'],
  );
});

test('stop() closes every connection and no handler runs after it', async () => {
  const s = await startServer();
  seed(s);
  const { ds } = datastore(s);
  const rec = new Recorder();
  const w = await syncedWatch(ds, rec);
  await s.waitForWatches(AGENT_KINDS.length);
  const n = rec.length;
  w.stop();
  await withTimeout(w.closed, 'the watch to close', 2000);
  await until(() => s.activeWatches() === 0, 'the server to see the watches gone');
  s.create('Service', svc('late', '10.96.0.60'));
  await settle(100);
  assert.equal(rec.length, n);
  await assert.rejects(w.waitFor('999999', 100), (e: unknown) => isDatastoreError(e, 'ESTOPPED'));
});

test('a watch resumed with resourceVersion and known objects: no list, then only the difference', async () => {
  const s = await startServer();
  s.create('Service', svc('a', '10.96.2.1'));
  s.create('Service', svc('b', '10.96.2.2'));
  s.create('EndpointSlice', slice('a-1', 'a', ['10.244.0.1']));
  const { ds } = datastore(s);
  const first = new Recorder();
  const w1 = await syncedWatch(ds, first, ['Service', 'EndpointSlice']);
  const known = first.entries.filter((e) => e.object).map((e) => e.object as KubeObject);
  const rv = w1.resourceVersion;
  assert.match(rv, /^Service=\d+,EndpointSlice=\d+$/);
  w1.stop();
  await w1.closed;

  // Changes while nobody watches, then a resumed watch: no list at all.
  s.update('Service', { ...svc('a', '10.96.2.1'), metadata: { name: 'a', namespace: 'default', labels: { x: 'y' } } });
  s.create('EndpointSlice', slice('b-1', 'b', ['10.244.0.2']));
  const lists = s.countRequests({ verb: 'list' });
  const second = new Recorder();
  const w2 = ds.watch(['Service', 'EndpointSlice'], second.handler, { ...second.opts, resourceVersion: rv, known });
  await withTimeout(w2.synced, 'the resumed watch');
  await until(() => second.objectLines().length === 2, 'the catch-up');
  await settle(50);
  assert.deepEqual(second.objectLines().sort(), ['ADDED EndpointSlice default/b-1', 'MODIFIED Service default/a']);
  assert.equal(s.countRequests({ verb: 'list' }), lists);
  w2.stop();
  await w2.closed;

  // Resuming past compaction: a relist, diffed against `known`.
  s.delete('Service', 'default', 'b');
  s.compact();
  const third = new Recorder();
  const w3 = ds.watch(['Service', 'EndpointSlice'], third.handler, { ...third.opts, resourceVersion: rv, known });
  await until(() => w3.stats().every((x) => x.relists === 1), 'relists');
  await until(() => third.objectLines().length === 3, 'the difference');
  await settle(50);
  assert.deepEqual(third.objectLines().sort(), [
    'ADDED EndpointSlice default/b-1',
    'DELETED Service default/b',
    'MODIFIED Service default/a',
  ]);
});

// ---------------------------------------------------------------------------------------------
// Where the API server is

/** What the kubelet injects for the `kubernetes` Service at 10.96.0.1:443. */
const KUBELET_ENV = {
  KUBERNETES_SERVICE_HOST: '10.96.0.1',
  KUBERNETES_SERVICE_PORT: '443',
  KUBERNETES_SERVICE_PORT_HTTPS: '443',
  KUBERNETES_PORT: 'tcp://10.96.0.1:443',
  KUBERNETES_PORT_443_TCP: 'tcp://10.96.0.1:443',
  KUBERNETES_PORT_443_TCP_PROTO: 'tcp',
  KUBERNETES_PORT_443_TCP_PORT: '443',
  KUBERNETES_PORT_443_TCP_ADDR: '10.96.0.1',
};

test('KUBERNETES_SERVICE_HOST/PORT override (kubernetes-services-endpoint): the agent connects there and says so', async () => {
  const s = await startServer();
  seed(s);
  const sa = s.writeServiceAccount(path.join(tmpDir(), 'serviceaccount'));
  // envFrom the ConfigMap replaced the two variables; the kubelet's link variables remain.
  const env = { ...KUBELET_ENV, KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(s.port) };
  const { logger, lines } = captureLogger();
  const ds = KubernetesDatastore.fromEnvironment({ env, serviceAccountDir: sa, logger, backoff: FAST });
  cleanups.push(() => ds.close());

  assert.equal(ds.endpoint?.source, 'in-cluster-override');
  assert.equal(ds.endpoint?.clusterIp, false);
  assert.equal(ds.server, s.url);
  assert.equal(
    ds.description,
    `using API server ${s.url} from KUBERNETES_SERVICE_HOST/PORT (kubernetes-services-endpoint override; ` +
      `the kubelet's default was the ClusterIP 10.96.0.1:443)`,
  );
  assert.deepEqual(
    lines.map((l) => [l.level, l.msg]),
    [['info', ds.description]],
    'logged once, no warning',
  );
  const kc = ds.endpoint?.kubeConfig;
  assert.equal(kc?.getContextObject(kc.getCurrentContext())?.namespace, 'kube-system', 'from the namespace file');

  // It really talks to the fake server, authenticated with the service account's token over TLS
  // verified against the service account's CA.
  const rec = new Recorder();
  await syncedWatch(ds, rec);
  assert.deepEqual(rec.objectLines().sort(), [...SEEDED].sort());
  assert.ok(s.requests.every((r) => r.status !== 401));
});

test("the kubelet's ClusterIP values are used, with a warning to create the ConfigMap", async () => {
  const s = await startServer();
  const sa = s.writeServiceAccount(path.join(tmpDir(), 'serviceaccount'));
  // A pod whose kubernetes Service "ClusterIP" is the fake server itself.
  const env = {
    KUBERNETES_SERVICE_HOST: '127.0.0.1',
    KUBERNETES_SERVICE_PORT: String(s.port),
    KUBERNETES_PORT: `tcp://127.0.0.1:${s.port}`,
  };
  const e = resolveApiServer({ env, serviceAccountDir: sa });
  assert.equal(e.source, 'in-cluster');
  assert.equal(e.clusterIp, true);
  assert.match(e.description, /the kubelet's default: the ClusterIP of the kubernetes Service/);
  assert.equal(e.warnings.length, 1);
  assert.match(e.warnings[0], /kubernetes-services-endpoint/);

  const { logger, lines } = captureLogger();
  const ds = new KubernetesDatastore({ endpoint: e, logger, backoff: FAST });
  cleanups.push(() => ds.close());
  assert.deepEqual(
    lines.map((l) => l.level),
    ['info', 'warn'],
  );
  const page = await ds.list('Service');
  assert.deepEqual(page.items, []);

  // Without the kubelet's link variables the origin is unknown, and the log says that.
  const bare = resolveApiServer({
    env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '6443' },
    serviceAccountDir: sa,
  });
  assert.equal(bare.clusterIp, undefined);
  assert.match(bare.description, /^using API server https:\/\/127\.0\.0\.1:6443 from .*origin unknown/);
  // IPv6 addresses are bracketed.
  const v6 = resolveApiServer({
    env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' },
    serviceAccountDir: sa,
  });
  assert.equal(v6.server, 'https://[fd00::1]:6443');
});

test('an explicit kubeconfig wins: --kubeconfig over KUBECONFIG over in-cluster', async () => {
  const s = await startServer();
  const dir = tmpDir();
  const sa = s.writeServiceAccount(path.join(dir, 'serviceaccount'));
  const file = s.writeKubeconfig(path.join(dir, 'kubeconfig'));
  const env = { ...KUBELET_ENV, KUBECONFIG: `${path.join(dir, 'absent')}${path.delimiter}${file}` };

  const fromEnv = resolveApiServer({ env, serviceAccountDir: sa });
  assert.equal(fromEnv.source, 'kubeconfig-env');
  assert.equal(fromEnv.server, s.url);
  assert.equal(fromEnv.description, `using API server ${s.url} from kubeconfig ${file} (KUBECONFIG, context fake)`);

  const other = path.join(dir, 'other');
  fs.writeFileSync(other, s.kubeconfig().replace(s.url, 'https://127.0.0.1:1'));
  const fromFlag = resolveApiServer({ kubeconfig: other, env, serviceAccountDir: sa });
  assert.equal(fromFlag.source, 'kubeconfig-flag');
  assert.equal(fromFlag.server, 'https://127.0.0.1:1');

  const ds = new KubernetesDatastore({ endpoint: fromEnv, backoff: FAST });
  cleanups.push(() => ds.close());
  assert.equal((await ds.list('Node')).resourceVersion, s.resourceVersion);
});

test('no usable configuration: ECONFIG errors that say what is missing', () => {
  const nowhere = path.join(os.tmpdir(), 'sluice-no-such-serviceaccount');
  assert.throws(
    () => resolveApiServer({ env: {}, serviceAccountDir: nowhere }),
    (e: unknown) => isDatastoreError(e, 'ECONFIG') && /--kubeconfig or KUBECONFIG/.test(e.message),
  );
  assert.throws(
    () =>
      resolveApiServer({
        env: { KUBERNETES_SERVICE_HOST: '10.0.0.5', KUBERNETES_SERVICE_PORT: '6443' },
        serviceAccountDir: nowhere,
      }),
    (e: unknown) => isDatastoreError(e, 'ECONFIG') && e.message.includes(path.join(nowhere, 'token')),
  );
  assert.throws(
    () => resolveApiServer({ env: { KUBERNETES_SERVICE_HOST: '10.0.0.5', KUBERNETES_SERVICE_PORT: 'https' } }),
    (e: unknown) => isDatastoreError(e, 'ECONFIG') && /is not a port/.test(e.message),
  );
  assert.throws(
    () => resolveApiServer({ kubeconfig: path.join(nowhere, 'kubeconfig') }),
    (e: unknown) => isDatastoreError(e, 'ECONFIG') && /not found/.test(e.message),
  );
});
