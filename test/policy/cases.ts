// Conformance cases for network policy: a fixed world of 3 namespaces x 3 pods, and a deterministic
// generator of Kubernetes NetworkPolicy sets over it, each with the expected verdict for every
// pod-to-pod probe computed by the reference evaluator. The lab applies a case, probes, and compares.
//
// The lab assigns pod IPs, so the world is a function of them. Cases depend on the IPs only through
// ipBlock CIDRs derived from them; every case draws from its own seeded stream, so a case without
// an ipBlock is the same whatever the IPs are.
import type {
  V1IPBlock,
  V1LabelSelector,
  V1LabelSelectorRequirement,
  V1NetworkPolicyPeer,
  V1NetworkPolicyPort,
} from '@kubernetes/client-node';
import {
  allowed,
  cidrContains,
  explain,
  kubernetesPolicyTypes,
  labelSelectorMatches,
  namespaceLabels,
  networkOf,
  type Direction,
  type Labels,
  type NetworkPolicy,
  type NetworkPolicySpec,
  type RefContainerPort,
  type RefNamespace,
  type RefPod,
  type RefWorld,
} from './reference.js';

// ---------------------------------------------------------------------------------------------
// The world

export const WORLD_NAMESPACES: readonly RefNamespace[] = [
  { name: 'ns-a', labels: { team: 'x', env: 'prod' } },
  { name: 'ns-b', labels: { team: 'y', env: 'prod' } },
  { name: 'ns-c', labels: { team: 'x', env: 'dev' } },
];

// Every pod serves TCP and UDP on 80 and 81; the names differ between the three layouts so that a
// named port resolves to 80 on some pods, 81 on others, and nowhere on the rest. `svc` is TCP in
// one layout and UDP in another, so the protocol of a named port matters.
const LAYOUT_1: RefContainerPort[] = [
  { name: 'http', port: 80, protocol: 'TCP' },
  { name: 'alt', port: 81, protocol: 'TCP' },
  { name: 'dns', port: 80, protocol: 'UDP' },
  { name: 'dns-alt', port: 81, protocol: 'UDP' },
];
const LAYOUT_2: RefContainerPort[] = [
  { name: 'svc', port: 80, protocol: 'TCP' },
  { name: 'http', port: 81, protocol: 'TCP' },
  { name: 'dns-alt', port: 80, protocol: 'UDP' },
  { name: 'dns', port: 81, protocol: 'UDP' },
];
const LAYOUT_3: RefContainerPort[] = [
  { name: 'http', port: 80, protocol: 'TCP' },
  { name: 'metrics', port: 81, protocol: 'TCP' },
  { name: 'svc', port: 80, protocol: 'UDP' },
  { port: 81, protocol: 'UDP' },
];

/** The pods without their IPs, for the lab to create. Names are unique across namespaces. */
export const WORLD_PODS: readonly Omit<RefPod, 'ip'>[] = [
  { namespace: 'ns-a', name: 'a-web', labels: { app: 'web', tier: 'frontend', role: 'server' }, ports: LAYOUT_1 },
  { namespace: 'ns-a', name: 'a-api', labels: { app: 'api', tier: 'backend', role: 'server' }, ports: LAYOUT_2 },
  { namespace: 'ns-a', name: 'a-db', labels: { app: 'db', tier: 'backend' }, ports: LAYOUT_3 },
  { namespace: 'ns-b', name: 'b-web', labels: { app: 'web', tier: 'frontend', role: 'client' }, ports: LAYOUT_3 },
  { namespace: 'ns-b', name: 'b-api', labels: { app: 'api', tier: 'backend', role: 'server' }, ports: LAYOUT_1 },
  { namespace: 'ns-b', name: 'b-cache', labels: { app: 'cache', tier: 'backend', role: 'client' }, ports: LAYOUT_2 },
  { namespace: 'ns-c', name: 'c-web', labels: { app: 'web', tier: 'frontend' }, ports: LAYOUT_2 },
  { namespace: 'ns-c', name: 'c-db', labels: { app: 'db', tier: 'backend', role: 'server' }, ports: LAYOUT_3 },
  { namespace: 'ns-c', name: 'c-api', labels: { app: 'api', tier: 'frontend', role: 'client' }, ports: LAYOUT_1 },
];

export const POD_NAMES: readonly string[] = WORLD_PODS.map((p) => p.name);

/** The world with the IPs the lab gave the pods (pod name -> IP), and no policy. */
export function makeWorld(ips: Record<string, string>): RefWorld {
  return {
    namespaces: WORLD_NAMESPACES.map((n) => ({ name: n.name, labels: { ...n.labels } })),
    pods: WORLD_PODS.map((p) => {
      const ip = ips[p.name];
      if (!ip) throw new Error(`no IP for pod ${p.name}`);
      return { ...p, labels: { ...p.labels }, ports: p.ports.map((x) => ({ ...x })), ip };
    }),
    policies: [],
  };
}

