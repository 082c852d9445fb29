// Calico's projectcalico.org/v3 policy resources in the common model: NetworkPolicy (namespaced)
// and GlobalNetworkPolicy, with tiers, orders, Allow/Deny/Pass/Log, Calico selectors, nets,
// ports (numbers, ranges, names), protocols, ICMP and service accounts; Tier resources.
import { ALL, and, parseSelector, SelectorError, type Selector } from './selector.js';
import { namespaceScoped } from './k8s.js';
import { parseCidr } from './cidr.js';
import {
  DEFAULT_TIER,
  LABEL_NAMESPACE,
  LABEL_SERVICE_ACCOUNT,
  PolicyError,
  PROTO,
  type Action,
  type Direction,
  type EntityMatch,
  type IcmpMatch,
  type Policy,
  type Ports,
  type Rule,
  type Tier,
} from './model.js';

export interface CalicoEntityRule {
  nets?: string[];
  notNets?: string[];
  selector?: string;
  notSelector?: string;
  namespaceSelector?: string;
  ports?: (number | string)[];
  notPorts?: (number | string)[];
  serviceAccounts?: { names?: string[]; selector?: string };
  services?: unknown;
}

export interface CalicoRule {
  action: string;
  protocol?: string | number;
  notProtocol?: string | number;
  icmp?: { type?: number; code?: number };
  notICMP?: { type?: number; code?: number };
  ipVersion?: number;
  source?: CalicoEntityRule;
  destination?: CalicoEntityRule;
  http?: unknown;
  metadata?: unknown;
}

export interface CalicoPolicyObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  spec?: {
    tier?: string;
    order?: number;
    selector?: string;
    namespaceSelector?: string;
    serviceAccountSelector?: string;
    types?: string[];
    ingress?: CalicoRule[];
    egress?: CalicoRule[];
    doNotTrack?: boolean;
    preDNAT?: boolean;
    applyOnForward?: boolean;
  };
}

export interface TierObject {
  metadata?: { name?: string };
  spec?: { order?: number; defaultAction?: string };
}

const eq = (key: string, value: string): Selector => and({ kind: 'eq', key, value }, ALL);

function selector(text: string | undefined, key: string, field: string): Selector | undefined {
  if (text === undefined) return undefined;
  try {
    return parseSelector(text);
  } catch (err) {
    if (err instanceof SelectorError) throw new PolicyError(key, field, err.message);
    throw err;
  }
}

const PROTOCOL_NAMES: Record<string, number> = { TCP: PROTO.TCP, UDP: PROTO.UDP, ICMP: PROTO.ICMP, UDPLITE: 136 };

/** A protocol number, or 'v6' for ICMPv6 (an IPv6-only rule: never matches IPv4 traffic). */
function protocol(v: string | number | undefined, key: string, field: string): number | 'v6' | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'number' || /^\d+$/.test(v)) {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 255) throw new PolicyError(key, field, `protocol ${v} is not in 1-255`);
    if (n === PROTO.SCTP) throw new PolicyError(key, field, 'SCTP is not supported by the eBPF dataplane');
    return n;
  }
  const up = v.toUpperCase();
  if (up === 'ICMPV6') return 'v6';
  if (up === 'SCTP') throw new PolicyError(key, field, 'SCTP is not supported by the eBPF dataplane');
  const n = PROTOCOL_NAMES[up];
  if (n === undefined) throw new PolicyError(key, field, `unknown protocol ${JSON.stringify(v)}`);
  return n;
}

function ports(list: (number | string)[] | undefined, key: string, field: string): Ports | undefined {
  if (!list) return undefined;
  const out: Ports = { ranges: [], named: [] };
  list.forEach((p, i) => {
    const f = `${field}[${i}]`;
    const check = (n: number) => {
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new PolicyError(key, f, `port ${p} is not in 0-65535`);
      return n;
    };
    if (typeof p === 'number') {
      const n = check(p);
      out.ranges.push({ lo: n, hi: n });
    } else if (/^\d+$/.test(p)) {
      const n = check(Number(p));
      out.ranges.push({ lo: n, hi: n });
    } else if (/^\d+:\d+$/.test(p)) {
      const [lo, hi] = p.split(':').map((x) => check(Number(x)));
      if (lo! > hi!) throw new PolicyError(key, f, `range ${p} is backwards`);
      out.ranges.push({ lo: lo!, hi: hi! });
    } else if (/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(p) && p.length <= 15) {
      out.named.push(p);
    } else throw new PolicyError(key, f, `${JSON.stringify(p)} is not a port, a range or a port name`);
  });
  return out;
}

