// Compiles the policies that apply to one endpoint, in one direction, into the flat rule table
// the datapath walks (bpf/include/policy.h): tiers in order, policies in order, rules in order;
// Pass jumps to the next tier's first rule; each tier ends with its default action; the table
// ends with the profile's Allow. Selectors, nets and named ports become IP set references.
import { ALL, selectorToString, type Selector } from './selector.js';
import {
  PolicyError,
  type Direction,
  type EntityMatch,
  type Policy,
  type PortRange,
  type Rule,
  type Tier,
} from './model.js';

/** Most ranges one datapath rule holds per port field (SL_RULE_PORTS). */
export const RULE_PORTS = 4;
/** Most rules one table may have (SL_MAX_RULE_STEPS). */
export const MAX_TABLE_RULES = 8192;

export type SetDef =
  | { kind: 'selector'; selector: Selector }
  | { kind: 'nets'; cidrs: string[] }
  | { kind: 'named'; selector: Selector; protocol: number; port: string };

export function setKey(d: SetDef): string {
  switch (d.kind) {
    case 'selector':
      return `sel ${selectorToString(d.selector)}`;
    case 'nets':
      return `nets ${[...d.cidrs].sort().join(',')}`;
    case 'named':
      return `named ${d.protocol}/${d.port} ${selectorToString(d.selector)}`;
  }
}

export type TableAction = 'allow' | 'deny' | 'pass' | 'log';

/** A datapath rule with IP sets by key (the writer gives them ids). */
export interface TableRule {
  action: TableAction;
  protocol: number;
  notProtocol: number;
  icmp?: { type: number; code?: number };
  notICMP?: { type: number; code?: number };
  sport: PortRange[];
  notSport: PortRange[];
  dport: PortRange[];
  notDport: PortRange[];
  srcSets: string[];
  srcNotSets: string[];
  dstSets: string[];
  dstNotSets: string[];
  dstNamed?: string;
  /** Pass: index (within the table) of the next tier's first rule. */
  jump: number;
  name: string;
}

export interface Table {
  /** Identity of the content: equal tables share rule slots. */
  key: string;
  rules: TableRule[];
  /** Every set the rules reference, by key. */
  sets: Map<string, SetDef>;
}

/** What the compiler needs to know of the endpoint a table is for. */
export interface EndpointInfo {
  /** Container ports by name and protocol, for named ports in ingress rules. */
  ports: { name: string; port: number; protocol: number }[];
}

const ACTIONS: Record<Rule['action'], TableAction> = { Allow: 'allow', Deny: 'deny', Pass: 'pass', Log: 'log' };

function matchAll(action: TableAction, name: string, jump = 0): TableRule {
  return {
    action,
    protocol: 0,
    notProtocol: 0,
    sport: [],
    notSport: [],
    dport: [],
    notDport: [],
    srcSets: [],
    srcNotSets: [],
    dstSets: [],
    dstNotSets: [],
    jump,
    name,
  };
}

function mergeRanges(ranges: PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.lo - b.lo);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.lo <= last.hi + 1) last.hi = Math.max(last.hi, r.hi);
    else out.push({ ...r });
  }
  return out;
}

