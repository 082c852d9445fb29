// An independent reference evaluator of network policy, for tests only. It answers "is this new
// connection allowed?" by reading the policy objects the way their documentation describes them,
// one connection at a time, with no compilation and no indexes, so that the rule tables compiled
// by src/policy/ can be checked against it. It deliberately shares no code with src/policy/: a
// mistake made once in shared code would agree with itself and go unnoticed.
//
// Kubernetes: networking.k8s.io/v1 NetworkPolicy (https://kubernetes.io/docs/concepts/services-networking/network-policies/).
// Calico: projectcalico.org/v3 NetworkPolicy, GlobalNetworkPolicy, Tier, NetworkSet, GlobalNetworkSet
// (https://docs.tigera.io/calico/latest/reference/resources/). Kubernetes policies are evaluated
// as Calico evaluates them: in the `default` tier at order 1000, each one allowing what its rules
// match and passing over the rest to the end of the tier.
import type { V1IPBlock, V1LabelSelector, V1NetworkPolicyPeer, V1NetworkPolicyPort } from '@kubernetes/client-node';

// ---------------------------------------------------------------------------------------------
// The world

export type L4Protocol = 'TCP' | 'UDP' | 'SCTP';
export type Labels = Record<string, string>;

export interface RefContainerPort {
  name?: string;
  port: number;
  protocol: L4Protocol;
}

export interface RefPod {
  namespace: string;
  name: string;
  labels: Labels;
  ip: string;
  ports: RefContainerPort[];
  /** Kubernetes gives a pod the `default` service account when it names none. */
  serviceAccount?: string;
}

export interface RefNamespace {
  name: string;
  labels: Labels;
}

export interface RefServiceAccount {
  namespace: string;
  name: string;
  labels: Labels;
}

/** Something that is not a pod: a client outside the cluster, or a destination outside it. */
export interface RefExternal {
  ip: string;
}

export type RefEndpoint = RefPod | RefExternal;

export interface RefWorld {
  namespaces: RefNamespace[];
  pods: RefPod[];
  serviceAccounts?: RefServiceAccount[];
  /**
   * Policy resources as wire objects: networking.k8s.io/v1 NetworkPolicy, and projectcalico.org/v3
   * NetworkPolicy, GlobalNetworkPolicy, Tier, NetworkSet and GlobalNetworkSet.
   */
  policies: readonly object[];
}

export interface RefConnection {
  src: RefEndpoint;
  dst: RefEndpoint;
  protocol: L4Protocol | 'ICMP';
  /** Destination port, for TCP, UDP and SCTP. */
  port?: number;
  /** Only needed by Calico rules that match source ports. */
  srcPort?: number;
  icmpType?: number;
  icmpCode?: number;
}

export function isPod(e: RefEndpoint): e is RefPod {
  return 'name' in e && 'namespace' in e;
}

// The wire form of a networking.k8s.io/v1 NetworkPolicy. (The client library's V1NetworkPolicy
// calls an ingress rule's `from` `_from`, so it does not describe JSON as sent to the API server.)
export interface NetworkPolicy {
  apiVersion: 'networking.k8s.io/v1';
  kind: 'NetworkPolicy';
  metadata: { name: string; namespace: string };
  spec: NetworkPolicySpec;
}

export interface NetworkPolicySpec {
  podSelector: V1LabelSelector;
  policyTypes?: ('Ingress' | 'Egress')[];
  ingress?: { from?: V1NetworkPolicyPeer[]; ports?: V1NetworkPolicyPort[] }[];
  egress?: { to?: V1NetworkPolicyPeer[]; ports?: V1NetworkPolicyPort[] }[];
}

// ---------------------------------------------------------------------------------------------
// Verdicts

export interface Decision {
  allowed: boolean;
  /** One line per direction that was evaluated, egress of the source first. */
  reasons: string[];
}

/** Whether a new connection is allowed end to end: egress of the source AND ingress of the destination. */
export function allowed(world: RefWorld, conn: RefConnection): boolean {
  return decide(world, conn).allowed;
}

/** A short account of the decision, for test failure messages. */
export function explain(world: RefWorld, conn: RefConnection): string {
  const d = decide(world, conn);
  return `${d.allowed ? 'ALLOWED' : 'DENIED'} ${describeConnection(conn)}: ${d.reasons.join('; ')}`;
}

