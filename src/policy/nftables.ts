// The standard dataplane's policy backend: the same tables the BPF datapath walks, rendered as
// one nftables table (`inet sluice-policy`): IP sets as nft sets, a chain per tier of each
// distinct table, a chain per endpoint direction, dispatched by interface from the forward,
// input and output hooks. The whole table is replaced in one `nft -f` transaction, so no packet
// meets half a policy. Services stay with kube-proxy (its DNAT happens before the filter hooks,
// so rules see the real backend, as in eBPF mode).
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { parseCidr } from './cidr.js';
import type { PortRange } from './model.js';
import type { SetDef, Table, TableRule } from './compile.js';

export const NFT_TABLE = 'sluice-policy';

export interface NftEndpoint {
  ifname: string;
  /** A host endpoint: its tables judge traffic to (input) and from (output) the host only. */
  host?: boolean;
  /** Workload address, for anti-spoofing; undefined for host interfaces. */
  addr?: string;
  rpf: boolean;
  ingress?: Table;
  egress?: Table;
}

/** Members of the sets the tables name (from IpSets), by set key. */
export type SetMembers = (key: string) => { cidr: string; proto?: number; port?: number }[];

const PROTO: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 136: 'udplite' };
const proto = (n: number) => PROTO[n] ?? String(n);
const ranges = (r: PortRange[]) => `{ ${r.map((x) => (x.lo === x.hi ? `${x.lo}` : `${x.lo}-${x.hi}`)).join(', ')} }`;
const short = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 12);
const quote = (s: string) => `"${s.replace(/["\\]/g, '').slice(0, 120)}"`;

function ruleText(r: TableRule, setName: (key: string) => string, nextTier: string | undefined): string {
  const m: string[] = [];
  if (r.protocol) m.push(`meta l4proto ${proto(r.protocol)}`);
  if (r.notProtocol) m.push(`meta l4proto != ${proto(r.notProtocol)}`);
  if (r.icmp) m.push(`icmp type ${r.icmp.type}${r.icmp.code !== undefined ? ` icmp code ${r.icmp.code}` : ''}`);
  if (r.notICMP)
    m.push(
      r.notICMP.code !== undefined
        ? `icmp type . icmp code != { ${r.notICMP.type} . ${r.notICMP.code} }`
        : `icmp type != ${r.notICMP.type}`,
    );
  for (const k of r.srcSets) m.push(`ip saddr @${setName(k)}`);
  for (const k of r.srcNotSets) m.push(`ip saddr != @${setName(k)}`);
  for (const k of r.dstSets) m.push(`ip daddr @${setName(k)}`);
  for (const k of r.dstNotSets) m.push(`ip daddr != @${setName(k)}`);
  const ports = r.sport.length || r.notSport.length || r.dport.length || r.notDport.length || r.dstNamed;
  // Port matches need a transport header: `th` reads TCP, UDP and UDPLite ports alike.
  if (ports && !r.protocol) m.push('meta l4proto { tcp, udp, udplite }');
  if (r.sport.length) m.push(`th sport ${ranges(r.sport)}`);
  if (r.notSport.length) m.push(`th sport != ${ranges(r.notSport)}`);
  if (r.notDport.length) m.push(`th dport != ${ranges(r.notDport)}`);
  let actions: string;
  switch (r.action) {
    case 'allow':
      // This endpoint's direction allows it: back to the base chain, which judges the other
      // endpoint (pod to pod on one node) and accepts at its end.
      actions = 'return';
      break;
    case 'deny':
      actions = 'drop';
      break;
    case 'log':
      actions = `log prefix ${quote(`sluice ${r.name}: `)} level info`;
      break;
    case 'pass':
      actions = nextTier ? `goto ${nextTier}` : 'return';
      break;
  }
  // Numeric ports or a named-port set: one rule each (nft has no OR inside a rule).
  const variants: string[] = [];
  if (r.dport.length) variants.push(`th dport ${ranges(r.dport)}`);
  if (r.dstNamed) variants.push(`ip daddr . meta l4proto . th dport @${setName(r.dstNamed)}`);
  if (variants.length === 0) return `${[...m, actions].join(' ')}`;
  return variants.map((v) => [...m, v, actions].join(' ')).join('\n\t\t');
}

function setText(name: string, def: SetDef, members: ReturnType<SetMembers>): string {
  if (def.kind === 'named') {
    const el = members.map((x) => `${x.cidr.split('/')[0]} . ${proto(x.proto!)} . ${x.port}`);
    return `\tset ${name} {\n\t\ttype ipv4_addr . inet_proto . inet_service\n${el.length ? `\t\telements = { ${el.join(', ')} }\n` : ''}\t}`;
  }
  // Interval sets take CIDRs; overlapping members (a /32 inside a /24) are merged by auto-merge.
  const el = [...new Set(members.map((x) => parseCidr(x.cidr).text))];
  return `\tset ${name} {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n${el.length ? `\t\telements = { ${el.join(', ')} }\n` : ''}\t}`;
}

