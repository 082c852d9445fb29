// `sluice lab up --kubernetes` end to end (kernel tests, root): a 2-node lab with a REAL
// Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager built by
// `npm run build:kubernetes`) in its control-plane namespace, the agents on the Kubernetes
// datastore against it, the lab kubelet running the API server's pods:
//   - up (timed), the KUBECONFIG line, `lab kubectl`;
//   - one Node per lab node (InternalIP, podCIDR, Ready), the kubernetes-services-endpoint
//     ConfigMap, the Calico CRDs and the default FelixConfiguration;
//   - the agents read the API server: the `kubernetes` Service (10.96.0.1:443 -> the control
//     plane's underlay IP:6443) in every node's NAT maps, reachable from a pod;
//   - a selectorless Service and an EndpointSlice made with kubectl reach the maps and leave them;
//   - Pods made with kubectl (spec.nodeName) run as lab pods, their status (podIP, Ready) is
//     written back, the REAL endpointslice controller makes the EndpointSlice, the agents program
//     it and the ClusterIP answers TCP from another lab pod, with the client address preserved
//     (and a NodePort from the external client);
//   - a Deployment is scheduled over the nodes, its ClusterIP answers UDP, deleting its
//     namespace stops its pods and removes its frontends;
//   - the agents run in-cluster as deploy/sluice.yaml's container would (its ServiceAccount's
//     token and RBAC, the kubernetes-services-endpoint ConfigMap by envFrom): with the ConfigMap
//     they reach the API server directly; without it a starting agent has only the ClusterIP,
//     which nothing serves yet, and says so; the seed's ConfigMap, applied verbatim, fixes it;
//   - memory of the control plane and the agents;
//   - down removes every namespace, process (etcd, kube-apiserver, kube-controller-manager, the
//     lab kubelet, agents, pods), state file and pin.
//
// Without the binaries (scripts/build-kubernetes.sh --print-bin-dir exits 1) the kernel tests
// SKIP with a message naming `npm run build:kubernetes`, unless SLUICE_REQUIRE_KUBERNETES=1, in
// which case they FAIL (for CI runs that build them). Without root they skip (fail under
// CI=true) as the other lab tests do. The first two tests need neither: the message, and that
// deploy/crds/ matches the kinds the agent reads.
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { askEchoIn } from '../../src/lab/echo.js';
import type { LabStatus } from '../../src/lab/lab.js';
import { labPinRoot } from '../../src/lab/lab.js';
import { findKubernetesBinaries, kubernetesBinDir } from '../../src/lab/kubernetes/binaries.js';
import { crdManifests } from '../../src/lab/kubernetes/bootstrap.js';
import { KUBERNETES_RESOURCES } from '../../src/agent/datastore/kubernetes.js';
import {
  BIN,
  BIN_DIR,
  kubeLabPossible,
  kubeLabReady,
  labKubectl,
  run,
  SERVICES_ENDPOINT,
  sluice,
  type Result,
} from './kube-lab.js';
import { privilegeProblem } from '../../src/testing/netns.js';

const LAB = 'tk8s';
const TOOLS = ['ip', 'bridge', 'nsenter', 'ethtool', 'sh', 'bash', 'openssl'];
const CP_IP = '192.168.77.250';

type CliResult = Result;

/** The built kubectl in the control-plane namespace, as `sluice lab kubectl` runs it (without its start-up). */
const kubectl = (...args: string[]): Promise<string> => labKubectl(LAB, args);

async function kubectlJson<T>(...args: string[]): Promise<T> {
  return JSON.parse(await kubectl(...args, '-o', 'json')) as T;
}

const ready = (t: TestContext): boolean => kubeLabReady(t, TOOLS);
const canRun = (): boolean => kubeLabPossible(TOOLS);

const APP = `apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  nodeName: node2
  containers:
  - name: echo
    image: sluice
    command: [sluice, echo, server, --name, web-1, --tcp, '8080']
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: http}, periodSeconds: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: sluice, command: [sleep, '3600']}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`;