// ---------------------------------------------------------------------------------------------
// Cases, probes, expectations

export interface Mutation {
  kind: 'podLabels' | 'namespaceLabels';
  /** A pod name (unique in the world) or a namespace name. */
  target: string;
  /** The complete new label set; it replaces the old one. */
  labels: Labels;
}

export interface Case {
  name: string;
  /** The generator family that made it. */
  family: string;
  policies: NetworkPolicy[];
  /** Applied after the policies; the expectations are for the state after them. */
  mutations?: Mutation[];
  /** Every probe has the same outcome, on purpose (e.g. default deny everywhere). */
  uniform?: boolean;
}

export interface Probe {
  src: string; // pod name
  dst: string; // pod name
  protocol: 'TCP' | 'UDP';
  port: number;
}

export interface Expectation extends Probe {
  allowed: boolean;
}

export function probeKey(p: Probe): string {
  return `${p.src}->${p.dst} ${p.protocol}/${p.port}`;
}

/** Every pod to every other pod, TCP and UDP, ports 80 and 81: 9 x 8 x 2 x 2 = 288 probes. */
export function probeMatrix(world: RefWorld): Probe[] {
  const out: Probe[] = [];
  for (const src of world.pods) {
    for (const dst of world.pods) {
      if (src === dst) continue;
      for (const protocol of ['TCP', 'UDP'] as const) {
        for (const port of [80, 81]) out.push({ src: src.name, dst: dst.name, protocol, port });
      }
    }
  }
  return out;
}

export function applyMutations(world: RefWorld, mutations: readonly Mutation[] = []): RefWorld {
  const w: RefWorld = { ...world, namespaces: [...world.namespaces], pods: [...world.pods] };
  for (const m of mutations) {
    if (m.kind === 'podLabels') {
      const i = w.pods.findIndex((p) => p.name === m.target);
      if (i < 0) throw new Error(`mutation of unknown pod ${m.target}`);
      w.pods[i] = { ...w.pods[i], labels: { ...m.labels } };
    } else {
      const i = w.namespaces.findIndex((n) => n.name === m.target);
      if (i < 0) throw new Error(`mutation of unknown namespace ${m.target}`);
      w.namespaces[i] = { ...w.namespaces[i], labels: { ...m.labels } };
    }
  }
  return w;
}

/** The world a case describes: its policies in place, and its mutations applied unless asked not to. */
export function caseWorld(world: RefWorld, c: Case, opts: { beforeMutations?: boolean } = {}): RefWorld {
  const w = { ...world, policies: c.policies };
  return opts.beforeMutations ? w : applyMutations(w, c.mutations);
}

function pod(world: RefWorld, name: string): RefPod {
  const p = world.pods.find((x) => x.name === name);
  if (!p) throw new Error(`unknown pod ${name}`);
  return p;
}

/** The expected verdict of every probe of probeMatrix(world), in the same order. */
export function expected(world: RefWorld, c: Case, opts: { beforeMutations?: boolean } = {}): Expectation[] {
  const w = caseWorld(world, c, opts);
  return probeMatrix(world).map((p) => ({
    ...p,
    allowed: allowed(w, { src: pod(w, p.src), dst: pod(w, p.dst), protocol: p.protocol, port: p.port }),
  }));
}

/** The reference's account of one probe in a case, for failure messages. */
export function explainProbe(world: RefWorld, c: Case, p: Probe): string {
  const w = caseWorld(world, c);
  return explain(w, { src: pod(w, p.src), dst: pod(w, p.dst), protocol: p.protocol, port: p.port });
}

// ---------------------------------------------------------------------------------------------
// A seeded PRNG: FNV-1a of a text seed into mulberry32

export interface Rng {
  next(): number;
  int(n: number): number;
  chance(p: number): boolean;
  pick<T>(xs: readonly T[]): T;
  /** A random non-empty subset of 1..max elements, in the original order. */
  some<T>(xs: readonly T[], max?: number): T[];
}

