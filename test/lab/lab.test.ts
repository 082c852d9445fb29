// The lab end to end through the `sluice` command, as scripts use it (kernel tests, root): `up`
// of a 3-node lab with a 6-replica Deployment from YAML (timed: under 30 s), `status -o json`,
// real TCP and UDP pod-to-pod across nodes and node-to-pod through the echo workload with the
// client address each server saw, `exec` into a pod, a node and `external` with exit codes and
// stdin passed through, `logs`, `apply` of a file with a bad object, `delete`, `down` leaving
// nothing behind; and `kill -9` of `sluice lab up` half-way, then `down`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { askEchoIn } from '../../src/lab/echo.js';
import type { LabStatus } from '../../src/lab/lab.js';
import { labPinRoot } from '../../src/lab/lab.js';
import { packageRoot } from '../../src/paths.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';

const LAB = 'tlab';
const CRASH = 'tcrash';
const TOOLS = ['ip', 'bridge', 'nsenter', 'ethtool', 'sh', 'bash'];
const BIN = path.join(packageRoot, 'bin', 'sluice.js');
const ECHO_MAIN = path.join(packageRoot, 'dist', 'src', 'lab', 'echo-main.js');

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sluice(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const env = { ...process.env };
  delete env.SLUICE_DEBUG;
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [BIN, ...args],
      { timeout: opts.timeoutMs ?? 120_000, killSignal: 'SIGKILL', encoding: 'utf8', env, cwd: packageRoot },
      (err, stdout, stderr) => {
        const e = err as { code?: unknown } | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout, stderr });
      },
    );
    child.stdin?.end(opts.input ?? '');
  });
}

const APP = `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: shop}
spec:
  replicas: 6
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 3
      containers:
      - name: echo
        command: [sluice, echo, server, --name, $(POD_NAME), --tcp, '5000', --udp, '5001']
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        ports: [{name: tcp, containerPort: 5000}, {name: udp, containerPort: 5001, protocol: UDP}]
        readinessProbe: {tcpSocket: {port: tcp}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: tcp, port: 80, targetPort: tcp}, {name: udp, port: 53, protocol: UDP, targetPort: udp}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-lb, namespace: shop}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports: [{port: 80, targetPort: tcp}]
`;

