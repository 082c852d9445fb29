// Kubernetes NetworkPolicy (networking.k8s.io/v1) in the common model, as Calico converts it:
// the default tier at order 1000, one Allow rule per peer and protocol, a pod selector scoped to
// the policy's namespace, a namespace selector over the namespace labels endpoints carry.
import type { V1NetworkPolicy, V1NetworkPolicyPeer, V1NetworkPolicyPort } from '@kubernetes/client-node';
import {
  ALL,
  and,
  labelSelectorToSelector,
  LabelSelectorError,
  type LabelSelector,
  type Selector,
} from './selector.js';
import {
  DEFAULT_TIER,
  LABEL_NAMESPACE,
  NS_LABEL_PREFIX,
  PolicyError,
  PROTO,
  type Direction,
  type EntityMatch,
  type Policy,
  type Ports,
  type Rule,
} from './model.js';
import { parseCidr } from './cidr.js';

type Wire<T> = T extends Date ? string : T extends object ? { [K in keyof T]: Wire<T[K]> } : T;
export type NetworkPolicyObject = Wire<V1NetworkPolicy>;

const eq = (key: string, value: string): Selector => and({ kind: 'eq', key, value }, ALL);
const hasKey = (key: string): Selector => and({ kind: 'has', key }, ALL);

/** Rewrites a selector over namespace labels into one over endpoints' effective labels. */
export function namespaceScoped(sel: Selector): Selector {
  const map = (s: Selector): Selector => {
    switch (s.kind) {
      case 'all':
        return s;
      case 'global':
        return { kind: 'not', operand: { kind: 'has', key: LABEL_NAMESPACE } };
      case 'not':
        return { kind: 'not', operand: map(s.operand) };
      case 'and':
      case 'or':
        return { kind: s.kind, operands: s.operands.map(map) };
      default:
        return { ...s, key: NS_LABEL_PREFIX + s.key };
    }
  };
  // Only namespaced endpoints have namespace labels: `all()` means every namespace.
  return and(hasKey(LABEL_NAMESPACE), map(sel));
}

function labelSelector(ls: LabelSelector | undefined | null, key: string, field: string): Selector {
  try {
    return labelSelectorToSelector(ls ?? {});
  } catch (err) {
    if (err instanceof LabelSelectorError) throw new PolicyError(key, `${field}.${err.field}`, err.reason);
    throw err;
  }
}

const PROTOCOLS: Record<string, number> = { TCP: PROTO.TCP, UDP: PROTO.UDP, SCTP: PROTO.SCTP };

/** Ports grouped by protocol: a rule of the model has one protocol. */
function portsByProtocol(
  ports: Wire<V1NetworkPolicyPort>[] | undefined,
  key: string,
  field: string,
): Map<number | undefined, Ports | undefined> {
  const out = new Map<number | undefined, Ports | undefined>();
  if (!ports || ports.length === 0) {
    out.set(undefined, undefined);
    return out;
  }
  ports.forEach((p, i) => {
    const f = `${field}.ports[${i}]`;
    const name = p.protocol ?? 'TCP';
    const proto = PROTOCOLS[name];
    if (proto === undefined) throw new PolicyError(key, `${f}.protocol`, `unknown protocol ${JSON.stringify(name)}`);
    if (proto === PROTO.SCTP)
      throw new PolicyError(
        key,
        `${f}.protocol`,
        'SCTP is not supported by the eBPF dataplane (its packets are not policed)',
      );
    const entry = out.get(proto) ?? { ranges: [], named: [] };
    out.set(proto, entry);
    if (p.port === undefined || p.port === null) {
      if (p.endPort !== undefined && p.endPort !== null)
        throw new PolicyError(key, `${f}.endPort`, 'endPort without port');
      entry.ranges.push({ lo: 0, hi: 65535 });
      return;
    }
    if (typeof p.port === 'string' && !/^\d+$/.test(p.port)) {
      if (p.endPort !== undefined && p.endPort !== null)
        throw new PolicyError(key, `${f}.endPort`, 'endPort needs a numeric port');
      entry.named.push(p.port);
      return;
    }
    const lo = Number(p.port);
    const hi = p.endPort ?? lo;
    if (!Number.isInteger(lo) || lo < 1 || lo > 65535)
      throw new PolicyError(key, `${f}.port`, `port ${p.port} is not in 1-65535`);
    if (!Number.isInteger(hi) || hi < lo || hi > 65535)
      throw new PolicyError(key, `${f}.endPort`, `endPort ${p.endPort} is not in ${lo}-65535`);
    entry.ranges.push({ lo, hi });
  });
  return out;
}

