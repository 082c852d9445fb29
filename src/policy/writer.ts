// Writes policy state into the datapath's maps without a packet ever meeting half a policy:
// IP set members and new tables are written first (into free slots of the rules array), then
// each endpoint is pointed at its tables with one map update, then what is no longer referenced
// is removed; freed slots wait before reuse, for evaluations still walking an old table.
// Flows whose verdict may have changed are re-judged: their conntrack policy bits are cleared.
import type { TypedMap } from '../bpf/typed-map.js';
import type { CtEntry, CtKey } from '../datapath/conntrack.js';
import {
  EpFlags,
  RuleAction,
  RuleFlags,
  RULE_PORT_SLOTS,
  type EpEntry,
  type IpsetKey,
  type RuleEntry,
} from '../datapath/policy.js';
import type { PortRange } from './model.js';
import type { Table, TableRule } from './compile.js';
import { IpSets } from './ipsets.js';

export interface PolicyMaps {
  ep: TypedMap<{ ifindex: number }, EpEntry>;
  rules: TypedMap<{ index: number }, RuleEntry>;
  ipsets: TypedMap<IpsetKey, { setId: number }>;
  conntrack?: TypedMap<CtKey, CtEntry>;
}

export interface DesiredEndpoint {
  addr: string;
  rpf: boolean;
  host?: boolean;
  ingress?: Table;
  egress?: Table;
  /** Host endpoints: applyOnForward policy for forwarded traffic, and preDNAT policy. */
  fwdIngress?: Table;
  fwdEgress?: Table;
  preDNAT?: Table;
}

/** The tables of an endpoint entry, in a fixed order. */
const SLOTS = ['ingress', 'egress', 'fwdIngress', 'fwdEgress', 'preDNAT'] as const;
type Keys = (string | undefined)[];
const tablesOf = (d: DesiredEndpoint) => SLOTS.map((k) => d[k]);

interface Region {
  start: number;
  len: number;
  refs: number;
  /** The IP sets its rules name: kept until the slots are released. */
  sets: string[];
}

/** How long a replaced table's slots stay untouched. An evaluation takes microseconds. */
const QUARANTINE_MS = 1000;

export class PolicyWriter {
  readonly sets = new IpSets();
  private readonly regions = new Map<string, Region>();
  private readonly endpoints = new Map<number, { entry: EpEntry; keys: Keys; addr: string }>();
  private free: { start: number; len: number }[];
  private quarantine: { start: number; len: number; at: number; sets: string[] }[] = [];
  private readonly setRefs = new Map<string, number>();
  /** Rule names by the id written into sl_rule.id (Log events and dumps). */
  readonly ruleNames: string[] = [''];
  private readonly ruleIds = new Map<string, number>();

  constructor(
    private readonly maps: PolicyMaps,
    private readonly capacity: number,
    private readonly now: () => number = Date.now,
  ) {
    this.free = [{ start: 0, len: capacity }];
  }

  /**
   * Takes over maps a previous writer (a previous agent) filled: the tables its endpoints use stay
   * untouched until the endpoints point elsewhere and the quarantine passes, new IP sets get ids
   * above the old ones, and the old sets' members go with the old tables.
   */
  adopt(): void {
    const at = this.now();
    for (const [{ ifindex }, e] of this.maps.ep.entries()) {
      this.endpoints.set(ifindex, { entry: e, keys: [], addr: e.addr });
      if (e.flags & EpFlags.IN_POLICY) this.occupy(e.inStart, e.inLen, at);
      if (e.flags & EpFlags.EG_POLICY) this.occupy(e.egStart, e.egLen, at);
      if (e.flags & EpFlags.FWD_IN_POLICY) this.occupy(e.fwdInStart, e.fwdInLen, at);
      if (e.flags & EpFlags.FWD_EG_POLICY) this.occupy(e.fwdEgStart, e.fwdEgLen, at);
      if (e.flags & EpFlags.PRE_POLICY) this.occupy(e.preStart, e.preLen, at);
    }
    let maxSet = 0;
    const old: IpsetKey[] = [];
    for (const k of this.maps.ipsets.keys()) {
      maxSet = Math.max(maxSet, k.setId);
      old.push(k);
    }
    this.sets.startIdsAfter(maxSet);
    if (old.length) this.legacy = { keys: old, at };
  }
  private legacy: { keys: IpsetKey[]; at: number } | undefined;

