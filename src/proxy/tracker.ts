// The change tracker: Service and EndpointSlice events in, the difference to the datapath out.
//
// As kube-proxy's change trackers do, event handlers only record: the current objects per Service
// and which Services changed since the last sync. A change that nets to nothing (an update that
// only moves resourceVersion, an add then a delete before the sync, an update and its undo) leaves
// the Service unmarked: a Service is marked only while what the calculation reads of it and of its
// slices differs from what the last sync read. `sync()` recomputes the marked Services and returns
// only the frontends whose content changed (deep equality with what earlier syncs returned), and
// the keys of frontends that are gone.
import {
  ANNOTATION_LB_SOURCE_RANGES,
  LABEL_HEADLESS,
  LABEL_SERVICE_PROXY_NAME,
  frontendsEqual,
  type DesiredFrontend,
  type EndpointSliceObject,
  type HealthCheckNodePort,
  type ProxyError,
  type ServiceObject,
} from './model.js';
import {
  FrontendClaims,
  computeService,
  createdMs,
  parseEndpointSlice,
  parsedSlicesEqual,
  prepareContext,
  serviceKeyOf,
  sliceId,
  sortSlices,
  type FrontendClaim,
  type NodeContext,
  type ParsedSlice,
  type PreparedContext,
} from './services.js';

export interface SyncResult {
  /** Frontends that are new or whose content changed: write them (backends before frontends). */
  upserts: DesiredFrontend[];
  /**
   * Keys of frontends that are gone. Apply them before the upserts: one sync can hand a frontend
   * address from one Service to another (a deleted Service's externalIP taken by another one).
   */
  deletes: string[];
  /** Errors of the Services this sync recomputed, and of address conflicts it re-decided. */
  errors: ProxyError[];
  /** Present when a health-check node port appeared, went, or its local endpoint count changed. */
  healthCheckNodePorts?: HealthCheckNodePort[];
}

interface ServiceEntry {
  service?: ServiceObject;
  /** By slice id (`namespace/name`). */
  slices: Map<string, ParsedSlice>;
  /** What the last sync computed from. */
  syncedService?: ServiceObject;
  syncedSlices: readonly ParsedSlice[];
  /** Recompute at the next sync whatever the events say (node addresses changed). */
  forced: boolean;
}

const NO_SLICES: readonly ParsedSlice[] = [];

/** Structural equality of JSON-like values (missing and undefined properties are the same). */
function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (a instanceof Date || b instanceof Date) return createdMs(a as Date) === createdMs(b as Date);
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  for (const k in x) if (!deepEqual(x[k], y[k])) return false;
  for (const k in y) if (!(k in x) && y[k] !== undefined) return false;
  return true;
}

/** The same Service as far as the calculation can tell (resourceVersion, managedFields, ... are noise). */
function sameService(a: ServiceObject | undefined, b: ServiceObject | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  const m = a.metadata ?? {};
  const n = b.metadata ?? {};
  return (
    m.name === n.name &&
    m.namespace === n.namespace &&
    m.labels?.[LABEL_SERVICE_PROXY_NAME] === n.labels?.[LABEL_SERVICE_PROXY_NAME] &&
    (m.labels !== undefined && LABEL_HEADLESS in m.labels) === (n.labels !== undefined && LABEL_HEADLESS in n.labels) &&
    m.annotations?.[ANNOTATION_LB_SOURCE_RANGES] === n.annotations?.[ANNOTATION_LB_SOURCE_RANGES] &&
    createdMs(m.creationTimestamp) === createdMs(n.creationTimestamp) &&
    deepEqual(a.spec, b.spec) &&
    deepEqual(a.status?.loadBalancer, b.status?.loadBalancer)
  );
}

function sameSlices(cur: Map<string, ParsedSlice>, synced: readonly ParsedSlice[]): boolean {
  if (cur.size !== synced.length) return false;
  for (const s of synced) {
    const c = cur.get(s.id);
    if (!c || !parsedSlicesEqual(c, s)) return false;
  }
  return true;
}

/** An update that changed an object's identity counts as a delete of the old one. */
function renamed(prev: { metadata?: { name?: string; namespace?: string } }, cur: typeof prev): boolean {
  return prev.metadata?.name !== cur.metadata?.name || prev.metadata?.namespace !== cur.metadata?.namespace;
}

export class ServiceChangeTracker {
  private ctx: PreparedContext;
  private readonly entries = new Map<string, ServiceEntry>();
  /** Which Service each known slice is filed under. */
  private readonly sliceOwner = new Map<string, string>();
  private readonly pending = new Set<string>();

  private readonly claims = new FrontendClaims();
  private readonly claimsBySvc = new Map<string, FrontendClaim[]>();
  /** What the syncs so far have returned, by frontend address (`addrKeyOf`). */
  private readonly published = new Map<number, DesiredFrontend>();
  private readonly healthChecks = new Map<string, HealthCheckNodePort>();

  constructor(private readonly node: NodeContext) {
    this.ctx = prepareContext(node);
  }

