// The policy calculation: datastore objects in, per-endpoint rule tables and IP sets out.
// Policies that cannot be converted are reported once (object and field named) and fail closed
// for the endpoints they select; every other policy keeps working.
import { compile as compileSelector, type Matcher } from './selector.js';
import { endpointLabels, PolicyError, PROTO, type Direction, type Policy, type Tier, DEFAULT_TIER } from './model.js';
import { compileTable, denyAllTable, type Table } from './compile.js';
import { convertK8sPolicy, k8sPolicyHead, type NetworkPolicyObject } from './k8s.js';
import {
  calicoPolicyHead,
  calicoPolicyKey,
  convertCalicoPolicy,
  convertTier,
  type CalicoPolicyObject,
  type TierObject,
} from './calico.js';
import { parseCidr } from './cidr.js';
import type { SetEndpoint } from './ipsets.js';

export interface PodInfo {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  ip?: string;
  ports: { name: string; port: number; protocol: number }[];
  serviceAccount?: string;
  hostNetwork: boolean;
}

interface PolicyState {
  /** Bumped on every change: part of the cache key of the tables that include the policy. */
  rev: number;
  policy?: Policy;
  /** Set when the policy is bad: its selector and directions if they could be read. */
  failed?: { error: Error; selector?: Matcher; types?: Record<Direction, boolean> };
  match?: Matcher;
}

export interface NetworkSetObject {
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  spec?: { nets?: string[] };
}

export interface HostTables extends EndpointTables {
  fwdIngress?: Table;
  fwdEgress?: Table;
  preDNAT?: Table;
}

export interface EndpointTables {
  ingress?: Table;
  egress?: Table;
}

const PROTOCOL_NUMBERS: Record<string, number> = { TCP: PROTO.TCP, UDP: PROTO.UDP, SCTP: PROTO.SCTP };

/** A pod object (wire JSON) as the policy engine sees it. */
export function podInfo(pod: {
  metadata?: { namespace?: string; name?: string; labels?: Record<string, string> };
  spec?: {
    hostNetwork?: boolean;
    serviceAccountName?: string;
    containers?: { ports?: { name?: string; containerPort: number; protocol?: string }[] }[];
  };
  status?: { podIP?: string };
}): PodInfo {
  const ports: PodInfo['ports'] = [];
  for (const c of pod.spec?.containers ?? [])
    for (const p of c.ports ?? [])
      if (p.name)
        ports.push({ name: p.name, port: p.containerPort, protocol: PROTOCOL_NUMBERS[p.protocol ?? 'TCP'] ?? 0 });
  return {
    namespace: pod.metadata?.namespace ?? 'default',
    name: pod.metadata?.name ?? '',
    labels: pod.metadata?.labels ?? {},
    ...(pod.status?.podIP ? { ip: pod.status.podIP } : {}),
    ports,
    ...(pod.spec?.serviceAccountName ? { serviceAccount: pod.spec.serviceAccountName } : {}),
    hostNetwork: pod.spec?.hostNetwork === true,
  };
}

export class PolicyEngine {
  private readonly namespaces = new Map<string, Record<string, string>>();
  private readonly pods = new Map<string, PodInfo>();
  private readonly policies = new Map<string, PolicyState>();
  private readonly tiers = new Map<string, Tier>([[DEFAULT_TIER.name, DEFAULT_TIER]]);
  /** NetworkSets and GlobalNetworkSets by set-endpoint key ("netset <kind> <ns>/<name>"). */
  private readonly netsets = new Map<string, NetworkSetObject>();
  private revision = 0;
  private tierRevision = 0;
  /**
   * Compiled tables by what they are made of (the policies that apply and their revisions, the
   * tiers, the endpoint's named ports): pods selected by the same policies share one table, and
   * an unrelated change compiles nothing.
   */
  private tableCache = new Map<string, EndpointTables>();
  /** Errors not yet reported (the agent logs each bad policy once per change). */
  readonly errors: Error[] = [];

  /** Returns the set-endpoint keys whose labels changed with it. */
  setNamespace(name: string, labels: Record<string, string> | undefined): string[] {
    this.namespaces.set(name, labels ?? {});
    return [
      ...[...this.pods.keys()].filter((k) => this.pods.get(k)!.namespace === name),
      ...[...this.netsets]
        .filter(([, o]) => o.kind !== 'GlobalNetworkSet' && (o.metadata?.namespace ?? 'default') === name)
        .map(([k]) => k),
    ];
  }