const MANUAL = `apiVersion: v1
kind: Service
metadata: {name: manual}
spec:
  ports: [{name: tcp, port: 7000, targetPort: 7070}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  labels: {kubernetes.io/service-name: manual}
addressType: IPv4
ports: [{name: tcp, port: 7070, protocol: TCP}]
endpoints:
- addresses: [10.65.2.200]
  conditions: {ready: true}
  nodeName: node2
`;

const SHOP = `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: sluice
        command: [sluice, echo, server, --name, $(POD_NAME), --udp, '5001']
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        ports: [{name: udp, containerPort: 5001, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: udp, port: 53, protocol: UDP, targetPort: udp}]
`;

let tmp = '';
let upMs = 0;
let upResult: CliResult | undefined;

function netnsOf(lab: string): string[] {
  try {
    return fs.readdirSync('/run/netns').filter((n) => n.startsWith(`sl-${lab}-`));
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : 0;
}

/** Every process in one of the lab's namespaces, and every one it recorded. */
function labProcesses(lab: string): number[] {
  const inodes = new Set<number>();
  for (const ns of netnsOf(lab)) {
    try {
      inodes.add(fs.statSync(`/run/netns/${ns}`).ino);
    } catch {
      // going
    }
  }
  const pids = new Set<number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const ino = Number(/\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${e}/ns/net`))?.[1]);
      if (inodes.has(ino) && alive(Number(e))) pids.add(Number(e));
    } catch {
      // gone
    }
  }
  try {
    for (const f of fs.readdirSync(`/run/sluice/lab-${lab}/procs`)) {
      const m = /^(\d+)\.json$/.exec(f);
      if (m && alive(Number(m[1]))) pids.add(Number(m[1]));
    }
  } catch {
    // none
  }
  return [...pids];
}

/** `sluice bpf nat dump` of a node's pinned maps, run inside the node's namespace. */
function natDump(node: string): Promise<string> {
  return new Promise((resolve) =>
    execFile(
      'nsenter',
      [
        `--net=/run/netns/sl-${LAB}-${node}`,
        process.execPath,
        BIN,
        'bpf',
        'nat',
        'dump',
        '--pin-root',
        path.join(labPinRoot(LAB), node),
      ],
      { encoding: 'utf8', timeout: 30_000 },
      (_e, out, err) => resolve(`${out}${err}`),
    ),
  );
}

/** Waits until every node's NAT dump satisfies `ok`; returns the last dumps. */
async function waitNat(what: string, ok: (dump: string) => boolean, timeoutMs = 20_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dumps = await Promise.all(['node1', 'node2'].map(natDump));
    if (dumps.every(ok)) return dumps;
    if (Date.now() > deadline)
      assert.fail(`${what} not in the NAT maps after ${timeoutMs / 1000} s:\n${dumps.join('\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

before(async () => {
  if (!canRun()) return;
  await sluice(['lab', 'down', '--name', LAB]);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-k8s-'));
  fs.writeFileSync(path.join(tmp, 'app.yaml'), APP);
  fs.writeFileSync(path.join(tmp, 'manual.yaml'), MANUAL);
  fs.writeFileSync(path.join(tmp, 'shop.yaml'), SHOP);
  const t0 = performance.now();
  upResult = await sluice([
    'lab',
    'up',
    '--name',
    LAB,
    '--nodes',
    '2',
    '--kubernetes',
    '-f',
    path.join(tmp, 'app.yaml'),
  ]);
  upMs = performance.now() - t0;
});

after(async () => {
  if (!privilegeProblem(TOOLS)) await sluice(['lab', 'down', '--name', LAB]);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('without the binaries: a clear error that says to run `npm run build:kubernetes`', async (t) => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-k8s-cache-'));
  t.after(() => fs.rmSync(empty, { recursive: true, force: true }));
  const env = { ...process.env, SLUICE_K8S_CACHE: empty };
  assert.equal(kubernetesBinDir(env), undefined);
  assert.throws(
    () => findKubernetesBinaries(env),
    (err: Error) => err.name === 'CliError' && /run `npm run build:kubernetes` first/.test(err.message),
  );
  if (privilegeProblem(TOOLS)) return; // the command itself needs root (it takes the lab lock under /run)
  const r = await sluice(['lab', 'up', '--name', 'tk8snob', '--kubernetes'], { env: { SLUICE_K8S_CACHE: empty } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /npm run build:kubernetes/);
  assert.deepEqual(netnsOf('tk8snob'), [], 'nothing was made');
  assert.ok(!fs.existsSync('/run/sluice/lab-tk8snob'));
});

test('deploy/crds: one CRD per Calico kind the agent reads, with its group, plural, scope and v1', () => {
  const crds = crdManifests() as Array<{
    metadata: { name: string };
    spec: {
      group: string;
      names: { kind: string; plural: string };
      scope: string;
      versions: Array<{ name: string; served: boolean; storage: boolean }>;
    };
  }>;
  const calico = Object.values(KUBERNETES_RESOURCES).filter((r) => r.group === 'crd.projectcalico.org');
  assert.equal(crds.length, calico.length);
  for (const r of calico) {
    const c = crds.find((x) => x.spec.names.plural === r.plural);
    assert.ok(c, `a CRD for ${r.kind} (${r.plural})`);
    assert.equal(c.metadata.name, `${r.plural}.${r.group}`);
    assert.equal(c.spec.group, r.group);
    assert.equal(c.spec.scope, r.namespaced ? 'Namespaced' : 'Cluster', r.kind);
    assert.deepEqual(
      c.spec.versions.map((v) => [v.name, v.served, v.storage]),
      [[r.version, true, true]],
    );
  }
});

test('up --kubernetes: control plane, agents on the API server, pods from kubectl', (t) => {
  if (!ready(t)) return;
  assert.ok(upResult);
  const out = upResult.stdout;
  assert.equal(upResult.code, 0, `${out}\n${upResult.stderr}`);
  for (const step of [
    'Kubernetes control plane',
    `control plane ${CP_IP}`,
    'kubernetes: started etcd, kube-apiserver, kube-controller-manager, kubelet in sl-tk8s-cp',
    `kubernetes: API server https://${CP_IP}:6443 ready in`,
    'agents: node1 ready',
    'pod/web-1 created',
    'pods: 2/2 ready',
    'agents: datapath programmed on every node',
    'KUBECONFIG=/run/sluice/lab-tk8s/kubernetes/admin.kubeconfig',
  ])
    assert.ok(out.includes(step), `progress shows "${step}":\n${out}`);
  const cp =
    /kubernetes: API server \S+ ready in ([\d.]+) s \(kube-apiserver \/readyz ok ([\d.]+) s after its start\)/.exec(
      out,
    );
  assert.ok(cp, out);
  const msg =
    `sluice lab up --kubernetes (2 nodes, 2 pods): ${(upMs / 1000).toFixed(1)} s; control plane (certificates, ` +
    `etcd, kube-apiserver, kube-controller-manager, nodes, CRDs) ready in ${cp[1]} s; kube-apiserver /readyz ${cp[2]} s after its start`;
  t.diagnostic(msg);
  console.log(msg);
  assert.ok(upMs < 90_000, msg);
  const kc = fs.readFileSync('/run/sluice/lab-tk8s/kubernetes/admin.kubeconfig', 'utf8');
  assert.match(kc, new RegExp(`server: https://${escape(CP_IP)}:6443`));
});

test('Nodes, the kubernetes-services-endpoint ConfigMap, the Calico CRDs and the default FelixConfiguration', async (t) => {
  if (!ready(t)) return;
  const nodes = await kubectlJson<{
    items: Array<{
      metadata: { name: string };
      spec: { podCIDR?: string };
      status: {
        addresses: Array<{ type: string; address: string }>;
        conditions: Array<{ type: string; status: string }>;
      };
    }>;
  }>('get', 'nodes');
  assert.deepEqual(
    nodes.items.map((n) => [
      n.metadata.name,
      n.status.addresses.find((a) => a.type === 'InternalIP')?.address,
      n.spec.podCIDR,
      n.status.conditions.find((c) => c.type === 'Ready')?.status,
    ]),
    [
      ['node1', '192.168.77.11', '10.65.1.0/24', 'True'],
      ['node2', '192.168.77.12', '10.65.2.0/24', 'True'],
    ],
  );
  const cm = await kubectlJson<{ data: Record<string, string> }>(
    '-n',
    'kube-system',
    'get',
    'configmap',
    'kubernetes-services-endpoint',
  );
  assert.deepEqual(cm.data, { KUBERNETES_SERVICE_HOST: CP_IP, KUBERNETES_SERVICE_PORT: '6443' });
  const crds = await kubectlJson<{
    items: Array<{ metadata: { name: string }; status: { conditions: Array<{ type: string; status: string }> } }>;
  }>('get', 'crd');
  const names = crds.items.map((c) => c.metadata.name).sort();
  assert.deepEqual(
    names,
    [
      'felixconfigurations',
      'globalnetworkpolicies',
      'globalnetworksets',
      'hostendpoints',
      'networkpolicies',
      'networksets',
      'tiers',
    ].map((p) => `${p}.crd.projectcalico.org`),
  );
  for (const c of crds.items)
    assert.ok(
      c.status.conditions.some((x) => x.type === 'Established' && x.status === 'True'),
      c.metadata.name,
    );
  const fc = await kubectlJson<{ spec: { bpfEnabled: boolean } }>(
    'get',
    'felixconfigurations.crd.projectcalico.org',
    'default',
  );
  assert.equal(fc.spec.bpfEnabled, true);
  // `sluice lab kubectl` itself: exit code and output passed through
  const version = await sluice(['lab', 'kubectl', '--name', LAB, '--', 'version']);
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout, /Server Version: v1\.\d+\.\d+/);
  const missing = await sluice(['lab', 'kubectl', '--name', LAB, '--', 'get', 'pod', 'nope']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /pods "nope" not found/);
});

test('the agents read the API server: the kubernetes Service is in every node, and answers from a pod', async (t) => {
  if (!ready(t)) return;
  for (const node of ['node1', 'node2']) {
    const log = fs.readFileSync(`/run/sluice/lab-${LAB}/agents/${node}.log`, 'utf8');
    assert.match(log, new RegExp(`using API server https://${escape(CP_IP)}:6443 from KUBERNETES_SERVICE_HOST/PORT`));
  }
  const dumps = await waitNat('10.96.0.1:443', (d) => d.includes('10.96.0.1:443/tcp'));
  for (const d of dumps) assert.match(d, new RegExp(`${escape(CP_IP)}:6443`));
  const s = JSON.parse((await sluice(['lab', 'status', '--name', LAB, '-o', 'json'])).stdout) as LabStatus;
  assert.equal(s.kubernetes?.server, `https://${CP_IP}:6443`);
  assert.match(s.kubernetes?.kubelet ?? '', /^ready/);
  assert.deepEqual(
    s.agents.nodes.map((a) => [a.node, /^ready .*eBPF.*API revision \d+/.test(a.detail)]),
    [
      ['node1', true],
      ['node2', true],
    ],
  );
  // through Sluice's datapath from a pod: 10.96.0.1:443 -> the API server on the underlay
  const r = await sluice([
    'lab',
    'exec',
    '--name',
    LAB,
    'client',
    '--',
    'bash',
    '-c',
    'exec 3<>/dev/tcp/10.96.0.1/443 && echo connected',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'connected\n');
});

test('a Service and an EndpointSlice made with kubectl reach the agents, and leave them', async (t) => {
  if (!ready(t)) return;
  const file = path.join(tmp, 'manual.yaml');
  const r = await sluice(['lab', 'apply', '--name', LAB, '-f', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /service\/manual created/);
  assert.match(r.stdout, /endpointslice\.discovery\.k8s\.io\/manual-1 created/);
  const ip = (await kubectl('get', 'service', 'manual', '-o', 'jsonpath={.spec.clusterIP}')).trim();
  assert.match(ip, /^10\.(9[6-9]|10\d|11[01])\./);
  await waitNat(
    `${ip}:7000 -> 10.65.2.200:7070`,
    (d) => d.includes(`${ip}:7000/tcp`) && d.includes('10.65.2.200:7070'),
  );
  const d = await sluice(['lab', 'delete', '--name', LAB, '-f', file]);
  assert.equal(d.code, 0, d.stderr);
  await waitNat(`${ip}:7000 gone`, (x) => !x.includes(`${ip}:7000/tcp`) && !x.includes('10.65.2.200'));
});

interface PodJson {
  metadata: { name: string; annotations?: Record<string, string> };
  spec: { nodeName?: string };
  status: { podIP?: string; phase?: string; conditions?: Array<{ type: string; status: string }> };
}

test('pods from kubectl run as lab pods; the real EndpointSlice controller; a ClusterIP answers TCP', async (t) => {
  if (!ready(t)) return;
  const web = await kubectlJson<PodJson>('get', 'pod', 'web-1');
  const client = await kubectlJson<PodJson>('get', 'pod', 'client');
  for (const [p, node, cidr] of [
    [web, 'node2', '10.65.2.'],
    [client, 'node1', '10.65.1.'],
  ] as const) {
    assert.equal(p.spec.nodeName, node);
    assert.equal(p.status.phase, 'Running');
    assert.ok(p.status.podIP?.startsWith(cidr), `${p.metadata.name}: ${p.status.podIP}`);
    assert.ok(p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    assert.match(p.metadata.annotations?.['lab.sluice.dev/netns'] ?? '', /^sl-tk8s-p-/);
  }
  // the EndpointSlice is the controller-manager's, from the Pod's status
  const slices = await kubectlJson<{
    items: Array<{
      metadata: { labels: Record<string, string> };
      endpoints: Array<{
        addresses: string[];
        conditions: { ready: boolean };
        nodeName: string;
        targetRef: { kind: string; name: string };
      }>;
      ports: Array<{ port: number }>;
    }>;
  }>('get', 'endpointslices', '-l', 'kubernetes.io/service-name=web');
  assert.equal(slices.items.length, 1);
  const slice = slices.items[0];
  assert.equal(slice.metadata.labels['endpointslice.kubernetes.io/managed-by'], 'endpointslice-controller.k8s.io');
  assert.deepEqual(
    slice.endpoints.map((e) => [e.addresses[0], e.conditions.ready, e.nodeName, e.targetRef.name]),
    [[web.status.podIP, true, 'node2', 'web-1']],
  );
  assert.deepEqual(
    slice.ports.map((p) => p.port),
    [8080],
  );
  const ip = (await kubectl('get', 'service', 'web', '-o', 'jsonpath={.spec.clusterIP}')).trim();
  await waitNat(
    `${ip}:80 -> ${web.status.podIP}:8080`,
    (d) => d.includes(`${ip}:80/tcp`) && d.includes(`${web.status.podIP}:8080`),
  );
  const netns = client.metadata.annotations?.['lab.sluice.dev/netns'] ?? '';
  const r = await askEchoIn(netns, 'tcp', ip, 80, { timeoutMs: 3000 });
  assert.ok(r.ok, r.error);
  assert.equal(r.name, 'web-1');
  assert.equal(r.client?.split(':')[0], client.status.podIP, 'the server saw the client pod address');
  // a NodePort of the API server's allocation, from the external client through node1 to web-1 on node2
  const np = Number(await kubectl('get', 'service', 'web-np', '-o', 'jsonpath={.spec.ports[0].nodePort}'));
  assert.ok(np >= 30000 && np <= 32767, String(np));
  const viaNode = await askEchoIn(`sl-${LAB}-ext`, 'tcp', '192.168.77.11', np, { timeoutMs: 3000 });
  assert.ok(viaNode.ok, viaNode.error);
  assert.equal(viaNode.name, 'web-1');
  assert.equal(viaNode.client?.split(':')[0], '192.168.77.200', 'the external client address is preserved');
  // `lab exec` finds pods of the API server too
  const e = await sluice(['lab', 'exec', '--name', LAB, 'web-1', '--', 'ip', '-o', '-4', 'addr', 'show', 'eth0']);
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stdout, new RegExp(`inet ${escape(web.status.podIP ?? 'x')}/32`));
});

test('a Deployment is scheduled over the nodes, its ClusterIP answers UDP; deleting it removes it all', async (t) => {
  if (!ready(t)) return;
  const file = path.join(tmp, 'shop.yaml');
  const r = await sluice(['lab', 'apply', '--name', LAB, '-f', file, '--wait']);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const pods = (await kubectlJson<{ items: PodJson[] }>('-n', 'shop', 'get', 'pods')).items;
  assert.equal(pods.length, 2);
  assert.deepEqual(pods.map((p) => p.spec.nodeName).sort(), ['node1', 'node2'], 'one replica per node');
  const ip = (await kubectl('-n', 'shop', 'get', 'service', 'echo', '-o', 'jsonpath={.spec.clusterIP}')).trim();
  await waitNat(`${ip}:53 with 2 backends`, (d) => pods.every((p) => d.includes(`${p.status.podIP}:5001`)));
  const client = await kubectlJson<PodJson>('get', 'pod', 'client');
  const netns = client.metadata.annotations?.['lab.sluice.dev/netns'] ?? '';
  const seen = new Set<string>();
  for (let i = 0; i < 12 && seen.size < 2; i++) {
    const a = await askEchoIn(netns, 'udp', ip, 53, { timeoutMs: 3000 });
    assert.ok(a.ok, a.error);
    assert.equal(a.client?.split(':')[0], client.status.podIP);
    seen.add(a.name ?? '');
  }
  assert.deepEqual([...seen].sort(), pods.map((p) => p.metadata.name).sort(), 'both replicas answered');
  const podNs = pods.map((p) => p.metadata.annotations?.['lab.sluice.dev/netns'] ?? '');
  const d = await sluice(['lab', 'delete', '--name', LAB, '-f', file], { timeoutMs: 120_000 });
  assert.equal(d.code, 0, d.stderr);
  await waitNat(`${ip}:53 gone`, (x) => !x.includes(`${ip}:53/udp`));
  const deadline = Date.now() + 20_000;
  while (podNs.some((n) => netnsOf(LAB).includes(n)) && Date.now() < deadline)
    await new Promise((res) => setTimeout(res, 100));
  assert.deepEqual(
    podNs.filter((n) => netnsOf(LAB).includes(n)),
    [],
    "the pods' namespaces are gone",
  );
});

/** The agent of `node` the lab started, found by its status file argument (it may not have written it yet). */
function agentPids(node: string): number[] {
  const want = `/run/sluice/lab-${LAB}/agents/${node}.json`;
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (argv.includes('agent') && argv.includes(want) && !argv.includes('nsenter')) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

async function stopAgent(node: string): Promise<void> {
  const pids = agentPids(node);
  for (const p of pids) process.kill(p, 'SIGKILL');
  const deadline = Date.now() + 10_000;
  while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(pids.filter(alive), [], `the agent of ${node} stopped`);
}

async function logGrows(file: string, from: number, re: RegExp, ms: number): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const text = fs.readFileSync(file, 'utf8').slice(from);
    if (re.test(text)) return text;
    if (Date.now() > deadline) throw new Error(`${file}: no ${re} in ${ms / 1000} s:\n${text.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the kubernetes-services-endpoint ConfigMap: agents (in-cluster, deploy/ RBAC) reach the API server through it, and cannot without it', async (t) => {
  if (!ready(t)) return;
  const log = `/run/sluice/lab-${LAB}/agents/node1.log`;
  // Started as the DaemonSet's container: its ServiceAccount's token, the ConfigMap by envFrom.
  assert.match(
    fs.readFileSync(log, 'utf8'),
    /"source":"in-cluster-override".*"msg":"using API server https:\/\/192\.168\.77\.250:6443 from KUBERNETES_SERVICE_HOST\/PORT \(kubernetes-services-endpoint override; the kubelet's default was the ClusterIP 10\.96\.0\.1:443\)"/,
  );
  assert.match(
    await kubectl(
      'auth',
      'can-i',
      'watch',
      'endpointslices.discovery.k8s.io',
      '--as=system:serviceaccount:kube-system:sluice-node',
    ),
    /yes/,
  );
  assert.match(
    (
      await run('nsenter', [
        `--net=/run/netns/sl-${LAB}-cp`,
        path.join(BIN_DIR ?? '', 'kubectl'),
        `--kubeconfig=/run/sluice/lab-${LAB}/kubernetes/admin.kubeconfig`,
        'auth',
        'can-i',
        'create',
        'pods',
        '--as=system:serviceaccount:kube-system:sluice-node',
      ])
    ).stdout,
    /no/,
    'the agent account reads, it does not write',
  );

  // Without the ConfigMap a starting agent has only the kubelet's ClusterIP, which nothing serves
  // on a node without kube-proxy before Sluice programs it: the seed's reason for the ConfigMap.
  await kubectl('delete', 'configmap', '-n', 'kube-system', 'kubernetes-services-endpoint');
  await stopAgent('node1');
  let from = fs.statSync(log).size;
  const up = spawn(process.execPath, [BIN, 'lab', 'up', '--kubernetes', '--name', LAB], { stdio: 'ignore' });
  try {
    const text = await logGrows(log, from, /ENETUNREACH|ECONNREFUSED|ETIMEDOUT/, 30_000);
    assert.match(text, /"source":"in-cluster".*using API server https:\/\/10\.96\.0\.1:443/);
    assert.match(text, /"level":40.*ClusterIP/, 'the agent warns that it depends on the ClusterIP');
  } finally {
    up.kill('SIGKILL');
    await stopAgent('node1');
  }

  // The seed's ConfigMap, verbatim: the next start reaches the API server directly.
  await labKubectl(LAB, ['apply', '-f', '-'], SERVICES_ENDPOINT);
  from = fs.statSync(log).size;
  const r = await sluice(['lab', 'up', '--kubernetes', '--name', LAB], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(
    fs.readFileSync(log, 'utf8').slice(from),
    /"source":"in-cluster-override".*https:\/\/192\.168\.77\.250:6443/,
  );
});

test('memory: control plane and agents (RSS)', (t) => {
  if (!ready(t)) return;
  const st = JSON.parse(fs.readFileSync(`/run/sluice/lab-${LAB}/kubernetes/control-plane.json`, 'utf8')) as {
    processes: Record<string, { pid: number }>;
  };
  const parts: string[] = [];
  let total = 0;
  for (const [c, p] of Object.entries(st.processes)) {
    assert.ok(alive(p.pid), `${c} runs`);
    const mb = rssMb(p.pid);
    total += mb;
    parts.push(`${c} ${mb} MB`);
  }
  for (const node of ['node1', 'node2']) {
    const a = JSON.parse(fs.readFileSync(`/run/sluice/lab-${LAB}/agents/${node}.json`, 'utf8')) as { pid: number };
    parts.push(`agent ${node} ${rssMb(a.pid)} MB`);
  }
  const msg = `RSS: ${parts.join(', ')}; control plane with the lab kubelet ${total} MB`;
  t.diagnostic(msg);
  console.log(msg);
  assert.ok(total < 1500, msg);
});

test('down removes every namespace, process, state file and pin of the lab', async (t) => {
  if (!ready(t)) return;
  const pids = labProcesses(LAB);
  assert.ok(pids.length >= 9, `control plane (4), controller, agents (2) and pods (2) run (${pids.length})`);
  const r = await sluice(['lab', 'down', '--name', LAB]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /kubernetes: control plane and kubelet stopped/);
  assert.match(r.stdout, /lab "tk8s" removed: \d+ namespaces/);
  assert.deepEqual(netnsOf(LAB), [], 'no namespaces left');
  const deadline = Date.now() + 5000;
  while (pids.some(alive) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(pids.filter(alive), [], 'no processes left');
  assert.ok(!fs.existsSync(`/run/sluice/lab-${LAB}`), 'no state directory left');
  assert.ok(!fs.existsSync(labPinRoot(LAB)), 'no pins left');
});