  /** Services with changes waiting for a sync. */
  get pendingCount(): number {
    return this.pending.size;
  }

  onServiceUpdate(prev?: ServiceObject, cur?: ServiceObject): void {
    const obj = cur ?? prev;
    if (!obj) return;
    if (prev && cur && renamed(prev, cur)) this.onServiceUpdate(prev, undefined);
    const key = serviceKeyOf(obj);
    const e = this.entry(key);
    e.service = cur;
    this.mark(key, e);
  }

  onEndpointSliceUpdate(prev?: EndpointSliceObject, cur?: EndpointSliceObject): void {
    const obj = cur ?? prev;
    if (!obj) return;
    if (prev && cur && renamed(prev, cur)) this.onEndpointSliceUpdate(prev, undefined);
    const id = sliceId(obj);
    const parsed = cur ? parseEndpointSlice(cur) : undefined;
    const oldOwner = this.sliceOwner.get(id);
    const newOwner = parsed?.serviceKey;
    if (oldOwner !== undefined && oldOwner !== newOwner) {
      const e = this.entries.get(oldOwner);
      if (e) {
        e.slices.delete(id);
        this.mark(oldOwner, e);
      }
      this.sliceOwner.delete(id);
    }
    if (parsed && newOwner !== undefined) {
      const e = this.entry(newOwner);
      e.slices.set(id, parsed);
      if (oldOwner !== newOwner) this.sliceOwner.set(id, newOwner);
      this.mark(newOwner, e);
    }
  }

  /** The node's addresses changed: every Service is recomputed at the next sync. */
  setNodeIPs(nodeIPs: readonly string[]): void {
    this.ctx = prepareContext({ ...this.node, nodeIPs });
    for (const [key, e] of this.entries) {
      e.forced = true;
      this.pending.add(key);
    }
  }

  private entry(key: string): ServiceEntry {
    let e = this.entries.get(key);
    if (!e) {
      e = { slices: new Map(), syncedSlices: NO_SLICES, forced: false };
      this.entries.set(key, e);
    }
    return e;
  }

  private mark(key: string, e: ServiceEntry): void {
    if (e.forced || !sameService(e.service, e.syncedService) || !sameSlices(e.slices, e.syncedSlices)) {
      this.pending.add(key);
      return;
    }
    this.pending.delete(key);
    if (!e.service && e.slices.size === 0) this.entries.delete(key);
  }

  sync(): SyncResult {
    const errors: ProxyError[] = [];
    const touched = new Set<number>();
    let healthChanged = false;
    for (const key of this.pending) {
      const e = this.entries.get(key);
      const old = this.claimsBySvc.get(key);
      if (old) {
        for (const c of old) {
          this.claims.remove(c);
          touched.add(c.addrKey);
        }
        this.claimsBySvc.delete(key);
      }
      let health: HealthCheckNodePort | undefined;
      if (e) {
        const slices =
          e.slices.size === 0
            ? NO_SLICES
            : e.slices.size === 1
              ? [e.slices.values().next().value!]
              : sortSlices([...e.slices.values()]);
        if (e.service) {
          const comp = computeService(e.service, slices, this.ctx);
          if (!comp.skipped) for (const s of slices) if (s.errors.length) errors.push(...s.errors);
          if (comp.errors.length) errors.push(...comp.errors);
          for (const c of comp.claims) {
            this.claims.add(c);
            touched.add(c.addrKey);
          }
          if (comp.claims.length) this.claimsBySvc.set(key, comp.claims);
          health = comp.healthCheck;
        }
        e.syncedService = e.service;
        e.syncedSlices = slices;
        e.forced = false;
        if (!e.service && e.slices.size === 0) this.entries.delete(key);
      }
      const oldHealth = this.healthChecks.get(key);
      if (health) this.healthChecks.set(key, health);
      else if (oldHealth) this.healthChecks.delete(key);
      if (oldHealth?.port !== health?.port || oldHealth?.localEndpoints !== health?.localEndpoints)
        healthChanged = true;
    }
    this.pending.clear();

    const upserts: DesiredFrontend[] = [];
    const deletes: string[] = [];
    for (const addrKey of touched) {
      const next = this.claims.resolve(addrKey, errors)?.frontend;
      const prev = this.published.get(addrKey);
      if (!next) {
        if (prev) {
          deletes.push(prev.key);
          this.published.delete(addrKey);
        }
        continue;
      }
      if (prev && prev.key !== next.key) deletes.push(prev.key);
      if (!prev || !frontendsEqual(prev, next)) upserts.push(next);
      this.published.set(addrKey, next);
    }
    const result: SyncResult = { upserts, deletes, errors };
    if (healthChanged) result.healthCheckNodePorts = this.healthCheckNodePorts();
    return result;
  }

  /** Every frontend as of the last sync. */
  frontends(): DesiredFrontend[] {
    return [...this.published.values()];
  }

  /** Health-check node ports as of the last sync. */
  healthCheckNodePorts(): HealthCheckNodePort[] {
    return [...this.healthChecks.values()];
  }
}