export function describeConnection(conn: RefConnection): string {
  const what =
    conn.protocol === 'ICMP' ? `ICMP ${conn.icmpType ?? '*'}/${conn.icmpCode ?? '*'}` : `${conn.protocol}/${conn.port}`;
  return `${endpointName(conn.src)} -> ${endpointName(conn.dst)} ${what}`;
}

export function decide(world: RefWorld, conn: RefConnection): Decision {
  const resources = readResources(world.policies);
  const c: Conn = {
    src: current(world, conn.src),
    dst: current(world, conn.dst),
    proto: protocolNumber(conn.protocol),
    port: conn.port,
    srcPort: conn.srcPort,
    icmpType: conn.icmpType,
    icmpCode: conn.icmpCode,
  };
  if (c.proto !== 1 && c.port === undefined) throw new Error(`${conn.protocol} connection without a port`);
  const reasons: string[] = [];
  let ok = true;
  if (isPod(c.src)) {
    const v = evaluateEndpoint(world, resources, c.src, 'Egress', c);
    reasons.push(`egress of ${endpointName(c.src)}: ${v.reason}`);
    ok &&= v.allowed;
  }
  if (isPod(c.dst)) {
    const v = evaluateEndpoint(world, resources, c.dst, 'Ingress', c);
    reasons.push(`ingress of ${endpointName(c.dst)}: ${v.reason}`);
    ok &&= v.allowed;
  }
  return { allowed: ok, reasons };
}

export type Direction = 'Ingress' | 'Egress';

interface Conn {
  src: RefEndpoint;
  dst: RefEndpoint;
  proto: number;
  port?: number;
  srcPort?: number;
  icmpType?: number;
  icmpCode?: number;
}

function endpointName(e: RefEndpoint): string {
  return isPod(e) ? `${e.namespace}/${e.name}` : e.ip;
}