const EXTRA = `apiVersion: v1
kind: Pod
metadata: {name: lone}
spec:
  nodeName: node3
  containers:
  - {name: main, command: [sh, -c, 'echo started; exec sleep 600']}
---
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  ports: [{port: 70000}]
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

/** Every process that is in one of the lab's network namespaces, and the ones the lab recorded. */
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
  const dir = `/run/sluice/lab-${lab}`;
  for (const f of safeList(path.join(dir, 'procs'))) {
    const m = /^(\d+)\.json$/.exec(f);
    if (m && alive(Number(m[1]))) pids.add(Number(m[1]));
  }
  try {
    const c = JSON.parse(fs.readFileSync(path.join(dir, 'controller.json'), 'utf8')) as { pid: number };
    if (alive(c.pid)) pids.add(c.pid);
  } catch {
    // no controller
  }
  return [...pids];
}

function safeList(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

async function assertNothingLeft(lab: string, pids: number[]): Promise<void> {
  assert.deepEqual(netnsOf(lab), [], 'no namespaces left');
  const deadline = Date.now() + 3000;
  while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const describe = (pid: number): string => {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return `${pid} ${st.slice(st.indexOf('('), st.lastIndexOf(')') + 3)} netns ${fs.readlinkSync(`/proc/${pid}/ns/net`)}`;
    } catch {
      return `${pid} (gone)`;
    }
  };
  assert.deepEqual(pids.filter(alive).map(describe), [], 'no processes left');
  assert.ok(!fs.existsSync(`/run/sluice/lab-${lab}`), 'no state directory left');
  assert.ok(!fs.existsSync(`/run/sluice/lab-${lab}.up.lock`), 'no lock left');
  assert.ok(!fs.existsSync(labPinRoot(lab)), 'no pins left');
  const links = await new Promise<string>((resolve) =>
    execFile('ip', ['-o', 'link', 'show'], (_e, out) => resolve(out)),
  );
  assert.doesNotMatch(links, /slw[0-9a-f]{8}|vxlan\.sl/, 'nothing in the root namespace');
}

async function status(lab = LAB): Promise<LabStatus> {
  const r = await sluice(['lab', 'status', '--name', lab, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as LabStatus;
}

before(async () => {
  if (privilegeProblem(TOOLS)) return;
  await sluice(['lab', 'down', '--name', LAB]);
  await sluice(['lab', 'down', '--name', CRASH]);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-lab-'));
  fs.writeFileSync(path.join(tmp, 'app.yaml'), APP);
  fs.writeFileSync(path.join(tmp, 'extra.yaml'), EXTRA);
  const t0 = performance.now();
  upResult = await sluice(['lab', 'up', '--name', LAB, '--nodes', '3', '-f', path.join(tmp, 'app.yaml')]);
  upMs = performance.now() - t0;
});

after(async () => {
  if (privilegeProblem(TOOLS)) return;
  await sluice(['lab', 'down', '--name', LAB]);
  await sluice(['lab', 'down', '--name', CRASH]);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('up: a 3-node lab with a 6-replica Deployment from YAML, in under 30 s', (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  assert.ok(upResult);
  assert.equal(upResult.code, 0, `${upResult.stdout}\n${upResult.stderr}`);
  const out = upResult.stdout;
  for (const step of [
    'network: namespaces',
    'network: ready',
    'controller: running',
    'agents: node1 ready',
    'apply:',
    'pods: 6/6 ready',
    'agents: datapath programmed on every node',
  ])
    assert.ok(out.includes(step), `progress shows "${step}":\n${out}`);
  assert.match(out, /deployment\.apps\/echo created/);
  assert.match(
    out,
    /service\/echo-lb created \(cluster IP 10\.96\.\d+\.\d+, node ports 80:\d+\/TCP, load balancer 192\.168\.77\.65\)/,
  );
  const msg = `sluice lab up (3 nodes, 6 pods): ${(upMs / 1000).toFixed(1)} s`;
  t.diagnostic(msg);
  console.log(msg);
  assert.ok(upMs < 30_000, msg);
});

test('status -o json: nodes, pods spread over them, services, an agent per node', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const s = await status();
  assert.equal(s.name, LAB);
  assert.deepEqual(
    s.nodes.map((n) => [n.name, n.ip, n.podCidr]),
    [
      ['node1', '192.168.77.11', '10.65.1.0/24'],
      ['node2', '192.168.77.12', '10.65.2.0/24'],
      ['node3', '192.168.77.13', '10.65.3.0/24'],
    ],
  );
  assert.equal(s.controller.running, true);
  assert.equal(s.agents.running, true);
  assert.equal(s.datapath.programmed, true);
  assert.deepEqual(
    s.agents.nodes.map((a) => [a.node, a.running, a.detail.startsWith('ready')]),
    [
      ['node1', true, true],
      ['node2', true, true],
      ['node3', true, true],
    ],
  );
  const pods = s.pods.filter((p) => p.namespace === 'shop');
  assert.equal(pods.length, 6);
  for (const p of pods) {
    assert.match(p.name, /^echo-[a-z0-9]{10}-[a-z0-9]{5}$/);
    assert.equal(p.phase, 'Running');
    assert.equal(p.ready, true);
    const node = s.nodes.find((n) => n.name === p.node);
    assert.ok(node, `pod ${p.name} has a node`);
    assert.ok(p.ip?.startsWith(node.podCidr.replace(/0\/24$/, '')), `${p.ip} is in ${node.podCidr}`);
  }
  const perNode = s.nodes.map((n) => pods.filter((p) => p.node === n.name).length);
  assert.deepEqual(perNode, [2, 2, 2], 'replicas spread round-robin');
  const echo = s.services.find((v) => v.name === 'echo');
  assert.ok(echo);
  assert.match(echo.clusterIP ?? '', /^10\.(9[6-9]|10\d|11[01])\./);
  assert.deepEqual(echo.endpoints, { ready: 6, total: 6 }, 'one endpoint per pod');
  const lb = s.services.find((v) => v.name === 'echo-lb');
  assert.ok(lb);
  assert.deepEqual(lb.loadBalancerIPs, ['192.168.77.65']);
  assert.ok((lb.ports[0].nodePort ?? 0) >= 30000);
  assert.ok(
    s.external?.routes.some((r) => r.cidr === '192.168.77.65/32'),
    'external routes the LB IP via a node',
  );
  const table = await sluice(['lab', 'status', '--name', LAB]);
  assert.equal(table.code, 0);
  assert.match(table.stdout, /^node\s+ip\s+pod cidr/m);
  assert.match(table.stdout, /^node1 .* ready \(pid \d+\): eBPF/m);
});

test('real TCP and UDP pod-to-pod across nodes, and node-to-pod, with the client address the server saw', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const s = await status();
  const pods = s.pods.filter((p) => p.namespace === 'shop');
  for (const [i, from] of pods.entries()) {
    const to = pods.find((p, j) => j > i && p.node !== from.node) ?? pods.find((p) => p.node !== from.node);
    assert.ok(to && from.netns && to.ip && from.ip);
    for (const [proto, port] of [
      ['tcp', 5000],
      ['udp', 5001],
    ] as const) {
      const r = await askEchoIn(from.netns, proto, to.ip, port, { timeoutMs: 3000 });
      assert.ok(r.ok, `${proto} ${from.name} -> ${to.name}: ${r.error}`);
      assert.equal(r.name, to.name, 'the pod that was asked answered');
      assert.equal(r.client?.split(':')[0], from.ip, 'the server saw the client pod address');
      assert.equal(r.client, r.local, 'and the very port the client used');
    }
  }
  // node -> pod on another node: over the VXLAN overlay the node's tunnel address is the source
  const target = pods.find((p) => p.node === 'node2');
  assert.ok(target?.ip);
  const r = await askEchoIn(s.nodes[0].netns, 'tcp', target.ip, 5000);
  assert.ok(r.ok, r.error);
  assert.equal(r.client?.split(':')[0], s.nodes[0].tunnelIp);
  // and to a pod on the same node: the node's address on the pod's veth side (the gateway route)
  const local = pods.find((p) => p.node === 'node1');
  assert.ok(local?.ip);
  const r2 = await askEchoIn(s.nodes[0].netns, 'udp', local.ip, 5001);
  assert.ok(r2.ok, r2.error);
  assert.equal(r2.name, local.name);
});

test('exec into a pod, a node and external: exit codes, stdout and stdin passed through', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const s = await status();
  const pod = s.pods.find((p) => p.namespace === 'shop' && p.node === 'node2');
  assert.ok(pod);
  const inPod = await sluice([
    'lab',
    'exec',
    '--name',
    LAB,
    `shop/${pod.name}`,
    '--',
    'ip',
    '-o',
    '-4',
    'addr',
    'show',
    'eth0',
  ]);
  assert.equal(inPod.code, 0, inPod.stderr);
  assert.match(inPod.stdout, new RegExp(`inet ${pod.ip?.replace(/\./g, '\\.')}/32`));
  // a pod name without its namespace is found when it is unique
  const bare = await sluice(['lab', 'exec', '--name', LAB, pod.name, '--', 'sh', '-c', 'exit 3']);
  assert.equal(bare.code, 3);
  const client = await sluice([
    'lab',
    'exec',
    '--name',
    LAB,
    `shop/${pod.name}`,
    '--',
    process.execPath,
    ECHO_MAIN,
    'client',
    '--tcp',
    `${s.pods.find((p) => p.node === 'node3' && p.namespace === 'shop')?.ip}:5000`,
  ]);
  assert.equal(client.code, 0, client.stderr);
  assert.equal((JSON.parse(client.stdout) as { client: string }).client.split(':')[0], pod.ip);
  const node = await sluice([
    'lab',
    'exec',
    '--name',
    LAB,
    'node/node2',
    '--',
    'sh',
    '-c',
    'ip -o -4 addr show eth0; exit 7',
  ]);
  assert.equal(node.code, 7);
  assert.match(node.stdout, /inet 192\.168\.77\.12\/24/);
  const ext = await sluice(
    ['lab', 'exec', '--name', LAB, 'external', '--', 'sh', '-c', 'ip -o -4 addr show eth0 >&2; cat; exit 5'],
    {
      input: 'from stdin\n',
    },
  );
  assert.equal(ext.code, 5);
  assert.equal(ext.stdout, 'from stdin\n');
  assert.match(ext.stderr, /inet 192\.168\.77\.200\/24/);
  const none = await sluice(['lab', 'exec', '--name', LAB, 'nope', '--', 'true']);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^sluice: no pod nope/);
  const badNode = await sluice(['lab', 'exec', '--name', LAB, 'node/node9', '--', 'true']);
  assert.equal(badNode.code, 1);
  assert.match(badNode.stderr, /no node node9/);
});

test('apply with a bad object applies the others and fails; logs; delete waits for the pod', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const file = path.join(tmp, 'extra.yaml');
  const r = await sluice(['lab', 'apply', '--name', LAB, '-f', file, '--wait']);
  assert.equal(r.code, 1, 'a refused object makes the exit code non-zero');
  assert.match(r.stdout, /^pod\/lone created$/m);
  assert.match(
    r.stderr,
    /extra\.yaml, document 2: Service default\/broken: spec\.ports\[0\]\.port: 70000 is not a valid port \(1-65535\)/,
  );
  const s = await status();
  const lone = s.pods.find((p) => p.name === 'lone');
  assert.equal(lone?.node, 'node3');
  assert.equal(lone?.ready, true);
  assert.ok(!s.services.some((v) => v.name === 'broken'));
  const logs = await sluice(['lab', 'logs', '--name', LAB, 'lone']);
  assert.equal(logs.code, 0, logs.stderr);
  assert.equal(logs.stdout, 'started\n');
  const echoLogs = await sluice([
    'lab',
    'logs',
    '--name',
    LAB,
    `shop/${s.pods.find((p) => p.namespace === 'shop')?.name}`,
  ]);
  assert.match(echoLogs.stdout, /"event":"ready"/);
  const agentLog = await sluice(['lab', 'logs', '--name', LAB, 'node/node1']);
  assert.equal(agentLog.code, 0);
  assert.match(agentLog.stdout, /agent running/);
  // the pod's processes go with it (sleep ignores nothing, but the whole process group is signalled)
  const d = await sluice(['lab', 'delete', '--name', LAB, '-f', file, '--ignore-not-found']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /pod "lone" deleted/);
  const after = await status();
  assert.ok(!after.pods.some((p) => p.name === 'lone'));
  assert.ok(!netnsOf(LAB).includes(lone?.netns ?? 'x'), "the pod's namespace is gone");
});

test('down removes every namespace, process, state file and pin of the lab', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const pids = labProcesses(LAB);
  assert.ok(pids.length >= 7, `the controller and 6 pods run (${pids.length})`);
  const r = await sluice(['lab', 'down', '--name', LAB]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /lab "tlab" removed: \d+ namespaces/);
  await assertNothingLeft(LAB, pids);
  const again = await sluice(['lab', 'down', '--name', LAB]);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /nothing to remove/);
});

test('kill -9 of `sluice lab up` half-way, then down: nothing left', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  // twice: while the network is being built, and while the pods start
  for (const when of [/network: node2/, /apply:/]) {
    const child = spawn(process.execPath, [BIN, 'lab', 'up', '--name', CRASH, '-f', path.join(tmp, 'app.yaml')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`up never printed ${when}: ${out}`)), 60_000);
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (when.test(out)) {
          clearTimeout(timer);
          child.kill('SIGKILL');
          resolve();
        }
      });
    });
    await new Promise<void>((resolve) =>
      child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve()),
    );
    if (when.source === 'apply:') await new Promise((r) => setTimeout(r, 300)); // let pods start
    const pids = labProcesses(CRASH);
    assert.ok(netnsOf(CRASH).length > 0, `the killed up left a half-made lab (${when})`);
    const r = await sluice(['lab', 'down', '--name', CRASH]);
    assert.equal(r.code, 0, r.stderr);
    await assertNothingLeft(CRASH, pids);
  }
});