function peerMatch(peer: Wire<V1NetworkPolicyPeer>, ns: string, key: string, field: string): EntityMatch {
  if (peer.ipBlock) {
    if (peer.podSelector || peer.namespaceSelector)
      throw new PolicyError(key, field, 'ipBlock cannot be combined with podSelector or namespaceSelector');
    const cidr = peer.ipBlock.cidr;
    const nets = [checkCidr(cidr, key, `${field}.ipBlock.cidr`)];
    const except = (peer.ipBlock.except ?? []).map((c, i) => checkCidr(c, key, `${field}.ipBlock.except[${i}]`));
    return except.length ? { nets, notNets: except } : { nets };
  }
  const pods = peer.podSelector ? labelSelector(peer.podSelector, key, `${field}.podSelector`) : ALL;
  const namespaces = peer.namespaceSelector
    ? namespaceScoped(labelSelector(peer.namespaceSelector, key, `${field}.namespaceSelector`))
    : eq(LABEL_NAMESPACE, ns);
  return { selector: and(pods, namespaces) };
}

function checkCidr(cidr: string, key: string, field: string): string {
  try {
    return parseCidr(cidr).text;
  } catch (err) {
    throw new PolicyError(key, field, (err as Error).message);
  }
}

function convertRules(np: NetworkPolicyObject, dir: Direction, key: string, ns: string): Rule[] {
  const out: Rule[] = [];
  const spec = np.spec ?? {};
  const list = (dir === 'ingress' ? spec.ingress : spec.egress) ?? [];
  list.forEach((r, i) => {
    const field = `spec.${dir}[${i}]`;
    const peers = (dir === 'ingress' ? (r as { _from?: unknown; from?: unknown }).from : (r as { to?: unknown }).to) as
      Wire<V1NetworkPolicyPeer>[] | undefined;
    const matches =
      peers && peers.length > 0
        ? peers.map((p, j) => peerMatch(p, ns, key, `${field}.${dir === 'ingress' ? 'from' : 'to'}[${j}]`))
        : [{}];
    const byProto = portsByProtocol(r.ports as Wire<V1NetworkPolicyPort>[] | undefined, key, field);
    let n = 0;
    for (const peer of matches) {
      for (const [protocol, ports] of byProto) {
        const ends: EntityMatch = ports ? { ports } : {};
        out.push({
          action: 'Allow',
          ...(protocol !== undefined ? { protocol } : {}),
          source: dir === 'ingress' ? peer : {},
          destination: dir === 'ingress' ? ends : { ...peer, ...ends },
          name: `${key} ${field}${matches.length * byProto.size > 1 ? `#${n++}` : ''}`,
        });
      }
    }
  });
  return out;
}

/** The policy's selector and directions: known even when its rules are bad (to fail closed). */
export function k8sPolicyHead(np: NetworkPolicyObject): Pick<Policy, 'key' | 'selector' | 'types'> {
  const ns = np.metadata?.namespace ?? 'default';
  const key = `NetworkPolicy ${ns}/${np.metadata?.name ?? ''}`;
  const spec = np.spec ?? {};
  const selector = and(labelSelector(spec.podSelector ?? {}, key, 'spec.podSelector'), eq(LABEL_NAMESPACE, ns));
  const declared = spec.policyTypes;
  let types: Record<Direction, boolean>;
  if (declared && declared.length > 0) {
    for (const [i, t] of declared.entries())
      if (t !== 'Ingress' && t !== 'Egress')
        throw new PolicyError(key, `spec.policyTypes[${i}]`, `unknown policy type ${JSON.stringify(t)}`);
    types = { ingress: declared.includes('Ingress'), egress: declared.includes('Egress') };
  } else {
    // Kubernetes' defaults: always Ingress, Egress when egress rules are present.
    types = { ingress: true, egress: spec.egress !== undefined && spec.egress !== null };
  }
  return { key, selector, types };
}

/** Converts one NetworkPolicy; throws PolicyError naming the object and field. */
export function convertK8sPolicy(np: NetworkPolicyObject): Policy {
  const head = k8sPolicyHead(np);
  const ns = np.metadata?.namespace ?? 'default';
  return {
    ...head,
    tier: DEFAULT_TIER.name,
    order: 1000,
    name: `knp.default.${np.metadata?.name ?? ''}`,
    ingress: head.types.ingress ? convertRules(np, 'ingress', head.key, ns) : [],
    egress: head.types.egress ? convertRules(np, 'egress', head.key, ns) : [],
  };
}