export function prng(seed: string): Rng {
  let h = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 0x01000193) >>> 0;
  let a = h;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return {
    next,
    int,
    chance: (p) => next() < p,
    pick,
    some<T>(xs: readonly T[], max = xs.length): T[] {
      const n = 1 + int(Math.min(max, xs.length));
      const chosen = new Set<number>();
      while (chosen.size < n) chosen.add(int(xs.length));
      return [...chosen].sort((x, y) => x - y).map((i) => xs[i]);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Building blocks

const APPS = ['web', 'api', 'db', 'cache'];
const TIERS = ['frontend', 'backend'];
const ROLES = ['server', 'client'];
const NS_NAMES = WORLD_NAMESPACES.map((n) => n.name);
const OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;
const NAME_KEY = 'kubernetes.io/metadata.name';

function np(name: string, namespace: string, spec: NetworkPolicySpec): NetworkPolicy {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec };
}

function podExpression(r: Rng, op: (typeof OPERATORS)[number] = r.pick(OPERATORS)): V1LabelSelectorRequirement {
  // Only `role` is missing on some pods, so it is the key that makes Exists/DoesNotExist split them.
  if (op === 'Exists' || op === 'DoesNotExist') return { key: 'role', operator: op };
  const key = r.pick(['app', 'tier', 'role']);
  const values = key === 'app' ? APPS : key === 'tier' ? TIERS : ROLES;
  return { key, operator: op, values: r.some(values, 2) };
}

function podSelector(r: Rng): V1LabelSelector {
  switch (r.int(6)) {
    case 0:
      return { matchLabels: { app: r.pick(APPS) } };
    case 1:
      return { matchLabels: { tier: r.pick(TIERS) } };
    case 2:
      return { matchLabels: { role: r.pick(ROLES) } };
    case 3:
      return { matchLabels: { tier: r.pick(TIERS) }, matchExpressions: [podExpression(r)] };
    default:
      return { matchExpressions: [podExpression(r)] };
  }
}

function namespaceLabelSelector(r: Rng): V1LabelSelector {
  switch (r.int(4)) {
    case 0:
      return { matchLabels: { team: r.pick(['x', 'y']) } };
    case 1:
      return { matchLabels: { env: r.pick(['prod', 'dev']) } };
    case 2:
      return {
        matchExpressions: [{ key: 'env', operator: r.pick(['In', 'NotIn']), values: [r.pick(['prod', 'dev'])] }],
      };
    default:
      return { matchLabels: { team: 'x', env: r.pick(['prod', 'dev']) } };
  }
}

function namespaceNameSelector(r: Rng): V1LabelSelector {
  if (r.chance(0.5)) return { matchLabels: { [NAME_KEY]: r.pick(NS_NAMES) } };
  return { matchExpressions: [{ key: NAME_KEY, operator: r.pick(['In', 'NotIn']), values: r.some(NS_NAMES, 2) }] };
}

function anyNamespaceSelector(r: Rng): V1LabelSelector {
  const k = r.int(4);
  return k === 0 ? {} : k === 1 ? namespaceNameSelector(r) : namespaceLabelSelector(r);
}

/** An ipBlock from the actual pod IPs: a network around one pod, maybe with another pod cut out. */
function ipBlock(r: Rng, world: RefWorld, withExcept = r.chance(0.6)): V1IPBlock {
  const anchor = r.pick(world.pods);
  const bits = r.pick(withExcept ? [16, 24, 24, 26, 28] : [16, 24, 24, 26, 28, 32]);
  const cidr = networkOf(anchor.ip, bits);
  if (!withExcept) return { cidr };
  const inside = world.pods.filter((p) => cidrContains(cidr, p.ip));
  const cut = r.pick(inside);
  const exceptBits = r.pick([32, 32, 30, Math.min(32, bits + 2)].filter((b) => b > bits));
  return { cidr, except: [networkOf(cut.ip, exceptBits)] };
}

const NAMED = [
  { port: 'http', protocols: ['TCP'] },
  { port: 'alt', protocols: ['TCP'] },
  { port: 'metrics', protocols: ['TCP'] },
  { port: 'svc', protocols: ['TCP', 'UDP'] },
  { port: 'dns', protocols: ['UDP'] },
  { port: 'dns-alt', protocols: ['UDP'] },
];

function namedPort(r: Rng): V1NetworkPolicyPort {
  const n = r.pick(NAMED);
  const protocol = r.pick(n.protocols);
  // TCP is the default, so a TCP name is written with and without the protocol.
  return protocol === 'TCP' && r.chance(0.5) ? { port: n.port } : { port: n.port, protocol };
}

function numericPort(r: Rng): V1NetworkPolicyPort {
  const port = r.pick([80, 81]);
  const proto = r.pick(['TCP', 'UDP', undefined]);
  return proto ? { port, protocol: proto } : { port };
}

function rangePort(r: Rng): V1NetworkPolicyPort {
  const [port, endPort] = r.pick([
    [80, 81],
    [81, 1000],
    [1, 80],
    [70, 79],
  ]);
  const proto = r.pick(['TCP', 'UDP', undefined]);
  return proto ? { port, endPort, protocol: proto } : { port, endPort };
}

function protocolOnly(r: Rng): V1NetworkPolicyPort {
  return { protocol: r.pick(['TCP', 'UDP']) };
}

function ports(r: Rng): V1NetworkPolicyPort[] | undefined {
  if (r.chance(0.4)) return undefined;
  const makers = [numericPort, numericPort, namedPort, rangePort, protocolOnly];
  return Array.from({ length: 1 + r.int(2) }, () => r.pick(makers)(r));
}

type PeerKind = 'pod' | 'namespace' | 'both' | 'ipBlock';

function peer(
  r: Rng,
  world: RefWorld,
  kind: PeerKind = r.pick(['pod', 'pod', 'namespace', 'both', 'ipBlock']),
): V1NetworkPolicyPeer {
  switch (kind) {
    case 'pod':
      return { podSelector: r.chance(0.15) ? {} : podSelector(r) };
    case 'namespace':
      return { namespaceSelector: anyNamespaceSelector(r) };
    case 'both':
      return { podSelector: podSelector(r), namespaceSelector: anyNamespaceSelector(r) };
    case 'ipBlock':
      return { ipBlock: ipBlock(r, world) };
  }
}

function target(r: Rng): V1LabelSelector {
  return r.chance(0.5) ? {} : podSelector(r);
}

type Dir = Direction;

/** One policy that isolates its targets in one direction and allows what its rules say. */
function allowPolicy(
  r: Rng,
  name: string,
  dir: Dir,
  rules: { peers?: V1NetworkPolicyPeer[]; ports?: V1NetworkPolicyPort[] }[],
  opts: { namespace?: string; podSelector?: V1LabelSelector } = {},
): NetworkPolicy {
  const wire = rules.map((x) => ({
    ...(x.peers ? { [dir === 'Ingress' ? 'from' : 'to']: x.peers } : {}),
    ...(x.ports ? { ports: x.ports } : {}),
  }));
  const spec: NetworkPolicySpec = { podSelector: opts.podSelector ?? target(r) };
  // Egress must be named: without policyTypes the policy would isolate ingress as well.
  if (dir === 'Egress' || r.chance(0.5)) spec.policyTypes = [dir];
  if (dir === 'Ingress') spec.ingress = wire;
  else spec.egress = wire;
  return np(name, opts.namespace ?? r.pick(NS_NAMES), spec);
}

function denyPolicy(
  r: Rng,
  name: string,
  namespace: string,
  types: Dir[],
  podSel: V1LabelSelector = {},
): NetworkPolicy {
  // A default deny of ingress alone may leave policyTypes to its default.
  const spec: NetworkPolicySpec = { podSelector: podSel };
  if (!(types.length === 1 && types[0] === 'Ingress' && r.chance(0.5))) spec.policyTypes = types;
  return np(name, namespace, spec);
}

// Every single-label edit of a pod: another app, tier or role, or no role.
function podEdits(labels: Labels): Labels[] {
  const out: Labels[] = [];
  for (const app of [...APPS, 'other']) out.push({ ...labels, app });
  for (const tier of TIERS) out.push({ ...labels, tier });
  for (const role of ROLES) out.push({ ...labels, role });
  const { role: _role, ...noRole } = labels;
  out.push(noRole);
  return out.filter((l) => JSON.stringify(l) !== JSON.stringify(labels));
}

function namespaceEdits(labels: Labels): Labels[] {
  const out: Labels[] = [];
  for (const team of ['x', 'y', 'z']) out.push({ ...labels, team });
  for (const env of ['prod', 'dev']) out.push({ ...labels, env });
  const { team: _team, ...noTeam } = labels;
  out.push(noTeam);
  return out.filter((l) => JSON.stringify(l) !== JSON.stringify(labels));
}

/** A mutation, among all single edits, that gives the case the wanted feature (if any does). */
function pickMutation(
  r: Rng,
  world: RefWorld,
  c: Omit<Case, 'name' | 'family'>,
  kind: Mutation['kind'],
  want: string[],
): Mutation[] {
  const candidates: Mutation[] =
    kind === 'podLabels'
      ? world.pods.flatMap((p) => podEdits(p.labels).map((labels) => ({ kind, target: p.name, labels })))
      : world.namespaces.flatMap((n) => namespaceEdits(n.labels).map((labels) => ({ kind, target: n.name, labels })));
  const good = candidates.filter((m) => {
    const f = caseFeatures(world, { name: '', family: '', ...c, mutations: [m] });
    return want.some((x) => f.has(x));
  });
  return [r.pick(good.length ? good : candidates)];
}

// ---------------------------------------------------------------------------------------------
// Families: each makes one candidate case; the generator keeps the acceptable ones

interface Family {
  name: string;
  make(r: Rng, world: RefWorld): Omit<Case, 'name' | 'family'>;
  /** An extra condition the family's cases must meet (besides the common ones). */
  check?(world: RefWorld, c: Case): boolean;
}

const FAMILIES: Family[] = [
  {
    name: 'deny-ingress',
    make: (r) => ({ policies: [denyPolicy(r, 'deny-ingress', r.pick(NS_NAMES), ['Ingress'], target(r))] }),
  },
  {
    name: 'deny-egress',
    make: (r) => ({ policies: [denyPolicy(r, 'deny-egress', r.pick(NS_NAMES), ['Egress'], target(r))] }),
  },
  {
    name: 'deny-both',
    make: (r) => ({ policies: [denyPolicy(r, 'deny-all', r.pick(NS_NAMES), ['Ingress', 'Egress'], target(r))] }),
  },
  {
    name: 'deny-everywhere',
    make(r) {
      const types = r.pick<Dir[]>([['Ingress'], ['Egress'], ['Ingress', 'Egress']]);
      return { policies: NS_NAMES.map((ns) => denyPolicy(r, 'deny-all', ns, types)), uniform: true };
    },
  },
  {
    name: 'allow-from-pods',
    make(r, world) {
      const policies = [
        allowPolicy(r, 'allow-from-pods', 'Ingress', [{ peers: [peer(r, world, 'pod')], ports: ports(r) }]),
      ];
      return { policies };
    },
  },
  {
    name: 'allow-to-pods',
    make(r, world) {
      const peers = [peer(r, world, r.pick(['pod', 'both']))];
      return { policies: [allowPolicy(r, 'allow-to-pods', 'Egress', [{ peers, ports: ports(r) }])] };
    },
  },
  {
    name: 'match-expressions',
    make(r) {
      const op = r.pick(OPERATORS);
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const sel = { matchExpressions: [podExpression(r, op)] };
      // The expression selects either the peers or the isolated pods.
      if (r.chance(0.4))
        return {
          policies: [allowPolicy(r, 'match-expressions', dir, [{ ports: [numericPort(r)] }], { podSelector: sel })],
        };
      const peer: V1NetworkPolicyPeer = r.chance(0.5)
        ? { podSelector: sel }
        : { podSelector: sel, namespaceSelector: {} };
      return { policies: [allowPolicy(r, 'match-expressions', dir, [{ peers: [peer], ports: ports(r) }])] };
    },
  },
  {
    name: 'allow-from-namespaces',
    make(r) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const peers = [{ namespaceSelector: r.chance(0.2) ? {} : namespaceLabelSelector(r) }];
      return { policies: [allowPolicy(r, 'allow-namespaces', dir, [{ peers, ports: ports(r) }])] };
    },
  },
  {
    name: 'namespace-by-name',
    make(r) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const peers = [{ namespaceSelector: namespaceNameSelector(r) }];
      return { policies: [allowPolicy(r, 'namespace-by-name', dir, [{ peers, ports: ports(r) }])] };
    },
  },
  {
    name: 'pod-and-namespace',
    make(r, world) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      return {
        policies: [allowPolicy(r, 'pod-and-namespace', dir, [{ peers: [peer(r, world, 'both')], ports: ports(r) }])],
      };
    },
  },
  {
    name: 'pod-or-namespace',
    make(r) {
      // The same two selectors as pod-and-namespace, as two peers: a union instead of an intersection.
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const peers = [{ podSelector: podSelector(r) }, { namespaceSelector: anyNamespaceSelector(r) }];
      return { policies: [allowPolicy(r, 'pod-or-namespace', dir, [{ peers, ports: ports(r) }])] };
    },
  },
  {
    name: 'ip-block',
    make(r, world) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const peers = [{ ipBlock: ipBlock(r, world) }];
      if (r.chance(0.3)) peers.push({ ipBlock: ipBlock(r, world) });
      return { policies: [allowPolicy(r, 'ip-block', dir, [{ peers, ports: ports(r) }])] };
    },
  },
  {
    name: 'named-ports',
    make(r, world) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const p = [namedPort(r), ...(r.chance(0.3) ? [namedPort(r)] : [])];
      const peers = r.chance(0.5) ? undefined : [peer(r, world, r.pick(['pod', 'namespace']))];
      return { policies: [allowPolicy(r, 'named-ports', dir, [{ peers, ports: p }])] };
    },
  },
  {
    name: 'numeric-ports',
    make(r, world) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const p = [numericPort(r), ...(r.chance(0.3) ? [numericPort(r)] : [])];
      const peers = r.chance(0.5) ? undefined : [peer(r, world)];
      return { policies: [allowPolicy(r, 'numeric-ports', dir, [{ peers, ports: p }])] };
    },
  },
  {
    name: 'port-ranges',
    make(r, world) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const peers = r.chance(0.5) ? undefined : [peer(r, world)];
      return { policies: [allowPolicy(r, 'port-ranges', dir, [{ peers, ports: [rangePort(r)] }])] };
    },
  },
  {
    name: 'udp-vs-tcp',
    make(r) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const p = r.pick<V1NetworkPolicyPort[]>([
        [{ protocol: 'UDP' }],
        [{ protocol: 'UDP', port: r.pick([80, 81]) }],
        [{ port: r.pick([80, 81]) }],
        [
          { protocol: 'TCP', port: 80 },
          { protocol: 'UDP', port: 81 },
        ],
        [{ protocol: 'TCP' }],
      ]);
      return { policies: [allowPolicy(r, 'udp-vs-tcp', dir, [{ ports: p }])] };
    },
  },
  {
    name: 'policy-types-defaulted',
    make(r, world) {
      const { ingress, egress } = bothRules(r, world);
      const spec = r.pick<NetworkPolicySpec>([
        { podSelector: target(r), ingress }, // Ingress
        { podSelector: target(r), ingress, egress }, // Ingress and Egress
        { podSelector: target(r), egress }, // Ingress and Egress: so no ingress at all
      ]);
      return { policies: [np('policy-types', r.pick(NS_NAMES), spec)] };
    },
  },
  {
    name: 'policy-types-explicit',
    make(r, world) {
      const { ingress, egress } = bothRules(r, world);
      const spec = r.pick<NetworkPolicySpec>([
        { podSelector: target(r), policyTypes: ['Ingress'], ingress, egress }, // the egress rules do nothing
        { podSelector: target(r), policyTypes: ['Egress'], ingress, egress }, // the ingress rules do nothing
        { podSelector: target(r), policyTypes: ['Ingress', 'Egress'], ingress }, // no egress at all
      ]);
      return { policies: [np('policy-types', r.pick(NS_NAMES), spec)] };
    },
  },
  {
    name: 'union',
    make(r, world) {
      const dir = r.pick<Dir>(['Ingress', 'Egress']);
      const ns = r.pick(NS_NAMES);
      const n = 2 + r.int(2);
      const policies = Array.from({ length: n }, (_, i) =>
        allowPolicy(
          r,
          `union-${i + 1}`,
          dir,
          [{ peers: r.chance(0.8) ? [peer(r, world)] : undefined, ports: ports(r) }],
          {
            namespace: ns,
          },
        ),
      );
      if (r.chance(0.5)) policies.push(denyPolicy(r, 'deny', ns, [dir]));
      return { policies };
    },
    check: (world, c) => caseFeatures(world, c).has('union'),
  },
  {
    name: 'egress-and-ingress',
    make(r, world) {
      const [from, to] = [r.pick(NS_NAMES), r.pick(NS_NAMES)];
      return {
        policies: [
          allowPolicy(r, 'allow-egress', 'Egress', [{ peers: [peer(r, world)], ports: ports(r) }], { namespace: from }),
          allowPolicy(r, 'allow-ingress', 'Ingress', [{ peers: [peer(r, world)], ports: ports(r) }], { namespace: to }),
        ],
      };
    },
    check: (world, c) => caseFeatures(world, c).has('egress-and-ingress'),
  },
  {
    name: 'pod-enters',
    make: (r, world) => relabelPodCase(r, world, 'mutation-pod-enters'),
    check: (world, c) => caseFeatures(world, c).has('mutation-pod-enters'),
  },
  {
    name: 'pod-leaves',
    make: (r, world) => relabelPodCase(r, world, 'mutation-pod-leaves'),
    check: (world, c) => caseFeatures(world, c).has('mutation-pod-leaves'),
  },
  {
    name: 'namespace-enters',
    make: (r, world) => relabelNamespaceCase(r, world, 'mutation-namespace-enters'),
    check: (world, c) => caseFeatures(world, c).has('mutation-namespace-enters'),
  },
  {
    name: 'namespace-leaves',
    make: (r, world) => relabelNamespaceCase(r, world, 'mutation-namespace-leaves'),
    check: (world, c) => caseFeatures(world, c).has('mutation-namespace-leaves'),
  },
];