  private occupy(start: number, len: number, at: number): void {
    if (len === 0) return;
    const i = this.free.findIndex((f) => f.start <= start && f.start + f.len >= start + len);
    if (i < 0) return; // overlapping adopted tables: already taken
    const f = this.free[i]!;
    const parts = [
      { start: f.start, len: start - f.start },
      { start: start + len, len: f.start + f.len - (start + len) },
    ].filter((p) => p.len > 0);
    this.free.splice(i, 1, ...parts);
    this.quarantine.push({ start, len, at, sets: [] });
  }

  /** Brings the maps to `desired` (ifindex -> endpoint); returns what it changed. */
  sync(desired: Map<number, DesiredEndpoint>): { tables: number; endpoints: number; rejudge: number } {
    this.releaseQuarantine();
    let tables = 0;
    // 1. Sets the new tables reference.
    const wantKeys = new Map<number, Keys>();
    const seen = new Set<string>();
    for (const [ifindex, d] of desired) {
      const keys: Keys = tablesOf(d).map((t) => t?.key);
      wantKeys.set(ifindex, keys);
      for (const t of tablesOf(d)) {
        if (!t || this.regions.has(t.key) || seen.has(t.key)) continue;
        seen.add(t.key);
        for (const [k, def] of t.sets) this.sets.ensure(k, def);
      }
    }
    const rejudge = this.flushSetChanges(false);
    // 2. New tables into free slots.
    for (const [ifindex, d] of desired) {
      const keys = wantKeys.get(ifindex)!;
      tablesOf(d).forEach((t, i) => {
        const k = keys[i];
        if (!t || !k || this.regions.has(k)) return;
        this.regions.set(k, this.writeTable(t));
        for (const s of t.sets.keys()) this.setRefs.set(s, (this.setRefs.get(s) ?? 0) + 1);
        this.regions.get(k)!.sets = [...t.sets.keys()];
        tables++;
      });
    }
    // 3. Endpoints flip to their tables; 4. endpoints gone are removed.
    let changed = 0;
    for (const [ifindex, d] of desired) {
      const keys = wantKeys.get(ifindex)!;
      const [inR, egR, fiR, feR, preR] = keys.map((k) => (k ? this.regions.get(k) : undefined));
      const entry: EpEntry = {
        addr: d.addr,
        flags:
          (d.rpf ? EpFlags.RPF : 0) |
          (d.host ? EpFlags.HOST : 0) |
          (inR ? EpFlags.IN_POLICY : 0) |
          (egR ? EpFlags.EG_POLICY : 0) |
          (fiR ? EpFlags.FWD_IN_POLICY : 0) |
          (feR ? EpFlags.FWD_EG_POLICY : 0) |
          (preR ? EpFlags.PRE_POLICY : 0),
        inStart: inR?.start ?? 0,
        inLen: inR?.len ?? 0,
        egStart: egR?.start ?? 0,
        egLen: egR?.len ?? 0,
        fwdInStart: fiR?.start ?? 0,
        fwdInLen: fiR?.len ?? 0,
        fwdEgStart: feR?.start ?? 0,
        fwdEgLen: feR?.len ?? 0,
        preStart: preR?.start ?? 0,
        preLen: preR?.len ?? 0,
      };
      const cur = this.endpoints.get(ifindex);
      if (cur && sameEntry(cur.entry, entry) && SLOTS.every((_, i) => cur.keys[i] === keys[i])) continue;
      this.maps.ep.set({ ifindex }, entry);
      for (const k of keys) if (k) this.regions.get(k)!.refs++;
      if (cur) this.unref(cur.keys);
      this.endpoints.set(ifindex, { entry, keys, addr: d.addr });
      rejudge.add(d.addr);
      changed++;
    }
    for (const [ifindex, cur] of [...this.endpoints]) {
      if (desired.has(ifindex)) continue;
      this.maps.ep.delete({ ifindex });
      this.unref(cur.keys);
      this.endpoints.delete(ifindex);
      changed++;
    }
    // 5. Unreferenced tables and sets go.
    for (const [k, r] of [...this.regions]) {
      if (r.refs > 0) continue;
      this.regions.delete(k);
      this.quarantine.push({ start: r.start, len: r.len, at: this.now(), sets: r.sets });
    }
    for (const [k, n] of [...this.setRefs]) {
      if (n > 0) continue;
      this.setRefs.delete(k);
      this.sets.drop(k);
    }
    for (const a of this.flushSetChanges(true)) rejudge.add(a);
    for (const a of rejudge) this.toRejudge.add(a);
    return { tables, endpoints: changed, rejudge: this.toRejudge.size };
  }

