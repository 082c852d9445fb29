// Keeps the NAT maps equal to a desired set of frontends, by difference. Backends are written
// before the frontends that count them and removed after, so a packet never meets a frontend whose
// backends are not all there. Bulk work goes through batch calls. On start it adopts what the maps
// already hold (a restarted agent), so an unchanged Service is never rewritten.
import { ipv4ToU32 } from '../packet/addr.js';
import {
  FE_PREFIX_FIXED,
  FrontendFlags,
  frontendKey,
  type Backend,
  type BackendKey,
  type Frontend,
  type FrontendKey,
  type NatMaps,
} from '../datapath/nat.js';

export interface NatBackend {
  addr: string;
  port: number;
  local: boolean;
}

/** One frontend as the datapath needs it; frontends of one `group` (a service port) share backends. */
export interface NatFrontend {
  key: string;
  group: string;
  addr: string;
  port: number;
  proto: number;
  flags: number;
  affinityTimeout: number;
  sourceRanges?: string[];
  backends: NatBackend[];
}

export interface RemovedBackend {
  addr: string;
  port: number;
  proto: number;
}

export interface FlushResult {
  frontendsWritten: number;
  frontendsDeleted: number;
  backendsWritten: number;
  backendsDeleted: number;
  /** Backends no frontend uses any more: their flows and sockets should be forgotten. */
  removedBackends: RemovedBackend[];
  /**
   * Service ports left as they were because their backends do not fit in the backend map
   * (bpfMapSizeNATBackend); they are tried again at every flush.
   */
  backendMapFull: Array<{ group: string; backends: number; capacity: number }>;
  /** Frontend keys left unwritten because the frontend map is full (bpfMapSizeNATFrontend); retried likewise. */
  frontendMapFull: Array<{ key: string; capacity: number }>;
}

const feMapKey = (k: FrontendKey) => `${k.addr}:${k.port}/${k.proto}<${k.src}/${k.prefixlen - FE_PREFIX_FIXED}`;
const sameFe = (a: Frontend, b: Frontend) =>
  a.svcId === b.svcId &&
  a.count === b.count &&
  a.localCount === b.localCount &&
  a.affinityTimeout === b.affinityTimeout &&
  a.flags === b.flags;
const sameBe = (a: Backend, b: Backend) => a.addr === b.addr && a.port === b.port;

/** A backend as one number (address, port, protocol): 100k of them as strings cost megabytes. */
function backendId(addr: string, port: number, proto: number): number {
  return (ipv4ToU32(addr) * 65536 + port) * 4 + (proto === 6 ? 0 : proto === 17 ? 1 : 2);
}

interface Group {
  svcId: number;
  proto: number;
  backends: Backend[];
  localCount: number;
  members: Set<string>;
}

export class NatWriter {
  private readonly desired = new Map<string, NatFrontend>();
  private readonly dirtyKeys = new Set<string>();
  /** Desired frontend keys per group, kept as frontends come and go. */
  private readonly membersByGroup = new Map<string, Set<string>>();
  /** The group each key had at the last flush (a key can move between groups). */
  private readonly flushedGroup = new Map<string, string>();
  /** Map entries (feMapKey) each frontend key wrote at the last flush. */
  private readonly entriesOfKey = new Map<string, string[]>();
  /** What the maps hold, as we know it (adopted at start, then kept in step). */
  private readonly feInMap = new Map<string, { key: FrontendKey; value: Frontend; owner?: string }>();
  private readonly beInMap = new Map<number, Backend[]>();
  /** Defined entries of beInMap, kept with it (setBackends): the capacity check reads it per flush. */
  private beEntries = 0;
  private readonly groups = new Map<string, Group>();
  private readonly svcIdOwner = new Map<number, string>();
  /** How many groups use each backend (backendId), so a removal is known to be final. */
  private readonly backendRefs = new Map<number, number>();
  private nextSvcId = 1;

