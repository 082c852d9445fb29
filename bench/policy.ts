// Network policy cost, all in one process, every figure against a baseline measured in the same
// run:
//
// 1. New flows (BPF_PROG_TEST_RUN, sl_to_wep judging a TCP SYN to an endpoint): no policy, then
//    tables of 100 and 1,000 rules that do not match (so the walk goes to the end; the matching
//    rule is last), and rules referencing an IP set of 10,000 members. New flows differ in every
//    packet (the source address and port change), so they are timed one run at a time; medians.
// 2. Established flows (conntrack's policy bit already set): the same tables in place must cost
//    nothing; test-run repeats one packet of an allowed flow.
// 3. Control plane: time from a policy change to the datapath, with the real PolicyEngine and
//    PolicyWriter writing to the real maps of a loaded tc object (a SimNode's collection), and
//    the time to add one pod to a 10,000-member selector set.
//
// Policies are Kubernetes NetworkPolicy objects given to engine.setK8sPolicy (ipBlock peers,
// ports with endPort, a podSelector peer), so the conversion is part of what is measured: one
// ingress rule with one peer and one port becomes exactly one datapath rule, and a policy of N
// ingress rules is a table of N + 2 rules (the tier's default deny and the profile's allow).
//
// Every scenario of parts 1 and 2 lives in the maps at once: each scenario's policy selects a
// "holder" pod whose endpoint (an interface index no packet uses) keeps the scenario's table in
// sl_rules_v1; the measured endpoint (test-run's device, loopback) is pointed at one scenario's
// tables at a time by writing the entry the writer wrote for the holder (only its address
// changed). Scenarios are then measured in interleaved rounds, so drift hits all of them alike.
import { SimNode } from '../src/testing/sim-node.js';
import { TcAct } from '../src/bpf/test-run.js';
import { eth, frame, ipv4, payload, tcp } from '../src/packet/index.js';
import { PolicyEngine, podInfo, type PodInfo } from '../src/policy/engine.js';
import { PolicyWriter, type DesiredEndpoint, type PolicyMaps } from '../src/policy/writer.js';
import type { NetworkPolicyObject } from '../src/policy/k8s.js';
import {
  EP_MAP,
  EpFlags,
  IPSET_PREFIX_FIXED,
  IPSETS_MAP,
  RULES_MAP,
  epMap,
  ipsetsMap,
  rulesMap,
  type EpEntry,
} from '../src/datapath/policy.js';
import { CtPol, CtType, ctKeyOf, type CtEntry, type CtKey } from '../src/datapath/conntrack.js';
import { Proto } from '../src/datapath/nat.js';
import { RouteFlags } from '../src/datapath/routes.js';
import { median } from './stats.js';

const HOST = '192.168.77.11';
const LO = 1;
const NS = 'bench';
/** The measured endpoint (behind test-run's device). */
const SERVER = '10.65.1.2';
const PORT = 8080;
/** Client pods (the members of the selector set) are 10.66.0.1, 10.66.0.2, ... */
const CLIENT_NET = '10.66.0.0/16';
/** A source no rule allows: its SYN must be dropped after the whole walk. */
const STRANGER = '10.67.0.1';

export interface NewFlowFigure {
  scenario: string;
  /** Rules in the endpoint's ingress table (policy rules + tier default + profile). */
  tableRules: number;
  setMembers: number;
  ns: number;
  overNoPolicy: number;
}

export interface EstablishedFigure {
  scenario: string;
  ns: number;
  overNoPolicy: number;
}

export interface ChangeFigure {
  rules: number;
  endpoints: number;
  conntrackEntries: number;
  reps: number;
  /** The first time the policy is applied (the endpoints become isolated): one sample. */
  firstMs: number;
  /** Medians of the changes (one rule's port changed each time). */
  totalMs: number;
  engineMs: number;
  tablesMs: number;
  syncMs: number;
  /** Then, apart: established flows of the changed endpoints re-judged (a conntrack scan). */
  rejudgeMs: number;
}