function bothRules(r: Rng, world: RefWorld): Pick<NetworkPolicySpec, 'ingress' | 'egress'> {
  return {
    ingress: [{ from: [peer(r, world)], ...optional('ports', ports(r)) }],
    egress: [{ to: [peer(r, world)], ...optional('ports', ports(r)) }],
  };
}

function relabelPodCase(r: Rng, world: RefWorld, want: string): Omit<Case, 'name' | 'family'> {
  const dir = r.pick<Dir>(['Ingress', 'Egress']);
  const rule = { peers: [peer(r, world, r.pick(['pod', 'both']))], ports: ports(r) };
  const base = { policies: [allowPolicy(r, 'allow-pods', dir, [rule])] };
  return { ...base, mutations: pickMutation(r, world, base, 'podLabels', [want]) };
}

function relabelNamespaceCase(r: Rng, world: RefWorld, want: string): Omit<Case, 'name' | 'family'> {
  const dir = r.pick<Dir>(['Ingress', 'Egress']);
  const peers = [r.chance(0.7) ? { namespaceSelector: namespaceLabelSelector(r) } : peer(r, world, 'both')];
  const base = { policies: [allowPolicy(r, 'allow-namespaces', dir, [{ peers, ports: ports(r) }])] };
  return { ...base, mutations: pickMutation(r, world, base, 'namespaceLabels', [want]) };
}

