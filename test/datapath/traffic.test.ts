// The Service datapath with real traffic: a 3-node lab (namespaces, VXLAN overlay, an external
// client), Sluice's programs attached to every pod veth and eth0, real TCP and UDP through a
// ClusterIP and a NodePort, the echo server reporting the client address it sees.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Topology } from '../../src/lab/topology.js';
import { startEcho, tcpAsk, udpAsk, ECHO_MAIN, type RunningEcho } from '../../src/lab/echo.js';
import { LabDatapath } from '../../src/testing/lab-datapath.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import { FrontendFlags, Proto } from '../../src/datapath/nat.js';

const run = promisify(execFile);
const TOOLS = ['ip', 'nsenter', 'ethtool', 'tcpdump'];
const VIP = '10.96.0.10';
const topo = new Topology({
  name: 'tsvc',
  nodes: 3,
  pods: [
    { node: 1, name: 'client' },
    { node: 2, name: 'web2' },
    { node: 3, name: 'web3' },
  ],
});
let dp: LabDatapath | undefined;
const servers: RunningEcho[] = [];

function services(d: LabDatapath): void {
  d.service({ svcId: 1, addr: VIP, port: 80, proto: Proto.TCP, backends: [{ pod: 'web2', port: 8080 }] });
  d.service({ svcId: 2, addr: VIP, port: 53, proto: Proto.UDP, backends: [{ pod: 'web2', port: 8081 }] });
  d.service({
    svcId: 3,
    addr: '0.0.0.0',
    port: 30080,
    proto: Proto.TCP,
    flags: FrontendFlags.NODEPORT,
    backends: [{ pod: 'web2', port: 8080 }],
  });
  d.service({
    svcId: 4,
    addr: '0.0.0.0',
    port: 30053,
    proto: Proto.UDP,
    flags: FrontendFlags.NODEPORT,
    backends: [{ pod: 'web2', port: 8081 }],
  });
  d.service({ svcId: 5, addr: '10.96.0.99', port: 80, proto: Proto.TCP, backends: [] });
  d.service({
    svcId: 6,
    addr: '10.96.0.20',
    port: 80,
    proto: Proto.TCP,
    backends: [
      { pod: 'web2', port: 8080 },
      { pod: 'web3', port: 8080 },
    ],
  });
  d.service({ svcId: 7, addr: '10.96.0.30', port: 80, proto: Proto.TCP, backends: [{ pod: 'web3', port: 8080 }] });
  d.service({ svcId: 8, addr: '10.96.0.30', port: 53, proto: Proto.UDP, backends: [{ pod: 'web3', port: 8081 }] });
  d.service({ svcId: 9, addr: '10.96.0.40', port: 53, proto: Proto.UDP, backends: [{ pod: 'web2', port: 8081 }] });
}

before(async () => {
  if (privilegeProblem(TOOLS)) return;
  await Topology.sweep('tsvc');
  await topo.up();
  for (const pod of ['web2', 'web3']) servers.push(await startEcho(topo, pod, { name: pod, tcp: 8080, udp: 8081 }));
  dp = new LabDatapath(topo, { tag: 'traffic' });
  services(dp);
});

after(async () => {
  for (const s of servers) await s.stop();
  dp?.close();
  await topo.down();
});

const ns = (target: string) => topo.nsOf(target);

test('ClusterIP from a pod to a backend on another node: real TCP and UDP, client address preserved', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const client = topo.pod('client');
  for (let i = 0; i < 3; i++) {
    const r = await tcpAsk(ns('client'), VIP, 80);
    assert.ok(r.ok, `TCP through the ClusterIP: ${r.error}`);
    assert.equal(r.name, 'web2');
    assert.equal(r.client?.split(':')[0], client.ip, 'the backend sees the client pod');
  }
  const u = await udpAsk(ns('client'), VIP, 53);
  assert.ok(u.ok, `UDP through the ClusterIP (a reply from the backend's address would not count): ${u.error}`);
  assert.equal(u.client?.split(':')[0], client.ip);
});

test('ClusterIP with backends on two nodes spreads connections over both', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const seen = new Set<string>();
  for (let i = 0; i < 16 && seen.size < 2; i++) {
    const r = await tcpAsk(ns('client'), '10.96.0.20', 80);
    assert.ok(r.ok, r.error);
    seen.add(r.name!);
  }
  assert.deepEqual([...seen].sort(), ['web2', 'web3']);
});

