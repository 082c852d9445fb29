// Kernel tests of the lab topology: a 3-node VXLAN cluster with 2 pods per node and an external
// namespace, real TCP/UDP/HTTP through the echo workload with source-address checks, exec exit
// codes, idempotent and repairing up(), pods added and removed at run time, down(); a direct
// (no overlay) variant; and sweeping labs whose builder was killed with SIGKILL, also mid-up().
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Topology } from '../../src/lab/topology.js';
import { ProcessRecorder, run } from '../../src/lab/exec.js';
import { httpAsk, startEcho, tcpAsk, udpAsk, type EchoResult, type RunningEcho } from '../../src/lab/echo.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';

const LAB = 'ttopo';
const TOOLS = ['ip', 'bridge', 'nsenter', 'ethtool', 'sh'];
const TCP = 5000;
const UDP = 5001;
const HTTP = 5080;
const PODS = [
  { node: 1, name: 'a1' },
  { node: 1, name: 'a2' },
  { node: 2, name: 'b1' },
  { node: 2, name: 'b2' },
  { node: 3, name: 'c1' },
  { node: 3, name: 'c2' },
];

let topo: Topology | undefined;
let upMs = 0;
const echoes = new Map<string, RunningEcho>();

before(async () => {
  if (privilegeProblem(TOOLS)) return;
  await Topology.sweep(LAB); // whatever a crashed earlier run left
  topo = new Topology({ name: LAB, nodes: 3, pods: PODS });
  const t0 = performance.now();
  await topo.up();
  upMs = performance.now() - t0;
});

after(async () => {
  for (const e of echoes.values()) await e.stop();
  await topo?.down();
});

function lab(): Topology {
  assert.ok(topo, 'the lab was not built');
  return topo;
}