function optional<K extends string, V>(key: K, v: V | undefined): Partial<Record<K, V>> {
  return v === undefined ? {} : ({ [key]: v } as Record<K, V>);
}

/** The family names, in the order the generator cycles through them. */
export const FAMILY_NAMES: readonly string[] = FAMILIES.map((f) => f.name);

/**
 * `count` cases (240 by default), cycling through the families. A candidate is kept when it has
 * both allowed and denied probes (or is uniform on purpose), when its mutations change at least one
 * verdict, and when its family's own condition holds; otherwise the family tries again.
 */
export function generateCases(world: RefWorld, opts: { seed?: number | string; count?: number } = {}): Case[] {
  const seed = String(opts.seed ?? 1);
  const count = opts.count ?? 240;
  const out: Case[] = [];
  for (let i = 0; i < count; i++) {
    const family = FAMILIES[i % FAMILIES.length];
    const name = `${String(i).padStart(3, '0')}-${family.name}`;
    let accepted: Case | undefined;
    for (let attempt = 0; attempt < 200 && !accepted; attempt++) {
      const c: Case = { name, family: family.name, ...family.make(prng(`${seed}/${i}/${attempt}`), world) };
      if (!c.mutations) delete c.mutations;
      if (!c.uniform) delete c.uniform;
      if (acceptable(world, c) && (!family.check || family.check(world, c))) accepted = c;
    }
    if (!accepted) throw new Error(`no acceptable ${family.name} case for #${i} (seed ${seed})`);
    out.push(accepted);
  }
  return out;
}

