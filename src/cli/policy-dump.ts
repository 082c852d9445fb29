// `sluice bpf policy dump IFACE`: what the datapath enforces on one interface, read back from the
// pinned policy maps (endpoint entry, its ingress and egress rule tables, the IP sets they name).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { DEFAULT_BPFFS_ROOT } from '../paths.js';
import {
  EP_MAP,
  EpFlags,
  IPSETS_MAP,
  IPSET_PREFIX_FIXED,
  RULES_MAP,
  RuleAction,
  RuleFlags,
  epKey,
  epValue,
  ipsetKey,
  ipsetValue,
  ruleKey,
  ruleValue,
  type RuleEntry,
} from '../datapath/policy.js';
import { MapType } from '../bpf/syscall.js';
import { openPinnedMap } from './datapath-dump.js';
import { CliError, formatJson, formatTable, stdio, type OutputFormat, type Printer } from './output.js';

const ACTION_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(RuleAction).map(([k, v]) => [v, k.toLowerCase()]),
);
const PROTOS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 136: 'udplite' };

/** An interface name (in this network namespace) or an ifindex. */
function ifindexOf(iface: string): number {
  if (/^\d+$/.test(iface)) return Number(iface);
  try {
    const out = JSON.parse(execFileSync('ip', ['-j', 'link', 'show', 'dev', iface], { encoding: 'utf8' })) as {
      ifindex: number;
    }[];
    return out[0]!.ifindex;
  } catch {
    throw new CliError(`no interface ${iface} in this network namespace (give its name or ifindex)`);
  }
}

function ranges(r: number[], n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(r[i * 2] === r[i * 2 + 1] ? `${r[i * 2]}` : `${r[i * 2]}-${r[i * 2 + 1]}`);
  return out.join(',');
}

export function describeRule(r: RuleEntry): string {
  const parts: string[] = [];
  if (r.proto) parts.push(`proto ${PROTOS[r.proto] ?? r.proto}`);
  if (r.notProto) parts.push(`!proto ${PROTOS[r.notProto] ?? r.notProto}`);
  if (r.flags & RuleFlags.ICMP_TYPE)
    parts.push(`icmp type ${r.icmpType}${r.flags & RuleFlags.ICMP_CODE ? ` code ${r.icmpCode}` : ''}`);
  if (r.flags & RuleFlags.NOT_ICMP_TYPE) parts.push(`!icmp type ${r.notIcmpType}`);
  const sets = (label: string, ids: number[]) => ids.filter(Boolean).forEach((id) => parts.push(`${label} set ${id}`));
  sets('src in', r.srcSet);
  sets('src !in', r.srcNotSet);
  sets('dst in', r.dstSet);
  sets('dst !in', r.dstNotSet);
  if (r.nSport) parts.push(`sport ${ranges(r.sport, r.nSport)}`);
  if (r.nNotSport) parts.push(`!sport ${ranges(r.notSport, r.nNotSport)}`);
  if (r.nDport || r.dstNamedSet)
    parts.push(
      `dport ${[r.nDport ? ranges(r.dport, r.nDport) : '', r.dstNamedSet ? `named set ${r.dstNamedSet}` : ''].filter(Boolean).join(' or ')}`,
    );
  if (r.nNotDport) parts.push(`!dport ${ranges(r.notDport, r.nNotDport)}`);
  if (r.action === RuleAction.PASS) parts.push(`then rule ${r.jump}`);
  return parts.join(', ') || 'any';
}

export function policyDump(iface: string, opts: { pinRoot?: string; output: OutputFormat }, io: Printer = stdio): void {
  const root = path.resolve(opts.pinRoot ?? DEFAULT_BPFFS_ROOT);
  const ifindex = ifindexOf(iface);
  const eps = openPinnedMap(root, EP_MAP, epKey, epValue, MapType.HASH);
  const rules = openPinnedMap(root, RULES_MAP, ruleKey, ruleValue, MapType.ARRAY);
  const ipsets = openPinnedMap(root, IPSETS_MAP, ipsetKey, ipsetValue, MapType.LPM_TRIE);
  try {
    const ep = eps.get({ ifindex });
    if (!ep) {
      io.out(`${iface} (ifindex ${ifindex}): no policy endpoint (not a workload or host endpoint Sluice knows)`);
      return;
    }
    const table = (start: number, len: number) =>
      Array.from({ length: len }, (_, i) => {
        const r = rules.get({ index: start + i })!;
        return {
          index: start + i,
          action: ACTION_NAMES[r.action] ?? `action ${r.action}`,
          match: describeRule(r),
          ruleId: r.id,
        };
      });
    const ingress = ep.flags & EpFlags.IN_POLICY ? table(ep.inStart, ep.inLen) : undefined;
    const egress = ep.flags & EpFlags.EG_POLICY ? table(ep.egStart, ep.egLen) : undefined;
    const used = new Set<number>();
    for (const t of [ingress, egress])
      for (const r of t ?? []) for (const m of r.match.matchAll(/set (\d+)/g)) used.add(Number(m[1]));
    const members = new Map<number, string[]>();
    for (const k of ipsets.keys()) {
      if (!used.has(k.setId)) continue;
      const port = k.portKey ? ` ${PROTOS[k.portKey >>> 16] ?? k.portKey >>> 16}/${k.portKey & 0xffff}` : '';
      members.set(k.setId, [...(members.get(k.setId) ?? []), `${k.addr}/${k.prefixlen - IPSET_PREFIX_FIXED}${port}`]);
    }
    const flags = Object.entries(EpFlags)
      .filter(([, b]) => ep.flags & b)
      .map(([n]) => n.toLowerCase().replace('_', '-'));
    if (opts.output === 'json') {
      io.out(
        formatJson({
          iface,
          ifindex,
          endpoint: { addr: ep.addr, flags },
          ingress,
          egress,
          sets: Object.fromEntries(members),
        }),
      );
      return;
    }
    io.out(
      `${iface} (ifindex ${ifindex}): ${ep.flags & EpFlags.HOST ? 'host endpoint' : `workload ${ep.addr}`} [${flags.join(', ')}]`,
    );
    for (const [dir, t] of [
      ['ingress', ingress],
      ['egress', egress],
    ] as const) {
      io.out('');
      if (!t) {
        io.out(`${dir}: no policy applies (allowed)`);
        continue;
      }
      io.out(`${dir}: ${t.length} rules`);
      io.out(
        formatTable(
          ['rule', 'action', 'match', 'id'],
          t.map((r) => [r.index, r.action, r.match, r.ruleId]),
        ),
      );
    }
    if (members.size) {
      io.out('');
      io.out(
        formatTable(
          ['set', 'members'],
          [...members].map(([id, m]) => [
            id,
            m.length > 6 ? `${m.slice(0, 6).join(' ')} ... (${m.length})` : m.join(' '),
          ]),
        ),
      );
    }
  } finally {
    eps.map.close();
    rules.map.close();
    ipsets.map.close();
  }
}