function icmp(v: { type?: number; code?: number } | undefined, key: string, field: string): IcmpMatch | undefined {
  if (!v) return undefined;
  if (v.type === undefined) {
    if (v.code !== undefined) throw new PolicyError(key, `${field}.code`, 'a code needs a type');
    return undefined;
  }
  if (!Number.isInteger(v.type) || v.type < 0 || v.type > 254)
    throw new PolicyError(key, `${field}.type`, `${v.type} is not in 0-254`);
  if (v.code !== undefined && (!Number.isInteger(v.code) || v.code < 0 || v.code > 255))
    throw new PolicyError(key, `${field}.code`, `${v.code} is not in 0-255`);
  return v.code === undefined ? { type: v.type } : { type: v.type, code: v.code };
}

function nets(list: string[] | undefined, key: string, field: string): string[] | undefined {
  return list?.map((c, i) => {
    try {
      return parseCidr(c).text;
    } catch (err) {
      throw new PolicyError(key, `${field}[${i}]`, (err as Error).message);
    }
  });
}

/** An entity rule's endpoint selection, scoped as Calico scopes it. */
function entity(
  e: CalicoEntityRule | undefined,
  scope: string | undefined,
  key: string,
  field: string,
  l4: boolean,
): EntityMatch {
  if (!e) return {};
  if (e.services !== undefined)
    throw new PolicyError(key, `${field}.services`, 'Service matches are not supported yet');
  if (e.serviceAccounts?.selector !== undefined)
    throw new PolicyError(
      key,
      `${field}.serviceAccounts.selector`,
      'service account label selectors are not supported yet',
    );
  // Within a namespaced policy, endpoint selectors see its namespace unless a namespaceSelector says otherwise.
  const nsSel = selector(e.namespaceSelector, key, `${field}.namespaceSelector`);
  const scopeSel = nsSel ? namespaceScoped(nsSel) : scope !== undefined ? eq(LABEL_NAMESPACE, scope) : undefined;
  const sel = selector(e.selector, key, `${field}.selector`);
  const notSel = selector(e.notSelector, key, `${field}.notSelector`);
  const names = e.serviceAccounts?.names;
  const out: EntityMatch = {};
  // As Calico renders a namespaced policy's rules: any endpoint criterion (even a notSelector
  // alone) limits the rule to endpoints of the policy's namespace, or of the selected ones.
  if (sel || nsSel || names || (notSel && scopeSel)) {
    let positive = and(sel ?? ALL, scopeSel ?? ALL);
    if (names) positive = and(positive, and({ kind: 'in', key: LABEL_SERVICE_ACCOUNT, values: [...names] }, ALL));
    out.selector = positive;
  }
  if (notSel) out.notSelector = notSel;
  const n = nets(e.nets, key, `${field}.nets`);
  if (n) out.nets = n;
  const nn = nets(e.notNets, key, `${field}.notNets`);
  if (nn?.length) out.notNets = nn;
  const p = ports(e.ports, key, `${field}.ports`);
  const np = ports(e.notPorts, key, `${field}.notPorts`);
  if ((p || np) && !l4) throw new PolicyError(key, `${field}.ports`, 'ports need protocol TCP, UDP or UDPLite');
  if (p) out.ports = p;
  if (np) out.notPorts = np;
  return out;
}

const ACTIONS: Record<string, Action> = { allow: 'Allow', deny: 'Deny', pass: 'Pass', log: 'Log' };

function rules(list: CalicoRule[] | undefined, dir: Direction, scope: string | undefined, key: string): Rule[] {
  const out: Rule[] = [];
  (list ?? []).forEach((r, i) => {
    const field = `spec.${dir}[${i}]`;
    const action = ACTIONS[String(r.action ?? '').toLowerCase()];
    if (!action) throw new PolicyError(key, `${field}.action`, `unknown action ${JSON.stringify(r.action)}`);
    if (r.http !== undefined)
      throw new PolicyError(key, `${field}.http`, 'HTTP matches need an L7 proxy and are not supported');
    if (r.ipVersion !== undefined && r.ipVersion !== 4 && r.ipVersion !== 6)
      throw new PolicyError(key, `${field}.ipVersion`, `${r.ipVersion} is not 4 or 6`);
    const proto = protocol(r.protocol, key, `${field}.protocol`);
    const notProto = protocol(r.notProtocol, key, `${field}.notProtocol`);
    // IPv6-only rules never match: the datapath is IPv4.
    if (r.ipVersion === 6 || proto === 'v6') return;
    const l4 = proto === PROTO.TCP || proto === PROTO.UDP || proto === 136;
    const rule: Rule = {
      action,
      source: entity(r.source, scope, key, `${field}.source`, l4),
      destination: entity(r.destination, scope, key, `${field}.destination`, l4),
      name: `${key} ${field}`,
    };
    if (proto !== undefined) rule.protocol = proto;
    if (notProto !== undefined && notProto !== 'v6') rule.notProtocol = notProto;
    const ic = icmp(r.icmp, key, `${field}.icmp`);
    const nic = icmp(r.notICMP, key, `${field}.notICMP`);
    if ((ic || nic) && proto !== PROTO.ICMP)
      throw new PolicyError(key, `${field}.icmp`, 'ICMP matches need protocol ICMP');
    if (ic) rule.icmp = ic;
    if (nic) rule.notICMP = nic;
    out.push(rule);
  });
  return out;
}

