// The one policy model both front ends convert to (Kubernetes NetworkPolicy and Calico's
// projectcalico.org/v3 resources) and both back ends compile from (BPF rule tables, nftables).
// It is Calico's model: tiers of ordered policies of ordered rules, selectors over endpoint
// labels. Namespaces are folded into the labels as Calico does, so every endpoint set is one
// selector over "effective labels" (see endpointLabels).
import { LABEL_NAMESPACE, type Labels, type Selector } from './selector.js';

export type Action = 'Allow' | 'Deny' | 'Pass' | 'Log';
export type Direction = 'ingress' | 'egress';

export const PROTO = { ICMP: 1, TCP: 6, UDP: 17, SCTP: 132 } as const;

export interface PortRange {
  lo: number;
  hi: number;
}

/** Ports of a rule side: numeric ranges, or container port names resolved per endpoint. */
export interface Ports {
  ranges: PortRange[];
  named: string[];
}

export interface EntityMatch {
  /** Endpoints (pods, network sets) whose effective labels match; namespace scoping included. */
  selector?: Selector;
  notSelector?: Selector;
  nets?: string[];
  notNets?: string[];
  ports?: Ports;
  notPorts?: Ports;
}

export interface IcmpMatch {
  type: number;
  code?: number;
}

export interface Rule {
  action: Action;
  protocol?: number;
  notProtocol?: number;
  icmp?: IcmpMatch;
  notICMP?: IcmpMatch;
  source: EntityMatch;
  destination: EntityMatch;
  /** "<policy key> <direction> rule <n>": names the rule in errors, logs and dumps. */
  name: string;
}

export interface Policy {
  /** "<Kind> <namespace>/<name>" or "<Kind> <name>": stable and readable. */
  key: string;
  tier: string;
  /** Lower first; policies without an order come last (Infinity). */
  order: number;
  name: string;
  /** The endpoints it applies to (effective labels; namespace scoping included). */
  selector: Selector;
  types: Record<Direction, boolean>;
  ingress: Rule[];
  egress: Rule[];
  /** Applies to host endpoints too (Calico GlobalNetworkPolicy); Kubernetes policies never do. */
  hostEndpoints?: boolean;
  /** Host endpoints: also judges traffic forwarded through the host interface. */
  applyOnForward?: boolean;
  /** Host endpoints: judges arriving traffic before Service NAT (ingress only). */
  preDNAT?: boolean;
}

export interface Tier {
  name: string;
  order: number;
  defaultAction: 'Deny' | 'Pass';
}

/** Calico puts Kubernetes NetworkPolicies in this tier, after every tier with an order. */
export const DEFAULT_TIER: Tier = { name: 'default', order: 1_000_000, defaultAction: 'Deny' };

/** Prefix of namespace labels among an endpoint's effective labels (as Calico's `pcns.`). */
export const NS_LABEL_PREFIX = 'pcns.';
export const LABEL_SERVICE_ACCOUNT = 'projectcalico.org/serviceaccount';
export const LABEL_ORCHESTRATOR = 'projectcalico.org/orchestrator';
export { LABEL_NAMESPACE };

/** An endpoint's labels as selectors see them: its own, its namespace and the namespace's. */
export function endpointLabels(
  own: Labels,
  namespace: string | undefined,
  nsLabels: Labels | undefined,
  serviceAccount?: string,
): Record<string, string> {
  const out: Record<string, string> = { ...own };
  if (namespace !== undefined) {
    out[LABEL_NAMESPACE] = namespace;
    out[LABEL_ORCHESTRATOR] = 'k8s';
    for (const [k, v] of Object.entries(nsLabels ?? {})) out[NS_LABEL_PREFIX + k] = v;
    out[`${NS_LABEL_PREFIX}kubernetes.io/metadata.name`] = namespace;
  }
  if (serviceAccount) out[LABEL_SERVICE_ACCOUNT] = serviceAccount;
  return out;
}

/** A bad policy: the message names the object and the field. */
export class PolicyError extends Error {
  readonly code = 'EPOLICY';
  constructor(
    readonly policy: string,
    readonly field: string,
    reason: string,
  ) {
    super(`${policy}: ${field}: ${reason}`);
  }
}