export interface PodAddFigure {
  setMembers: number;
  endpoints: number;
  conntrackEntries: number;
  reps: number;
  /** The first sync of the policy that references the set: every member written. */
  setCreateMs: number;
  /** Medians: engine.setPod + IpSets.upsertEndpoint; tablesFor of every local endpoint; writer.sync. */
  upsertMs: number;
  tablesMs: number;
  syncMs: number;
  /** upsert + sync (tables unchanged and not recomputed). */
  setsAndSyncMs: number;
  /** upsert + tables + sync: what the agent's coalesced sync does today. */
  agentMs: number;
}

export interface PolicyBenchResult {
  quick: boolean;
  singleRuns: number;
  rounds: number;
  repeat: number;
  newFlow: NewFlowFigure[];
  /** Extra cost per rule walked, from the largest table of each kind (ns). */
  perRuleNs: { ipBlock: number; ports: number };
  established: EstablishedFigure[];
  change: ChangeFigure[];
  podAdd: PodAddFigure[];
}

type Kind = 'none' | 'ipBlock' | 'ports' | 'set';

interface Scenario {
  name: string;
  kind: Kind;
  /** Policy rules (ingress entries of the NetworkPolicy); the matching one is last. */
  rules: number;
}

const gc = () => (globalThis as { gc?: () => void }).gc?.();
const ms = (t0: bigint, t1: bigint) => Number(t1 - t0) / 1e6;
const now = () => process.hrtime.bigint();

/** The n-th address of a /16 from its first host (n from 0). */
const addrIn = (net: string, n: number) => {
  const [a, b] = net.split('.');
  return `${a}.${b}.${((n + 1) >> 8) & 255}.${(n + 1) & 255}`;
};
const clientIp = (k: number) => addrIn('10.66.0.0', k);

function pod(name: string, ip: string, labels: Record<string, string>): PodInfo {
  return podInfo({ metadata: { namespace: NS, name, labels }, status: { podIP: ip } });
}

/** An ingress rule as the wire JSON has it (`from`, where the client library's type says `_from`). */
interface IngressRule {
  from?: ({ ipBlock: { cidr: string } } | { podSelector: { matchLabels: Record<string, string> } })[];
  ports?: { protocol: string; port: number; endPort?: number }[];
}

/**
 * Rules that do not match the measured flows, but only fail at their peer: their port range
 * (8000-8100) holds the flow's port, so every one costs a set lookup (a /32 that misses).
 */
const peerMiss = (i: number): IngressRule => ({
  from: [{ ipBlock: { cidr: `172.16.${(i >> 8) & 255}.${i & 255}/32` } }],
  ports: [{ protocol: 'TCP', port: 8000, endPort: 8100 }],
});

/** Rules that fail at the port (a distinct range each): no set lookup at all. */
const portMiss = (i: number): IngressRule => ({
  ports: [{ protocol: 'TCP', port: 20_000 + i * 10, endPort: 20_000 + i * 10 + 5 }],
});

function ingressFor(kind: Kind, rules: number, allowPort = PORT): IngressRule[] {
  const out: IngressRule[] = [];
  for (let i = 0; i < rules - 1; i++) out.push(kind === 'ports' ? portMiss(i) : peerMiss(i));
  const port = [{ protocol: 'TCP', port: allowPort }];
  if (kind === 'ports') out.push({ ports: port });
  else if (kind === 'set') out.push({ from: [{ podSelector: { matchLabels: { role: 'client' } } }], ports: port });
  else out.push({ from: [{ ipBlock: { cidr: CLIENT_NET } }], ports: port });
  return out;
}

function networkPolicy(name: string, podSelector: Record<string, string>, ingress: IngressRule[]): NetworkPolicyObject {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { namespace: NS, name },
    spec: { podSelector: { matchLabels: podSelector }, policyTypes: ['Ingress'], ingress },
  } as unknown as NetworkPolicyObject;
}

const syn = (src: string, sport: number, dport = PORT, dst = SERVER) =>
  frame(eth(), ipv4({ src, dst }), tcp({ sport, dport, flags: 'S' }), payload(64));