async function ipJson<T>(ns: string | undefined, args: string[], tool = 'ip'): Promise<T> {
  const r = await run(tool, [...(ns ? ['-n', ns] : []), '-j', ...args]);
  assert.equal(r.code, 0, `${tool} ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout || '[]') as T;
}

function netnsList(): string[] {
  try {
    return fs.readdirSync('/run/netns');
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\S+ \(.*\) [ZX] /.test(st);
  } catch {
    return false;
  }
}

/** Nothing of a lab in the root namespace: no lab devices, no lab addresses or routes. */
async function assertRootClean(): Promise<void> {
  const links = await ipJson<Array<{ ifname: string }>>(undefined, ['link', 'show']);
  for (const l of links) assert.ok(!/^(slw[0-9a-f]{8}|vxlan\.sl)$/.test(l.ifname), `root namespace has ${l.ifname}`);
  const addrs = await ipJson<Array<{ addr_info: Array<{ local: string }> }>>(undefined, ['addr', 'show']);
  for (const a of addrs.flatMap((x) => x.addr_info))
    assert.ok(!/^(10\.65\.|192\.168\.77\.)/.test(a.local), `root namespace has address ${a.local}`);
  const routes = await ipJson<Array<{ dst: string }>>(undefined, ['route', 'show', 'table', 'all']);
  for (const r of routes) assert.ok(!/^(10\.65\.|192\.168\.77\.)/.test(r.dst), `root namespace has route ${r.dst}`);
}

function assertSeen(r: EchoResult, server: string, clientIp: string): void {
  assert.ok(r.ok, `${r.proto} to ${r.server} failed: ${r.error}`);
  assert.equal(r.name, server);
  assert.equal(r.client?.split(':')[0], clientIp, `${r.proto} ${r.server}: server saw ${r.client}`);
  assert.equal(r.client, r.local, 'the server saw the client socket address unchanged (IP and port)');
}

async function vxlanTxPackets(ns: string): Promise<number> {
  const [l] = await ipJson<Array<{ stats64: { tx: { packets: number } } }>>(ns, ['-s', 'link', 'show', 'vxlan.sl']);
  return l.stats64.tx.packets;
}

test('up(): 3 nodes, 6 pods and ext, built as a Calico-like VXLAN cluster, well under 30 s', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const topo = lab();
  const msg = `up() of 3 nodes + 6 pods + ext: ${upMs.toFixed(0)} ms`;
  t.diagnostic(msg);
  assert.ok(upMs < 30_000, msg);

  const present = new Set(netnsList());
  for (const ns of topo.namespaces) assert.ok(present.has(ns), `${ns} exists`);
  assert.deepEqual(topo.namespaces.slice().sort(), [...present].filter((n) => n.startsWith(`sl-${LAB}-`)).sort());

  const d = topo.toJSON();
  assert.equal(d.overlay, 'vxlan');
  assert.equal(d.mtu, 1450);
  assert.deepEqual(
    d.nodes.map((n) => [n.name, n.ns, n.ip, n.podCidr, n.tunnelIp]),
    [1, 2, 3].map((i) => [`node${i}`, `sl-${LAB}-node${i}`, `192.168.77.1${i}`, `10.65.${i}.0/24`, `10.65.${i}.1`]),
  );
  assert.deepEqual(
    d.pods.map((p) => [p.name, p.ns, p.ip, p.node]),
    PODS.map((p, i) => [p.name, `sl-${LAB}-p-${p.name}`, `10.65.${p.node}.${2 + (i % 2)}`, p.node]),
  );
  assert.equal(d.external?.ip, '192.168.77.200');
  assert.ok(d.nodes.every((n) => n.eth0Ifindex > 0 && (n.vxlanIfindex ?? 0) > 0));
  assert.ok(d.external && d.external.eth0Ifindex > 0);
  for (const p of d.pods) {
    assert.match(p.hostIf, /^slw[0-9a-f]{8}$/);
    assert.ok(p.hostIfindex > 0);
  }
  assert.deepEqual(JSON.parse(JSON.stringify(topo)), d, 'toJSON is plain data');

  // fabric: the bridge and one port per node and ext, nothing else
  const fabric = await ipJson<Array<{ ifname: string; master?: string }>>(topo.fabric.ns, ['link', 'show']);
  assert.deepEqual(fabric.map((l) => l.ifname).sort(), ['br0', 'ext', 'lo', 'node1', 'node2', 'node3']);
  for (const l of fabric) if (l.ifname !== 'lo' && l.ifname !== 'br0') assert.equal(l.master, 'br0');

  const node1 = topo.node(1);
  const [vx] = await ipJson<
    Array<{
      mtu: number;
      address: string;
      linkinfo: {
        info_kind: string;
        info_data: { id: number; port: number; local: string; link: string; learning: boolean };
      };
    }>
  >(node1.ns, ['-d', 'link', 'show', 'vxlan.sl']);
  assert.equal(vx.linkinfo.info_kind, 'vxlan');
  assert.equal(vx.mtu, 1450);
  assert.equal(vx.address, node1.vxlanMac);
  assert.deepEqual(
    {
      id: vx.linkinfo.info_data.id,
      port: vx.linkinfo.info_data.port,
      local: vx.linkinfo.info_data.local,
      link: vx.linkinfo.info_data.link,
      learning: vx.linkinfo.info_data.learning,
    },
    { id: 4096, port: 4789, local: '192.168.77.11', link: 'eth0', learning: false },
  );
  const routes = await ipJson<Array<{ dst: string; gateway?: string; dev: string; flags: string[] }>>(node1.ns, [
    'route',
    'show',
  ]);
  for (const o of [topo.node(2), topo.node(3)]) {
    const r = routes.find((x) => x.dst === o.podCidr);
    assert.ok(r, `node1 has a route to ${o.podCidr}`);
    assert.equal(r.gateway, o.tunnelIp);
    assert.equal(r.dev, 'vxlan.sl');
    assert.ok(r.flags.includes('onlink'));
  }
  for (const p of topo.podsOn(1)) {
    const r = routes.find((x) => x.dst === p.ip);
    assert.equal(r?.dev, p.hostIf, `node1 routes ${p.ip} to its veth`);
  }
  const neigh = await ipJson<Array<{ dst: string; lladdr: string; state: string[] }>>(node1.ns, [
    'neigh',
    'show',
    'dev',
    'vxlan.sl',
  ]);
  const fdb = await ipJson<Array<{ mac: string; dst?: string; state?: string }>>(
    node1.ns,
    ['fdb', 'show', 'dev', 'vxlan.sl'],
    'bridge',
  );
  for (const o of [topo.node(2), topo.node(3)]) {
    const n = neigh.find((x) => x.dst === o.tunnelIp);
    assert.equal(n?.lladdr, o.vxlanMac);
    assert.ok(n?.state.includes('PERMANENT'));
    const f = fdb.find((x) => x.mac === o.vxlanMac);
    assert.equal(f?.dst, o.ip);
    assert.equal(f?.state, 'permanent');
  }
  const sysctl = (target: string, key: string) =>
    topo.mustExec(target, 'cat', [`/proc/sys/${key}`]).then((s: string) => s.trim());
  assert.equal(await sysctl('node1', 'net/ipv4/ip_forward'), '1');
  assert.equal(await sysctl('node1', 'net/ipv4/conf/all/rp_filter'), '0');
  assert.equal(await sysctl('node1', 'net/ipv4/conf/default/rp_filter'), '0');
  const a1 = topo.pod('a1');
  assert.equal(await sysctl('node1', `net/ipv4/conf/${a1.hostIf}/proxy_arp`), '1');
  assert.equal(await sysctl('node1', `net/ipv4/neigh/${a1.hostIf}/proxy_delay`), '0');

  // the pod: a /32, MTU 1450, default route via 169.254.1.1 which is link scope
  const [eth0] = await ipJson<Array<{ mtu: number; addr_info: Array<{ local: string; prefixlen: number }> }>>(a1.ns, [
    'addr',
    'show',
    'eth0',
  ]);
  assert.equal(eth0.mtu, 1450);
  assert.deepEqual(
    eth0.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
    [`${a1.ip}/32`],
  );
  const podRoutes = await ipJson<Array<{ dst: string; gateway?: string; dev: string; scope?: string }>>(a1.ns, [
    'route',
    'show',
  ]);
  assert.deepEqual(
    podRoutes.map((r) => [r.dst, r.gateway, r.dev, r.scope]),
    [
      ['default', '169.254.1.1', 'eth0', undefined],
      ['169.254.1.1', undefined, 'eth0', 'link'],
    ],
  );

  // checksum offloads off on both ends of every veth
  const ends: Array<[string, string]> = [
    ...['node1', 'node2', 'node3', 'ext'].map((p): [string, string] => ['fabric', p]),
    ...['node1', 'node2', 'node3', 'ext'].map((t): [string, string] => [t, 'eth0']),
    ...topo.pods.map((p): [string, string] => [p.name, 'eth0']),
    ...topo.pods.map((p): [string, string] => [`node${p.node}`, p.hostIf]),
  ];
  await Promise.all(
    ends.map(async ([target, dev]) => {
      const k = await topo.mustExec(target, 'ethtool', ['-k', dev]);
      assert.match(k, /^tx-checksumming: off/m, `${target}/${dev} tx`);
      assert.match(k, /^rx-checksumming: off/m, `${target}/${dev} rx`);
    }),
  );
  await assertRootClean();
});

test('pod to pod across nodes and on one node: TCP, UDP and HTTP see the source pod IP', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const topo = lab();
  await Promise.all(
    topo.pods.map(async (p) => {
      echoes.set(p.name, await startEcho(topo, p.name, { name: p.name, tcp: TCP, udp: UDP, http: HTTP }));
    }),
  );
  const tx1 = await vxlanTxPackets(topo.node(1).ns);
  const pairs: Array<[string, string]> = [
    ['a1', 'b1'], // node1 -> node2
    ['a1', 'c2'], // node1 -> node3
    ['b2', 'a2'], // node2 -> node1
    ['c1', 'b2'], // node3 -> node2
    ['a1', 'a2'], // same node
    ['c2', 'c1'], // same node
  ];
  await Promise.all(
    pairs.map(async ([from, to]) => {
      const src = topo.pod(from);
      const dst = topo.pod(to);
      assertSeen(await tcpAsk(src.ns, dst.ip, TCP), to, src.ip);
      assertSeen(await udpAsk(src.ns, dst.ip, UDP), to, src.ip);
    }),
  );
  assertSeen(await httpAsk(topo.pod('b1').ns, topo.pod('c1').ip, HTTP), 'c1', topo.pod('b1').ip);
  assert.ok((await vxlanTxPackets(topo.node(1).ns)) > tx1, 'cross-node traffic went through vxlan.sl');
});

test('node to pod, external to node, and external routes', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const topo = lab();
  if (echoes.size === 0) {
    t.skip('needs the echo servers of the previous test');
    return;
  }
  const node1 = topo.node(1);
  const node2 = topo.node(2);
  // to a local pod the node's source is its underlay address; to a remote one, its tunnel address
  assertSeen(await tcpAsk(node1.ns, topo.pod('a1').ip, TCP), 'a1', node1.ip);
  assertSeen(await udpAsk(node1.ns, topo.pod('b1').ip, UDP), 'b1', node1.tunnelIp ?? '');

  const onNode = await startEcho(topo, 'node2', { name: 'node2', tcp: TCP, udp: UDP });
  echoes.set('node2', onNode);
  const ext = topo.external;
  assert.ok(ext);
  assertSeen(await tcpAsk(ext.ns, node2.ip, TCP), 'node2', ext.ip);
  assertSeen(await udpAsk(ext.ns, node2.ip, UDP), 'node2', ext.ip);

  // ext knows only node IPs: no route to pods, until one is added explicitly
  const b1 = topo.pod('b1');
  const unreachable = await tcpAsk(ext.ns, b1.ip, TCP, { timeoutMs: 2000 });
  assert.equal(unreachable.ok, false);
  assert.equal(unreachable.error, 'ENETUNREACH');
  await topo.addExternalRoute(node2.podCidr, node2.ip);
  assert.deepEqual(topo.toJSON().external?.routes, [{ cidr: node2.podCidr, via: node2.ip }]);
  assertSeen(await tcpAsk(ext.ns, b1.ip, TCP), 'b1', ext.ip);
  await topo.removeExternalRoute(node2.podCidr);
  assert.equal((await tcpAsk(ext.ns, b1.ip, TCP, { timeoutMs: 2000 })).error, 'ENETUNREACH');
  // and pods cannot reach anything beyond the lab: nodes have no default route
  const out = await tcpAsk(topo.pod('a1').ns, '1.1.1.1', 80, { timeoutMs: 2000 });
  assert.equal(out.ok, false);
});

test('exec and spawn run in the target namespace only and pass exit codes through', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const topo = lab();
  for (const target of ['a1', 'node2', 'ext', 'fabric']) {
    const r = await topo.exec(target, 'sh', ['-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.code, 7, target);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal((await topo.exec(target, 'true')).code, 0);
  }
  // only the network namespace changes: the mount namespace (and so /sys/fs/bpf) stays ours
  const ns = await topo.mustExec('c1', 'readlink', ['/proc/self/ns/net', '/proc/self/ns/mnt']);
  const [net, mnt] = ns.trim().split('\n');
  assert.notEqual(net, fs.readlinkSync('/proc/self/ns/net'));
  assert.equal(mnt, fs.readlinkSync('/proc/self/ns/mnt'));
  const addrs = await topo.mustExec('c1', 'ip', ['-o', '-4', 'addr', 'show', 'eth0']);
  assert.match(addrs, new RegExp(`inet ${topo.pod('c1').ip.replace(/\./g, '\\.')}/32`));

  const slow = await topo.exec('node1', 'sleep', ['5'], { timeoutMs: 200 });
  assert.equal(slow.timedOut, true);
  assert.equal(slow.code, null);
  assert.equal((await topo.exec('ext', 'no-such-command-here')).code, 127);
  await assert.rejects(topo.mustExec('node3', 'sh', ['-c', 'exit 3']), /exit code 3/);
  assert.throws(() => topo.nsOf('nope'), /no pod nope/);
  assert.throws(() => topo.nsOf('node4'), /no node 4/);

  const child = topo.spawn('b2', 'sh', ['-c', 'cat /proc/sys/net/ipv4/ip_forward; exit 4']);
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 4);
  assert.equal(out, '0\n'); // a pod does not forward; only nodes do
});

test('up() again is idempotent, repairs what is missing, and a new instance adopts the lab', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const topo = lab();
  const before = JSON.stringify(topo);
  const t0 = performance.now();
  await topo.up();
  t.diagnostic(`second up(): ${(performance.now() - t0).toFixed(0)} ms`);
  assert.equal(JSON.stringify(topo), before, 'same interfaces, addresses and indexes');
  const a1 = topo.pod('a1');
  const b1 = topo.pod('b1');
  assertSeen(await tcpAsk(a1.ns, b1.ip, TCP), 'b1', a1.ip); // the servers survived

  // break node2's overlay and a pod's default route; up() puts them back
  const node2 = topo.node(2);
  await run('ip', ['-n', node2.ns, 'link', 'del', 'vxlan.sl']);
  await run('ip', ['-n', a1.ns, 'route', 'del', 'default']);
  assert.equal((await tcpAsk(a1.ns, b1.ip, TCP, { timeoutMs: 1000 })).ok, false);
  await topo.up();
  assertSeen(await tcpAsk(a1.ns, b1.ip, TCP), 'b1', a1.ip);
  assert.ok((topo.node(2).vxlanIfindex ?? 0) > 0);

  // another process (here: instance) with the same configuration reuses and adopts
  const again = new Topology({ name: LAB, nodes: 3 });
  await again.up();
  assert.deepEqual(
    again.pods.map((p) => [p.name, p.ip, p.hostIf, p.hostIfindex]),
    topo.pods.map((p) => [p.name, p.ip, p.hostIf, p.hostIfindex]),
  );
  const opened = Topology.open(LAB);
  assert.ok(opened?.running);
  assert.equal(JSON.stringify(opened), JSON.stringify(again));
});

test('addPod and removePod on a running lab', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const topo = lab();
  const b3 = await topo.addPod(2, 'b3');
  assert.equal(b3.ip, '10.65.2.4');
  assert.ok(b3.hostIfindex > 0);
  await assert.rejects(topo.addPod(2, 'b3'), /already has a pod b3/);
  await assert.rejects(topo.addPod(1, 'node1'), /reserved/);
  const e = await startEcho(topo, 'b3', { name: 'b3', tcp: TCP, udp: UDP });
  const a2 = topo.pod('a2');
  assertSeen(await tcpAsk(a2.ns, b3.ip, TCP), 'b3', a2.ip);
  assertSeen(await udpAsk(a2.ns, b3.ip, UDP), 'b3', a2.ip);
  const exited = new Promise<void>((resolve) => e.child.once('exit', () => resolve()));
  await topo.removePod('b3');
  await exited; // its processes were killed with it
  assert.ok(!netnsList().includes(b3.ns));
  assert.equal((await tcpAsk(a2.ns, b3.ip, TCP, { timeoutMs: 1000 })).ok, false);
  const routes = await ipJson<Array<{ dst: string }>>(topo.node(2).ns, ['route', 'show']);
  assert.ok(!routes.some((r) => r.dst === b3.ip), 'the /32 went with the veth');
  const b4 = await topo.addPod(2, 'b4');
  assert.equal(b4.ip, '10.65.2.4', 'the address was freed');
  await topo.removePod('b4');
});

test('down() leaves no namespace, process or state behind', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const topo = lab();
  const pids = [...echoes.values()].map((e) => e.child.pid ?? 0).filter((p) => p > 0);
  assert.ok(pids.length > 0 && pids.every(alive));
  const sleeper = topo.spawn('ext', 'sleep', ['600']);
  const r = await topo.down();
  assert.ok(r.namespaces.length >= 11);
  assert.ok(!netnsList().some((n) => n.startsWith(`sl-${LAB}-`)), 'no namespace left');
  assert.ok(!fs.existsSync(Topology.stateDir(LAB)), 'no state left');
  await new Promise((res) => setTimeout(res, 50));
  for (const pid of [...pids, sleeper.pid ?? 0]) assert.ok(!alive(pid), `process ${pid} is gone`);
  echoes.clear();
  assert.equal(topo.running, false);
  await topo.down(); // idempotent
  await assertRootClean();
});

test('direct overlay: routes via node IPs, no VXLAN, MTU 1500', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const name = 'tdirect';
  await Topology.sweep(name);
  const d = new Topology({
    name,
    nodes: 2,
    overlay: 'direct',
    external: false,
    pods: [
      { node: 1, name: 'x' },
      { node: 2, name: 'y' },
    ],
  });
  const servers: RunningEcho[] = [];
  try {
    await d.up();
    assert.equal(d.external, null);
    assert.ok(!netnsList().includes(`sl-${name}-ext`));
    assert.equal(d.node(1).tunnelIp, undefined);
    const links = await ipJson<Array<{ ifname: string }>>(d.node(1).ns, ['link', 'show']);
    assert.ok(!links.some((l) => l.ifname === 'vxlan.sl'));
    const routes = await ipJson<Array<{ dst: string; gateway?: string; dev: string }>>(d.node(1).ns, ['route', 'show']);
    const r = routes.find((x) => x.dst === '10.65.2.0/24');
    assert.deepEqual([r?.gateway, r?.dev], ['192.168.77.12', 'eth0']);
    const [eth0] = await ipJson<Array<{ mtu: number }>>(d.pod('x').ns, ['link', 'show', 'eth0']);
    assert.equal(eth0.mtu, 1500);
    for (const p of d.pods) servers.push(await startEcho(d, p.name, { name: p.name, tcp: TCP, udp: UDP }));
    const x = d.pod('x');
    const y = d.pod('y');
    assertSeen(await tcpAsk(x.ns, y.ip, TCP), 'y', x.ip);
    assertSeen(await udpAsk(y.ns, x.ip, UDP), 'x', y.ip);
    assertSeen(await tcpAsk(d.node(2).ns, x.ip, TCP), 'x', d.node(2).ip);
  } finally {
    for (const s of servers) await s.stop();
    await d.down();
  }
  assert.ok(!netnsList().some((n) => n.startsWith(`sl-${name}-`)));
});

// ---------------------------------------------------------------------------------------------
// Crash: the builder is killed with SIGKILL

const CRASH = 'tcrash';
const TOPOLOGY_JS = new URL('../../src/lab/topology.js', import.meta.url).href;

/** A child node process that builds lab CRASH; it stops (blocks) at `blockAt`, or after spawning. */
function builder(blockAt: string | null): { child: ChildProcess; line: (re: RegExp) => Promise<string> } {
  const script = `
    import { Topology } from ${JSON.stringify(TOPOLOGY_JS)};
    const block = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
    const topo = new Topology({ name: ${JSON.stringify(CRASH)}, nodes: 3,
      pods: [1, 1, 2, 2, 3, 3].map((node, i) => ({ node, name: 'q' + i })) });
    await topo.up({ progress: (s) => { process.stdout.write('step ' + s + '\\n');
      if (s === ${JSON.stringify(blockAt)}) block(); } });
    const a = topo.spawn('node1', 'sleep', ['600']);
    const b = topo.spawn('q3', 'sleep', ['601']);
    process.stdout.write('spawned ' + a.pid + ' ' + b.pid + '\\n');
    block();
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  const line = (re: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const timer = setInterval(() => {
        const m = out.split('\n').find((l) => re.test(l));
        if (m !== undefined) {
          clearInterval(timer);
          resolve(m);
        } else if (child.exitCode !== null) {
          clearInterval(timer);
          reject(new Error(`builder exited ${child.exitCode}: ${out}${err}`));
        }
      }, 5);
    });
  return { child, line };
}

