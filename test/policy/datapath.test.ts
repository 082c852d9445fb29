// Policy through BPF_PROG_TEST_RUN: the engine's tables written by the writer into the real tc
// program's maps, packets judged on a workload interface (test-run's device: loopback).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SimNode } from '../../src/testing/sim-node.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import { TcAct } from '../../src/bpf/test-run.js';
import { eth, frame, icmp, ipv4, payload, tcp, udp } from '../../src/packet/index.js';
import { PolicyEngine, podInfo } from '../../src/policy/engine.js';
import { PolicyWriter, type DesiredEndpoint } from '../../src/policy/writer.js';
import { EP_MAP, IPSETS_MAP, RULES_MAP, epMap, ipsetsMap, rulesMap } from '../../src/datapath/policy.js';
import { ctKeyOf, CtPol } from '../../src/datapath/conntrack.js';
import { FrontendFlags, Proto } from '../../src/datapath/nat.js';
import { RouteFlags } from '../../src/datapath/routes.js';

const LO = 1;
const SERVER = '10.65.1.2';
const CLIENT_OK = '10.65.1.3';
const CLIENT_NO = '10.65.1.4';

let node: SimNode;
let engine: PolicyEngine;
let writer: PolicyWriter;

function pod(name: string, ip: string, labels: Record<string, string>) {
  return podInfo({
    metadata: { namespace: 'ns1', name, labels },
    spec: { containers: [{ ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { podIP: ip },
  });
}

function program(serverIfindex = LO): void {
  for (const [k, ep] of engine.endpoints()) writer.sets.upsertEndpoint(k, ep);
  const t = engine.tablesFor('ns1/server');
  const want = new Map<number, DesiredEndpoint>([[serverIfindex, { addr: SERVER, rpf: true, ...t }]]);
  writer.sync(want);
  writer.rejudgeFlows();
}

before(() => {
  if (privilegeProblem()) return;
  node = new SimNode('192.168.77.11');
  node.route(`${SERVER}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, { ifindex: LO });
  engine = new PolicyEngine();
  engine.setNamespace('ns1', { team: 'a' });
  engine.setPod(pod('server', SERVER, { app: 'web' }));
  engine.setPod(pod('good', CLIENT_OK, { role: 'client' }));
  engine.setPod(pod('bad', CLIENT_NO, { role: 'other' }));
  writer = new PolicyWriter(
    {
      ep: epMap(node.coll.map(EP_MAP)),
      rules: rulesMap(node.coll.map(RULES_MAP)),
      ipsets: ipsetsMap(node.coll.map(IPSETS_MAP)),
      conntrack: node.conntrack,
    },
    65536,
  );
});

after(() => node?.close());

const syn = (src: string, dport: number, sport = 40000) =>
  frame(eth(), ipv4({ src, dst: SERVER }), tcp({ sport, dport, flags: 'S' }), payload(8));

test('no policy: traffic to the pod is allowed and tracked with the responder verdict', (t) => {
  if (!requirePrivileges(t)) return;
  program();
  const r = node.run('to_wep', syn(CLIENT_NO, 8080, 41000));
  assert.equal(r.retval, TcAct.OK);
  const e = node.conntrack.get(ctKeyOf(CLIENT_NO, 41000, SERVER, 8080, Proto.TCP));
  assert.equal(e?.pol, CtPol.RESPONDER);
});

test('NetworkPolicy ingress: allowed peer and port pass, others are dropped, replies pass', (t) => {
  if (!requirePrivileges(t)) return;
  engine.setK8sPolicy({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { namespace: 'ns1', name: 'web' },
    spec: {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { role: 'client' } } }], ports: [{ port: 'http' }] }],
    },
  } as never);
  program();
  assert.equal(node.run('to_wep', syn(CLIENT_OK, 8080)).retval, TcAct.OK);
  assert.equal(node.run('to_wep', syn(CLIENT_OK, 9090, 40001)).retval, TcAct.SHOT, 'port not allowed');
  assert.equal(node.run('to_wep', syn(CLIENT_NO, 8080, 40002)).retval, TcAct.SHOT, 'peer not allowed');
  // The reply of the allowed flow leaves the server's interface.
  const reply = frame(
    eth(),
    ipv4({ src: SERVER, dst: CLIENT_OK }),
    tcp({ sport: 8080, dport: 40000, flags: 'SA' }),
    payload(8),
  );
  assert.equal(node.run('from_wep', reply).retval, TcAct.OK);
  // UDP is not in the rule.
  const dgram = frame(eth(), ipv4({ src: CLIENT_OK, dst: SERVER }), udp({ sport: 5000, dport: 8080 }), payload(8));
  assert.equal(node.run('to_wep', dgram).retval, TcAct.SHOT);
  // ICMP echo neither (the rule has ports).
  const ping = frame(
    eth(),
    ipv4({ src: CLIENT_OK, dst: SERVER }),
    icmp({ type: 8, code: 0, id: 7, seq: 1 }),
    payload(8),
  );
  assert.equal(node.run('to_wep', ping).retval, TcAct.SHOT);
});

test('a label change after the fact: the peer leaves the selector and its established flow is cut', (t) => {
  if (!requirePrivileges(t)) return;
  const established = frame(
    eth(),
    ipv4({ src: CLIENT_OK, dst: SERVER }),
    tcp({ sport: 40000, dport: 8080, flags: 'A' }),
    payload(8),
  );
  assert.equal(node.run('to_wep', established).retval, TcAct.OK);
  engine.setPod(pod('good', CLIENT_OK, { role: 'gone' }));
  writer.sets.upsertEndpoint('ns1/good', engine.setEndpoint(engine.pod('ns1/good')!)!);
  program();
  assert.equal(node.run('to_wep', established).retval, TcAct.SHOT);
  engine.setPod(pod('good', CLIENT_OK, { role: 'client' }));
  writer.sets.upsertEndpoint('ns1/good', engine.setEndpoint(engine.pod('ns1/good')!)!);
  program();
  assert.equal(node.run('to_wep', established).retval, TcAct.OK);
});

test('anti-spoofing: a workload sending from an address not its own is dropped', (t) => {
  if (!requirePrivileges(t)) return;
  const spoofed = frame(
    eth(),
    ipv4({ src: '10.65.1.99', dst: CLIENT_OK }),
    tcp({ sport: 1234, dport: 80, flags: 'S' }),
    payload(8),
  );
  assert.equal(node.run('from_wep', spoofed).retval, TcAct.SHOT);
  const own = frame(
    eth(),
    ipv4({ src: SERVER, dst: CLIENT_OK }),
    tcp({ sport: 1234, dport: 80, flags: 'S' }),
    payload(8),
  );
  assert.equal(node.run('from_wep', own).retval, TcAct.OK);
});

test('a bad policy fails closed for the pods it selects and names the field', (t) => {
  if (!requirePrivileges(t)) return;
  engine.setK8sPolicy({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { namespace: 'ns1', name: 'bad' },
    spec: {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ ipBlock: { cidr: '10.65.1.1/16' } }] }],
    },
  } as never);
  const err = engine.errors.pop();
  assert.match(
    String(err?.message),
    /NetworkPolicy ns1\/bad: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: 10\.65\.1\.1\/16 has host bits set/,
  );
  program();
  assert.equal(node.run('to_wep', syn(CLIENT_OK, 8080, 40100)).retval, TcAct.SHOT);
  engine.deleteK8sPolicy('ns1', 'bad');
  program();
  assert.equal(node.run('to_wep', syn(CLIENT_OK, 8080, 40101)).retval, TcAct.OK);
});

test('host endpoint preDNAT: a Deny before Service NAT drops NodePort traffic from that source only', (t) => {
  if (!requirePrivileges(t)) return;
  const hn = new SimNode('192.168.77.11');
  try {
    hn.route('10.65.1.0/24', RouteFlags.IN_POOL);
    hn.route(`${SERVER}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, { ifindex: 2 });
    hn.service({
      svcId: 7,
      addr: '0.0.0.0',
      port: 30080,
      proto: Proto.TCP,
      flags: FrontendFlags.NODEPORT,
      backends: [{ addr: SERVER, port: 8080 }],
    });
    const e = new PolicyEngine();
    e.setCalicoPolicy({
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'no-bad-clients' },
      spec: {
        selector: "role == 'node'",
        preDNAT: true,
        applyOnForward: true,
        types: ['Ingress'],
        ingress: [
          { action: 'Deny', protocol: 'TCP', source: { nets: ['192.168.77.66/32'] }, destination: { ports: [30080] } },
        ],
      },
    } as never);
    assert.deepEqual(e.errors, []);
    const w = new PolicyWriter(
      {
        ep: epMap(hn.coll.map(EP_MAP)),
        rules: rulesMap(hn.coll.map(RULES_MAP)),
        ipsets: ipsetsMap(hn.coll.map(IPSETS_MAP)),
      },
      65536,
    );
    const tables = e.hostTables({ role: 'node' }, { ingress: [{ protocol: 6, port: 22 }], egress: [] });
    assert.ok(tables.preDNAT, 'a pre-DNAT table');
    w.sync(new Map([[LO, { addr: '0.0.0.0', rpf: false, host: true, ...tables }]]));
    const syn = (src: string) =>
      frame(eth(), ipv4({ src, dst: '192.168.77.11' }), tcp({ sport: 45000, dport: 30080, flags: 'S' }), payload(8));
    assert.equal(hn.run('from_hep', syn('192.168.77.66')).retval, TcAct.SHOT, 'denied before NAT');
    const ok = hn.run('from_hep', syn('192.168.77.67'));
    assert.notEqual(ok.retval, TcAct.SHOT, 'another client reaches the NodePort');
  } finally {
    hn.close();
  }
});

test('host endpoint applyOnForward: forwarded traffic judged in the direction it crosses, host traffic by its own tables', (t) => {
  if (!requirePrivileges(t)) return;
  const hn = new SimNode('192.168.77.11');
  try {
    hn.route(`${SERVER}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, { ifindex: 2 });
    const e = new PolicyEngine();
    e.setCalicoPolicy({
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'fwd' },
      spec: {
        selector: "role == 'node'",
        applyOnForward: true,
        types: ['Ingress'],
        ingress: [
          { action: 'Deny', protocol: 'TCP', destination: { ports: [9090] } },
          { action: 'Allow', protocol: 'TCP', destination: { ports: [8080, 22] } },
        ],
      },
    } as never);
    const w = new PolicyWriter(
      {
        ep: epMap(hn.coll.map(EP_MAP)),
        rules: rulesMap(hn.coll.map(RULES_MAP)),
        ipsets: ipsetsMap(hn.coll.map(IPSETS_MAP)),
      },
      65536,
    );
    const tables = e.hostTables({ role: 'node' }, { ingress: [], egress: [] });
    assert.ok(tables.fwdIngress && !tables.fwdEgress, 'a forward table for ingress only');
    w.sync(new Map([[LO, { addr: '0.0.0.0', rpf: false, host: true, ...tables }]]));
    const syn = (dst: string, dport: number) =>
      frame(eth(), ipv4({ src: '192.168.77.66', dst }), tcp({ sport: 46000 + dport, dport, flags: 'S' }), payload(8));
    assert.equal(hn.run('from_hep', syn(SERVER, 9090)).retval, TcAct.SHOT, 'forwarded to a pod, denied');
    assert.equal(hn.run('from_hep', syn(SERVER, 8080)).retval, TcAct.OK, 'forwarded to a pod, allowed');
    assert.equal(hn.conntrack.get(ctKeyOf('192.168.77.66', 54080, SERVER, 8080, Proto.TCP))?.pol, CtPol.FWD_IN);
    assert.equal(hn.run('from_hep', syn(SERVER, 7070)).retval, TcAct.SHOT, "the tier's default action (Deny)");
    // To the host itself: the host tables (the same policy, then deny).
    assert.equal(hn.run('from_hep', syn('192.168.77.11', 8080)).retval, TcAct.OK);
    assert.equal(hn.run('from_hep', syn('192.168.77.11', 7070)).retval, TcAct.SHOT);
  } finally {
    hn.close();
  }
});