function acceptable(world: RefWorld, c: Case): boolean {
  const after = expected(world, c);
  const n = after.filter((e) => e.allowed).length;
  const mixed = n > 0 && n < after.length;
  if (mixed === !!c.uniform) return false;
  if (c.mutations?.length) {
    const before = expected(world, c, { beforeMutations: true });
    if (before.every((b, i) => b.allowed === after[i].allowed)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Features: read from a case's objects, not declared by the generator, so coverage can be counted

export function caseFeatures(world: RefWorld, c: Case): Set<string> {
  const f = new Set<string>();
  const before = caseWorld(world, c, { beforeMutations: true });
  const isolating: { dir: Dir; pods: Set<string>; rules: number }[] = [];
  for (const p of c.policies) {
    const spec = p.spec ?? { podSelector: {} };
    const ns = p.metadata?.namespace as string;
    const types = kubernetesPolicyTypes(spec);
    f.add(spec.policyTypes?.length ? 'types-explicit' : 'types-defaulted');
    if (!spec.policyTypes?.length && types.includes('Egress')) f.add('types-defaulted-egress');
    if ((!types.includes('Ingress') && spec.ingress?.length) || (!types.includes('Egress') && spec.egress?.length)) {
      f.add('types-ignore-rules');
    }
    f.add(isEmpty(spec.podSelector) ? 'select-all-pods' : 'select-some-pods');
    selectorFeatures(spec.podSelector, f);
    const noIngress = !spec.ingress?.length;
    const noEgress = !spec.egress?.length;
    if (types.includes('Ingress') && noIngress) f.add('default-deny-ingress');
    if (types.includes('Egress') && noEgress) f.add('default-deny-egress');
    if (types.length === 2 && noIngress && noEgress) f.add('default-deny-both');
    const selected = new Set(
      before.pods
        .filter((x) => x.namespace === ns && labelSelectorMatches(spec.podSelector ?? {}, x.labels))
        .map((x) => x.name),
    );
    for (const dir of types) {
      const rules = (dir === 'Ingress' ? spec.ingress : spec.egress) ?? [];
      isolating.push({ dir, pods: selected, rules: rules.length });
      for (const rule of rules) {
        f.add(dir === 'Ingress' ? 'ingress-rules' : 'egress-rules');
        const peers = ('from' in rule ? rule.from : 'to' in rule ? rule.to : undefined) ?? [];
        if (peers.length === 0) f.add('rule-all-peers');
        if (peers.length > 1) f.add('peers-or');
        if (!rule.ports?.length) f.add('rule-all-ports');
        for (const peer of peers) peerFeatures(peer, f);
        for (const port of rule.ports ?? []) portFeatures(port, f);
      }
    }
  }
  // Several policies adding up for the same pods and direction.
  for (const dir of ['Ingress', 'Egress'] as const) {
    const allowing = isolating.filter((x) => x.dir === dir && x.rules > 0);
    for (const pod of before.pods) if (allowing.filter((x) => x.pods.has(pod.name)).length >= 2) f.add('union');
  }
  // A pod pair where the source's egress and the destination's ingress are both restricted and allow something.
  const egressRestricted = new Set(
    isolating.filter((x) => x.dir === 'Egress' && x.rules > 0).flatMap((x) => [...x.pods]),
  );
  const ingressRestricted = new Set(
    isolating.filter((x) => x.dir === 'Ingress' && x.rules > 0).flatMap((x) => [...x.pods]),
  );
  if ([...egressRestricted].some((s) => [...ingressRestricted].some((d) => d !== s))) f.add('egress-and-ingress');
  for (const m of c.mutations ?? []) mutationFeatures(before, c, m, f);
  if (c.uniform) f.add('uniform');
  return f;
}

function isEmpty(sel: V1LabelSelector | undefined): boolean {
  return !sel || (!Object.keys(sel.matchLabels ?? {}).length && !(sel.matchExpressions ?? []).length);
}

function selectorFeatures(sel: V1LabelSelector | undefined, f: Set<string>): void {
  for (const e of sel?.matchExpressions ?? []) f.add(`match-${e.operator}`);
}

function peerFeatures(peer: V1NetworkPolicyPeer, f: Set<string>): void {
  selectorFeatures(peer.podSelector, f);
  selectorFeatures(peer.namespaceSelector, f);
  if (peer.ipBlock) f.add(peer.ipBlock.except?.length ? 'ipblock-except' : 'ipblock');
  if (peer.podSelector && peer.namespaceSelector) f.add('peer-pod-and-namespace');
  else if (peer.podSelector) f.add(isEmpty(peer.podSelector) ? 'peer-all-pods-in-namespace' : 'peer-pod-labels');
  if (peer.namespaceSelector) {
    const sel = peer.namespaceSelector;
    const keys = [...Object.keys(sel.matchLabels ?? {}), ...(sel.matchExpressions ?? []).map((e) => e.key)];
    if (keys.length === 0) f.add('peer-all-namespaces');
    else if (keys.includes(NAME_KEY)) f.add('peer-namespace-name');
    else f.add('peer-namespace-labels');
  }
}

function portFeatures(p: V1NetworkPolicyPort, f: Set<string>): void {
  f.add(p.protocol === undefined ? 'protocol-default-tcp' : `protocol-${p.protocol.toLowerCase()}`);
  if (p.port === undefined) f.add('port-all-of-protocol');
  else if (typeof p.port === 'string') f.add('port-named');
  else f.add(p.endPort !== undefined ? 'port-range' : 'port-numeric');
}

// Whether a relabelled pod or namespace starts or stops matching a selector of the case.
function mutationFeatures(world: RefWorld, c: Case, m: Mutation, f: Set<string>): void {
  if (m.kind === 'podLabels') {
    f.add('mutation-pod-labels');
    const p = world.pods.find((x) => x.name === m.target) as RefPod;
    for (const sel of podSelectorsFor(world, c, p)) {
      const was = labelSelectorMatches(sel, p.labels);
      const is = labelSelectorMatches(sel, m.labels);
      if (!was && is) f.add('mutation-pod-enters');
      if (was && !is) f.add('mutation-pod-leaves');
    }
  } else {
    f.add('mutation-namespace-labels');
    const old = namespaceLabels(world, m.target);
    const now = { ...m.labels, [NAME_KEY]: m.target };
    for (const sel of namespaceSelectorsOf(c)) {
      const was = labelSelectorMatches(sel, old);
      const is = labelSelectorMatches(sel, now);
      if (!was && is) f.add('mutation-namespace-enters');
      if (was && !is) f.add('mutation-namespace-leaves');
    }
  }
}

function podSelectorsFor(world: RefWorld, c: Case, p: RefPod): V1LabelSelector[] {
  const out: V1LabelSelector[] = [];
  for (const pol of c.policies) {
    const ns = pol.metadata?.namespace;
    if (ns === p.namespace) out.push(pol.spec?.podSelector ?? {});
    for (const peer of allPeers(pol)) {
      if (!peer.podSelector) continue;
      const nsOk = peer.namespaceSelector
        ? labelSelectorMatches(peer.namespaceSelector, namespaceLabels(world, p.namespace))
        : ns === p.namespace;
      if (nsOk) out.push(peer.podSelector);
    }
  }
  return out;
}

function namespaceSelectorsOf(c: Case): V1LabelSelector[] {
  return c.policies.flatMap((pol) =>
    allPeers(pol).flatMap((peer) => (peer.namespaceSelector ? [peer.namespaceSelector] : [])),
  );
}

function allPeers(pol: NetworkPolicy): V1NetworkPolicyPeer[] {
  return [
    ...(pol.spec?.ingress ?? []).flatMap((r) => r.from ?? []),
    ...(pol.spec?.egress ?? []).flatMap((r) => r.to ?? []),
  ];
}