async function kill9(child: ChildProcess): Promise<void> {
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await gone;
}

test('crash: Topology.sweep removes a lab whose builder was killed mid-up() and after spawning', async (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  await Topology.sweep(CRASH);
  const children: ChildProcess[] = [];
  let decoy: ChildProcess | undefined;
  try {
    // 1. killed while creating the pods: a half-made lab, swept
    const b1 = builder('pods');
    children.push(b1.child);
    await b1.line(/^step pods$/);
    await kill9(b1.child);
    const half = netnsList().filter((n) => n.startsWith(`sl-${CRASH}-`));
    assert.ok(half.includes(`sl-${CRASH}-node2`) && half.includes(`sl-${CRASH}-p-q0`), half.join(' '));
    const swept = await Topology.sweep(CRASH);
    assert.deepEqual(swept.namespaces.sort(), half.sort());
    assert.ok(!netnsList().some((n) => n.startsWith(`sl-${CRASH}-`)));
    assert.ok(!fs.existsSync(Topology.stateDir(CRASH)));

    // 2. killed while configuring the nodes: a later up() completes the half-made lab
    const b2 = builder('node2');
    children.push(b2.child);
    await b2.line(/^step node2$/);
    await kill9(b2.child);
    const resumed = new Topology({ name: CRASH, nodes: 3 });
    await resumed.up();
    assert.equal(resumed.pods.length, 6, 'pods adopted from the state file');
    const q5 = resumed.pod('q5');
    assert.equal((await resumed.exec('q0', 'ping', ['-c', '1', '-W', '2', q5.ip])).code, 0);
    await resumed.down();

    // 3. killed after spawning processes: sweep kills exactly the recorded ones
    const b3 = builder(null);
    children.push(b3.child);
    const [, p1, p2] = (await b3.line(/^spawned /)).split(' ').map(Number);
    await kill9(b3.child);
    assert.ok(alive(p1) && alive(p2), 'spawned processes outlive their builder');
    // a record whose command line does not match its (live) PID must not be killed
    decoy = spawn('sleep', ['602'], { stdio: 'ignore' });
    new ProcessRecorder(path.join(Topology.stateDir(CRASH), 'procs')).record(decoy.pid ?? 0, [['sleep', '1']], 'x');
    const r = await Topology.sweep(CRASH);
    assert.deepEqual(r.killed.sort(), [p1, p2].sort());
    await new Promise((res) => setTimeout(res, 100));
    assert.ok(!alive(p1) && !alive(p2), 'recorded processes killed');
    assert.ok(decoy.pid !== undefined && alive(decoy.pid), 'unmatched record left alone');
    assert.ok(!netnsList().some((n) => n.startsWith(`sl-${CRASH}-`)));
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    decoy?.kill('SIGKILL');
    await Topology.sweep(CRASH);
  }
});