test("a client reusing its source port after a closed connection reaches the Service's current backend", async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  // The client closes first: its own TIME_WAIT would refuse the tuple for a minute, unless the
  // kernel may reuse it (after a second).
  await topo.mustExec('client', 'sysctl', ['-qw', 'net.ipv4.tcp_tw_reuse=1']);
  const svc = { svcId: 10, addr: '10.96.0.50', port: 80, proto: Proto.TCP };
  const localPort = 41234;
  dp!.service({ ...svc, backends: [{ pod: 'web2', port: 8080 }] });
  const first = await tcpAsk(ns('client'), svc.addr, svc.port, { localPort });
  assert.ok(first.ok, first.error);
  assert.equal(first.name, 'web2');
  // web2 leaves the Service but keeps running: a stale conntrack entry would still reach it.
  dp!.service({ ...svc, backends: [{ pod: 'web3', port: 8080 }] });
  await new Promise((r) => setTimeout(r, 1100));
  const again = await tcpAsk(ns('client'), svc.addr, svc.port, { localPort });
  assert.ok(again.ok, again.error);
  assert.equal(again.local, first.local, 'the same tuple');
  assert.equal(again.name, 'web3');
});

test('a ClusterIP without backends refuses at once (ICMP port unreachable), not a timeout', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const r = await tcpAsk(ns('client'), '10.96.0.99', 80, { timeoutMs: 3000 });
  assert.equal(r.ok, false);
  assert.equal(r.error, 'ECONNREFUSED');
  assert.ok(r.ms < 1000, `refused in ${r.ms} ms`);
});

/** Packets matching `filter` on a node's eth0 while fn runs, as tcpdump prints them. */
test('hairpin: a pod reaches itself through its own Service (TCP and UDP)', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const r = await tcpAsk(ns('web3'), '10.96.0.30', 80);
  assert.ok(r.ok, `TCP hairpin: ${r.error}`);
  assert.equal(r.name, 'web3');
  assert.equal(r.client?.split(':')[0], topo.node(3).ip, 'the pod sees its node address, as with kube-proxy');
  const u = await udpAsk(ns('web3'), '10.96.0.30', 53);
  assert.ok(u.ok, `UDP hairpin: ${u.error}`);
});

async function capture(node: string, filter: string, fn: () => Promise<void>): Promise<string[]> {
  const cap = topo.spawn(node, 'tcpdump', ['-i', 'eth0', '-n', '-l', filter]);
  let out = '';
  let err = '';
  cap.stdout?.on('data', (d) => (out += String(d)));
  cap.stderr?.on('data', (d) => (err += String(d)));
  // tcpdump says "listening on" once its socket is open.
  for (let i = 0; i < 50 && !err.includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
  try {
    await fn();
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    cap.kill('SIGINT');
    await new Promise((r) => cap.once('exit', r));
  }
  return out.split('\n').filter((l) => / IP /.test(l));
}

test('NodePort from outside through a node without a local backend: Tunnel mode, client address preserved', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const node1 = topo.node(1);
  const node2 = topo.node(2);
  const ext = topo.external!;
  let r = await tcpAsk(ns('ext'), node1.ip, 30080);
  assert.ok(r.ok, `TCP NodePort: ${r.error}`);
  assert.equal(r.name, 'web2');
  assert.equal(r.client?.split(':')[0], ext.ip, 'the backend sees the external client');
  const u = await udpAsk(ns('ext'), node1.ip, 30053);
  assert.ok(u.ok, `UDP NodePort: ${u.error}`);
  assert.equal(u.client?.split(':')[0], ext.ip);
  // Replies come back to node1 inside Sluice's tunnel.
  const back = await capture('node1', `udp port 4789 and src host ${node2.ip}`, async () => {
    r = await tcpAsk(ns('ext'), node1.ip, 30080);
    assert.ok(r.ok);
  });
  assert.ok(back.length > 0, 'tunnel mode: replies return through the ingress node');
});