export function calicoPolicyKey(o: CalicoPolicyObject): string {
  const global = o.kind === 'GlobalNetworkPolicy';
  return global
    ? `GlobalNetworkPolicy ${o.metadata?.name ?? ''}`
    : `NetworkPolicy ${o.metadata?.namespace ?? 'default'}/${o.metadata?.name ?? ''} (projectcalico.org/v3)`;
}

function head(o: CalicoPolicyObject): Pick<Policy, 'key' | 'selector' | 'types'> & { scope: string | undefined } {
  const key = calicoPolicyKey(o);
  const global = o.kind === 'GlobalNetworkPolicy';
  const spec = o.spec ?? {};
  const scope = global ? undefined : (o.metadata?.namespace ?? 'default');
  let sel = selector(spec.selector, key, 'spec.selector') ?? ALL;
  if (scope !== undefined) sel = and(sel, eq(LABEL_NAMESPACE, scope));
  const nsSel = global ? selector(spec.namespaceSelector, key, 'spec.namespaceSelector') : undefined;
  if (nsSel) sel = and(sel, namespaceScoped(nsSel));
  const sa = selector(spec.serviceAccountSelector, key, 'spec.serviceAccountSelector');
  if (sa)
    throw new PolicyError(key, 'spec.serviceAccountSelector', 'service account label selectors are not supported yet');
  let types: Record<Direction, boolean>;
  if (spec.types && spec.types.length) {
    spec.types.forEach((t, i) => {
      if (t !== 'Ingress' && t !== 'Egress')
        throw new PolicyError(key, `spec.types[${i}]`, `unknown type ${JSON.stringify(t)}`);
    });
    types = { ingress: spec.types.includes('Ingress'), egress: spec.types.includes('Egress') };
  } else {
    types = { ingress: true, egress: (spec.egress?.length ?? 0) > 0 };
  }
  return { key, selector: sel, types, scope };
}

/** The policy's tier from spec.tier or its name's `tier.` prefix, as Calico names tiered policies. */
function tierOf(o: CalicoPolicyObject): string {
  if (o.spec?.tier) return o.spec.tier;
  return DEFAULT_TIER.name;
}

export function calicoPolicyHead(o: CalicoPolicyObject): Pick<Policy, 'selector' | 'types'> {
  return head(o);
}

export function convertCalicoPolicy(o: CalicoPolicyObject): Policy {
  const h = head(o);
  const spec = o.spec ?? {};
  if (spec.doNotTrack) throw new PolicyError(h.key, 'spec.doNotTrack', 'untracked policy is not supported yet');
  if (spec.preDNAT) {
    // Calico's rules for pre-DNAT policy: global, applied on forward too, ingress only.
    if (h.scope !== undefined)
      throw new PolicyError(h.key, 'spec.preDNAT', 'only a GlobalNetworkPolicy can be pre-DNAT');
    if (!spec.applyOnForward) throw new PolicyError(h.key, 'spec.applyOnForward', 'must be true when preDNAT is');
    if (h.types.egress || spec.egress?.length)
      throw new PolicyError(h.key, 'spec.egress', 'pre-DNAT policy has ingress rules only');
  }
  const order = spec.order ?? Infinity;
  if (typeof order !== 'number' || Number.isNaN(order)) throw new PolicyError(h.key, 'spec.order', 'must be a number');
  return {
    key: h.key,
    tier: tierOf(o),
    order,
    name: o.metadata?.name ?? '',
    selector: h.selector,
    types: h.types,
    ingress: h.types.ingress ? rules(spec.ingress, 'ingress', h.scope, h.key) : [],
    egress: h.types.egress ? rules(spec.egress, 'egress', h.scope, h.key) : [],
    hostEndpoints: h.scope === undefined,
    ...(spec.applyOnForward ? { applyOnForward: true } : {}),
    ...(spec.preDNAT ? { preDNAT: true } : {}),
  };
}

export function convertTier(o: TierObject): Tier {
  const name = o.metadata?.name ?? '';
  const key = `Tier ${name}`;
  const action = o.spec?.defaultAction ?? 'Deny';
  if (action !== 'Deny' && action !== 'Pass')
    throw new PolicyError(key, 'spec.defaultAction', `${JSON.stringify(action)} is not Deny or Pass`);
  if (name === DEFAULT_TIER.name) return { ...DEFAULT_TIER, defaultAction: action };
  return { name, order: o.spec?.order ?? Infinity, defaultAction: action };
}