  private toRejudge = new Set<string>();

  /**
   * Re-judges the flows of the addresses the last syncs touched: new flows already meet the new
   * policy; this makes established ones meet it too (a scan of conntrack, so it runs apart from
   * sync). Returns how many flows will be judged again.
   */
  rejudgeFlows(): number {
    if (this.toRejudge.size === 0) return 0;
    const addrs = this.toRejudge;
    this.toRejudge = new Set();
    return this.rejudge(addrs);
  }

  /** Applies queued set membership changes; returns the addresses whose membership changed. */
  flushSetChanges(deletes: boolean): Set<string> {
    const { add, del, touched } = this.sets.drain();
    if (add.length) this.maps.ipsets.setMany(add.map((k) => [k, { setId: k.setId }]));
    if (del.length) {
      if (deletes) this.maps.ipsets.deleteMany(del);
      else this.pendingDeletes.push(...del);
    }
    if (deletes && this.pendingDeletes.length) {
      this.maps.ipsets.deleteMany(this.pendingDeletes);
      this.pendingDeletes = [];
    }
    return touched;
  }
  private pendingDeletes: IpsetKey[] = [];

  /** Endpoint state for dumps. */
  endpointTables(ifindex: number): { entry: EpEntry; ingress?: string; egress?: string } | undefined {
    const e = this.endpoints.get(ifindex);
    return (
      e && { entry: e.entry, ...(e.keys[0] ? { ingress: e.keys[0] } : {}), ...(e.keys[1] ? { egress: e.keys[1] } : {}) }
    );
  }

  ruleName(id: number): string {
    return this.ruleNames[id] ?? `rule ${id}`;
  }

  private ruleId(name: string): number {
    let id = this.ruleIds.get(name);
    if (id === undefined) {
      id = this.ruleNames.length;
      this.ruleNames.push(name);
      this.ruleIds.set(name, id);
    }
    return id;
  }

  private writeTable(t: Table): Region {
    const len = t.rules.length;
    const at = this.free.findIndex((f) => f.len >= len);
    if (at < 0) throw new Error(`policy rule tables are full (${this.capacity} rules): cannot place a table of ${len}`);
    const slot = this.free[at]!;
    const start = slot.start;
    if (slot.len === len) this.free.splice(at, 1);
    else this.free[at] = { start: slot.start + len, len: slot.len - len };
    this.maps.rules.setMany(t.rules.map((r, i) => [{ index: start + i }, this.encodeRule(r, start)]));
    return { start, len, refs: 0, sets: [] };
  }