/** The whole table as `nft -f` input: deleted and re-created in one transaction. */
export function renderRuleset(endpoints: NftEndpoint[], members: SetMembers, exists: boolean): string {
  const sets = new Map<string, SetDef>();
  const tables = new Map<string, Table>();
  for (const e of endpoints)
    for (const t of [e.ingress, e.egress]) {
      if (!t) continue;
      tables.set(t.key, t);
      for (const [k, d] of t.sets) sets.set(k, d);
    }
  const setNames = new Map([...sets.keys()].map((k) => [k, `s_${short(k)}`]));
  const setName = (k: string) => setNames.get(k)!;
  const out: string[] = [];
  if (exists) out.push(`delete table inet ${NFT_TABLE}`);
  out.push(`table inet ${NFT_TABLE} {`);
  for (const [k, d] of sets) out.push(setText(setName(k), d, members(k)));
  // A table's rules are split at tier boundaries (after each pass/deny default rule that ends a
  // tier) into chains, so Pass can `goto` the next tier.
  const tableChain = new Map<string, string>();
  for (const [key, t] of tables) {
    const id = short(key);
    tableChain.set(key, `t_${id}`);
    const tiers: TableRule[][] = [[]];
    t.rules.forEach((r, i) => {
      tiers[tiers.length - 1]!.push(r);
      // A tier ends with its default action (compile.ts): the next tier gets its own chain.
      if (r.name.startsWith('tier ') && r.name.endsWith(' default action') && i < t.rules.length - 1) tiers.push([]);
    });
    tiers.forEach((rules, n) => {
      const next = n + 1 < tiers.length ? `t_${id}_${n + 1}` : undefined;
      const name = n === 0 ? `t_${id}` : `t_${id}_${n}`;
      out.push(`\tchain ${name} {`);
      for (const r of rules) out.push(`\t\t${ruleText(r, setName, next)}`);
      out.push('\t}');
    });
  }
  // Dispatch. Replies and related packets pass. A flow's later packets pass only if the current
  // policy has judged the flow (its conntrack mark is this ruleset's generation): after a change
  // the next packet in the flow's direction is judged again, so a flow now denied is cut, as in
  // eBPF mode. Every packet that gets to the end of a base chain was allowed: it marks the flow.
  const fwd: string[] = [
    'ct state related accept',
    'ct state established ct direction reply accept',
    'ct state established ct mark @GEN@ accept',
    'ct state invalid drop',
  ];
  const input: string[] = [...fwd];
  const output: string[] = [...fwd];
  for (const e of endpoints) {
    const ifn = quote(e.ifname);
    if (e.host) {
      if (e.ingress) input.push(`iifname ${ifn} jump ${tableChain.get(e.ingress.key)!}`);
      if (e.egress) output.push(`oifname ${ifn} jump ${tableChain.get(e.egress.key)!}`);
      continue;
    }
    if (e.rpf && e.addr) {
      fwd.push(`iifname ${ifn} ip saddr != ${e.addr} drop`);
      input.push(`iifname ${ifn} ip saddr != ${e.addr} drop`);
    }
    if (e.egress) {
      const c = tableChain.get(e.egress.key)!;
      fwd.push(`iifname ${ifn} jump ${c}`);
      input.push(`iifname ${ifn} jump ${c}`);
    }
    if (e.ingress) {
      const c = tableChain.get(e.ingress.key)!;
      fwd.push(`oifname ${ifn} jump ${c}`);
      output.push(`oifname ${ifn} jump ${c}`);
    }
  }
  for (const [hook, lines] of [
    ['forward', fwd],
    ['input', input],
    ['output', output],
  ] as const) {
    out.push(`\tchain ${hook} {`, `\t\ttype filter hook ${hook} priority filter + 5; policy accept;`);
    for (const l of lines) out.push(`\t\t${l}`);
    out.push('\t\tct mark set @GEN@', '\t}');
  }
  out.push('}');
  const body = out.join('\n') + '\n';
  // The generation: a hash of the ruleset, so an unchanged policy keeps its flows' marks.
  const gen = (parseInt(createHash('sha256').update(body).digest('hex').slice(0, 8), 16) | 1) >>> 0;
  return body.replaceAll('@GEN@', `0x${gen.toString(16)}`);
}

/** Runs nft in this network namespace; rejects with its stderr. */
export function nft(args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('nft', args, { encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`nft ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

/** One nftables table of this network namespace, replaced whole in one transaction. */
export class NftTable {
  constructor(
    readonly family: 'ip' | 'inet',
    readonly name: string,
  ) {}

  async exists(): Promise<boolean> {
    try {
      await nft(['list', 'table', this.family, this.name]);
      return true;
    } catch {
      return false;
    }
  }

  /** Installs `body` (a `table FAMILY NAME { ... }` ruleset), replacing the table if it is there. */
  async replace(body: string): Promise<void> {
    await nft(['-f', '-'], (await this.exists()) ? `delete table ${this.family} ${this.name}\n${body}` : body);
  }

  async remove(): Promise<void> {
    if (await this.exists()) await nft(['delete', 'table', this.family, this.name]);
  }
}

/** Keeps the node's nftables policy table equal to the rendered ruleset (this network namespace). */
export class NftPolicyBackend {
  private last: string | undefined;
  private readonly table = new NftTable('inet', NFT_TABLE);

  async apply(endpoints: NftEndpoint[], members: SetMembers): Promise<boolean> {
    const body = renderRuleset(endpoints, members, false);
    if (body === this.last) return false;
    await this.table.replace(body);
    this.last = body;
    return true;
  }

  exists(): Promise<boolean> {
    return this.table.exists();
  }

  /** Removes the table (eBPF mode takes over, or the agent is rolled back). */
  async remove(): Promise<void> {
    this.last = undefined;
    await this.table.remove();
  }
}