// Callers may hold pod objects from before a label change: the world's copy is the truth.
function current(world: RefWorld, e: RefEndpoint): RefEndpoint {
  if (!isPod(e)) return e;
  const p = world.pods.find((q) => q.namespace === e.namespace && q.name === e.name);
  if (!p) throw new Error(`pod ${endpointName(e)} is not in the world`);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Tiers: the evaluation order Calico documents for the Tier resource

type Action = 'Allow' | 'Deny' | 'Pass';

interface TierDef {
  name: string;
  order: number; // Infinity when the Tier has no order: it comes last
  defaultAction: 'Deny' | 'Pass';
}

interface PolicyEntry {
  id: string; // for messages
  tier: string;
  order: number; // Infinity when unset
  sortName: string;
  types: Direction[];
  selects(world: RefWorld, pod: RefPod): boolean;
  /** The first final action the policy's rules take, or undefined when none applies. */
  act(
    world: RefWorld,
    res: Resources,
    pod: RefPod,
    dir: Direction,
    c: Conn,
  ): { action: Action; rule: number } | undefined;
}

interface Resources {
  tiers: TierDef[];
  policies: PolicyEntry[];
  netsets: NetSet[];
}

interface NetSet {
  namespace?: string; // undefined for a GlobalNetworkSet
  name: string;
  labels: Labels;
  nets: string[];
}

const DEFAULT_TIER: TierDef = { name: 'default', order: 1_000_000, defaultAction: 'Deny' };

function evaluateEndpoint(
  world: RefWorld,
  res: Resources,
  pod: RefPod,
  dir: Direction,
  c: Conn,
): { allowed: boolean; reason: string } {
  const passed: string[] = [];
  for (const tier of res.tiers) {
    const applicable = res.policies
      .filter((p) => p.tier === tier.name && p.types.includes(dir) && p.selects(world, pod))
      .sort(byOrderThenName);
    // A tier none of whose policies applies to the endpoint is skipped, end-of-tier action included.
    if (applicable.length === 0) continue;
    let passedBy: string | undefined;
    for (const p of applicable) {
      const r = p.act(world, res, pod, dir, c);
      if (!r) continue;
      const by = `${p.id} rule ${r.rule}`;
      if (r.action === 'Allow') return { allowed: true, reason: `allowed by ${by}${passNote(passed)}` };
      if (r.action === 'Deny') return { allowed: false, reason: `denied by ${by}${passNote(passed)}` };
      passedBy = by;
      break;
    }
    if (passedBy) {
      passed.push(`tier ${tier.name} passed by ${passedBy}`);
      continue;
    }
    const names = applicable.map((p) => p.id).join(', ');
    if (tier.defaultAction === 'Deny') {
      return {
        allowed: false,
        reason: `denied at the end of tier ${tier.name} (applicable: ${names})${passNote(passed)}`,
      };
    }
    passed.push(`tier ${tier.name} passed by its default action`);
  }
  // No tier decided: the namespace's profile, which allows everything.
  return {
    allowed: true,
    reason: passed.length ? `allowed by the profile (${passed.join(', ')})` : 'no policy applies',
  };
}

function passNote(passed: string[]): string {
  return passed.length ? ` (${passed.join(', ')})` : '';
}

function byOrderThenName(a: { order: number; sortName: string }, b: { order: number; sortName: string }): number {
  if (a.order !== b.order) return a.order < b.order ? -1 : 1;
  return a.sortName < b.sortName ? -1 : a.sortName > b.sortName ? 1 : 0;
}

function readResources(objects: readonly object[]): Resources {
  const tiers = new Map<string, TierDef>([['default', DEFAULT_TIER]]);
  const policies: PolicyEntry[] = [];
  const netsets: NetSet[] = [];
  for (const o of objects) {
    const obj = o as WireObject;
    const key = `${obj.apiVersion} ${obj.kind}`;
    switch (key) {
      case 'networking.k8s.io/v1 NetworkPolicy':
        policies.push(kubernetesPolicy(obj as NetworkPolicy));
        break;
      case 'projectcalico.org/v3 NetworkPolicy':
      case 'projectcalico.org/v3 GlobalNetworkPolicy':
        policies.push(calicoPolicy(obj as CalicoPolicy));
        break;
      case 'projectcalico.org/v3 Tier': {
        const t = obj as { metadata: { name: string }; spec?: { order?: number; defaultAction?: 'Deny' | 'Pass' } };
        const order = t.metadata.name === 'default' ? DEFAULT_TIER.order : (t.spec?.order ?? Infinity);
        tiers.set(t.metadata.name, { name: t.metadata.name, order, defaultAction: t.spec?.defaultAction ?? 'Deny' });
        break;
      }
      case 'projectcalico.org/v3 NetworkSet':
      case 'projectcalico.org/v3 GlobalNetworkSet': {
        const s = obj as {
          metadata: { name: string; namespace?: string; labels?: Labels };
          spec?: { nets?: string[] };
        };
        const global = obj.kind === 'GlobalNetworkSet';
        if (!global && !s.metadata.namespace) throw new Error(`NetworkSet ${s.metadata.name} has no namespace`);
        netsets.push({
          namespace: global ? undefined : s.metadata.namespace,
          name: s.metadata.name,
          labels: s.metadata.labels ?? {},
          nets: s.spec?.nets ?? [],
        });
        break;
      }
      default:
        throw new Error(`the reference does not model ${key}`);
    }
  }
  for (const p of policies)
    if (!tiers.has(p.tier)) throw new Error(`${p.id} is in tier ${p.tier}, which does not exist`);
  return { tiers: [...tiers.values()].sort((a, b) => byOrderThenName(tierKey(a), tierKey(b))), policies, netsets };
}

function tierKey(t: TierDef): { order: number; sortName: string } {
  return { order: t.order, sortName: t.name };
}

interface WireObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string };
}

// ---------------------------------------------------------------------------------------------
// Kubernetes NetworkPolicy

function kubernetesPolicy(np: NetworkPolicy): PolicyEntry {
  const ns = np.metadata?.namespace;
  const name = np.metadata?.name;
  if (!ns || !name) throw new Error('a NetworkPolicy needs metadata.name and metadata.namespace');
  const spec: Partial<NetworkPolicySpec> = np.spec ?? {};
  for (const t of spec.policyTypes ?? [])
    if (t !== 'Ingress' && t !== 'Egress') throw new Error(`${ns}/${name}: policyType ${t}`);
  const types = kubernetesPolicyTypes(spec);
  return {
    id: `NetworkPolicy ${ns}/${name}`,
    tier: 'default',
    order: 1000,
    sortName: `knp.default.${name}`,
    types,
    // A missing podSelector decodes as the empty selector: every pod of the namespace.
    selects: (_world, pod) => pod.namespace === ns && labelSelectorMatches(spec.podSelector ?? {}, pod.labels),
    act(world, _res, _pod, dir, c) {
      const rules = (dir === 'Ingress' ? spec.ingress : spec.egress) ?? [];
      const remote = dir === 'Ingress' ? c.src : c.dst;
      for (let i = 0; i < rules.length; i++) {
        const rule = rules[i];
        const peers = 'from' in rule ? rule.from : 'to' in rule ? rule.to : undefined;
        // An absent or empty list of peers or ports matches everything.
        const peerOk = !peers?.length || peers.some((p) => k8sPeerMatches(world, ns, p, remote));
        const portOk = !rule.ports?.length || rule.ports.some((p) => k8sPortMatches(p, c));
        if (peerOk && portOk) return { action: 'Allow', rule: i };
      }
      return undefined;
    },
  };
}