const ack = (src: string, sport: number) =>
  frame(eth(), ipv4({ src, dst: SERVER }), tcp({ sport, dport: PORT, flags: 'A' }), payload(64));

function policyMaps(node: SimNode): PolicyMaps {
  return {
    ep: epMap(node.coll.map(EP_MAP)),
    rules: rulesMap(node.coll.map(RULES_MAP)),
    ipsets: ipsetsMap(node.coll.map(IPSETS_MAP)),
    conntrack: node.conntrack,
  };
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`policy bench: ${what}`);
}

/** Plants `n` conntrack entries of flows no endpoint here takes part in (what re-judging scans). */
function fillConntrack(node: SimNode, n: number): void {
  const t = Number(process.hrtime.bigint());
  const entry: CtEntry = {
    createdNs: t,
    lastSeenNs: t,
    type: CtType.NORMAL,
    flags: 0,
    tcpA: 0,
    tcpB: 0,
    openerIsB: 0,
    pol: CtPol.OPENER | CtPol.RESPONDER,
    tunIp: '0.0.0.0',
    natAddr: '0.0.0.0',
    natPort: 0,
    snatPort: 0,
    snatAddr: '0.0.0.0',
  };
  const entries: [CtKey, CtEntry][] = [];
  for (let i = 0; i < n; i++)
    entries.push([ctKeyOf(addrIn('10.70.0.0', i >> 4), 1024 + (i & 15), '10.71.0.1', 443, Proto.TCP), entry]);
  node.conntrack.setMany(entries);
}

// ---- Parts 1 and 2: per-packet cost ---------------------------------------------------------

/** The scenarios with their indexes, starting at a different one each round (no place is favoured). */
const rotated = <T>(xs: T[], r: number): [T, number][] => xs.map((_, j) => (j + r) % xs.length).map((i) => [xs[i], i]);