function chunks<T>(xs: T[], n: number): T[][] {
  if (xs.length === 0) return [[]];
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

class SetCollector {
  readonly sets = new Map<string, SetDef>();
  add(d: SetDef): string {
    const k = setKey(d);
    this.sets.set(k, d);
    return k;
  }
}

function sideSets(m: EntityMatch, c: SetCollector): { pos: string[]; neg: string[] } {
  const pos: string[] = [];
  const neg: string[] = [];
  if (m.selector) pos.push(c.add({ kind: 'selector', selector: m.selector }));
  if (m.nets) pos.push(c.add({ kind: 'nets', cidrs: m.nets }));
  if (m.notSelector) neg.push(c.add({ kind: 'selector', selector: m.notSelector }));
  if (m.notNets && m.notNets.length) neg.push(c.add({ kind: 'nets', cidrs: m.notNets }));
  return { pos, neg };
}

/** One model rule as datapath rules (several when it has more port ranges than a rule holds). */
function compileRule(rule: Rule, dir: Direction, ep: EndpointInfo, c: SetCollector): TableRule[] {
  const src = sideSets(rule.source, c);
  const dst = sideSets(rule.destination, c);
  if (rule.source.ports?.named.length || rule.source.notPorts?.named.length)
    throw new PolicyError(rule.name, 'source.ports', 'named source ports are not supported');
  const sport = rule.source.ports ? mergeRanges(rule.source.ports.ranges) : [];
  const notSport = mergeRanges(rule.source.notPorts?.ranges ?? []);
  const notDportRanges = [...(rule.destination.notPorts?.ranges ?? [])];
  let dport: PortRange[] = [];
  let dstNamed: string | undefined;
  const dports = rule.destination.ports;
  if (dports) {
    dport = [...dports.ranges];
    for (const name of dports.named) {
      if (dir === 'ingress') {
        // The destination is this endpoint: its own port of that name, if it has one.
        for (const p of ep.ports)
          if (p.name === name && (!rule.protocol || p.protocol === rule.protocol))
            dport.push({ lo: p.port, hi: p.port });
      } else {
        if (!rule.protocol) throw new PolicyError(rule.name, 'destination.ports', 'a named port needs a protocol');
        if (dports.named.length > 1)
          throw new PolicyError(rule.name, 'destination.ports', 'at most one named port per rule and protocol');
        dstNamed = c.add({
          kind: 'named',
          selector: rule.destination.selector ?? ALL,
          protocol: rule.protocol,
          port: name,
        });
      }
    }
    // Only named ports this endpoint does not have: the rule can match nothing.
    if (dport.length === 0 && !dstNamed) return [];
  }
  for (const name of rule.destination.notPorts?.named ?? []) {
    if (dir !== 'ingress')
      throw new PolicyError(rule.name, 'destination.notPorts', 'named notPorts are only supported in ingress rules');
    for (const p of ep.ports) if (p.name === name) notDportRanges.push({ lo: p.port, hi: p.port });
  }
  const notDport = mergeRanges(notDportRanges);
  for (const [f, r] of [
    ['source.ports', sport],
    ['source.notPorts', notSport],
    ['destination.notPorts', notDport],
  ] as const) {
    // Destination ports split over several rules; the others must fit in one.
    if (r.length > RULE_PORTS)
      throw new PolicyError(rule.name, f, `more than ${RULE_PORTS} port ranges are not supported`);
  }
  const merged = mergeRanges(dport);
  return chunks(merged, RULE_PORTS).map((ranges, i) => ({
    action: ACTIONS[rule.action],
    protocol: rule.protocol ?? 0,
    notProtocol: rule.notProtocol ?? 0,
    ...(rule.icmp ? { icmp: rule.icmp } : {}),
    ...(rule.notICMP ? { notICMP: rule.notICMP } : {}),
    sport,
    notSport,
    dport: ranges,
    notDport,
    srcSets: src.pos,
    srcNotSets: src.neg,
    dstSets: dst.pos,
    dstNotSets: dst.neg,
    ...(i === 0 && dstNamed ? { dstNamed } : {}),
    jump: 0,
    name: rule.name,
  }));
}

const byOrder = <T extends { order: number; name: string }>(a: T, b: T) =>
  a.order !== b.order ? a.order - b.order : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/**
 * The table for the policies (already known to select the endpoint) of one direction, or
 * undefined when none applies (the endpoint is not isolated in that direction).
 */
export function compileTable(
  policies: readonly Policy[],
  tiers: ReadonlyMap<string, Tier>,
  dir: Direction,
  ep: EndpointInfo,
  host?: {
    failsafe: { protocol: number; port: number }[];
    /** After the tiers (default deny: a host endpoint's own traffic). */
    profile?: 'allow' | 'deny';
    /** A table even when no policy applies (default true: host traffic is denied then). */
    always?: boolean;
    /** Each tier ends with its default action (default true; preDNAT policy lets the rest on). */
    tierDefaults?: boolean;
  },
): Table | undefined {
  const applicable = policies.filter((p) => p.types[dir]);
  if (applicable.length === 0 && (!host || host.always === false)) return undefined;
  const c = new SetCollector();
  const byTier = new Map<string, Policy[]>();
  for (const p of applicable) byTier.set(p.tier, [...(byTier.get(p.tier) ?? []), p]);
  const tierList = [...byTier.keys()]
    .map((name) => tiers.get(name) ?? { name, order: Infinity, defaultAction: 'Deny' as const })
    .sort(byOrder);
  const rules: TableRule[] = [];
  // Host endpoints: failsafe ports first (no policy can lock the operator out).
  for (const f of host?.failsafe ?? [])
    rules.push({
      ...matchAll('allow', `failsafe ${dir === 'ingress' ? 'inbound' : 'outbound'} ${f.protocol}/${f.port}`),
      protocol: f.protocol,
      dport: [{ lo: f.port, hi: f.port }],
    });
  for (const tier of tierList) {
    const first = rules.length;
    for (const p of byTier.get(tier.name)!.sort(byOrder))
      for (const r of p[dir]) rules.push(...compileRule(r, dir, ep, c));
    if (host?.tierDefaults !== false)
      rules.push(matchAll(tier.defaultAction === 'Pass' ? 'pass' : 'deny', `tier ${tier.name} default action`));
    const next = rules.length;
    for (let i = first; i < next; i++) if (rules[i]!.action === 'pass') rules[i]!.jump = next;
  }
  // Workloads fall through to their namespace's profile (allow); host endpoints to deny.
  const profile = host ? (host.profile ?? 'deny') : 'allow';
  rules.push(
    profile === 'deny' ? matchAll('deny', 'host endpoint: no policy allowed it') : matchAll('allow', 'profile: allow'),
  );
  if (rules.length > MAX_TABLE_RULES)
    throw new PolicyError(
      `${dir} table`,
      'rules',
      `${rules.length} rules, more than the ${MAX_TABLE_RULES} the datapath evaluates`,
    );
  return { key: JSON.stringify(rules), rules, sets: c.sets };
}

/** A table that denies everything: what an endpoint gets when its policy cannot be compiled. */
export function denyAllTable(reason: string): Table {
  const rules = [matchAll('deny', `fail closed: ${reason}`)];
  return { key: JSON.stringify(rules), rules, sets: new Map() };
}