/** policyTypes as the API server defaults them: Ingress always, Egress when there are egress rules. */
export function kubernetesPolicyTypes(spec: Partial<NetworkPolicySpec>): Direction[] {
  if (spec.policyTypes?.length) return spec.policyTypes;
  return spec.egress?.length ? ['Ingress', 'Egress'] : ['Ingress'];
}

export function labelSelectorMatches(sel: V1LabelSelector, labels: Labels): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (values.length === 0) throw new Error(`selector ${e.key} In needs values`);
        if (!has || !values.includes(labels[e.key])) return false;
        break;
      case 'NotIn':
        // NotIn also matches when the key is absent.
        if (values.length === 0) throw new Error(`selector ${e.key} NotIn needs values`);
        if (has && values.includes(labels[e.key])) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        throw new Error(`unknown label selector operator ${e.operator}`);
    }
  }
  return true;
}

/** A namespace's labels as the API server stores them: `kubernetes.io/metadata.name` is always its name. */
export function namespaceLabels(world: RefWorld, name: string): Labels {
  const ns = world.namespaces.find((n) => n.name === name);
  if (!ns) throw new Error(`namespace ${name} is not in the world`);
  return { ...ns.labels, 'kubernetes.io/metadata.name': name };
}

function k8sPeerMatches(world: RefWorld, policyNs: string, peer: V1NetworkPolicyPeer, remote: RefEndpoint): boolean {
  if (peer.ipBlock) {
    if (peer.podSelector || peer.namespaceSelector) throw new Error('ipBlock cannot be combined with selectors');
    // Matched on the IP, pods included, as Calico and most implementations do.
    return ipBlockContains(peer.ipBlock, remote.ip);
  }
  if (!peer.podSelector && !peer.namespaceSelector) throw new Error('a NetworkPolicyPeer needs at least one field');
  if (!isPod(remote)) return false;
  const nsOk = peer.namespaceSelector
    ? labelSelectorMatches(peer.namespaceSelector, namespaceLabels(world, remote.namespace))
    : remote.namespace === policyNs;
  const podOk = peer.podSelector ? labelSelectorMatches(peer.podSelector, remote.labels) : true;
  return nsOk && podOk;
}

function ipBlockContains(b: V1IPBlock, ip: string): boolean {
  const cidr = parseCidr(b.cidr);
  for (const e of b.except ?? []) {
    const x = parseCidr(e);
    if (x.bits <= cidr.bits || !cidrContains(b.cidr, x.base)) throw new Error(`except ${e} is not inside ${b.cidr}`);
  }
  return cidrContains(b.cidr, ip) && !(b.except ?? []).some((e) => cidrContains(e, ip));
}

function k8sPortMatches(p: V1NetworkPolicyPort, c: Conn): boolean {
  const protoName = p.protocol ?? 'TCP';
  if (c.proto !== protocolNumber(protoName)) return false;
  if (p.port === undefined) {
    if (p.endPort !== undefined) throw new Error('endPort needs port');
    return true;
  }
  if (typeof p.port === 'number') {
    if (p.endPort === undefined) return c.port === p.port;
    if (p.endPort < p.port) throw new Error(`endPort ${p.endPort} < port ${p.port}`);
    return c.port !== undefined && c.port >= p.port && c.port <= p.endPort;
  }
  if (p.endPort !== undefined) throw new Error('endPort needs a numeric port');
  if (/^[0-9]+$/.test(p.port)) throw new Error(`port "${p.port}" must be a number or a name`);
  // A named port means the port of that name and protocol on the destination pod, in both directions.
  return isPod(c.dst) && namedPortIs(c.dst, p.port, protoName, c.port);
}

function namedPortIs(pod: RefPod, name: string, protocol: string, port: number | undefined): boolean {
  return pod.ports.some((cp) => cp.name === name && cp.protocol === protocol && cp.port === port);
}

