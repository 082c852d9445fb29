// Kubernetes NetworkPolicy conformance with real traffic: 3 namespaces x 3 pods spread over two
// lab nodes, each serving TCP and UDP on ports 80 and 81. For every generated case the policies
// (and label changes, applied after the policies are in force) go into the lab's datastore, the
// agents program them, and all 288 pod-to-pod probes are compared with the independent reference
// evaluator (test/policy/reference.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { labDown, labUp, agentStatusPath, agentLogPath } from '../../src/lab/lab.js';
import { Topology } from '../../src/lab/topology.js';
import { FileStore } from '../../src/lab/store.js';
import { storeDir } from '../../src/lab/controller.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import {
  WORLD_NAMESPACES,
  WORLD_PODS,
  expected,
  generateCases,
  makeWorld,
  probeMatrix,
  type Case,
  type Probe,
} from './cases.js';
import type { RefWorld } from './reference.js';
import { validateObject } from '../../src/lab/resources.js';
import { storedKind } from '../../src/lab/store.js';
import { Prober, probeWith, runCasesWith, worldFixture } from './world-lab.js';

const LAB = 'tpolicy';
const NODES = 2;
const quiet = { out: () => undefined, err: (l: string) => process.stderr.write(l + '\n') };

let topo: Topology;
let store: FileStore;
let world: RefWorld;
let tmp: string;
const probers = new Map<string, Prober>();