function packetCost(
  scenarios: Scenario[],
  setMembers: number,
  runs: number,
  rounds: number,
  repeat: number,
): { newFlow: NewFlowFigure[]; established: EstablishedFigure[] } {
  const node = new SimNode(HOST);
  try {
    node.route(`${SERVER}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, { ifindex: LO });
    const maps = policyMaps(node);
    const writer = new PolicyWriter(maps, node.coll.map(RULES_MAP).def.maxEntries);
    const engine = new PolicyEngine();
    engine.setNamespace(NS, {});
    const clients: string[] = [];
    for (let k = 0; k < setMembers; k++) {
      clients.push(clientIp(k));
      engine.setPod(pod(`client-${k}`, clients[k], { role: 'client' }));
    }
    const desired = new Map<number, DesiredEndpoint>();
    scenarios.forEach((s, i) => {
      const holder = pod(`holder-${i}`, `10.65.9.${i + 1}`, { scenario: `s${i}` });
      engine.setPod(holder);
      if (s.kind !== 'none')
        engine.setK8sPolicy(networkPolicy(`s${i}`, { scenario: `s${i}` }, ingressFor(s.kind, s.rules)));
    });
    check(engine.errors.length === 0, `policy errors: ${engine.errors.map((e) => e.message).join('; ')}`);
    for (const [k, ep] of engine.endpoints()) writer.sets.upsertEndpoint(k, ep);
    scenarios.forEach((_, i) => {
      desired.set(1000 + i, { addr: `10.65.9.${i + 1}`, rpf: true, ...engine.tablesFor(`${NS}/holder-${i}`) });
    });
    desired.set(LO, { addr: SERVER, rpf: true });
    writer.sync(desired);

    const entries: EpEntry[] = scenarios.map((s, i) => {
      const e = writer.endpointTables(1000 + i)!.entry;
      const want = s.kind === 'none' ? 0 : s.rules + 2;
      check(
        s.kind === 'none' ? !(e.flags & EpFlags.IN_POLICY) : !!(e.flags & EpFlags.IN_POLICY) && e.inLen === want,
        `${s.name}: table of ${e.inLen} rules, expected ${want}`,
      );
      return { ...e, addr: SERVER };
    });
    const prog = node.coll.program('sl_to_wep');
    const point = (i: number) => maps.ep.set({ ifindex: LO }, entries[i]);

    // Every scenario: its verdicts checked once, and its established flow opened.
    scenarios.forEach((s, i) => {
      point(i);
      const sport = 100 + i;
      check(prog.testRun({ data: syn(clients[0], sport) }).retval === TcAct.OK, `${s.name}: allowed SYN dropped`);
      const ct = node.conntrack.get(ctKeyOf(clients[0], sport, SERVER, PORT, Proto.TCP));
      check(!!ct && (ct.pol & CtPol.RESPONDER) !== 0, `${s.name}: the allowed flow has no policy verdict in conntrack`);
      const stranger = prog.testRun({ data: syn(STRANGER, 600 + i, 9999) }).retval;
      check(stranger === (s.kind === 'none' ? TcAct.OK : TcAct.SHOT), `${s.name}: stranger's SYN got ${stranger}`);
    });

    // New flows: every packet a new tuple (the source cycles through the clients, then the port).
    let k = 0;
    let sport = 1024;
    const next = () => {
      const f = syn(clients[k], sport);
      if (++k === clients.length) {
        k = 0;
        sport++;
      }
      return f;
    };
    const samples = scenarios.map(() => [] as number[]);
    const perRound = Math.ceil(runs / rounds);
    for (let r = 0; r < rounds; r++) {
      rotated(scenarios, r).forEach(([s, i]) => {
        point(i);
        for (let n = 0; n < perRound; n++) {
          const res = prog.testRun({ data: next() });
          if (res.retval !== TcAct.OK) throw new Error(`policy bench: ${s.name}: a new flow was dropped`);
          samples[i].push(res.durationNs);
        }
      });
    }
    check(sport < 65536, 'source ports ran out');
    const newNs = samples.map(median);
    const newFlow = scenarios.map((s, i) => ({
      scenario: s.name,
      tableRules: s.kind === 'none' ? 0 : s.rules + 2,
      setMembers: s.kind === 'set' ? setMembers : 0,
      ns: newNs[i],
      overNoPolicy: newNs[i] / newNs[0],
    }));

    // Established: one flow for every scenario (one conntrack entry, one packet), so only the
    // tables in place differ. Each round, under each scenario, its verdict is cleared and one
    // packet has it judged again by that scenario's table (allowed: the bit set); then the packet
    // is repeated.
    const flowKey = ctKeyOf(clients[0], 100, SERVER, PORT, Proto.TCP);
    const estPacket = ack(clients[0], 100);
    const est = scenarios.map(() => [] as number[]);
    for (let r = 0; r < rounds; r++) {
      rotated(scenarios, r).forEach(([s, i]) => {
        point(i);
        node.conntrack.set(flowKey, { ...node.conntrack.get(flowKey)!, pol: 0 });
        check(prog.testRun({ data: estPacket }).retval === TcAct.OK, `${s.name}: established packet dropped`);
        check((node.conntrack.get(flowKey)!.pol & CtPol.RESPONDER) !== 0, `${s.name}: flow not re-judged`);
        const res = prog.testRun({ data: estPacket, repeat });
        check(res.retval === TcAct.OK, `${s.name}: established packet dropped`);
        est[i].push(res.durationNs);
      });
    }
    const estNs = est.map(median);
    const established = scenarios.map((s, i) => ({
      scenario: s.name,
      ns: estNs[i],
      overNoPolicy: estNs[i] / estNs[0],
    }));
    return { newFlow, established };
  } finally {
    node.close();
  }
}

// ---- Part 3: control plane ------------------------------------------------------------------

interface Bench3 {
  engine: PolicyEngine;
  writer: PolicyWriter;
  /** Advances the writer's clock past the quarantine: changes are taken to be over a second apart. */
  tick: () => void;
  servers: { key: string; ifindex: number; addr: string }[];
  desired: () => Map<number, DesiredEndpoint>;
}