// ---------------------------------------------------------------------------------------------
// Calico projectcalico.org/v3 policy

interface CalicoPolicy {
  apiVersion: string;
  kind: 'NetworkPolicy' | 'GlobalNetworkPolicy';
  metadata: { name: string; namespace?: string };
  spec?: {
    tier?: string;
    order?: number;
    selector?: string;
    namespaceSelector?: string;
    serviceAccountSelector?: string;
    types?: Direction[];
    ingress?: CalicoRule[];
    egress?: CalicoRule[];
    doNotTrack?: boolean;
    preDNAT?: boolean;
    applyOnForward?: boolean;
  };
}

export interface CalicoRule {
  action: 'Allow' | 'Deny' | 'Pass' | 'Log';
  protocol?: string | number;
  notProtocol?: string | number;
  icmp?: { type?: number; code?: number };
  notICMP?: { type?: number; code?: number };
  ipVersion?: 4 | 6;
  source?: EntityRule;
  destination?: EntityRule;
}

export interface EntityRule {
  nets?: string[];
  notNets?: string[];
  selector?: string;
  notSelector?: string;
  namespaceSelector?: string;
  ports?: (number | string)[];
  notPorts?: (number | string)[];
  serviceAccounts?: { names?: string[]; selector?: string };
}

function calicoPolicy(p: CalicoPolicy): PolicyEntry {
  const global = p.kind === 'GlobalNetworkPolicy';
  const ns = global ? undefined : p.metadata.namespace;
  if (!global && !ns) throw new Error(`NetworkPolicy ${p.metadata.name} has no namespace`);
  const spec = p.spec ?? {};
  if (spec.doNotTrack || spec.preDNAT || spec.applyOnForward) {
    throw new Error(
      `${p.metadata.name}: doNotTrack, preDNAT and applyOnForward policies (host endpoints) are not modelled`,
    );
  }
  const ingress = spec.ingress ?? [];
  const egress = spec.egress ?? [];
  // Calico's documented default for types.
  const types: Direction[] = spec.types?.length
    ? spec.types
    : egress.length === 0
      ? ['Ingress']
      : ingress.length === 0
        ? ['Egress']
        : ['Ingress', 'Egress'];
  const id = global ? `GlobalNetworkPolicy ${p.metadata.name}` : `NetworkPolicy ${ns}/${p.metadata.name} (Calico)`;
  return {
    id,
    tier: spec.tier ?? 'default',
    order: spec.order ?? Infinity,
    sortName: p.metadata.name,
    types,
    selects(world, pod) {
      if (ns !== undefined && pod.namespace !== ns) return false;
      if (!selectorMatches(spec.selector, podSelectorLabels(pod), IN_SCOPE)) return false;
      if (global && !selectorMatches(spec.namespaceSelector, calicoNamespaceLabels(world, pod.namespace), IN_SCOPE)) {
        return false;
      }
      const sa = serviceAccountOf(world, pod);
      return selectorMatches(spec.serviceAccountSelector, sa.labels, IN_SCOPE);
    },
    act(world, res, _pod, dir, c) {
      const rules = dir === 'Ingress' ? ingress : egress;
      for (let i = 0; i < rules.length; i++) {
        const r = rules[i];
        if (!calicoRuleMatches(world, res, ns, r, c)) continue;
        if (r.action === 'Log') continue; // logs, then evaluation goes on
        if (r.action !== 'Allow' && r.action !== 'Deny' && r.action !== 'Pass')
          throw new Error(`${id}: action ${r.action}`);
        return { action: r.action, rule: i };
      }
      return undefined;
    },
  };
}

const PROTOCOLS: Record<string, number> = { ICMP: 1, TCP: 6, UDP: 17, ICMPv6: 58, SCTP: 132, UDPLite: 136 };

function protocolNumber(p: string | number): number {
  if (typeof p === 'number') return p;
  const n = PROTOCOLS[p] ?? (/^[0-9]+$/.test(p) ? Number(p) : undefined);
  if (n === undefined) throw new Error(`unknown protocol ${p}`);
  return n;
}

