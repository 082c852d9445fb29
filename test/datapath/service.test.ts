// The Service datapath through BPF_PROG_TEST_RUN: one packet's journey across the real tc
// programs of two simulated nodes (request, forward, reply), checking rewritten addresses,
// checksums, return codes and conntrack.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SimNode } from '../../src/testing/sim-node.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import { TcAct } from '../../src/bpf/test-run.js';
import { FrontendFlags, Proto } from '../../src/datapath/nat.js';
import { RouteFlags } from '../../src/datapath/routes.js';
import { CtFlags, CtType, TcpSeen, ctKeyOf } from '../../src/datapath/conntrack.js';
import {
  EP_MAP,
  EpFlags,
  RULES_MAP,
  RuleAction,
  epMap,
  rulesMap,
  type EpEntry,
  type RuleEntry,
} from '../../src/datapath/policy.js';
import { eth, frame, icmp, ipv4, payload, tcp, udp } from '../../src/packet/index.js';
import type { PacketRun } from '../../src/bpf/test-run.js';

const NODE1 = '192.168.77.11';
const NODE2 = '192.168.77.12';
const EXT = '192.168.77.200';
const POD1 = '10.65.1.2'; // client pod on node1
const POD2 = '10.65.2.2'; // backend pod on node2
const POD1B = '10.65.1.3'; // backend pod on node1
const VIP = '10.96.0.10';

let n1: SimNode;
let n2: SimNode;
let n2dsr: SimNode;