/**
 * A fresh engine and writer over the node's maps (emptied: one load serves every case), with
 * `endpoints` local pods labelled app=web, the first behind test-run's device. Rule slots are not
 * cleared: the new writer overwrites them before any endpoint points at them.
 */
function controlPlane(node: SimNode, endpoints: number, conntrackEntries: number): Bench3 {
  const maps = policyMaps(node);
  maps.ep.clear();
  maps.ipsets.clear();
  node.conntrack.clear();
  fillConntrack(node, conntrackEntries);
  let clock = Date.now();
  const writer = new PolicyWriter(maps, node.coll.map(RULES_MAP).def.maxEntries, () => clock);
  const engine = new PolicyEngine();
  engine.setNamespace(NS, {});
  const servers: Bench3['servers'] = [];
  for (let j = 0; j < endpoints; j++) {
    const addr = j === 0 ? SERVER : addrIn('10.65.8.0', j);
    const p = pod(`web-${j}`, addr, { app: 'web' });
    engine.setPod(p);
    writer.sets.upsertEndpoint(`${NS}/web-${j}`, engine.setEndpoint(p)!);
    servers.push({ key: `${NS}/web-${j}`, ifindex: j === 0 ? LO : 100 + j, addr });
  }
  // What the agent's syncPolicy builds: every local workload with its pod's tables.
  const desired = () => {
    const d = new Map<number, DesiredEndpoint>();
    for (const s of servers) d.set(s.ifindex, { addr: s.addr, rpf: true, ...engine.tablesFor(s.key) });
    return d;
  };
  return { engine, writer, servers, desired, tick: () => (clock += 1100) };
}

/** A policy of `rules` rules over `endpoints` pods, changed `reps` times (its last rule's port). */
function changeCost(
  node: SimNode,
  rules: number,
  endpoints: number,
  conntrackEntries: number,
  reps: number,
): ChangeFigure {
  const b = controlPlane(node, endpoints, conntrackEntries);
  const client = clientIp(0);
  const prog = node.coll.program('sl_to_wep');
  const apply = (rep: number) => {
    gc();
    const t0 = now();
    b.engine.setK8sPolicy(networkPolicy('web', { app: 'web' }, ingressFor('ipBlock', rules, 30_000 + rep)));
    const t1 = now();
    const d = b.desired();
    const t2 = now();
    const res = b.writer.sync(d);
    const t3 = now();
    b.writer.rejudgeFlows();
    const t4 = now();
    check(b.engine.errors.length === 0, 'policy errors');
    check(res.tables === 1 && res.endpoints === endpoints, `sync wrote ${res.tables} tables, ${res.endpoints} eps`);
    // The change reached the datapath: the new port passes (after the whole walk), the old does not.
    check(prog.testRun({ data: syn(client, 2000 + rep, 30_000 + rep) }).retval === TcAct.OK, 'new port dropped');
    if (rep > 0)
      check(prog.testRun({ data: syn(client, 3000 + rep, 30_000 + rep - 1) }).retval === TcAct.SHOT, 'old port open');
    return { total: ms(t0, t3), engine: ms(t0, t1), tables: ms(t1, t2), sync: ms(t2, t3), rejudge: ms(t3, t4) };
  };
  const first = apply(0);
  const s: ReturnType<typeof apply>[] = [];
  for (let rep = 1; rep <= reps; rep++) {
    b.tick();
    s.push(apply(rep));
  }
  const ep = b.writer.endpointTables(LO)!.entry;
  check(ep.inLen === rules + 2, `table of ${ep.inLen} rules`);
  return {
    rules,
    endpoints,
    conntrackEntries,
    reps,
    firstMs: first.total,
    totalMs: median(s.map((x) => x.total)),
    engineMs: median(s.map((x) => x.engine)),
    tablesMs: median(s.map((x) => x.tables)),
    syncMs: median(s.map((x) => x.sync)),
    rejudgeMs: median(s.map((x) => x.rejudge)),
  };
}