function calicoRuleMatches(
  world: RefWorld,
  res: Resources,
  policyNs: string | undefined,
  r: CalicoRule,
  c: Conn,
): boolean {
  if (r.ipVersion === 6) return false; // the world is IPv4
  if (r.protocol !== undefined && protocolNumber(r.protocol) !== c.proto) return false;
  if (r.notProtocol !== undefined && protocolNumber(r.notProtocol) === c.proto) return false;
  if (r.icmp && !icmpMatches(r.icmp, c)) return false;
  if (r.notICMP && icmpMatches(r.notICMP, c)) return false;
  const proto = r.protocol;
  return (
    entityMatches(world, res, policyNs, r.source ?? {}, c.src, c.srcPort, proto) &&
    entityMatches(world, res, policyNs, r.destination ?? {}, c.dst, c.port, proto)
  );
}

function icmpMatches(m: { type?: number; code?: number }, c: Conn): boolean {
  if (c.proto !== 1) return false;
  if (m.type !== undefined && m.type !== c.icmpType) return false;
  return m.code === undefined || m.code === c.icmpCode;
}

// The default scope: all() matches every resource a selector is applied to.
const IN_SCOPE: SelectorContext = { all: true, global: false };

function entityMatches(
  world: RefWorld,
  res: Resources,
  policyNs: string | undefined,
  er: EntityRule,
  ep: RefEndpoint,
  port: number | undefined,
  ruleProtocol: string | number | undefined,
): boolean {
  if (er.nets?.length && !er.nets.some((n) => cidrContains(n, ep.ip))) return false;
  if (er.notNets?.length && er.notNets.some((n) => cidrContains(n, ep.ip))) return false;

  // selector, namespaceSelector and serviceAccounts together pick a set of pods and network sets;
  // the rule matches a packet whose IP belongs to one of them. In a namespaced policy the set is
  // limited to the policy's namespace as soon as any selector field is used, notSelector included
  // (that is how Calico renders it, though the notSelector documentation can be read otherwise).
  const sa = er.serviceAccounts;
  const usesSa = !!sa && (!!sa.names?.length || !!sa.selector);
  const positive = !!er.selector || usesSa || !!er.namespaceSelector || (!!er.notSelector && policyNs !== undefined);
  if (positive && !ipInSelectedSet(res, ep, (m) => inScope(world, policyNs, er, m) && memberSelected(world, er, m))) {
    return false;
  }
  // notSelector negates the packet match, unscoped: anything anywhere that the selector picks.
  if (
    er.notSelector &&
    ipInSelectedSet(res, ep, (m) => selectorMatches(er.notSelector, memberLabels(m), memberCtx(m)))
  ) {
    return false;
  }

  if (er.ports?.length || er.notPorts?.length) {
    if (ruleProtocol === undefined || ![6, 17, 132].includes(protocolNumber(ruleProtocol))) {
      throw new Error('Calico ports need protocol TCP, UDP or SCTP');
    }
    if (port === undefined) throw new Error('this rule matches source ports: give the connection a srcPort');
    const proto = Object.keys(PROTOCOLS).find((k) => PROTOCOLS[k] === protocolNumber(ruleProtocol)) as string;
    const hit = (spec: number | string) => calicoPortMatches(spec, ep, proto, port);
    if (er.ports?.length && !er.ports.some(hit)) return false;
    if (er.notPorts?.length && er.notPorts.some(hit)) return false;
  }
  return true;
}

type Member = { kind: 'pod'; pod: RefPod } | { kind: 'netset'; set: NetSet };

function memberNamespace(m: Member): string | undefined {
  return m.kind === 'pod' ? m.pod.namespace : m.set.namespace;
}

function memberLabels(m: Member): Labels {
  if (m.kind === 'pod') return podSelectorLabels(m.pod);
  return m.set.namespace === undefined
    ? m.set.labels
    : { ...m.set.labels, 'projectcalico.org/namespace': m.set.namespace };
}

function memberCtx(m: Member): SelectorContext {
  return { all: true, global: memberNamespace(m) === undefined };
}

// Is the endpoint's IP in the IP set of the members the predicate picks: the pod itself, or the
// nets of a picked network set (which can contain pod IPs too).
function ipInSelectedSet(res: Resources, ep: RefEndpoint, pick: (m: Member) => boolean): boolean {
  if (isPod(ep) && pick({ kind: 'pod', pod: ep })) return true;
  return res.netsets.some((s) => s.nets.some((n) => cidrContains(n, ep.ip)) && pick({ kind: 'netset', set: s }));
}