test('configuration is validated', () => {
  assert.throws(() => new Topology({ name: 'TooLongName' }), /1-8 characters/);
  assert.throws(() => new Topology({ name: 't' }), /reserved/);
  assert.throws(() => new Topology({ name: 'ok', nodes: 0 }), /nodes/);
  assert.throws(() => new Topology({ name: 'ok', podCidr: '10.65.0.0/24' }), /no room/);
  assert.throws(() => new Topology({ name: 'ok', underlay: '192.168.77.0/25' }), /\/24 or larger/);
  assert.throws(() => new Topology({ name: 'ok', pods: [{ node: 4, name: 'x' }] }), /no node 4/);
  assert.throws(() => new Topology({ name: 'ok', pods: [{ node: 1, name: 'Bad_Name' }] }), /pod name/);
  const topo = new Topology({ name: 'ok', nodes: 2, underlay: '10.9.0.0/16', podCidr: '172.20.0.0/16' });
  assert.deepEqual(
    topo.nodes.map((n) => [n.ip, n.podCidr, n.tunnelIp]),
    [
      ['10.9.0.11', '172.20.1.0/24', '172.20.1.1'],
      ['10.9.0.12', '172.20.2.0/24', '172.20.2.1'],
    ],
  );
  assert.equal(topo.external?.ip, '10.9.0.200');
  assert.equal(topo.running, false);
});