  private encodeRule(r: TableRule, base: number): RuleEntry {
    const ids = (keys: string[]) => [keys[0] ? this.sets.idOf(keys[0])! : 0, keys[1] ? this.sets.idOf(keys[1])! : 0];
    let flags = 0;
    if (r.icmp) flags |= RuleFlags.ICMP_TYPE | (r.icmp.code !== undefined ? RuleFlags.ICMP_CODE : 0);
    if (r.notICMP) flags |= RuleFlags.NOT_ICMP_TYPE | (r.notICMP.code !== undefined ? RuleFlags.NOT_ICMP_CODE : 0);
    return {
      action: { allow: RuleAction.ALLOW, deny: RuleAction.DENY, pass: RuleAction.PASS, log: RuleAction.LOG }[r.action],
      proto: r.protocol,
      notProto: r.notProtocol,
      flags,
      icmpType: r.icmp?.type ?? 0,
      icmpCode: r.icmp?.code ?? 0,
      notIcmpType: r.notICMP?.type ?? 0,
      notIcmpCode: r.notICMP?.code ?? 0,
      nSport: r.sport.length,
      nNotSport: r.notSport.length,
      nDport: r.dport.length,
      nNotDport: r.notDport.length,
      jump: r.action === 'pass' ? base + r.jump : 0,
      id: this.ruleId(r.name),
      srcSet: ids(r.srcSets),
      srcNotSet: ids(r.srcNotSets),
      dstSet: ids(r.dstSets),
      dstNotSet: ids(r.dstNotSets),
      dstNamedSet: r.dstNamed ? this.sets.idOf(r.dstNamed)! : 0,
      sport: slots(r.sport),
      notSport: slots(r.notSport),
      dport: slots(r.dport),
      notDport: slots(r.notDport),
    };
  }

  private unref(keys: Keys): void {
    for (const k of keys) {
      if (!k) continue;
      const r = this.regions.get(k);
      if (r) r.refs--;
    }
  }

  private releaseQuarantine(): void {
    const now = this.now();
    if (this.legacy && now - this.legacy.at >= QUARANTINE_MS) {
      this.maps.ipsets.deleteMany(this.legacy.keys);
      this.legacy = undefined;
    }
    const ready = this.quarantine.filter((q) => now - q.at >= QUARANTINE_MS);
    if (ready.length === 0) return;
    this.quarantine = this.quarantine.filter((q) => now - q.at < QUARANTINE_MS);
    for (const q of ready) {
      for (const k of q.sets) this.setRefs.set(k, (this.setRefs.get(k) ?? 1) - 1);
      this.free.push({ start: q.start, len: q.len });
    }
    // Coalesce neighbours so large tables still find room.
    this.free.sort((a, b) => a.start - b.start);
    const merged: typeof this.free = [];
    for (const f of this.free) {
      const last = merged[merged.length - 1];
      if (last && last.start + last.len === f.start) last.len += f.len;
      else merged.push({ ...f });
    }
    this.free = merged;
  }

  /** Whether replaced tables still wait for release (the caller syncs again later). */
  get pendingRelease(): boolean {
    return this.quarantine.length > 0 || this.legacy !== undefined;
  }

  /** Clears the policy verdicts of flows touching these addresses. */
  private rejudge(addrs: Set<string>): number {
    const ct = this.maps.conntrack;
    if (!ct) return 0;
    const affected: CtKey[] = [];
    for (const [k, v] of ct.entries()) {
      if (v.pol === 0) continue;
      if (addrs.has(k.addrA) || addrs.has(k.addrB) || addrs.has(v.natAddr)) affected.push(k);
    }
    let n = 0;
    for (const k of affected) {
      // Read again just before writing: the datapath keeps updating times and flags, and a
      // flow that ended must not be re-created.
      const cur = ct.get(k);
      if (!cur || cur.pol === 0) continue;
      try {
        ct.set(k, { ...cur, pol: 0 }, 2 /* BPF_EXIST */);
        n++;
      } catch {
        // Expired between the read and the write: nothing to re-judge.
      }
    }
    return n;
  }
}

function slots(ranges: PortRange[]): number[] {
  const out = new Array<number>(RULE_PORT_SLOTS * 2).fill(0);
  ranges.slice(0, RULE_PORT_SLOTS).forEach((r, i) => {
    out[i * 2] = r.lo;
    out[i * 2 + 1] = r.hi;
  });
  return out;
}

function sameEntry(a: EpEntry, b: EpEntry): boolean {
  return (Object.keys(a) as (keyof EpEntry)[]).every((k) => a[k] === b[k]);
}