function inScope(world: RefWorld, policyNs: string | undefined, er: EntityRule, m: Member): boolean {
  const ns = memberNamespace(m);
  if (er.namespaceSelector) {
    // all() in a namespaceSelector means every namespace; global() means non-namespaced resources.
    return ns === undefined
      ? selectorMatches(er.namespaceSelector, {}, { all: false, global: true })
      : selectorMatches(er.namespaceSelector, calicoNamespaceLabels(world, ns), IN_SCOPE);
  }
  return policyNs === undefined || ns === policyNs;
}

function memberSelected(world: RefWorld, er: EntityRule, m: Member): boolean {
  if (er.selector && !selectorMatches(er.selector, memberLabels(m), memberCtx(m))) return false;
  const sa = er.serviceAccounts;
  if (sa?.names?.length || sa?.selector) {
    if (m.kind !== 'pod') {
      // A network set runs under no service account: names never match it, and a selector sees no labels.
      if (sa.names?.length) return false;
      return selectorMatches(sa.selector, {}, IN_SCOPE);
    }
    const acct = serviceAccountOf(world, m.pod);
    if (sa.names?.length && !sa.names.includes(acct.name)) return false;
    if (sa.selector && !selectorMatches(sa.selector, acct.labels, IN_SCOPE)) return false;
  }
  return true;
}

function calicoPortMatches(spec: number | string, ep: RefEndpoint, proto: string, port: number): boolean {
  if (typeof spec === 'number') return port === spec;
  const range = /^([0-9]+):([0-9]+)$/.exec(spec);
  if (range) return port >= Number(range[1]) && port <= Number(range[2]);
  if (/^[0-9]+$/.test(spec)) return port === Number(spec);
  // A named port resolves on the endpoint the EntityRule describes, with the rule's protocol.
  return isPod(ep) && namedPortIs(ep, spec, proto, port);
}

/** The labels Calico's selectors see on a pod: its own plus the automatic ones. */
function podSelectorLabels(pod: RefPod): Labels {
  return {
    ...pod.labels,
    'projectcalico.org/namespace': pod.namespace,
    'projectcalico.org/orchestrator': 'k8s',
    'projectcalico.org/serviceaccount': pod.serviceAccount ?? 'default',
  };
}

function calicoNamespaceLabels(world: RefWorld, name: string): Labels {
  return { ...namespaceLabels(world, name), 'projectcalico.org/name': name };
}

function serviceAccountOf(world: RefWorld, pod: RefPod): { name: string; labels: Labels } {
  const name = pod.serviceAccount ?? 'default';
  const sa = world.serviceAccounts?.find((s) => s.namespace === pod.namespace && s.name === name);
  return { name, labels: { ...(sa?.labels ?? {}), 'projectcalico.org/name': name } };
}

// ---------------------------------------------------------------------------------------------
// Calico selector expressions, parsed by recursive descent:
//   or      := and ('||' and)*
//   and     := unary ('&&' unary)*
//   unary   := '!' unary | '(' or ')' | match
//   match   := 'all()' | 'global()' | 'has(' key ')' | key '==' str | key '!=' str
//            | key 'in' set | key 'not' 'in' set | key 'contains' str
//            | key 'starts' 'with' str | key 'ends' 'with' str

export interface SelectorContext {
  /** What all() means here: true for a selector over resources; in a namespaceSelector it excludes global resources. */
  all: boolean;
  /** What global() means here: whether the resource is non-namespaced. */
  global: boolean;
}

export type Selector = (labels: Labels, ctx: SelectorContext) => boolean;

const parsed = new Map<string, Selector>();

/** An absent or empty selector is all(). */
export function selectorMatches(expr: string | undefined, labels: Labels, ctx: SelectorContext): boolean {
  if (expr === undefined || expr.trim() === '') return ctx.all;
  let sel = parsed.get(expr);
  if (!sel) {
    sel = parseSelector(expr);
    parsed.set(expr, sel);
  }
  return sel(labels, ctx);
}

