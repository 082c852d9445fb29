// The policy truth table against a REAL API server: the same world (3 namespaces x 3 pods over two
// lab nodes) and the same 240 generated Kubernetes NetworkPolicy cases as conformance.test.ts, but
// the lab is made with `--kubernetes`: the world's objects, each case's policies and its label
// changes go through kube-apiserver, the agents read them with the Kubernetes datastore, and every
// pod-to-pod probe is compared with the reference evaluator.
//
// The test process reaches the API server through `kubectl proxy --unix-socket` running inside the
// lab's control-plane namespace (the server's address exists only in the lab). A case is in force
// when every agent's datapath reflects the resourceVersion of the last write of each kind
// (`syncedRevision` in its status file, per kind).
//
// Needs root and the Kubernetes binaries (`npm run build:kubernetes`); without the binaries it
// skips with a message, unless SLUICE_REQUIRE_KUBERNETES=1 (then it fails).
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { labDown, labUp, agentStatusPath } from '../../src/lab/lab.js';
import { NETNS_ANNOTATION } from '../../src/lab/kubelet.js';
import { BIN_DIR, kubeLabPossible, kubeLabReady } from '../lab/kube-lab.js';
import { WORLD_NAMESPACES, WORLD_PODS, generateCases, makeWorld, probeMatrix, type Case, type Probe } from './cases.js';
import type { RefWorld } from './reference.js';
import { Prober, probeWith, runCasesWith, worldFixture } from './world-lab.js';

const LAB = 'tpolk8s';
const NODES = 2;
const TOOLS = ['ip', 'bridge', 'nsenter', 'ethtool', 'sh', 'bash', 'openssl'];
const quiet = { out: () => undefined, err: (l: string) => process.stderr.write(l + '\n') };

let tmp = '';
let proxy: ChildProcess | undefined;
let socket = '';
let world: RefWorld;
const probers = new Map<string, Prober>();
const pods = new Map<string, { ip: string; netns: string }>();

interface ApiObject {
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  status?: { podIP?: string };
}