  /** A set endpoint by key: a pod ("ns/name") or a network set. */
  setEndpointOf(key: string): SetEndpoint | undefined {
    const ns = this.netsets.get(key);
    if (ns) return this.networkSetEndpoint(ns);
    const p = this.pods.get(key);
    return p && this.setEndpoint(p);
  }

  static netsetKey(o: NetworkSetObject): string {
    return `netset ${o.kind} ${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
  }

  setNetworkSet(o: NetworkSetObject): string {
    const key = PolicyEngine.netsetKey(o);
    this.netsets.set(key, o);
    return key;
  }

  deleteNetworkSet(o: NetworkSetObject): string {
    const key = PolicyEngine.netsetKey(o);
    this.netsets.delete(key);
    return key;
  }

  deleteNamespace(name: string): void {
    this.namespaces.delete(name);
  }

  setPod(pod: PodInfo): void {
    this.pods.set(`${pod.namespace}/${pod.name}`, pod);
  }

  deletePod(namespace: string, name: string): void {
    this.pods.delete(`${namespace}/${name}`);
  }

  pod(key: string): PodInfo | undefined {
    return this.pods.get(key);
  }

  /** Pods that are policy endpoints (own IP, not host-networked), keyed namespace/name. */
  *endpoints(): Generator<[string, SetEndpoint]> {
    for (const [k, p] of this.pods) {
      const ep = this.setEndpoint(p);
      if (ep) yield [k, ep];
    }
    for (const [k, o] of this.netsets) {
      const ep = this.networkSetEndpoint(o);
      if (ep) yield [k, ep];
    }
  }

  setEndpoint(p: PodInfo): SetEndpoint | undefined {
    if (!p.ip || p.hostNetwork) return undefined;
    return { ip: p.ip, labels: this.labelsOf(p), ports: p.ports };
  }

  labelsOf(p: PodInfo): Record<string, string> {
    return endpointLabels(p.labels, p.namespace, this.namespaces.get(p.namespace), p.serviceAccount);
  }

  setK8sPolicy(np: NetworkPolicyObject): void {
    const key = `NetworkPolicy ${np.metadata?.namespace ?? 'default'}/${np.metadata?.name ?? ''}`;
    this.setPolicy(
      key,
      () => convertK8sPolicy(np),
      () => k8sPolicyHead(np),
    );
  }

  deleteK8sPolicy(namespace: string, name: string): void {
    this.policies.delete(`NetworkPolicy ${namespace}/${name}`);
  }

  /** Adds or replaces a policy of any front end; a conversion error fails it closed. */
  setPolicy(key: string, convert: () => Policy, head: () => Pick<Policy, 'selector' | 'types'>): void {
    try {
      const policy = convert();
      this.policies.set(key, { rev: ++this.revision, policy, match: compileSelector(policy.selector) });
    } catch (err) {
      if (!(err instanceof PolicyError)) throw err;
      let failed: PolicyState['failed'] = { error: err };
      try {
        const h = head();
        failed = { error: err, selector: compileSelector(h.selector), types: h.types };
      } catch {
        // Not even the selector can be read: the policy selects nothing.
      }
      this.policies.set(key, { rev: ++this.revision, failed });
      this.errors.push(err);
    }
  }

  deletePolicy(key: string): void {
    this.policies.delete(key);
  }

  setTier(t: Tier): void {
    this.tiers.set(t.name, t);
    this.tierRevision++;
  }

  /** A projectcalico.org/v3 NetworkPolicy or GlobalNetworkPolicy. */
  setCalicoPolicy(o: CalicoPolicyObject): void {
    this.setPolicy(
      calicoPolicyKey(o),
      () => convertCalicoPolicy(o),
      () => calicoPolicyHead(o),
    );
  }

  deleteCalicoPolicy(o: CalicoPolicyObject): void {
    this.policies.delete(calicoPolicyKey(o));
  }

  setTierObject(o: TierObject): void {
    try {
      this.setTier(convertTier(o));
    } catch (err) {
      if (!(err instanceof PolicyError)) throw err;
      this.errors.push(err);
    }
  }

  /**
   * A NetworkSet (namespaced) or GlobalNetworkSet as a selectable endpoint of the IP sets:
   * undefined (with the error recorded) when a net is bad.
   */
  networkSetEndpoint(o: NetworkSetObject): SetEndpoint | undefined {
    const global = o.kind === 'GlobalNetworkSet';
    const ns = global ? undefined : (o.metadata?.namespace ?? 'default');
    const key = global ? `GlobalNetworkSet ${o.metadata?.name}` : `NetworkSet ${ns}/${o.metadata?.name}`;
    const nets: string[] = [];
    for (const [i, n] of (o.spec?.nets ?? []).entries()) {
      try {
        nets.push(parseCidr(n).text);
      } catch (err) {
        this.errors.push(new PolicyError(key, `spec.nets[${i}]`, (err as Error).message));
        return undefined;
      }
    }
    const labels = endpointLabels(o.metadata?.labels ?? {}, ns, ns !== undefined ? this.namespaces.get(ns) : undefined);
    return { nets, labels, ports: [] };
  }

  deleteTier(name: string): void {
    if (name !== DEFAULT_TIER.name) this.tiers.delete(name);
    this.tierRevision++;
  }

  /**
   * The tables of a host endpoint (labels of a HostEndpoint object): global policies that select
   * it, after the failsafe ports; what no policy allows is denied.
   */
  hostTables(
    labels: Record<string, string>,
    failsafe: Record<Direction, { protocol: number; port: number }[]>,
  ): HostTables {
    const selecting: Policy[] = [];
    for (const st of this.policies.values())
      if (st.policy?.hostEndpoints && st.match!(labels)) selecting.push(st.policy);
    const normal = selecting.filter((p) => !p.preDNAT);
    const forward = normal.filter((p) => p.applyOnForward);
    const pre = selecting.filter((p) => p.preDNAT);
    const compile = (ps: Policy[], dir: Direction, opts: NonNullable<Parameters<typeof compileTable>[4]>) => {
      try {
        return compileTable(ps, this.tiers, dir, { ports: [] }, opts);
      } catch (err) {
        if (!(err instanceof PolicyError)) throw err;
        this.errors.push(err);
        return compileTable([], this.tiers, dir, { ports: [] }, { ...opts, always: true, profile: 'deny' });
      }
    };
    const out: HostTables = {};
    for (const dir of ['ingress', 'egress'] as const) {
      out[dir] = compile(normal, dir, { failsafe: failsafe[dir] });
      // Forwarded traffic: only applyOnForward policies (none: it passes); their tiers end with
      // the tier's default action, and what passes every tier is allowed.
      const f = compile(forward, dir, { failsafe: [], profile: 'allow', always: false });
      if (f) out[dir === 'ingress' ? 'fwdIngress' : 'fwdEgress'] = f;
    }
    // Pre-DNAT: Deny drops before Service NAT; Allow and no match let the packet on.
    const p = compile(pre, 'ingress', {
      failsafe: failsafe.ingress,
      profile: 'allow',
      always: false,
      tierDefaults: false,
    });
    if (p) out.preDNAT = p;
    return out;
  }

  /** The tables of one pod (ingress/egress), or undefined ones where no policy applies. */
  tablesFor(podKey: string): EndpointTables {
    const p = this.pods.get(podKey);
    if (!p) return {};
    const labels = this.labelsOf(p);
    const applying: Policy[] = [];
    const failed: PolicyState['failed'][] = [];
    const parts: string[] = [];
    for (const [key, st] of this.policies) {
      if (st.policy && st.match!(labels)) applying.push(st.policy);
      else if (st.failed?.selector?.(labels)) failed.push(st.failed);
      else continue;
      parts.push(`${key}@${st.rev}`);
    }
    if (parts.length === 0) return {};
    const cacheKey = `${this.tierRevision}|${JSON.stringify(p.ports)}|${parts.sort().join('|')}`;
    const hit = this.tableCache.get(cacheKey);
    if (hit) return hit;
    const out: EndpointTables = {};
    for (const dir of ['ingress', 'egress'] as const) {
      const bad = failed.find((f) => f!.types?.[dir]);
      if (bad) {
        out[dir] = denyAllTable(bad.error.message);
        continue;
      }
      try {
        const t = compileTable(applying, this.tiers, dir, { ports: p.ports });
        if (t) out[dir] = t;
      } catch (err) {
        if (!(err instanceof PolicyError)) throw err;
        this.errors.push(new PolicyError(`pod ${podKey}`, `${dir} policy`, err.message));
        out[dir] = denyAllTable(err.message);
      }
    }
    // Old entries name revisions that no longer exist: start afresh now and then.
    if (this.tableCache.size > 4096) this.tableCache = new Map();
    this.tableCache.set(cacheKey, out);
    return out;
  }
}