function topology(n: SimNode, self: 1 | 2): void {
  const other = self === 1 ? NODE2 : NODE1;
  n.route(`${other}/32`, RouteFlags.REMOTE_HOST);
  n.route('10.65.1.0/24', self === 1 ? RouteFlags.IN_POOL : RouteFlags.REMOTE_WL | RouteFlags.IN_POOL, {
    nextHop: NODE1,
  });
  n.route('10.65.2.0/24', self === 2 ? RouteFlags.IN_POOL : RouteFlags.REMOTE_WL | RouteFlags.IN_POOL, {
    nextHop: NODE2,
  });
  const local = self === 1 ? [POD1, POD1B] : [POD2];
  for (const p of local) n.route(`${p}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, { ifindex: 1 });
}

before(() => {
  if (privilegeProblem()) return;
  n1 = new SimNode(NODE1);
  n2 = new SimNode(NODE2);
  n2dsr = new SimNode(NODE2, { dsr: true });
  topology(n1, 1);
  topology(n2, 2);
  topology(n2dsr, 2);
});
after(() => {
  n1?.close();
  n2?.close();
  n2dsr?.close();
});

function clean(r: PacketRun): void {
  assert.deepEqual(r.checksumProblems, [], 'every checksum of the output is right');
}

function resetCt(): void {
  for (const n of [n1, n2, n2dsr]) n.conntrack.clear();
  for (const n of [n1, n2, n2dsr]) n.nat.affinity.clear();
}

test('ClusterIP over TCP: DNAT on the first packet, reverse NAT on replies, later packets from conntrack', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({ svcId: 1, addr: VIP, port: 80, proto: Proto.TCP, backends: [{ addr: POD2, port: 8080 }] });

  const syn = frame(eth(), ipv4({ src: POD1, dst: VIP }), tcp({ sport: 40000, dport: 80, flags: 'S' }));
  const r1 = n1.run('from_wep', syn);
  assert.equal(r1.retval, TcAct.OK);
  assert.equal(r1.parsed?.ipv4?.dst, POD2);
  assert.equal(r1.parsed?.tcp?.dport, 8080);
  assert.equal(r1.parsed?.ipv4?.src, POD1, 'the client address is kept');
  clean(r1);
  const ct = new Map([...n1.conntrack.entries()].map(([k, v]) => [JSON.stringify(k), v]));
  const fwd = ct.get(JSON.stringify(ctKeyOf(POD1, 40000, VIP, 80, Proto.TCP)));
  const rev = ct.get(JSON.stringify(ctKeyOf(POD1, 40000, POD2, 8080, Proto.TCP)));
  assert.equal(fwd?.type, CtType.NAT_FWD);
  assert.deepEqual([fwd?.natAddr, fwd?.natPort], [POD2, 8080]);
  assert.equal(rev?.type, CtType.NAT_REV);
  assert.deepEqual([rev?.natAddr, rev?.natPort], [VIP, 80]);

  // The reply reaches the client's interface (to_wep) with the backend's address: restored.
  const synack = frame(eth(), ipv4({ src: POD2, dst: POD1 }), tcp({ sport: 8080, dport: 40000, flags: 'SA' }));
  const r2 = n1.run('to_wep', synack);
  assert.equal(r2.retval, TcAct.OK);
  assert.deepEqual([r2.parsed?.ipv4?.src, r2.parsed?.tcp?.sport], [VIP, 80]);
  clean(r2);

  // Only the first packet reads the frontend: with the Service gone, the flow still works.
  n1.nat.frontends.clear();
  const ack = frame(
    eth(),
    ipv4({ src: POD1, dst: VIP }),
    tcp({ sport: 40000, dport: 80, flags: 'A' }),
    payload('GET /'),
  );
  const r3 = n1.run('from_wep', ack);
  assert.deepEqual([r3.parsed?.ipv4?.dst, r3.parsed?.tcp?.dport], [POD2, 8080]);
  clean(r3);
  assert.equal(r3.mapChanges.filter((c) => c.before === undefined).length, 0, 'no new conntrack entries');
  const seen = [...n1.conntrack.entries()].find(([, v]) => v.type === CtType.NAT_FWD)![1];
  assert.ok(seen.tcpA | seen.tcpB, 'TCP flags recorded');
});

test('a TCP segment without SYN of a flow conntrack does not know goes to the kernel untouched, marked (connections from before eBPF mode)', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({ svcId: 1, addr: VIP, port: 80, proto: Proto.TCP, backends: [{ addr: POD2, port: 8080 }] });
  const KUBE_MASQ = 0x4000;
  // A connection kube-proxy NATed in the kernel before the programs were attached: its next
  // segment from the client, and the backend's reply on its way back.
  for (const [role, f] of [
    [
      'from_wep',
      frame(eth(), ipv4({ src: POD1, dst: VIP }), tcp({ sport: 40400, dport: 80, flags: 'A' }), payload('more')),
    ],
    [
      'to_wep',
      frame(eth(), ipv4({ src: VIP, dst: POD1 }), tcp({ sport: 80, dport: 40400, flags: 'PA' }), payload('ok')),
    ],
    ['from_hep', frame(eth(), ipv4({ src: EXT, dst: NODE1 }), tcp({ sport: 50400, dport: 30080, flags: 'FA' }))],
    // mid-handshake: the SYN went through kube-proxy's rules, the backend's SYN-ACK comes now
    ['from_wep', frame(eth(), ipv4({ src: POD1, dst: POD2 }), tcp({ sport: 8080, dport: 40401, flags: 'SA' }))],
  ] as const) {
    const r = n1.run(role, f, { mark: KUBE_MASQ });
    assert.equal(r.retval, TcAct.OK, `${role}: passed to the kernel`);
    assert.ok(r.out.equals(f), `${role}: not translated`);
    assert.equal(r.mapChanges.length, 0, `${role}: no conntrack entry made`);
    assert.equal(r.ctx?.readUInt32LE(8), KUBE_MASQ | 0x01000000, `${role}: marked for the guard rule, other bits kept`);
  }
  // The same tuple's SYN is a new connection: served by the eBPF dataplane.
  const syn = n1.run(
    'from_wep',
    frame(eth(), ipv4({ src: POD1, dst: VIP }), tcp({ sport: 40400, dport: 80, flags: 'S' })),
    {
      mark: 0,
    },
  );
  assert.deepEqual([syn.parsed?.ipv4?.dst, syn.parsed?.tcp?.dport], [POD2, 8080]);
  assert.equal(
    syn.ctx?.readUInt32LE(8),
    0x02000000,
    "a packet the dataplane serves is marked seen (the kernel's conntrack skips it)",
  );
});

test('ClusterIP over UDP, including a datagram without a checksum', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({ svcId: 2, addr: VIP, port: 53, proto: Proto.UDP, backends: [{ addr: POD1B, port: 5353, local: true }] });
  for (const checksum of [undefined, 0]) {
    const q = frame(
      eth(),
      ipv4({ src: POD1, dst: VIP }),
      udp({ sport: 41000 + (checksum ?? 1), dport: 53, checksum }),
      payload('query'),
    );
    const r = n1.run('from_wep', q);
    assert.deepEqual([r.parsed?.ipv4?.dst, r.parsed?.udp?.dport], [POD1B, 5353]);
    clean(r);
    if (checksum === 0) assert.equal(r.parsed?.udp?.checksum, 0, 'no checksum stays no checksum');
    // The local backend replies: reverse NAT happens on its own interface (from_wep).
    const reply = frame(
      eth(),
      ipv4({ src: POD1B, dst: POD1 }),
      udp({ sport: 5353, dport: 41000 + (checksum ?? 1), checksum }),
      payload('answer'),
    );
    const rr = n1.run('from_wep', reply);
    assert.deepEqual([rr.parsed?.ipv4?.src, rr.parsed?.udp?.sport], [VIP, 53]);
    clean(rr);
  }
});

test('a Service without backends rejects with ICMP port unreachable from the Service address', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({ svcId: 3, addr: '10.96.0.33', port: 80, proto: Proto.TCP, backends: [] });
  const syn = frame(
    eth({ src: '02:00:00:00:00:01', dst: '02:00:00:00:00:02' }),
    ipv4({ src: POD1, dst: '10.96.0.33' }),
    tcp({ sport: 40001, dport: 80 }),
  );
  const r = n1.run('from_wep', syn);
  assert.equal(r.retval, TcAct.REDIRECT, 'sent back out of the interface it came from');
  assert.equal(r.parsed?.eth.dst, '02:00:00:00:00:01', 'to the sender');
  assert.equal(r.parsed?.ipv4?.src, '10.96.0.33');
  assert.equal(r.parsed?.ipv4?.dst, POD1);
  assert.deepEqual([r.parsed?.icmp?.type, r.parsed?.icmp?.code], [3, 3]);
  assert.equal(r.parsed?.icmp?.inner?.tcp?.sport, 40001, 'the error quotes the client packet');
  clean(r);
  assert.equal(r.mapChanges.length, 0, 'nothing tracked');
});

test('NodePort, backend on another node, Tunnel mode: forwarded in VXLAN with the client address, reply back the same way', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const svc = {
    svcId: 4,
    addr: '0.0.0.0',
    port: 30080,
    proto: Proto.TCP,
    flags: FrontendFlags.NODEPORT,
  };
  n1.service({ ...svc, backends: [{ addr: POD2, port: 8080 }] });
  n2.service({ ...svc, backends: [{ addr: POD2, port: 8080, local: true }] });

  const syn = frame(
    eth(),
    ipv4({ src: EXT, dst: NODE1 }),
    tcp({ sport: 50000, dport: 30080, flags: 'S' }),
    payload(32),
  );
  const a = n1.run('from_hep', syn);
  assert.equal(a.retval, TcAct.OK);
  assert.equal(a.parsed?.ipv4?.src, NODE1);
  assert.equal(a.parsed?.ipv4?.dst, NODE2);
  assert.equal(a.parsed?.udp?.dport, 4789);
  assert.equal(a.parsed?.vxlan?.vni, 0x5c1);
  const inner = a.parsed?.vxlan?.inner;
  assert.deepEqual(
    [inner?.ipv4?.src, inner?.ipv4?.dst, inner?.tcp?.dport],
    [EXT, NODE1, 30080],
    'inner packet unchanged',
  );
  clean(a);
  const fwd = [...n1.conntrack.entries()].map(([, v]) => v);
  assert.equal(fwd.length, 1);
  assert.equal(fwd[0].flags & CtFlags.FWD_TUNNEL, CtFlags.FWD_TUNNEL);
  assert.equal(fwd[0].tunIp, NODE2);

  // node2 decapsulates, picks its local backend and delivers with the client's address.
  const b = n2.run('from_hep', a.out);
  assert.equal(b.retval, TcAct.OK);
  assert.deepEqual([b.parsed?.ipv4?.src, b.parsed?.ipv4?.dst, b.parsed?.tcp?.dport], [EXT, POD2, 8080]);
  assert.equal(b.parsed?.vxlan, undefined);
  clean(b);

  // The backend's reply is reverse-NATed on node2 and tunnelled back to node1...
  const synack = frame(eth(), ipv4({ src: POD2, dst: EXT }), tcp({ sport: 8080, dport: 50000, flags: 'SA' }));
  const c = n2.run('from_wep', synack);
  assert.deepEqual([c.parsed?.ipv4?.src, c.parsed?.ipv4?.dst], [NODE2, NODE1]);
  const ri = c.parsed?.vxlan?.inner;
  assert.deepEqual([ri?.ipv4?.src, ri?.tcp?.sport, ri?.ipv4?.dst, ri?.tcp?.dport], [NODE1, 30080, EXT, 50000]);
  clean(c);
  // ...which sends it to the client from the address the client used.
  const d = n1.run('from_hep', c.out);
  assert.deepEqual([d.parsed?.ipv4?.src, d.parsed?.tcp?.sport, d.parsed?.ipv4?.dst], [NODE1, 30080, EXT]);
  assert.equal(d.parsed?.vxlan, undefined);
  clean(d);

  // Later packets of the flow follow conntrack on both nodes.
  const ack = frame(eth(), ipv4({ src: EXT, dst: NODE1 }), tcp({ sport: 50000, dport: 30080, flags: 'A' }));
  const e = n1.run('from_hep', ack);
  assert.equal(e.parsed?.vxlan?.inner.tcp?.flags, 'A');
  const f = n2.run('from_hep', e.out);
  assert.deepEqual([f.parsed?.ipv4?.dst, f.parsed?.tcp?.dport], [POD2, 8080]);
});

test('NodePort in DSR mode: the backend node answers the client directly from the NodePort address', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const svc = { svcId: 5, addr: '0.0.0.0', port: 30081, proto: Proto.UDP, flags: FrontendFlags.NODEPORT };
  n1.service({ ...svc, backends: [{ addr: POD2, port: 9090 }] });
  n2dsr.service({ ...svc, backends: [{ addr: POD2, port: 9090, local: true }] });
  const q = frame(eth(), ipv4({ src: EXT, dst: NODE1 }), udp({ sport: 50001, dport: 30081 }), payload('ping'));
  const a = n1.run('from_hep', q);
  const b = n2dsr.run('from_hep', a.out);
  assert.deepEqual([b.parsed?.ipv4?.src, b.parsed?.ipv4?.dst], [EXT, POD2]);
  const reply = frame(eth(), ipv4({ src: POD2, dst: EXT }), udp({ sport: 9090, dport: 50001 }), payload('pong'));
  const c = n2dsr.run('from_wep', reply);
  assert.equal(c.parsed?.vxlan, undefined, 'not tunnelled back');
  assert.deepEqual([c.parsed?.ipv4?.src, c.parsed?.udp?.sport, c.parsed?.ipv4?.dst], [NODE1, 30081, EXT]);
  clean(c);
  const rev = [...n2dsr.conntrack.entries()].map(([, v]) => v).find((v) => v.type === CtType.NAT_REV)!;
  assert.equal(rev.flags & CtFlags.DSR, CtFlags.DSR);
});

test('externalTrafficPolicy Local: only local backends, no forwarding, drop when none', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const base = {
    svcId: 6,
    addr: '0.0.0.0',
    port: 30082,
    proto: Proto.TCP,
    flags: FrontendFlags.NODEPORT | FrontendFlags.EXT_LOCAL,
  };
  n1.service({ ...base, backends: [{ addr: POD2, port: 8080 }] });
  const syn = frame(eth(), ipv4({ src: EXT, dst: NODE1 }), tcp({ sport: 50002, dport: 30082 }));
  assert.equal(n1.run('from_hep', syn).retval, TcAct.SHOT, 'no local backend: dropped, not forwarded');
  n1.service({
    ...base,
    backends: [
      { addr: POD1B, port: 8080, local: true },
      { addr: POD2, port: 8080 },
    ],
  });
  for (let i = 0; i < 20; i++) {
    const r = n1.run('from_hep', frame(eth(), ipv4({ src: EXT, dst: NODE1 }), tcp({ sport: 51000 + i, dport: 30082 })));
    assert.deepEqual(
      [r.parsed?.ipv4?.src, r.parsed?.ipv4?.dst],
      [EXT, POD1B],
      'always the local backend, client IP kept',
    );
  }
  // Pod traffic to the same NodePort is not external: any backend.
  const fromPod = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const r = n1.run(
      'from_wep',
      frame(eth(), ipv4({ src: POD1, dst: NODE1 }), tcp({ sport: 52000 + i, dport: 30082 })),
    );
    fromPod.add(r.parsed!.ipv4!.dst);
  }
  assert.deepEqual([...fromPod].sort(), [POD1B, POD2].sort());
});

test('internalTrafficPolicy Local: pods reach only local backends', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const base = { svcId: 7, addr: '10.96.0.77', port: 80, proto: Proto.TCP, flags: FrontendFlags.INT_LOCAL };
  n1.service({ ...base, backends: [{ addr: POD2, port: 8080 }] });
  assert.equal(
    n1.run('from_wep', frame(eth(), ipv4({ src: POD1, dst: '10.96.0.77' }), tcp({ sport: 40077, dport: 80 }))).retval,
    TcAct.SHOT,
  );
  n1.service({
    ...base,
    backends: [
      { addr: POD2, port: 8080 },
      { addr: POD1B, port: 8080, local: true },
    ],
  });
  for (let i = 0; i < 10; i++) {
    const r = n1.run(
      'from_wep',
      frame(eth(), ipv4({ src: POD1, dst: '10.96.0.77' }), tcp({ sport: 40100 + i, dport: 80 })),
    );
    assert.equal(r.parsed?.ipv4?.dst, POD1B);
  }
});

test('sessionAffinity ClientIP: new connections from one client stick to one backend', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const backends = [1, 2, 3, 4].map((i) => ({ addr: `10.65.2.${10 + i}`, port: 8080 }));
  n1.service({ svcId: 8, addr: '10.96.0.88', port: 80, proto: Proto.TCP, backends, affinityTimeout: 60 });
  const chosen = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const r = n1.run(
      'from_wep',
      frame(eth(), ipv4({ src: POD1, dst: '10.96.0.88' }), tcp({ sport: 42000 + i, dport: 80 })),
    );
    chosen.add(r.parsed!.ipv4!.dst);
  }
  assert.equal(chosen.size, 1, 'one backend for all 20 connections');
  // Without affinity the same 20 connections spread.
  resetCt();
  n1.service({ svcId: 8, addr: '10.96.0.88', port: 80, proto: Proto.TCP, backends, affinityTimeout: 0 });
  const spread = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const r = n1.run(
      'from_wep',
      frame(eth(), ipv4({ src: POD1, dst: '10.96.0.88' }), tcp({ sport: 43000 + i, dport: 80 })),
    );
    spread.add(r.parsed!.ipv4!.dst);
  }
  assert.ok(spread.size > 1);
});

test('ICMP errors about a NATed flow are translated back to the Service address', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({ svcId: 9, addr: VIP, port: 53, proto: Proto.UDP, backends: [{ addr: POD2, port: 5353 }] });
  const q = frame(eth(), ipv4({ src: POD1, dst: VIP }), udp({ sport: 44000, dport: 53 }), payload('query'));
  const sent = n1.run('from_wep', q);
  assert.equal(sent.parsed?.ipv4?.dst, POD2);
  // The backend's node answers port unreachable quoting the NATed packet.
  const quoted = sent.out.subarray(14);
  const err = frame(eth(), ipv4({ src: POD2, dst: POD1 }), icmp({ type: 3, code: 3, inner: quoted }));
  const r = n1.run('to_wep', err);
  assert.equal(r.retval, TcAct.OK);
  assert.equal(r.parsed?.ipv4?.src, VIP, 'the error comes from the Service address');
  assert.equal(r.parsed?.icmp?.inner?.ipv4?.dst, VIP);
  assert.equal(r.parsed?.icmp?.inner?.udp?.dport, 53);
  assert.equal(r.parsed?.icmp?.inner?.udp?.sport, 44000);
  clean(r);
});

test('a too-big DF packet for the tunnel gets fragmentation-needed with the tunnel MTU', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({
    svcId: 10,
    addr: '0.0.0.0',
    port: 30090,
    proto: Proto.TCP,
    flags: FrontendFlags.NODEPORT,
    backends: [{ addr: POD2, port: 8080 }],
  });
  // The handshake makes the flow (a segment of an unknown flow without SYN is the kernel's).
  const syn = n1.run(
    'from_hep',
    frame(eth(), ipv4({ src: EXT, dst: NODE1 }), tcp({ sport: 50090, dport: 30090, flags: 'S' })),
  );
  assert.ok(
    syn.mapChanges.some((c) => c.before === undefined),
    'the SYN made a conntrack entry',
  );
  const big = frame(
    eth(),
    ipv4({ src: EXT, dst: NODE1, df: true }),
    tcp({ sport: 50090, dport: 30090, flags: 'A' }),
    payload(1460),
  );
  const r = n1.run('from_hep', big);
  assert.equal(r.retval, TcAct.REDIRECT);
  assert.deepEqual([r.parsed?.icmp?.type, r.parsed?.icmp?.code, r.parsed?.icmp?.mtu], [3, 4, 1450]);
  assert.deepEqual([r.parsed?.ipv4?.src, r.parsed?.ipv4?.dst], [NODE1, EXT]);
  clean(r);
});

test('loadBalancerSourceRanges: allowed networks are served, others dropped', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const LB = '192.168.77.100';
  n1.service({
    svcId: 11,
    addr: LB,
    port: 443,
    proto: Proto.TCP,
    flags: FrontendFlags.EXTERNAL,
    backends: [{ addr: POD1B, port: 8443, local: true }],
    sourceRanges: ['192.168.77.192/26'],
  });
  const ok = n1.run('from_hep', frame(eth(), ipv4({ src: EXT, dst: LB }), tcp({ sport: 50100, dport: 443 })));
  assert.equal(ok.parsed?.ipv4?.dst, POD1B);
  const denied = n1.run(
    'from_hep',
    frame(eth(), ipv4({ src: '192.168.77.5', dst: LB }), tcp({ sport: 50101, dport: 443 })),
  );
  assert.equal(denied.retval, TcAct.SHOT);
});

test('fragments, IP options and SCTP: nothing crashes, nothing bypasses', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({ svcId: 12, addr: VIP, port: 80, proto: Proto.UDP, backends: [{ addr: POD2, port: 8080 }] });
  // A non-first fragment carries no ports: passed to the kernel untouched.
  const frag = frame(eth(), ipv4({ src: POD1, dst: VIP, fragOffset: 185, proto: 'udp' }), payload(64));
  const f = n1.run('from_wep', frag);
  assert.equal(f.retval, TcAct.OK);
  assert.ok(f.out.equals(frag));
  // With IP options the L4 header is found after them and NAT still keeps checksums right.
  const opts = frame(
    eth(),
    ipv4({ src: POD1, dst: VIP, options: Buffer.from([1, 1, 1, 0]) }),
    udp({ sport: 45000, dport: 80 }),
    payload('x'),
  );
  const o = n1.run('from_wep', opts);
  assert.equal(o.parsed?.ipv4?.dst, POD2);
  assert.equal(o.parsed?.udp?.dport, 8080);
  clean(o);
  // SCTP is not handled (a documented limitation): untouched.
  const sctp = frame(eth(), ipv4({ src: POD1, dst: VIP, proto: 132 }), payload(32));
  const s = n1.run('from_wep', sctp);
  assert.equal(s.retval, TcAct.OK);
  assert.ok(s.out.equals(sctp));
  // Truncated headers are dropped as malformed, never read past the end.
  const short = frame(eth(), ipv4({ src: POD1, dst: VIP, proto: 'tcp' }), payload(4));
  assert.equal(n1.run('from_wep', short).retval, TcAct.SHOT);
});

test('hairpin: a pod reaching itself through its Service gets its own packets back, from the node address', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({
    svcId: 13,
    addr: '10.96.0.13',
    port: 80,
    proto: Proto.TCP,
    backends: [{ addr: POD1B, port: 8080, local: true }],
  });
  const podMac = '02:00:00:00:00:0b';
  const hostMac = 'ee:ee:ee:ee:ee:ee';
  const syn = frame(
    eth({ src: podMac, dst: hostMac }),
    ipv4({ src: POD1B, dst: '10.96.0.13' }),
    tcp({ sport: 46000, dport: 80, flags: 'S' }),
  );
  const r = n1.run('from_wep', syn);
  assert.equal(r.retval, TcAct.REDIRECT, 'sent straight back into the pod');
  assert.deepEqual([r.parsed?.eth.src, r.parsed?.eth.dst], [hostMac, podMac]);
  assert.deepEqual(
    [r.parsed?.ipv4?.src, r.parsed?.tcp?.sport, r.parsed?.ipv4?.dst, r.parsed?.tcp?.dport],
    [NODE1, 46000, POD1B, 8080],
  );
  clean(r);
  // The pod answers the node address; the reply becomes the Service's answer to the pod.
  const synack = frame(
    eth({ src: podMac, dst: hostMac }),
    ipv4({ src: POD1B, dst: NODE1 }),
    tcp({ sport: 8080, dport: 46000, flags: 'SA' }),
  );
  const r2 = n1.run('from_wep', synack);
  assert.equal(r2.retval, TcAct.REDIRECT);
  assert.deepEqual(
    [r2.parsed?.ipv4?.src, r2.parsed?.tcp?.sport, r2.parsed?.ipv4?.dst, r2.parsed?.tcp?.dport],
    ['10.96.0.13', 80, POD1B, 46000],
  );
  clean(r2);
  // The next segment of the same connection follows conntrack.
  const ack = frame(
    eth({ src: podMac, dst: hostMac }),
    ipv4({ src: POD1B, dst: '10.96.0.13' }),
    tcp({ sport: 46000, dport: 80, flags: 'A' }),
  );
  const r3 = n1.run('from_wep', ack);
  assert.deepEqual([r3.parsed?.ipv4?.src, r3.parsed?.ipv4?.dst, r3.parsed?.tcp?.dport], [NODE1, POD1B, 8080]);
  clean(r3);
});

// A client that reuses its source port (port exhaustion, benchmarks, SO_REUSEADDR) opens a new
// connection on the tuple of a closed one whose conntrack entries have not expired yet.
const seg = (sport: number, flags: string) =>
  frame(eth(), ipv4({ src: POD1, dst: VIP }), tcp({ sport, dport: 80, flags }));
const back = (from: string, sport: number, flags: string) =>
  frame(eth(), ipv4({ src: from, dst: POD1 }), tcp({ sport: 8080, dport: sport, flags }));

/** Each side's TCP flags over both entries of the NAT flow, as userspace's expiry combines them. */
function flowFlags(n: SimNode, sport: number, backend: string): { opener: number; peer: number } {
  let opener = 0;
  let peer = 0;
  for (const k of [ctKeyOf(POD1, sport, VIP, 80, Proto.TCP), ctKeyOf(POD1, sport, backend, 8080, Proto.TCP)]) {
    const v = n.conntrack.get(k);
    if (!v) continue;
    opener |= v.openerIsB ? v.tcpB : v.tcpA;
    peer |= v.openerIsB ? v.tcpA : v.tcpB;
  }
  return { opener, peer };
}

/** A ClusterIP connection to POD2 from POD1:sport, opened and then closed with FINs or a reset. */
function closedFlow(sport: number, close: 'fin' | 'rst'): void {
  assert.equal(n1.run('from_wep', seg(sport, 'S')).parsed?.ipv4?.dst, POD2);
  assert.equal(n1.run('to_wep', back(POD2, sport, 'SA')).parsed?.ipv4?.src, VIP);
  n1.run('from_wep', seg(sport, 'A'));
  if (close === 'rst') {
    assert.equal(n1.run('to_wep', back(POD2, sport, 'RA')).parsed?.ipv4?.src, VIP);
    return;
  }
  n1.run('from_wep', seg(sport, 'FA'));
  n1.run('to_wep', back(POD2, sport, 'FA'));
  // The last ACK (the closer's TIME_WAIT) still belongs to the old connection.
  assert.equal(n1.run('from_wep', seg(sport, 'A')).parsed?.ipv4?.dst, POD2);
}

for (const close of ['fin', 'rst'] as const) {
  test(`a SYN reusing the tuple of a ClusterIP flow closed by ${close === 'fin' ? 'FINs' : 'a reset'} is a new flow: the backend that left is not used`, (t) => {
    if (!requirePrivileges(t)) return;
    resetCt();
    const svc = { svcId: 14, addr: VIP, port: 80, proto: Proto.TCP };
    n1.service({ ...svc, backends: [{ addr: POD2, port: 8080 }] });
    const sport = close === 'fin' ? 40500 : 40501;
    closedFlow(sport, close);
    // POD2 leaves the Service (TCP flows are not forgotten: they end on their own); POD1B stays.
    n1.service({ ...svc, backends: [{ addr: POD1B, port: 8080, local: true }] });
    const r = n1.run('from_wep', seg(sport, 'S'));
    assert.equal(r.retval, TcAct.OK);
    assert.deepEqual([r.parsed?.ipv4?.dst, r.parsed?.tcp?.dport], [POD1B, 8080], 'a fresh backend choice');
    clean(r);
    const fwd = n1.conntrack.get(ctKeyOf(POD1, sport, VIP, 80, Proto.TCP));
    assert.deepEqual([fwd?.type, fwd?.natAddr], [CtType.NAT_FWD, POD1B]);
    assert.equal(n1.conntrack.get(ctKeyOf(POD1, sport, POD2, 8080, Proto.TCP)), undefined, 'the old flow is gone');
    assert.deepEqual(flowFlags(n1, sport, POD1B), { opener: TcpSeen.SYN, peer: 0 }, 'a new connection');
    const synack = n1.run('to_wep', back(POD1B, sport, 'SA'));
    assert.deepEqual([synack.parsed?.ipv4?.src, synack.parsed?.tcp?.sport], [VIP, 80]);
  });
}

test('a SYN reusing the tuple of a closed ClusterIP flow with the same backend: a new connection, not a closed one', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  n1.service({ svcId: 15, addr: VIP, port: 80, proto: Proto.TCP, backends: [{ addr: POD2, port: 8080 }] });
  const sport = 40510;
  closedFlow(sport, 'fin');
  const before = n1.conntrack.get(ctKeyOf(POD1, sport, VIP, 80, Proto.TCP))!;
  const r = n1.run('from_wep', seg(sport, 'S'));
  assert.deepEqual([r.parsed?.ipv4?.dst, r.parsed?.tcp?.dport], [POD2, 8080]);
  clean(r);
  // Left with the old FINs, expiry would treat the new connection as closed and end it early.
  assert.deepEqual(flowFlags(n1, sport, POD2), { opener: TcpSeen.SYN, peer: 0 });
  const after = n1.conntrack.get(ctKeyOf(POD1, sport, VIP, 80, Proto.TCP))!;
  assert.ok(after.createdNs >= before.lastSeenNs, 'a new entry');
  const synack = n1.run('to_wep', back(POD2, sport, 'SA'));
  assert.deepEqual([synack.parsed?.ipv4?.src, synack.parsed?.tcp?.sport], [VIP, 80]);
  const ack = n1.run('from_wep', seg(sport, 'A'));
  assert.deepEqual([ack.parsed?.ipv4?.dst, ack.parsed?.tcp?.dport], [POD2, 8080]);
});

test('a SYN of a flow that has not closed keeps its entry and backend: retransmits, half-close', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const svc = { svcId: 16, addr: VIP, port: 80, proto: Proto.TCP };
  n1.service({ ...svc, backends: [{ addr: POD2, port: 8080 }] });
  const sport = 40520;
  assert.equal(n1.run('from_wep', seg(sport, 'S')).parsed?.ipv4?.dst, POD2);
  n1.service({ ...svc, backends: [{ addr: POD1B, port: 8080, local: true }] });
  for (const [dir, f] of [
    ['from_wep', seg(sport, 'S')], // SYN_SENT: no answer yet
    ['to_wep', back(POD2, sport, 'SA')], // the answer, lost on its way to the client ...
    ['from_wep', seg(sport, 'S')], // ... which sends its SYN again
    ['from_wep', seg(sport, 'A')],
    ['from_wep', seg(sport, 'FA')], // only the client has closed
    ['from_wep', seg(sport, 'S')],
  ] as const) {
    const r = n1.run(dir, f);
    assert.equal(r.retval, TcAct.OK);
    if (dir === 'from_wep') assert.equal(r.parsed?.ipv4?.dst, POD2, 'still the backend chosen first');
    assert.equal(r.mapChanges.filter((c) => c.before === undefined || c.after === undefined).length, 0);
  }
});

test("a closed flow's reverse entry, taken by a later flow through another frontend, stays that flow's", (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const VIP2 = '10.96.0.21';
  n1.service({ svcId: 20, addr: VIP, port: 80, proto: Proto.TCP, backends: [{ addr: POD2, port: 8080 }] });
  n1.service({ svcId: 21, addr: VIP2, port: 80, proto: Proto.TCP, backends: [{ addr: POD2, port: 8080 }] });
  const sport = 40540;
  n1.run('from_wep', seg(sport, 'S'));
  n1.run('to_wep', back(POD2, sport, 'SA'));
  n1.run('from_wep', seg(sport, 'R'));
  // The same client port to the other frontend, and so to the same backend tuple.
  const other = frame(eth(), ipv4({ src: POD1, dst: VIP2 }), tcp({ sport, dport: 80, flags: 'S' }));
  assert.equal(n1.run('from_wep', other).parsed?.ipv4?.dst, POD2);
  n1.service({
    svcId: 20,
    addr: VIP,
    port: 80,
    proto: Proto.TCP,
    backends: [{ addr: POD1B, port: 8080, local: true }],
  });
  assert.equal(n1.run('from_wep', seg(sport, 'S')).parsed?.ipv4?.dst, POD1B);
  const reply = n1.run('to_wep', back(POD2, sport, 'SA'));
  assert.deepEqual([reply.parsed?.ipv4?.src, reply.parsed?.tcp?.sport], [VIP2, 80], 'the other flow still works');
});

/** A node with one workload (POD1) on test-run's device and a rule table written directly. */
function policyNode(ep: Partial<EpEntry>, rules: Partial<RuleEntry>[]): SimNode {
  const n = new SimNode(NODE1);
  topology(n, 1);
  rules.forEach((r, index) =>
    rulesMap(n.coll.map(RULES_MAP)).set({ index }, {
      ...{ action: 0, proto: 0, notProto: 0, flags: 0, icmpType: 0, icmpCode: 0, notIcmpType: 0, notIcmpCode: 0 },
      ...{ nSport: 0, nNotSport: 0, nDport: 0, nNotDport: 0, jump: 0, id: index + 1, dstNamedSet: 0 },
      ...{ srcSet: [0, 0], srcNotSet: [0, 0], dstSet: [0, 0], dstNotSet: [0, 0] },
      ...{ sport: Array(8).fill(0), notSport: Array(8).fill(0), dport: Array(8).fill(0), notDport: Array(8).fill(0) },
      ...r,
    } as RuleEntry),
  );
  epMap(n.coll.map(EP_MAP)).set(
    { ifindex: 1 },
    {
      ...{ addr: POD1, flags: 0, inStart: 0, inLen: 0, egStart: 0, egLen: 0 },
      ...{ fwdInStart: 0, fwdInLen: 0, fwdEgStart: 0, fwdEgLen: 0, preStart: 0, preLen: 0 },
      ...ep,
    },
  );
  return n;
}

test("policy judges the reused tuple again: the client's egress policy meets the new backend", (t) => {
  if (!requirePrivileges(t)) return;
  // Egress: TCP to port 9090 denied, the rest allowed.
  const n = policyNode({ flags: EpFlags.EG_POLICY, egStart: 0, egLen: 2 }, [
    { action: RuleAction.DENY, proto: Proto.TCP, nDport: 1, dport: [9090, 9090, 0, 0, 0, 0, 0, 0] },
    { action: RuleAction.ALLOW },
  ]);
  t.after(() => n.close());
  const svc = { svcId: 17, addr: VIP, port: 80, proto: Proto.TCP };
  n.service({ ...svc, backends: [{ addr: POD2, port: 8080 }] });
  const sport = 40530;
  for (const [dir, f] of [
    ['from_wep', seg(sport, 'S')],
    ['to_wep', back(POD2, sport, 'SA')],
    ['from_wep', seg(sport, 'FA')],
    ['to_wep', back(POD2, sport, 'FA')],
    ['from_wep', seg(sport, 'A')],
  ] as const)
    assert.equal(n.run(dir, f).retval, TcAct.OK, 'the first connection is allowed');
  n.service({ ...svc, backends: [{ addr: POD1B, port: 9090, local: true }] });
  assert.equal(n.run('from_wep', seg(sport + 1, 'S')).retval, TcAct.SHOT, 'a new port: denied');
  assert.equal(n.run('from_wep', seg(sport, 'S')).retval, TcAct.SHOT, 'the reused port: denied too');
});

test("policy judges the reused tuple again: reused in the other direction, the new responder's ingress policy applies", (t) => {
  if (!requirePrivileges(t)) return;
  // POD1 may open connections; nothing may open one to it.
  const n = policyNode({ flags: EpFlags.IN_POLICY, inStart: 0, inLen: 1 }, [{ action: RuleAction.DENY }]);
  t.after(() => n.close());
  const out = (flags: string) =>
    frame(eth(), ipv4({ src: POD1, dst: POD2 }), tcp({ sport: 41000, dport: 8080, flags }));
  const inc = (flags: string) =>
    frame(eth(), ipv4({ src: POD2, dst: POD1 }), tcp({ sport: 8080, dport: 41000, flags }));
  for (const [dir, f] of [
    ['from_wep', out('S')],
    ['to_wep', inc('SA')],
    ['from_wep', out('A')],
    ['from_wep', out('FA')],
    ['to_wep', inc('FA')],
    ['from_wep', out('A')],
  ] as const)
    assert.equal(n.run(dir, f).retval, TcAct.OK, 'the connection POD1 opened and its replies pass');
  const r = n.run('to_wep', inc('S'));
  assert.equal(r.retval, TcAct.SHOT, "POD2 opening a connection on the old tuple meets POD1's ingress policy");
});

test('a reused tuple after a closed hairpin flow: both of its entries go, the new flow is not hairpinned', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const HVIP = '10.96.0.18';
  const svc = { svcId: 18, addr: HVIP, port: 80, proto: Proto.TCP };
  n1.service({ ...svc, backends: [{ addr: POD1B, port: 8080, local: true }] });
  const client = (flags: string) =>
    frame(eth(), ipv4({ src: POD1B, dst: HVIP }), tcp({ sport: 46100, dport: 80, flags }));
  const server = (flags: string) =>
    frame(eth(), ipv4({ src: POD1B, dst: NODE1 }), tcp({ sport: 8080, dport: 46100, flags }));
  for (const f of [client('S'), server('SA'), client('A'), client('FA'), server('FA'), client('A')])
    assert.equal(n1.run('from_wep', f).retval, TcAct.REDIRECT, 'hairpinned');
  n1.service({ ...svc, backends: [{ addr: POD2, port: 8080 }] });
  const r = n1.run('from_wep', client('S'));
  assert.equal(r.retval, TcAct.OK);
  assert.deepEqual([r.parsed?.ipv4?.src, r.parsed?.ipv4?.dst], [POD1B, POD2]);
  clean(r);
  assert.equal(n1.conntrack.get(ctKeyOf(NODE1, 46100, POD1B, 8080, Proto.TCP)), undefined, 'the hairpin entry is gone');
  assert.equal(n1.conntrack.get(ctKeyOf(POD1B, 46100, HVIP, 80, Proto.TCP))?.snatAddr, '0.0.0.0');
});

test('a reused tuple after a closed NodePort flow in Tunnel mode: new entries on both nodes, a fresh backend choice', (t) => {
  if (!requirePrivileges(t)) return;
  resetCt();
  const svc = { svcId: 19, addr: '0.0.0.0', port: 30083, proto: Proto.TCP, flags: FrontendFlags.NODEPORT };
  n1.service({ ...svc, backends: [{ addr: POD2, port: 8080 }] });
  n2.service({ ...svc, backends: [{ addr: POD2, port: 8080, local: true }] });
  const client = (flags: string) =>
    frame(eth(), ipv4({ src: EXT, dst: NODE1 }), tcp({ sport: 50300, dport: 30083, flags }));
  const server = (flags: string) =>
    frame(eth(), ipv4({ src: POD2, dst: EXT }), tcp({ sport: 8080, dport: 50300, flags }));
  // Each packet's whole way: the client's through node1's tunnel to node2, replies back through node1.
  const request = (flags: string) => n2.run('from_hep', n1.run('from_hep', client(flags)).out);
  const reply = (flags: string) => n1.run('from_hep', n2.run('from_wep', server(flags)).out);
  const flows = () => [...n1.conntrack.entries(), ...n2.conntrack.entries()].map(([, v]) => v);
  const handshake = () => {
    assert.equal(request('S').parsed?.ipv4?.dst, POD2);
    const synack = reply('SA');
    assert.deepEqual([synack.parsed?.ipv4?.src, synack.parsed?.tcp?.sport], [NODE1, 30083]);
    assert.equal(request('A').parsed?.ipv4?.dst, POD2);
  };
  handshake();
  request('FA');
  reply('FA');
  request('A');
  assert.equal(flows().length, 3, "node1's entry, node2's two");
  // The same backend: the SYN makes new entries on both nodes, no state of the old connection.
  handshake();
  assert.deepEqual(
    flows().map((v) => (v.tcpA | v.tcpB) & (TcpSeen.FIN | TcpSeen.RST)),
    [0, 0, 0],
  );
  request('R');
  // node1 now has a local backend only: its next SYN on the tuple no longer goes to node2.
  n1.service({ ...svc, backends: [{ addr: POD1B, port: 8080, local: true }] });
  const r = n1.run('from_hep', client('S'));
  assert.equal(r.parsed?.vxlan, undefined, 'not tunnelled');
  assert.deepEqual([r.parsed?.ipv4?.src, r.parsed?.ipv4?.dst], [EXT, POD1B]);
  clean(r);
});