  constructor(private readonly nat: NatMaps) {
    for (const [key, value] of nat.frontends.entries()) this.feInMap.set(feMapKey(key), { key, value });
    for (const [k, v] of nat.backends.entries()) {
      const list = this.beInMap.get(k.svcId) ?? [];
      list[k.ordinal] = v;
      this.beInMap.set(k.svcId, list);
      this.beEntries++;
    }
    for (const id of [...this.beInMap.keys(), ...[...this.feInMap.values()].map((e) => e.value.svcId)]) {
      this.nextSvcId = Math.max(this.nextSvcId, id + 1);
    }
  }

  /** How many frontend entries the maps hold (after the last flush). */
  get frontendEntries(): number {
    return this.feInMap.size;
  }

  /** How many backend entries the maps hold (after the last flush). */
  get backendEntries(): number {
    return this.beEntries;
  }

  /** Records what the backend map holds for a svc id (nothing, when `list` is undefined). */
  private setBackends(svcId: number, list: Backend[] | undefined): void {
    const defined = (l: Backend[] | undefined) => (l ?? []).reduce((n, b) => (b ? n + 1 : n), 0);
    this.beEntries += defined(list) - defined(this.beInMap.get(svcId));
    if (list) this.beInMap.set(svcId, list);
    else this.beInMap.delete(svcId);
  }

  upsert(f: NatFrontend): void {
    const prev = this.desired.get(f.key);
    if (prev && prev.group !== f.group) this.membersByGroup.get(prev.group)?.delete(f.key);
    this.desired.set(f.key, f);
    let members = this.membersByGroup.get(f.group);
    if (!members) this.membersByGroup.set(f.group, (members = new Set()));
    members.add(f.key);
    this.dirtyKeys.add(f.key);
  }

  remove(key: string): void {
    const prev = this.desired.get(key);
    if (!prev) return;
    this.desired.delete(key);
    const members = this.membersByGroup.get(prev.group);
    members?.delete(key);
    if (members?.size === 0) this.membersByGroup.delete(prev.group);
    this.dirtyKeys.add(key);
  }

  has(key: string): boolean {
    return this.desired.has(key);
  }

  private entriesOf(f: NatFrontend, g: Group): [FrontendKey, Frontend][] {
    const value: Frontend = {
      svcId: g.svcId,
      count: g.backends.length,
      localCount: g.localCount,
      affinityTimeout: f.affinityTimeout,
      flags: f.flags,
    };
    // A 0.0.0.0/0 range allows everyone: no deny entry (it would share that range's key).
    if (!f.sourceRanges?.length || f.sourceRanges.some((r) => r.endsWith('/0')))
      return [[frontendKey(f.addr, f.port, f.proto), value]];
    return [
      ...f.sourceRanges.map((r) => [frontendKey(f.addr, f.port, f.proto, r), value] as [FrontendKey, Frontend]),
      [frontendKey(f.addr, f.port, f.proto), { ...value, flags: value.flags | FrontendFlags.SRC_DENIED }],
    ];
  }

  /** A svc id for a group: the one its frontends already use in the maps, else a new one. */
  private svcIdFor(group: string, members: NatFrontend[]): number {
    const existing = this.groups.get(group);
    if (existing) return existing.svcId;
    for (const f of members) {
      const inMap = this.feInMap.get(feMapKey(frontendKey(f.addr, f.port, f.proto)));
      const id = inMap?.value.svcId;
      if (id !== undefined && !this.svcIdOwner.has(id)) return id;
    }
    while (this.svcIdOwner.has(this.nextSvcId) || this.beInMap.has(this.nextSvcId)) this.nextSvcId++;
    return this.nextSvcId++;
  }