/** One request to the API server through the lab's `kubectl proxy`. */
function api<T = ApiObject>(
  method: string,
  urlPath: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<T> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: socket,
        path: urlPath,
        method,
        headers: payload ? { 'Content-Type': contentType, 'Content-Length': payload.length } : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          if ((res.statusCode ?? 500) >= 300)
            reject(new Error(`${method} ${urlPath}: HTTP ${res.statusCode}: ${text}`));
          else resolve(JSON.parse(text) as T);
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const npPath = (ns: string, name?: string): string =>
  `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies${name ? `/${name}` : ''}`;
const podNs = new Map(WORLD_PODS.map((p) => [p.name, p.namespace]));
const originalPodLabels = new Map(WORLD_PODS.map((p) => [p.name, p.labels]));
const originalNsLabels = new Map(WORLD_NAMESPACES.map((n) => [n.name, n.labels]));

/** Replaces an object's labels (a JSON patch: the labels are exactly these afterwards). */
async function setLabels(kind: 'Pod' | 'Namespace', name: string, labels: Record<string, string>): Promise<number> {
  const url = kind === 'Pod' ? `/api/v1/namespaces/${podNs.get(name)}/pods/${name}` : `/api/v1/namespaces/${name}`;
  const o = await api(
    'PATCH',
    url,
    [{ op: 'add', path: '/metadata/labels', value: labels }],
    'application/json-patch+json',
  );
  return Number(o.metadata.resourceVersion);
}

/** Waits until every agent's datapath reflects these resourceVersions, per kind. */
async function programmed(want: Map<string, number>): Promise<void> {
  for (const [kind, rv] of want) assert.ok(Number.isSafeInteger(rv) && rv > 0, `a revision to wait for: ${kind}=${rv}`);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const behind: string[] = [];
    for (let i = 1; i <= NODES; i++) {
      let synced = '';
      try {
        synced =
          (JSON.parse(fs.readFileSync(agentStatusPath(LAB, `node${i}`), 'utf8')) as { syncedRevision?: string })
            .syncedRevision ?? '';
      } catch {
        // being rewritten
      }
      for (const [kind, rv] of want) {
        const have = Number(new RegExp(`(?:^|,)${kind}=(\\d+)`).exec(synced)?.[1] ?? 0);
        if (have < rv) behind.push(`node${i} ${kind} at ${have}, want ${rv}`);
      }
    }
    if (behind.length === 0) return;
    if (Date.now() > deadline) throw new Error(`agents not programmed: ${behind.join('; ')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let applied: Case | undefined;

// A policy that selects nothing (its namespace has no pods): written to order the agents' view.
const MARKER_NS = 'sluice-marker';
let markerWrites = 0;

async function touchMarker(): Promise<number> {
  const o = await api(
    'PATCH',
    npPath(MARKER_NS, 'marker'),
    { metadata: { annotations: { 'sluice.test/write': String(++markerWrites) } } },
    'application/merge-patch+json',
  );
  return Number(o.metadata.resourceVersion);
}

async function applyCase(c: Case): Promise<void> {
  const want = new Map<string, number>();
  const note = (kind: string, rv: number): void => void want.set(kind, Math.max(want.get(kind) ?? 0, rv));
  if (applied) {
    for (const p of applied.policies) {
      const m = (p as ApiObject).metadata;
      await api('DELETE', npPath(m.namespace ?? 'default', m.name));
    }
    // A NetworkPolicy's DELETE answers with a Status, not the revision of the deletion; a write to
    // the marker policy after it gives one that the agents reach only once they saw the deletions.
    if (applied.policies.length) note('NetworkPolicy', await touchMarker());
    for (const m of applied.mutations ?? []) {
      if (m.kind === 'podLabels') note('Pod', await setLabels('Pod', m.target, originalPodLabels.get(m.target)!));
      else note('Namespace', await setLabels('Namespace', m.target, originalNsLabels.get(m.target)!));
    }
  }
  applied = c;
  for (const p of c.policies) {
    const o = await api('POST', npPath((p as ApiObject).metadata.namespace ?? 'default'), p);
    note('NetworkPolicy', Number(o.metadata.resourceVersion));
  }
  await programmed(want);
  if (c.mutations?.length) {
    const after = new Map<string, number>();
    for (const m of c.mutations) {
      const kind = m.kind === 'podLabels' ? 'Pod' : 'Namespace';
      after.set(kind, Math.max(after.get(kind) ?? 0, await setLabels(kind, m.target, m.labels)));
    }
    await programmed(after);
  }
}

const probeAll = (probes: Probe[], timeoutMs: number): Promise<Map<string, boolean>> =>
  probeWith(probers, (name) => pods.get(name)!.ip, probes, timeoutMs);

const ready = (t: TestContext): boolean => kubeLabReady(t, TOOLS);

before(async () => {
  if (!kubeLabPossible(TOOLS)) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-polk8s-'));
  await labDown(LAB, quiet);
  const code = await labUp({
    name: LAB,
    nodes: NODES,
    kubernetes: true,
    files: [worldFixture(tmp, NODES)],
    out: quiet,
  });
  assert.equal(code, 0, 'lab up --kubernetes');
  socket = path.join(tmp, 'api.sock');
  proxy = spawn(
    'nsenter',
    [
      `--net=/run/netns/sl-${LAB}-cp`,
      path.join(BIN_DIR ?? '', 'kubectl'),
      `--kubeconfig=/run/sluice/lab-${LAB}/kubernetes/admin.kubeconfig`,
      'proxy',
      `--unix-socket=${socket}`,
    ],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 20_000;
  while (!fs.existsSync(socket)) {
    assert.ok(Date.now() < deadline, 'kubectl proxy made its socket');
    await new Promise((r) => setTimeout(r, 50));
  }
  await api('POST', '/api/v1/namespaces', { metadata: { name: MARKER_NS } });
  await api('POST', npPath(MARKER_NS), {
    metadata: { name: 'marker' },
    spec: { podSelector: {}, policyTypes: ['Ingress'] },
  });
  for (const p of WORLD_PODS) {
    const o = await api('GET', `/api/v1/namespaces/${p.namespace}/pods/${p.name}`);
    const netns = o.metadata.annotations?.[NETNS_ANNOTATION];
    assert.ok(o.status?.podIP && netns, `pod ${p.namespace}/${p.name} runs (${JSON.stringify(o.status)})`);
    pods.set(p.name, { ip: o.status.podIP, netns });
  }
  world = makeWorld(Object.fromEntries([...pods].map(([name, p]) => [name, p.ip])));
  for (const [name, p] of pods) probers.set(name, new Prober(p.netns));
  await Promise.all([...probers.values()].map((p) => p.ready));
});

after(async () => {
  for (const p of probers.values()) p.close();
  if (proxy && proxy.exitCode === null) proxy.kill('SIGKILL');
  if (kubeLabPossible(TOOLS)) await labDown(LAB, quiet);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('no policy: every pod reaches every other pod on every port, TCP and UDP', async (t) => {
  if (!ready(t)) return;
  const r = await probeAll(probeMatrix(world), 3000);
  assert.deepEqual(
    [...r].filter(([, ok]) => !ok).map(([k]) => k),
    [],
  );
});

test('generated NetworkPolicy cases through the real API server agree with the reference evaluator', async (t) => {
  if (!ready(t)) return;
  const cases = generateCases(world, { seed: 1 });
  assert.ok(cases.length >= 200, `${cases.length} cases`);
  const r = await runCasesWith(world, cases, applyCase, probeAll);
  t.diagnostic(`${cases.length} cases, ${r.probes} probes (${r.allowed} allowed, ${r.probes - r.allowed} denied)`);
  assert.deepEqual(r.failures.slice(0, 20), []);
});