export function parseSelector(src: string): Selector {
  const tokens = tokenize(src);
  let i = 0;
  const peek = () => tokens[i];
  const fail = (what: string): never => {
    throw new Error(`selector "${src}": ${what} at token ${i} (${peek() ?? 'end'})`);
  };
  const take = (t?: string): string => {
    const tok = tokens[i];
    if (tok === undefined || (t !== undefined && tok !== t)) fail(`expected ${t ?? 'a token'}`);
    i++;
    return tok;
  };
  const str = (): string => {
    const tok = take();
    if (!/^["']/.test(tok)) fail('expected a quoted string');
    return tok.slice(1, -1);
  };
  const key = (): string => {
    const tok = take();
    if (!/^[A-Za-z0-9_./-]+$/.test(tok)) fail('expected a label key');
    return tok;
  };
  const set = (): string[] => {
    take('{');
    const out: string[] = [];
    if (peek() !== '}') {
      out.push(str());
      while (peek() === ',') {
        take(',');
        out.push(str());
      }
    }
    take('}');
    return out;
  };

  const parseOr = (): Selector => {
    let left = parseAnd();
    while (peek() === '||') {
      take();
      const l = left;
      const r = parseAnd();
      left = (lb, c) => l(lb, c) || r(lb, c);
    }
    return left;
  };
  const parseAnd = (): Selector => {
    let left = parseUnary();
    while (peek() === '&&') {
      take();
      const l = left;
      const r = parseUnary();
      left = (lb, c) => l(lb, c) && r(lb, c);
    }
    return left;
  };
  const parseUnary = (): Selector => {
    if (peek() === '!') {
      take();
      const inner = parseUnary();
      return (lb, c) => !inner(lb, c);
    }
    if (peek() === '(') {
      take();
      const inner = parseOr();
      take(')');
      return inner;
    }
    return parseMatch();
  };
  const parseMatch = (): Selector => {
    const word = peek();
    if ((word === 'all' || word === 'global' || word === 'has') && tokens[i + 1] === '(') {
      take();
      take('(');
      if (word === 'has') {
        const k = key();
        take(')');
        return (lb) => Object.hasOwn(lb, k);
      }
      take(')');
      return word === 'all' ? (_lb, c) => c.all : (_lb, c) => c.global;
    }
    const k = key();
    const has = (lb: Labels) => Object.hasOwn(lb, k);
    const op = take();
    switch (op) {
      case '==': {
        const v = str();
        return (lb) => has(lb) && lb[k] === v;
      }
      case '!=': {
        const v = str();
        return (lb) => !has(lb) || lb[k] !== v;
      }
      case 'in': {
        const vs = set();
        return (lb) => has(lb) && vs.includes(lb[k]);
      }
      case 'not': {
        take('in');
        const vs = set();
        return (lb) => !has(lb) || !vs.includes(lb[k]);
      }
      case 'contains': {
        const v = str();
        return (lb) => has(lb) && lb[k].includes(v);
      }
      case 'starts': {
        take('with');
        const v = str();
        return (lb) => has(lb) && lb[k].startsWith(v);
      }
      case 'ends': {
        take('with');
        const v = str();
        return (lb) => has(lb) && lb[k].endsWith(v);
      }
      default:
        return fail(`unknown operator ${op}`);
    }
  };

  const sel = parseOr();
  if (i !== tokens.length) fail('unexpected trailing input');
  return sel;
}

function tokenize(src: string): string[] {
  const out: string[] = [];
  const re = /\s*(&&|\|\||==|!=|[!(){},]|"[^"]*"|'[^']*'|[A-Za-z0-9_./-]+)/y;
  let pos = 0;
  while (pos < src.length) {
    if (/^\s*$/.test(src.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(src);
    if (!m) throw new Error(`selector "${src}": cannot read from offset ${pos}`);
    out.push(m[1]);
    pos = re.lastIndex;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// IPv4 addresses

export function parseIPv4(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^[0-9]{1,3}$/.test(p) || Number(p) > 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIPv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export function parseCidr(cidr: string): { base: string; bits: number } {
  const [addr, bitsText] = cidr.includes('/') ? cidr.split('/') : [cidr, '32'];
  const bits = Number(bitsText);
  if (!Number.isInteger(bits) || bits < 0 || bits > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  parseIPv4(addr);
  return { base: addr, bits };
}

export function cidrContains(cidr: string, ip: string): boolean {
  const { base, bits } = parseCidr(cidr);
  const size = 2 ** (32 - bits);
  return Math.floor(parseIPv4(base) / size) === Math.floor(parseIPv4(ip) / size);
}

/** The network of the given prefix length that contains ip, e.g. ("10.1.2.3", 24) -> "10.1.2.0/24". */
export function networkOf(ip: string, bits: number): string {
  const size = 2 ** (32 - bits);
  return `${formatIPv4(Math.floor(parseIPv4(ip) / size) * size)}/${bits}`;
}