  /**
   * Writes what changed since the last flush: work proportional to the change, not to the number
   * of Services. With `prune`, map entries that no desired frontend claims are removed too (after
   * the first full sync of a restarted agent).
   */
  flush(opts: { prune?: boolean } = {}): FlushResult {
    const result: FlushResult = {
      frontendsWritten: 0,
      frontendsDeleted: 0,
      backendsWritten: 0,
      backendsDeleted: 0,
      removedBackends: [],
      backendMapFull: [],
      frontendMapFull: [],
    };
    // Entries the backend map will hold once the writes are made (deletes come after them).
    const capacity = this.nat.backends.map.def.maxEntries;
    let beCount = this.beEntries;
    /** Groups that do not fit: neither their backends nor their frontends change in this flush. */
    const skipped = new Set<string>();
    // 1. The groups touched: those of the dirty keys, now and at the last flush.
    const dirtyGroups = new Set<string>();
    for (const key of this.dirtyKeys) {
      const f = this.desired.get(key);
      if (f) dirtyGroups.add(f.group);
      const before = this.flushedGroup.get(key);
      if (before !== undefined) dirtyGroups.add(before);
    }
    const rewrite = new Set<string>(opts.prune ? this.desired.keys() : this.dirtyKeys);
    const beWrites: [BackendKey, Backend][] = [];
    const beDeletes: BackendKey[] = [];
    const freedGroups: Group[] = [];
    for (const name of dirtyGroups) {
      const old = this.groups.get(name);
      const memberKeys = this.membersByGroup.get(name);
      if (!memberKeys || memberKeys.size === 0) {
        this.countRefs(old, -1);
        if (old) freedGroups.push(old);
        this.groups.delete(name);
        continue;
      }
      const members = [...memberKeys].map((k) => this.desired.get(k)!);
      const svcId = this.svcIdFor(name, members);
      const lead = members[0];
      const backends = [...lead.backends.filter((b) => b.local), ...lead.backends.filter((b) => !b.local)].map((b) => ({
        addr: b.addr,
        port: b.port,
      }));
      const localCount = lead.backends.filter((b) => b.local).length;
      const inMap = this.beInMap.get(svcId) ?? [];
      let adds = 0;
      for (let o = 0; o < backends.length; o++) if (!inMap[o]) adds++;
      if (beCount + adds > capacity) {
        // Not half-written: the Service port keeps what the maps hold for it (nothing, if new).
        skipped.add(name);
        result.backendMapFull.push({ group: name, backends: backends.length, capacity });
        continue;
      }
      beCount += adds;
      backends.forEach((b, ordinal) => {
        if (!inMap[ordinal] || !sameBe(inMap[ordinal], b)) beWrites.push([{ svcId, ordinal }, b]);
      });
      for (let o = backends.length; o < inMap.length; o++) if (inMap[o]) beDeletes.push({ svcId, ordinal: o });
      this.recordRemoved(inMap, backends, lead.proto, result);
      // Every frontend of a group counts its backends: a new count rewrites them all.
      if (!old || old.backends.length !== backends.length || old.localCount !== localCount || old.svcId !== svcId) {
        for (const k of memberKeys) rewrite.add(k);
      }
      this.countRefs(old, -1);
      const group: Group = { svcId, proto: lead.proto, backends, localCount, members: new Set(memberKeys) };
      this.groups.set(name, group);
      this.countRefs(group, 1);
      this.svcIdOwner.set(svcId, name);
      this.setBackends(svcId, backends);
    }

    // 2. Backends first.
    if (beWrites.length) result.backendsWritten += this.nat.backends.setMany(beWrites);

    // 3. Frontends: the entries of every key to rewrite; stale entries of those keys go.
    const feWrites: [FrontendKey, Frontend][] = [];
    const feDeletes: FrontendKey[] = [];
    const dropEntry = (mk: string) => {
      const e = this.feInMap.get(mk);
      if (!e) return;
      feDeletes.push(e.key);
      this.feInMap.delete(mk);
    };
    // Entries the frontend map will hold when the writes are made (deletes come after them).
    const feCapacity = this.nat.frontends.map.def.maxEntries;
    let feCount = this.feInMap.size;
    const skippedKeys: string[] = [];
    for (const key of new Set([...rewrite, ...this.dirtyKeys])) {
      const f = this.desired.get(key);
      if (f && skipped.has(f.group)) continue;
      const before = this.entriesOfKey.get(key) ?? [];
      if (!f) {
        before.forEach(dropEntry);
        this.entriesOfKey.delete(key);
        this.flushedGroup.delete(key);
        continue;
      }
      const entries = this.entriesOf(f, this.groups.get(f.group)!);
      const adds = entries.filter(([k]) => !this.feInMap.has(feMapKey(k))).length;
      if (feCount + adds > feCapacity) {
        // Left as it is (unwritten, if new): its backends are in the map, nothing counts them yet.
        skippedKeys.push(key);
        result.frontendMapFull.push({ key, capacity: feCapacity });
        continue;
      }
      feCount += adds;
      const now: string[] = [];
      for (const [k, v] of entries) {
        const mk = feMapKey(k);
        now.push(mk);
        const cur = this.feInMap.get(mk);
        if (!cur || !sameFe(cur.value, v)) feWrites.push([k, v]);
        this.feInMap.set(mk, { key: k, value: v, owner: key });
      }
      for (const mk of before) if (!now.includes(mk) && this.feInMap.get(mk)?.owner === key) dropEntry(mk);
      this.entriesOfKey.set(key, now);
      this.flushedGroup.set(key, f.group);
    }
    if (opts.prune) {
      for (const [mk, e] of [...this.feInMap]) if (!e.owner || !this.desired.has(e.owner)) dropEntry(mk);
    }
    if (feWrites.length) result.frontendsWritten += this.nat.frontends.setMany(feWrites);
    if (feDeletes.length) result.frontendsDeleted += this.nat.frontends.deleteMany(feDeletes);

    // 4. Backends nothing counts any more, after the frontends stopped counting them.
    for (const g of freedGroups) {
      const list = this.beInMap.get(g.svcId) ?? [];
      list.forEach((_, ordinal) => beDeletes.push({ svcId: g.svcId, ordinal }));
      this.recordRemoved(list, [], g.proto, result);
      this.setBackends(g.svcId, undefined);
      this.svcIdOwner.delete(g.svcId);
    }
    if (opts.prune) {
      const live = new Set([...this.groups.values()].map((g) => g.svcId));
      for (const [svcId, list] of this.beInMap) {
        if (live.has(svcId)) continue;
        list.forEach((_, ordinal) => beDeletes.push({ svcId, ordinal }));
        this.setBackends(svcId, undefined);
      }
    }
    if (beDeletes.length) result.backendsDeleted += this.nat.backends.deleteMany(beDeletes);
    this.dirtyKeys.clear();
    for (const name of skipped) for (const k of this.membersByGroup.get(name) ?? []) this.dirtyKeys.add(k);
    for (const k of skippedKeys) this.dirtyKeys.add(k);
    if ((skipped.size || skippedKeys.length) && (result.backendsDeleted || result.frontendsDeleted)) {
      // The deletes came after the writes: what did not fit may fit now.
      const again = this.flush();
      for (const k of ['frontendsWritten', 'frontendsDeleted', 'backendsWritten', 'backendsDeleted'] as const)
        result[k] += again[k];
      result.removedBackends.push(...again.removedBackends);
      result.backendMapFull = again.backendMapFull;
      result.frontendMapFull = again.frontendMapFull;
    }
    // A backend that left one Service but still serves another is not gone.
    if (result.removedBackends.length) {
      const seen = new Set<number>();
      result.removedBackends = result.removedBackends.filter((b) => {
        const id = backendId(b.addr, b.port, b.proto);
        if ((this.backendRefs.get(id) ?? 0) > 0 || seen.has(id)) return false;
        seen.add(id);
        return true;
      });
    }
    return result;
  }

  private countRefs(g: Group | undefined, delta: number): void {
    if (!g) return;
    for (const b of g.backends) {
      const id = backendId(b.addr, b.port, g.proto);
      const n = (this.backendRefs.get(id) ?? 0) + delta;
      if (n > 0) this.backendRefs.set(id, n);
      else this.backendRefs.delete(id);
    }
  }

  private recordRemoved(before: Backend[], after: Backend[], proto: number, result: FlushResult): void {
    for (const b of before) {
      if (b && !after.some((a) => sameBe(a, b))) result.removedBackends.push({ addr: b.addr, port: b.port, proto });
    }
  }
}
