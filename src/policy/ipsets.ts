// IP sets kept incrementally: a set is defined by a selector (endpoint addresses), a list of
// nets, or a selector plus a named port ((protocol, port, address) members). An endpoint's
// change only touches the sets it enters or leaves; the changes queue up as LPM key
// additions and removals for the writer.
import { compile, type Matcher } from './selector.js';
import { parseCidr } from './cidr.js';
import { IPSET_PREFIX_FIXED, type IpsetKey } from '../datapath/policy.js';
import type { SetDef } from './compile.js';

/** An endpoint as sets see it. */
export interface SetEndpoint {
  /** A pod's address; network sets have `nets` instead. */
  ip?: string;
  nets?: string[];
  /** Effective labels (model.ts endpointLabels). */
  labels: Record<string, string>;
  ports: { name: string; port: number; protocol: number }[];
}

interface SetState {
  id: number;
  def: SetDef;
  match?: Matcher;
  /** Member key -> [LPM key, how many endpoints contribute it]. */
  members: Map<string, [IpsetKey, number]>;
}

const memberId = (k: IpsetKey) => `${k.portKey}/${k.addr}/${k.prefixlen}`;

export class IpSets {
  private readonly sets = new Map<string, SetState>();
  private readonly endpoints = new Map<string, SetEndpoint>();
  private nextId = 1;
  private adds = new Map<string, IpsetKey>();
  private dels = new Map<string, IpsetKey>();
  /** Addresses whose membership changed since the last drain (flows to re-judge). */
  private touched = new Set<string>();

  /** New sets get ids above `id` (the maps hold sets of a previous agent up to it). */
  startIdsAfter(id: number): void {
    this.nextId = Math.max(this.nextId, id + 1);
  }

  idOf(key: string): number | undefined {
    return this.sets.get(key)?.id;
  }

  get size(): number {
    return this.sets.size;
  }

  keys(): IterableIterator<string> {
    return this.sets.keys();
  }

  /** Ensures the set exists (members computed from every endpoint); returns its id. */
  ensure(key: string, def: SetDef): number {
    const have = this.sets.get(key);
    if (have) return have.id;
    // Ids are never reused: a table being replaced may still name the old set.
    const id = this.nextId++;
    const s: SetState = {
      id,
      def,
      members: new Map(),
      ...(def.kind !== 'nets' ? { match: compile(def.selector) } : {}),
    };
    this.sets.set(key, s);
    if (def.kind === 'nets') {
      for (const c of def.cidrs) {
        const p = parseCidr(c);
        const addr = p.text.split('/')[0]!;
        this.addMember(s, { prefixlen: IPSET_PREFIX_FIXED + p.len, setId: id, portKey: 0, addr }, false);
      }
    } else {
      for (const ep of this.endpoints.values()) for (const k of this.contribution(s, ep)) this.addMember(s, k, false);
    }
    return id;
  }

  /** Removes a set nothing references any more. */
  drop(key: string): void {
    const s = this.sets.get(key);
    if (!s) return;
    for (const [id, [k]] of s.members) this.queueDel(`${s.id} ${id}`, k);
    this.sets.delete(key);
  }

  upsertEndpoint(key: string, ep: SetEndpoint): void {
    const old = this.endpoints.get(key);
    this.endpoints.set(key, ep);
    for (const s of this.sets.values()) {
      if (s.def.kind === 'nets') continue;
      const before = old ? this.contribution(s, old) : [];
      const after = this.contribution(s, ep);
      const b = new Set(before.map(memberId));
      const a = new Set(after.map(memberId));
      for (const k of before) if (!a.has(memberId(k))) this.removeMember(s, k);
      for (const k of after) if (!b.has(memberId(k))) this.addMember(s, k, true);
    }
  }

  removeEndpoint(key: string): void {
    const old = this.endpoints.get(key);
    if (!old) return;
    this.endpoints.delete(key);
    for (const s of this.sets.values())
      if (s.def.kind !== 'nets') for (const k of this.contribution(s, old)) this.removeMember(s, k);
  }

  /** The LPM keys to add and delete since the last call, and the addresses affected. */
  drain(): { add: IpsetKey[]; del: IpsetKey[]; touched: Set<string> } {
    const out = { add: [...this.adds.values()], del: [...this.dels.values()], touched: this.touched };
    this.adds = new Map();
    this.dels = new Map();
    this.touched = new Set();
    return out;
  }

  /** Every member of every set, for a full rewrite of the map. */
  *allKeys(): Generator<IpsetKey> {
    for (const s of this.sets.values()) for (const [k] of s.members.values()) yield k;
  }

  /** Member addresses of a set, for dumps. */
  members(key: string): IpsetKey[] {
    return [...(this.sets.get(key)?.members.values() ?? [])].map(([k]) => k);
  }

  private contribution(s: SetState, ep: SetEndpoint): IpsetKey[] {
    if (!s.match || !s.match(ep.labels)) return [];
    if (s.def.kind === 'selector') {
      const out: IpsetKey[] = [];
      if (ep.ip) out.push({ prefixlen: IPSET_PREFIX_FIXED + 32, setId: s.id, portKey: 0, addr: ep.ip });
      for (const n of ep.nets ?? []) {
        const c = parseCidr(n);
        out.push({ prefixlen: IPSET_PREFIX_FIXED + c.len, setId: s.id, portKey: 0, addr: c.text.split('/')[0]! });
      }
      return out;
    }
    if (s.def.kind !== 'named' || !ep.ip) return [];
    const { protocol, port } = s.def;
    const ip = ep.ip;
    return ep.ports
      .filter((p) => p.name === port && p.protocol === protocol)
      .map((p) => ({ prefixlen: IPSET_PREFIX_FIXED + 32, setId: s.id, portKey: (protocol << 16) | p.port, addr: ip }));
  }

  private addMember(s: SetState, k: IpsetKey, touch: boolean): void {
    const id = memberId(k);
    const cur = s.members.get(id);
    if (cur) {
      cur[1]++;
      return;
    }
    s.members.set(id, [k, 1]);
    const q = `${s.id} ${id}`;
    this.dels.delete(q);
    this.adds.set(q, k);
    if (touch) this.touched.add(k.addr);
  }

  private removeMember(s: SetState, k: IpsetKey): void {
    const id = memberId(k);
    const cur = s.members.get(id);
    if (!cur) return;
    if (--cur[1] > 0) return;
    s.members.delete(id);
    this.queueDel(`${s.id} ${id}`, k);
    this.touched.add(k.addr);
  }

  private queueDel(q: string, k: IpsetKey): void {
    if (this.adds.delete(q)) return; // never written
    this.dels.set(q, k);
  }
}