test('DSR: the backend node answers the external client directly', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  dp?.close();
  dp = new LabDatapath(topo, { tag: 'traffic-dsr', dsr: true });
  services(dp);
  const node1 = topo.node(1);
  const node2 = topo.node(2);
  const ext = topo.external!;
  let r: Awaited<ReturnType<typeof tcpAsk>> | undefined;
  const back = await capture('node1', `src host ${node2.ip}`, async () => {
    r = await tcpAsk(ns('ext'), node1.ip, 30080);
  });
  assert.ok(r?.ok, `TCP NodePort in DSR mode: ${r?.error}`);
  assert.equal(r?.client?.split(':')[0], ext.ip);
  assert.deepEqual(back, [], 'no reply crossed node1');
  const direct = await capture('node2', `src host ${node1.ip} and dst host ${ext.ip}`, async () => {
    r = await tcpAsk(ns('ext'), node1.ip, 30080);
    assert.ok(r.ok);
  });
  assert.ok(direct.length > 0, 'node2 sent replies from the NodePort address straight to the client');
});

test('host-networked processes reach a ClusterIP through connect-time load balancing', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const root = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].find((p) => existsSync(path.join(p, 'cgroup.procs')));
  assert.ok(root);
  const cg = path.join(root!, `sluice-test-${process.pid}-node1`);
  mkdirSync(cg, { recursive: true });
  t.after(() => rmdirSync(cg));
  dp!.nodes[0].attachCgroup(cg);
  t.after(() => dp!.nodes[0].detachCgroup(cg));
  for (const proto of ['tcp', 'udp'] as const) {
    const port = proto === 'tcp' ? 80 : 53;
    const script = `echo $$ > ${cg}/cgroup.procs && exec nsenter --net=/run/netns/${topo.node(1).ns} ${process.execPath} ${ECHO_MAIN} client --${proto} ${VIP}:${port} --timeout 3000`;
    const { stdout } = await run('sh', ['-c', script], { encoding: 'utf8' });
    const res = JSON.parse(stdout.trim().split('\n')[0]) as { ok: boolean; name?: string; error?: string };
    assert.ok(res.ok, `${proto} from node1's own namespace: ${res.error}`);
    assert.equal(res.name, 'web2');
  }
});

test('a connected UDP socket of a host process does not stay pinned to a backend that left the Service', async (t) => {
  if (!requirePrivileges(t, [...TOOLS, 'python3'])) return;
  const root = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].find((p) => existsSync(path.join(p, 'cgroup.procs')));
  const cg = path.join(root!, `sluice-test-${process.pid}-udp`);
  mkdirSync(cg, { recursive: true });
  t.after(() => rmdirSync(cg));
  const node1 = dp!.nodes[0];
  node1.attachCgroup(cg);
  t.after(() => node1.detachCgroup(cg));
  // Connect once, ask, wait for the go-ahead, then keep using the same socket; on an error,
  // reconnect as applications do.
  const py = [
    'import socket, sys',
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)',
    "s.connect(('10.96.0.40', 53)); s.send(b'q\\n'); print('first', s.recv(200).decode().split()[0], flush=True)",
    'sys.stdin.readline()',
    'try:',
    "    s.send(b'q\\n'); print('second', s.recv(200).decode().split()[0], 'same-socket', flush=True)",
    'except OSError as e:',
    "    print('error', e.errno, flush=True)",
    "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.connect(('10.96.0.40', 53))",
    "    s.send(b'q\\n'); print('second', s.recv(200).decode().split()[0], 'reconnected', flush=True)",
  ].join('\n');
  const { spawn } = await import('node:child_process');
  const child = spawn('sh', [
    '-c',
    `echo $$ > ${cg}/cgroup.procs && exec nsenter --net=/run/netns/${topo.node(1).ns} python3 -c "$0"`,
    py,
  ]);
  let out = '';
  child.stdout.on('data', (d) => (out += String(d)));
  child.stderr.on('data', (d) => (out += String(d)));
  for (let i = 0; i < 50 && !out.includes('first'); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(out, /^first web2/m);
  // web2 leaves the Service; web3 takes its place.
  dp!.service({ svcId: 9, addr: '10.96.0.40', port: 53, proto: Proto.UDP, backends: [{ pod: 'web3', port: 8081 }] });
  const gone = node1.forgetBackend({ addr: topo.pod('web2').ip, port: 8081, proto: Proto.UDP });
  assert.equal(gone.sockets, 1, 'the socket connected to web2 was destroyed');
  child.stdin.write('go\n');
  await new Promise((r) => child.once('exit', r));
  assert.match(out, /^error \d+$/m, 'the application saw its socket fail');
  assert.match(out, /^second web3 reconnected$/m);
});