/** One pod at a time joins a selector set of `members` pods that a policy over `endpoints` pods uses. */
function podAddCost(
  node: SimNode,
  members: number,
  endpoints: number,
  conntrackEntries: number,
  reps: number,
): PodAddFigure {
  const b = controlPlane(node, endpoints, conntrackEntries);
  for (let k = 0; k < members; k++) {
    const p = pod(`client-${k}`, clientIp(k), { role: 'client' });
    b.engine.setPod(p);
    b.writer.sets.upsertEndpoint(`${NS}/client-${k}`, b.engine.setEndpoint(p)!);
  }
  gc();
  const t0 = now();
  b.engine.setK8sPolicy(networkPolicy('web', { app: 'web' }, ingressFor('set', 1)));
  b.writer.sync(b.desired());
  const setCreateMs = ms(t0, now());
  const prog = node.coll.program('sl_to_wep');
  const ipsets = ipsetsMap(node.coll.map(IPSETS_MAP));
  const setId = b.writer.sets.idOf([...b.writer.sets.keys()].find((k) => k.startsWith('sel '))!)!;
  const s: { upsert: number; tables: number; sync: number }[] = [];
  for (let rep = 0; rep < reps; rep++) {
    b.tick();
    const ip = addrIn('10.68.0.0', rep);
    gc();
    const t1 = now();
    const p = pod(`new-${rep}`, ip, { role: 'client' });
    b.engine.setPod(p);
    b.writer.sets.upsertEndpoint(`${NS}/new-${rep}`, b.engine.setEndpoint(p)!);
    const t2 = now();
    const d = b.desired();
    const t3 = now();
    b.writer.sync(d);
    const t4 = now();
    b.writer.rejudgeFlows();
    s.push({ upsert: ms(t1, t2), tables: ms(t2, t3), sync: ms(t3, t4) });
    check(
      !!ipsets.get({ prefixlen: IPSET_PREFIX_FIXED + 32, setId, portKey: 0, addr: ip }),
      'the new pod is not in the set',
    );
    check(prog.testRun({ data: syn(ip, 4000) }).retval === TcAct.OK, "the new pod's SYN was dropped");
  }
  return {
    setMembers: members,
    endpoints,
    conntrackEntries,
    reps,
    setCreateMs,
    upsertMs: median(s.map((x) => x.upsert)),
    tablesMs: median(s.map((x) => x.tables)),
    syncMs: median(s.map((x) => x.sync)),
    setsAndSyncMs: median(s.map((x) => x.upsert + x.sync)),
    agentMs: median(s.map((x) => x.upsert + x.tables + x.sync)),
  };
}