/** Waits until every agent's datapath reflects the store's current revision. */
async function programmed(): Promise<void> {
  store.refresh();
  const target = Number((await store.list('Pod')).resourceVersion);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const behind = topo.nodes.filter((n) => {
      try {
        const st = JSON.parse(readFileSync(agentStatusPath(LAB, n.name), 'utf8')) as { syncedRevision?: string };
        return Number(st.syncedRevision ?? 0) < target;
      } catch {
        return true;
      }
    });
    if (behind.length === 0) return;
    if (Date.now() > deadline)
      throw new Error(`agents not at revision ${target}: ${behind.map((n) => n.name).join(', ')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const podNs = new Map(WORLD_PODS.map((p) => [p.name, p.namespace]));
/** The lab names a pod's namespace `<namespace>-<name>` outside the default namespace. */
const labPod = (name: string) => topo.pod(`${podNs.get(name)}-${name}`);

const originalPodLabels = new Map(WORLD_PODS.map((p) => [p.name, p.labels]));
const originalNsLabels = new Map(WORLD_NAMESPACES.map((n) => [n.name, n.labels]));

async function setLabels(kind: 'Pod' | 'Namespace', name: string, labels: Record<string, string>): Promise<void> {
  await store.transaction((tx) => {
    const ns = kind === 'Pod' ? podNs.get(name) : undefined;
    const o = tx.get(kind, ns, name);
    if (!o) throw new Error(`${kind} ${name} missing`);
    tx.put({ ...o, metadata: { ...o.metadata, labels } });
  });
}

let applied: Case | undefined;

const meta = (o: object) => (o as { metadata: { name: string; namespace?: string } }).metadata;
const kindOf = (o: object) => {
  const w = o as { apiVersion: string; kind: string };
  return storedKind(w.apiVersion, w.kind) as never;
};

async function applyCase(c: Case): Promise<void> {
  // Undo the previous case: its policies and label changes.
  if (applied) {
    for (const p of applied.policies) await store.delete(kindOf(p), meta(p).namespace, meta(p).name);
    for (const m of applied.mutations ?? []) {
      if (m.kind === 'podLabels') await setLabels('Pod', m.target, originalPodLabels.get(m.target)!);
      else await setLabels('Namespace', m.target, originalNsLabels.get(m.target)!);
    }
  }
  applied = c;
  for (const p of c.policies) await store.apply(validateObject(p));
  await programmed();
  if (c.mutations?.length) {
    for (const m of c.mutations) await setLabels(m.kind === 'podLabels' ? 'Pod' : 'Namespace', m.target, m.labels);
    await programmed();
  }
}

const probeAll = (probes: Probe[], timeoutMs: number): Promise<Map<string, boolean>> =>
  probeWith(probers, (name) => labPod(name).ip, probes, timeoutMs);

before(async () => {
  if (privilegeProblem()) return;
  tmp = mkdtempSync(path.join(os.tmpdir(), 'sluice-policy-'));
  await labDown(LAB, quiet);
  const code = await labUp({ name: LAB, nodes: NODES, files: [worldFixture(tmp, NODES)], out: quiet });
  assert.equal(code, 0, 'lab up');
  topo = Topology.open(LAB)!;
  store = await FileStore.open(storeDir(LAB), { create: false });
  world = makeWorld(Object.fromEntries(WORLD_PODS.map((p) => [p.name, labPod(p.name).ip])));
  for (const p of WORLD_PODS) probers.set(p.name, new Prober(labPod(p.name).ns));
  await Promise.all([...probers.values()].map((p) => p.ready));
});

after(async () => {
  for (const p of probers.values()) p.close();
  store?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  if (!privilegeProblem()) await labDown(LAB, quiet);
});

test('no policy: every pod reaches every other pod on every port, TCP and UDP', async (t) => {
  if (!requirePrivileges(t)) return;
  const r = await probeAll(probeMatrix(world), 3000);
  const failed = [...r].filter(([, ok]) => !ok).map(([k]) => k);
  assert.deepEqual(failed, []);
});

const runCases = (
  cases: Case[],
  each?: (c: Case) => Promise<void>,
): Promise<{ failures: string[]; probes: number; allowed: number }> =>
  runCasesWith(world, cases, applyCase, probeAll, each);

test('generated NetworkPolicy cases agree with the reference evaluator, probe by probe', async (t) => {
  if (!requirePrivileges(t)) return;
  const cases = generateCases(world, { seed: 1 });
  assert.ok(cases.length >= 200, `${cases.length} cases`);
  const r = await runCases(cases);
  t.diagnostic(`${cases.length} cases, ${r.probes} probes (${r.allowed} allowed, ${r.probes - r.allowed} denied)`);
  assert.deepEqual(r.failures.slice(0, 20), []);
});

const V3 = 'projectcalico.org/v3';
const tier = (name: string, order: number, defaultAction?: 'Deny' | 'Pass') => ({
  apiVersion: V3,
  kind: 'Tier',
  metadata: { name },
  spec: { order, ...(defaultAction ? { defaultAction } : {}) },
});
const gnp = (name: string, spec: object) => ({ apiVersion: V3, kind: 'GlobalNetworkPolicy', metadata: { name }, spec });
const cnp = (namespace: string, name: string, spec: object) => ({
  apiVersion: V3,
  kind: 'NetworkPolicy',
  metadata: { namespace, name },
  spec,
});
const knp = (namespace: string, name: string, spec: object) => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { namespace, name },
  spec,
});

/** Calico's model: tiers, orders, Pass, Deny, Log, network sets, nets and ports. */
function calicoCases(w: RefWorld): Case[] {
  const ip = (name: string) => w.pods.find((p) => p.name === name)!.ip;
  const list: [string, object[]][] = [
    [
      'a tier before default denies what a Kubernetes policy allows',
      [
        tier('security', 100),
        gnp('security.block-c', {
          tier: 'security',
          order: 10,
          selector: 'all()',
          types: ['Ingress'],
          ingress: [
            { action: 'Deny', source: { namespaceSelector: "team == 'x' && env == 'dev'" } },
            { action: 'Pass' },
          ],
        }),
        knp('ns-a', 'allow-all', { podSelector: {}, ingress: [{}] }),
      ],
    ],
    [
      'Pass hands over to the next tier; the tier default action denies the rest',
      [
        tier('security', 100),
        gnp('security.pass-b', {
          tier: 'security',
          order: 1,
          selector: "projectcalico.org/namespace == 'ns-a'",
          ingress: [{ action: 'Pass', source: { namespaceSelector: "team == 'y'" } }],
        }),
        knp('ns-a', 'only-web', {
          podSelector: {},
          ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } }, namespaceSelector: {} }] }],
        }),
      ],
    ],
    [
      'tier defaultAction Pass: unmatched traffic continues to the profile',
      [
        tier('soft', 50, 'Pass'),
        gnp('soft.deny-udp', {
          tier: 'soft',
          selector: "app == 'api'",
          ingress: [{ action: 'Deny', protocol: 'UDP' }],
        }),
      ],
    ],
    [
      'order within a tier: Deny port 81 at order 10 beats Allow all at order 20',
      [
        gnp('default.allow-all', { order: 20, selector: "tier == 'backend'", ingress: [{ action: 'Allow' }] }),
        gnp('default.deny-81', {
          order: 10,
          selector: "tier == 'backend'",
          ingress: [{ action: 'Deny', protocol: 'TCP', destination: { ports: [81] } }],
        }),
      ],
    ],
    [
      'equal orders go by name',
      [
        gnp('default.a-deny-tcp', {
          order: 5,
          selector: "app == 'db'",
          ingress: [{ action: 'Deny', protocol: 'TCP' }],
        }),
        gnp('default.b-allow', { order: 5, selector: "app == 'db'", ingress: [{ action: 'Allow' }] }),
      ],
    ],
    [
      'namespaced Calico policy: selectors scoped to its namespace unless namespaceSelector says otherwise',
      [
        cnp('ns-b', 'api', {
          selector: "app == 'api'",
          ingress: [
            { action: 'Allow', source: { selector: "role == 'client'" } },
            { action: 'Allow', protocol: 'UDP', source: { selector: "app == 'web'", namespaceSelector: 'all()' } },
          ],
          egress: [{ action: 'Deny', protocol: 'UDP' }, { action: 'Allow' }],
        }),
      ],
    ],
    [
      'a GlobalNetworkSet selected by label; notNets and port ranges',
      [
        {
          apiVersion: V3,
          kind: 'GlobalNetworkSet',
          metadata: { name: 'trusted', labels: { trust: 'yes' } },
          spec: { nets: [`${ip('b-api')}/32`, `${ip('c-web')}/32`] },
        },
        gnp('default.trusted-only', {
          selector: "tier == 'frontend'",
          ingress: [
            {
              action: 'Allow',
              protocol: 'TCP',
              source: { selector: "trust == 'yes'" },
              destination: { ports: ['80:81'] },
            },
            {
              action: 'Allow',
              protocol: 'UDP',
              source: { nets: ['0.0.0.0/0'], notNets: [`${ip('a-db')}/32`] },
              destination: { notPorts: [81] },
            },
          ],
        }),
      ],
    ],
    [
      'a namespaced NetworkSet, notSelector and named ports',
      [
        {
          apiVersion: V3,
          kind: 'NetworkSet',
          metadata: { namespace: 'ns-c', name: 'friends', labels: { friend: 'true' } },
          spec: { nets: [`${ip('a-api')}/32`] },
        },
        cnp('ns-c', 'db', {
          selector: "app == 'db' || app == 'api'",
          ingress: [
            { action: 'Allow', source: { selector: "friend == 'true'" } },
            {
              action: 'Allow',
              protocol: 'TCP',
              source: { notSelector: "tier == 'frontend'" },
              destination: { ports: ['http'] },
            },
          ],
        }),
      ],
    ],
    [
      'egress in a tier: Deny to one namespace, Log then Allow the rest',
      [
        tier('egress', 10),
        gnp('egress.limit', {
          tier: 'egress',
          selector: "projectcalico.org/namespace == 'ns-a'",
          types: ['Egress'],
          egress: [
            { action: 'Deny', destination: { namespaceSelector: "kubernetes.io/metadata.name == 'ns-b'" } },
            { action: 'Log' },
            { action: 'Allow' },
          ],
        }),
      ],
    ],
    [
      'Pass on egress lands in the Kubernetes default tier, which isolates',
      [
        tier('first', 1),
        gnp('first.pass', {
          tier: 'first',
          selector: "role == 'client'",
          types: ['Egress'],
          egress: [{ action: 'Pass' }],
        }),
        knp('ns-b', 'egress-dns-only', {
          podSelector: {},
          policyTypes: ['Egress'],
          egress: [
            {
              ports: [
                { protocol: 'UDP', port: 80 },
                { protocol: 'UDP', port: 81 },
              ],
            },
          ],
        }),
      ],
    ],
  ];
  return list.map(([name, policies]) => ({ name, family: 'calico', policies: policies as never }));
}

test('Calico tiers, orders, Pass, Deny, Log, network sets: agree with the reference evaluator', async (t) => {
  if (!requirePrivileges(t)) return;
  const cases = calicoCases(world);
  for (const c of cases) {
    const want = expected(world, c);
    assert.ok(want.some((w) => w.allowed) && want.some((w) => !w.allowed), `${c.name}: both outcomes`);
  }
  const r = await runCases(cases, async (c) => {
    if (!c.name.includes('Log then Allow')) return;
    // The Log rule saw every new flow of ns-a's pods that the Deny before it did not take.
    await new Promise((res) => setTimeout(res, 600));
    const logged = topo.nodes.flatMap((n) =>
      readFileSync(agentLogPath(LAB, n.name), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"policy log"') && l.includes('egress.limit')),
    );
    const a = JSON.parse(logged[0] ?? '{}') as { direction?: string; src?: string };
    t.diagnostic(`${logged.length} Log events, e.g. ${logged[0]}`);
    assert.ok(logged.length > 0, 'Log events reached the agents');
    assert.equal(a.direction, 'egress');
    assert.ok(
      ['a-web', 'a-api', 'a-db'].some((p) => a.src?.startsWith(labPod(p).ip + ':')),
      `source ${a.src} is in ns-a`,
    );
  });
  t.diagnostic(`${cases.length} Calico cases, ${r.probes} probes`);
  assert.deepEqual(r.failures.slice(0, 20), []);
});

test('the standard dataplane (bpfEnabled false: nftables) passes the same cases', async (t) => {
  if (!requirePrivileges(t)) return;
  await store.transaction((tx) => {
    const felix = tx.get('FelixConfiguration', undefined, 'default')!;
    tx.put({ ...felix, spec: { ...felix.spec, bpfEnabled: false } });
  });
  await programmed();
  for (const n of topo.nodes) {
    const st = JSON.parse(readFileSync(agentStatusPath(LAB, n.name), 'utf8')) as { interfaces?: string[] };
    assert.deepEqual(st.interfaces ?? [], [], `${n.name}: no BPF program attached`);
  }
  const cases = [...generateCases(world, { seed: 1 }), ...calicoCases(world)];
  const r = await runCases(cases);
  t.diagnostic(
    `nftables: ${cases.length} cases, ${r.probes} probes (${r.allowed} allowed, ${r.probes - r.allowed} denied)`,
  );
  assert.deepEqual(r.failures.slice(0, 20), []);
});