export function benchPolicy({ quick }: { quick: boolean }): PolicyBenchResult {
  const big = quick ? 100 : 1000;
  const members = quick ? 1000 : 10_000;
  const scenarios: Scenario[] = [
    { name: 'no policy', kind: 'none', rules: 0 },
    { name: '100 rules, ipBlock peers', kind: 'ipBlock', rules: 100 },
    ...(quick ? [] : [{ name: '1,000 rules, ipBlock peers', kind: 'ipBlock' as const, rules: 1000 }]),
    { name: `${big.toLocaleString('en-US')} rules, ports only`, kind: 'ports', rules: big },
    { name: `1 rule, ${members.toLocaleString('en-US')}-member set`, kind: 'set', rules: 1 },
    {
      name: `${big.toLocaleString('en-US')} rules, last one the ${members.toLocaleString('en-US')}-member set`,
      kind: 'set',
      rules: big,
    },
  ];
  const runs = quick ? 1000 : 20_000;
  const rounds = quick ? 4 : 10;
  const repeat = quick ? 20_000 : 200_000;
  const { newFlow, established } = packetCost(scenarios, members, runs, rounds, repeat);
  const perRule = (kind: Kind) => {
    const f = scenarios
      .map((s, i) => [s, newFlow[i]] as const)
      .filter(([s]) => s.kind === kind)
      .sort((a, b) => b[0].rules - a[0].rules)[0];
    return f ? (f[1].ns - newFlow[0].ns) / f[0].rules : 0;
  };

  const reps = quick ? 3 : 7;
  const ct = quick ? 10_000 : 100_000;
  const change: ChangeFigure[] = [];
  const podAdd: PodAddFigure[] = [];
  const node = new SimNode(HOST);
  try {
    node.route(`${SERVER}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, { ifindex: LO });
    for (const rules of quick ? [100] : [100, 1000])
      for (const endpoints of quick ? [10] : [10, 100]) change.push(changeCost(node, rules, endpoints, 0, reps));
    change.push(changeCost(node, big, quick ? 10 : 100, ct, reps));
    for (const endpoints of quick ? [10] : [10, 100]) podAdd.push(podAddCost(node, members, endpoints, 0, reps));
    podAdd.push(podAddCost(node, members, quick ? 10 : 100, ct, reps));
  } finally {
    node.close();
  }

  return {
    quick,
    singleRuns: runs,
    rounds,
    repeat,
    newFlow,
    perRuleNs: { ipBlock: perRule('ipBlock'), ports: perRule('ports') },
    established,
    change,
    podAdd,
  };
}

/** The summary lines `npm run bench` prints. */
export function policyReport(r: PolicyBenchResult): string[] {
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  const f = (x: number) => x.toFixed(2);
  const w = Math.max(...r.newFlow.map((x) => x.scenario.length));
  const lines = [
    `  new flow, sl_to_wep judging a SYN (single runs, median of ${n(r.singleRuns)}, ${r.rounds} interleaved rounds):`,
  ];
  for (const x of r.newFlow)
    lines.push(
      `    ${x.scenario.padEnd(w)}  ${n(x.ns).padStart(7)} ns` +
        (x.tableRules ? `  (${f(x.overNoPolicy)}x no policy; table of ${n(x.tableRules)} rules)` : '  (baseline)'),
    );
  lines.push(
    `    per rule walked: ${f(r.perRuleNs.ipBlock)} ns with a set lookup (ipBlock peer), ${f(r.perRuleNs.ports)} ns without (ports)`,
  );
  lines.push(`  established flow, policy verdict already in conntrack (per repetition, median of ${r.rounds} rounds):`);
  for (const x of r.established)
    lines.push(
      `    ${x.scenario.padEnd(w)}  ${n(x.ns).padStart(7)} ns` +
        (x === r.established[0] ? '  (baseline)' : `  (${f(x.overNoPolicy)}x no policy)`),
    );
  const worst = Math.max(...r.established.slice(1).map((x) => x.overNoPolicy));
  lines.push(`    worst: ${f(worst)}x (target <= 1.10x): ${worst <= 1.1 ? 'met' : 'NOT met'}`);
  lines.push('  policy change to the datapath (setK8sPolicy + tablesFor each endpoint + writer.sync, medians):');
  for (const c of r.change)
    lines.push(
      `    ${n(c.rules).padStart(5)} rules, ${String(c.endpoints).padStart(3)} endpoints, ${n(c.conntrackEntries).padStart(7)} conntrack entries: ` +
        `${f(c.totalMs)} ms (engine ${f(c.engineMs)}, tables ${f(c.tablesMs)}, sync ${f(c.syncMs)}; first apply ${f(c.firstMs)} ms; ` +
        `then established flows re-judged in ${f(c.rejudgeMs)} ms)` +
        (c.rules >= 1000 ? (c.totalMs < 100 ? '  [< 100 ms: met]' : '  [< 100 ms: NOT met]') : ''),
    );
  lines.push('  one pod joins a selector set (setPod + IpSets.upsertEndpoint + writer.sync, medians):');
  for (const p of r.podAdd)
    lines.push(
      `    ${n(p.setMembers)}-member set, ${String(p.endpoints).padStart(3)} endpoints, ${n(p.conntrackEntries).padStart(7)} conntrack entries: ` +
        `${f(p.setsAndSyncMs)} ms (upsert ${f(p.upsertMs)}, sync ${f(p.syncMs)}); with tablesFor of every endpoint as the agent does: ` +
        `${f(p.agentMs)} ms; creating the set: ${f(p.setCreateMs)} ms`,
    );
  return lines;
}
