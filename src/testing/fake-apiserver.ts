// A fake Kubernetes API server for tests, faithful to the real one on the paths the agent's
// datastore uses. It listens on 127.0.0.1 only (a random port), over HTTPS with a self-signed
// certificate made at start (in-cluster configuration is always HTTPS), and optionally requires
// a bearer token.
//
// What it serves, as the real API server does:
//   LIST   GET /api/v1/{plural}, /api/v1/namespaces/{ns}/{plural},
//          GET /apis/{group}/{version}/{plural}, .../namespaces/{ns}/{plural}
//          -> {kind: <Kind>List, apiVersion, metadata: {resourceVersion[, continue,
//          remainingItemCount]}, items}; built-in kinds' items carry no apiVersion/kind, custom
//          resources' do. `limit` and `continue` page through a consistent snapshot (rebuilt from
//          the retained history); a continue token older than the history is 410 Expired.
//   WATCH  the same paths with watch=true (or 1): newline-delimited JSON events
//          {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}. resourceVersion N
//          replays the retained events after N, then streams live ones; no resourceVersion (or
//          "0") starts with a synthetic ADDED per object. allowWatchBookmarks=true enables
//          BOOKMARK events (on request, and just before timeoutSeconds ends the watch). A
//          resourceVersion older than the retained history gets, like the watch cache, a 200
//          with one ERROR event carrying a Status {code: 410, reason: Expired} and the end of
//          the stream (or, with `expiredWatch: 'http'`, an HTTP 410 with that Status).
//   GET    one object (.../{plural}/{name}).
//   Errors are Status objects: 401 without the token, 404 for resources not served (a CRD not
//   installed), 405 for other methods, 400 for a malformed resourceVersion or continue token.
// Resource versions are one counter across all resources, as etcd's revision is.
//
// What tests control: create/update/delete objects (stamped with uid, creationTimestamp,
// generation and resourceVersion; DELETED events carry the deletion's resourceVersion),
// compact() and historyLimit (the retained history window), install/uninstall of a resource,
// dropWatches() (connections cut) and endWatches() (closed cleanly), sendBookmarks(),
// failNext() (injected error statuses), and a log of every request.
import { generateKeyPairSync, randomBytes, randomUUID, sign, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface FakeResource {
  kind: string;
  /** '' for the core group. */
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
  /** A custom resource: list items carry apiVersion and kind. */
  custom: boolean;
}

export const FAKE_RESOURCES: readonly FakeResource[] = [
  { kind: 'Namespace', group: '', version: 'v1', plural: 'namespaces', namespaced: false, custom: false },
  { kind: 'Node', group: '', version: 'v1', plural: 'nodes', namespaced: false, custom: false },
  { kind: 'Pod', group: '', version: 'v1', plural: 'pods', namespaced: true, custom: false },
  { kind: 'Service', group: '', version: 'v1', plural: 'services', namespaced: true, custom: false },
  { kind: 'Deployment', group: 'apps', version: 'v1', plural: 'deployments', namespaced: true, custom: false },
  {
    kind: 'EndpointSlice',
    group: 'discovery.k8s.io',
    version: 'v1',
    plural: 'endpointslices',
    namespaced: true,
    custom: false,
  },
  {
    kind: 'NetworkPolicy',
    group: 'networking.k8s.io',
    version: 'v1',
    plural: 'networkpolicies',
    namespaced: true,
    custom: false,
  },
  {
    kind: 'FelixConfiguration',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'felixconfigurations',
    namespaced: false,
    custom: true,
  },
  {
    kind: 'Tier',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'tiers',
    namespaced: false,
    custom: true,
  },
  {
    kind: 'CalicoNetworkPolicy',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'networkpolicies',
    namespaced: true,
    custom: true,
  },
  {
    kind: 'GlobalNetworkPolicy',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'globalnetworkpolicies',
    namespaced: false,
    custom: true,
  },
  {
    kind: 'NetworkSet',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'networksets',
    namespaced: true,
    custom: true,
  },
  {
    kind: 'GlobalNetworkSet',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'globalnetworksets',
    namespaced: false,
    custom: true,
  },
  {
    kind: 'HostEndpoint',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'hostendpoints',
    namespaced: false,
    custom: true,
  },
];

/** An object as stored: what a test passes in, stamped by the server. */
export interface FakeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
    generation?: number;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export type RequestVerb = 'list' | 'watch' | 'get' | 'other';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  verb: RequestVerb;
  kind?: string;
  namespace?: string;
  /** The HTTP status answered (0 while a watch is being set up). */
  status: number;
}

export interface FakeApiServerOptions {
  /** Require `Authorization: Bearer <token>`. */
  token?: string;
  /** Events retained per resource for watch resumption and paged lists (default 10000). */
  historyLimit?: number;
  /** Kinds not served at start (their CRD is not installed): 404. */
  notInstalled?: string[];
  /** How a watch from a compacted resourceVersion is refused (default 'error-event'). */
  expiredWatch?: 'error-event' | 'http';
  /** Watch duration when the client sends no timeoutSeconds (default 1800 s). */
  defaultWatchTimeoutSeconds?: number;
}

export interface FailureRule {
  status: number;
  /** How many matching requests fail (default 1). */
  count?: number;
  verb?: RequestVerb;
  kind?: string;
  message?: string;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface StoredEvent {
  rv: number;
  type: EventType;
  object: FakeObject;
  /** The state before (MODIFIED, DELETED). */
  previous?: FakeObject;
}

class ResourceState {
  readonly objects = new Map<string, FakeObject>();
  events: StoredEvent[] = [];
  /** Events up to and including this revision are no longer retained. */
  compactedRv = 0;
  /** The current objects sorted by key (as etcd lists them), rebuilt after a change. */
  sorted: Array<[string, FakeObject]> | undefined;
  constructor(
    readonly def: FakeResource,
    public installed: boolean,
  ) {}
}

interface WatchConn {
  state: ResourceState;
  namespace: string | undefined;
  bookmarks: boolean;
  res: http.ServerResponse;
  timer: NodeJS.Timeout;
}

interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  code: number;
}

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'Conflict',
  410: 'Expired',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

function status(code: number, message: string, reason = REASONS[code] ?? 'Unknown'): Status {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/** An error from a mutation (what the API server would answer), with its Status. */
export class FakeApiError extends Error {
  constructor(readonly status: Status) {
    super(`${status.code} ${status.reason}: ${status.message}`);
    this.name = 'FakeApiError';
  }
}

function groupVersion(def: FakeResource): string {
  return def.group === '' ? def.version : `${def.group}/${def.version}`;
}

function keyOf(def: FakeResource, namespace: string | undefined, name: string): string {
  return def.namespaced ? `${namespace ?? 'default'}/${name}` : name;
}

function timestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64');
}

function decodeContinue(token: string): { rv: number; start: string } | undefined {
  try {
    const v = JSON.parse(Buffer.from(token, 'base64').toString('utf8')) as { rv?: unknown; start?: unknown };
    return typeof v.rv === 'number' && typeof v.start === 'string' ? { rv: v.rv, start: v.start } : undefined;
  } catch {
    return undefined;
  }
}

export class FakeApiServer {
  /** `https://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** The server's certificate (self-signed: it is its own CA), PEM. */
  readonly caPem: string;
  readonly token: string | undefined;
  readonly requests: RecordedRequest[] = [];
  /** How a watch from a compacted resourceVersion is refused; may be changed at any time. */
  expiredWatch: 'error-event' | 'http';
  /** Events retained per resource; lowering it takes effect at the next change. */
  historyLimit: number;
  /** Called for every request before it is answered (e.g. to change state between list pages). */
  onRequest: ((r: RecordedRequest) => void) | undefined;

  private rv = 1;
  private readonly states = new Map<string, ResourceState>();
  private readonly watches = new Set<WatchConn>();
  private readonly failures: FailureRule[] = [];
  private readonly defaultWatchTimeoutSeconds: number;

  private constructor(
    private readonly server: https.Server,
    caPem: string,
    opts: FakeApiServerOptions,
  ) {
    this.port = (server.address() as AddressInfo).port;
    this.url = `https://127.0.0.1:${this.port}`;
    this.caPem = caPem;
    this.token = opts.token;
    this.historyLimit = opts.historyLimit ?? 10_000;
    this.expiredWatch = opts.expiredWatch ?? 'error-event';
    this.defaultWatchTimeoutSeconds = opts.defaultWatchTimeoutSeconds ?? 1800;
    const missing = new Set(opts.notInstalled ?? []);
    for (const def of FAKE_RESOURCES) this.states.set(def.kind, new ResourceState(def, !missing.has(def.kind)));
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res));
  }

  static async start(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const { certPem, keyPem } = selfSignedCertificate('sluice-fake-apiserver');
    const server = https.createServer({ cert: certPem, key: keyPem });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return new FakeApiServer(server, certPem, opts);
  }

  async close(): Promise<void> {
    for (const w of this.watches) this.closeWatch(w, 'destroy');
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // -- state

  /** The current resourceVersion (the last change's). */
  get resourceVersion(): string {
    return String(this.rv);
  }

  private state(kind: string): ResourceState {
    const st = this.states.get(kind);
    if (!st) throw new Error(`fake API server: unknown kind ${kind}`);
    return st;
  }

  get(kind: string, namespace: string | undefined, name: string): FakeObject | undefined {
    const st = this.state(kind);
    const o = st.objects.get(keyOf(st.def, namespace, name));
    return o ? structuredClone(o) : undefined;
  }

  list(kind: string): FakeObject[] {
    return [...this.state(kind).objects.values()].map((o) => structuredClone(o));
  }

  create(kind: string, input: FakeObject): FakeObject {
    const st = this.served(kind);
    const obj = this.prepare(st, input);
    const key = keyOf(st.def, obj.metadata.namespace, obj.metadata.name);
    if (st.objects.has(key))
      throw new FakeApiError(status(409, `${st.def.plural} "${obj.metadata.name}" already exists`, 'AlreadyExists'));
    const rv = ++this.rv;
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = timestamp();
    obj.metadata.generation = 1;
    obj.metadata.resourceVersion = String(rv);
    st.objects.set(key, obj);
    this.record(st, { rv, type: 'ADDED', object: obj });
    return structuredClone(obj);
  }

  /**
   * Replaces an object. A resourceVersion in the input is a precondition (409 Conflict if stale).
   * An update that changes nothing is a no-op, as on the real server.
   */
  update(kind: string, input: FakeObject): FakeObject {
    const st = this.served(kind);
    const obj = this.prepare(st, input);
    const key = keyOf(st.def, obj.metadata.namespace, obj.metadata.name);
    const old = st.objects.get(key);
    if (!old) throw new FakeApiError(status(404, `${st.def.plural} "${obj.metadata.name}" not found`));
    if (
      input.metadata.resourceVersion !== undefined &&
      input.metadata.resourceVersion !== old.metadata.resourceVersion
    ) {
      throw new FakeApiError(
        status(
          409,
          `Operation cannot be fulfilled on ${st.def.plural} "${obj.metadata.name}": the object has been modified`,
        ),
      );
    }
    obj.metadata.uid = old.metadata.uid;
    obj.metadata.creationTimestamp = old.metadata.creationTimestamp;
    obj.metadata.generation = old.metadata.generation;
    obj.metadata.resourceVersion = old.metadata.resourceVersion;
    if (JSON.stringify(obj) === JSON.stringify(old)) return structuredClone(old);
    if (JSON.stringify(obj.spec) !== JSON.stringify(old.spec))
      obj.metadata.generation = (old.metadata.generation ?? 0) + 1;
    const rv = ++this.rv;
    obj.metadata.resourceVersion = String(rv);
    st.objects.set(key, obj);
    this.record(st, { rv, type: 'MODIFIED', object: obj, previous: old });
    return structuredClone(obj);
  }

  /** Deletes an object; returns its last state (with the deletion's resourceVersion). */
  delete(kind: string, namespace: string | undefined, name: string): FakeObject {
    const st = this.served(kind);
    const key = keyOf(st.def, namespace, name);
    const old = st.objects.get(key);
    if (!old) throw new FakeApiError(status(404, `${st.def.plural} "${name}" not found`));
    const rv = ++this.rv;
    const last: FakeObject = { ...old, metadata: { ...old.metadata, resourceVersion: String(rv) } };
    st.objects.delete(key);
    this.record(st, { rv, type: 'DELETED', object: last, previous: old });
    return structuredClone(last);
  }

  /** Forgets the retained history of every resource: a watch from an older revision gets 410. */
  compact(): void {
    for (const st of this.states.values()) {
      st.events = [];
      st.compactedRv = this.rv;
    }
  }

  /** Starts serving a resource (installs its CRD). */
  install(kind: string): void {
    this.state(kind).installed = true;
  }

  /** Stops serving a resource: its objects are deleted (events sent), then its watches end. */
  uninstall(kind: string): void {
    const st = this.state(kind);
    for (const o of [...st.objects.values()]) this.delete(kind, o.metadata.namespace, o.metadata.name);
    for (const w of this.watches) if (w.state === st) this.closeWatch(w, 'end');
    st.installed = false;
  }

  private served(kind: string): ResourceState {
    const st = this.state(kind);
    if (!st.installed) throw new FakeApiError(status(404, 'the server could not find the requested resource'));
    return st;
  }

  private prepare(st: ResourceState, input: FakeObject): FakeObject {
    if (!input.metadata?.name) throw new FakeApiError(status(400, 'metadata.name: Required value', 'Invalid'));
    const obj = structuredClone(input);
    obj.apiVersion = groupVersion(st.def);
    obj.kind = st.def.kind;
    if (st.def.namespaced) obj.metadata.namespace ??= 'default';
    else delete obj.metadata.namespace;
    return obj;
  }

  private record(st: ResourceState, ev: StoredEvent): void {
    st.sorted = undefined;
    st.events.push(ev);
    while (st.events.length > this.historyLimit) {
      const dropped = st.events.shift() as StoredEvent;
      st.compactedRv = dropped.rv;
    }
    for (const w of this.watches) {
      if (w.state === st && (w.namespace === undefined || w.namespace === ev.object.metadata.namespace)) {
        this.writeEvent(w.res, ev.type, ev.object);
      }
    }
  }

  /** The objects of a resource as they were at revision `rv` (needs the history after `rv`). */
  private stateAt(st: ResourceState, rv: number): Map<string, FakeObject> {
    if (rv >= this.rv) return st.objects;
    const objects = new Map(st.objects);
    for (let i = st.events.length - 1; i >= 0 && st.events[i].rv > rv; i--) {
      const ev = st.events[i];
      const key = keyOf(st.def, ev.object.metadata.namespace, ev.object.metadata.name);
      if (ev.type === 'ADDED') objects.delete(key);
      else if (ev.previous) objects.set(key, ev.previous);
    }
    return objects;
  }

  // -- connections

  /** Open watch connections (of one kind, or all). */
  activeWatches(kind?: string): number {
    let n = 0;
    for (const w of this.watches) if (kind === undefined || w.state.def.kind === kind) n++;
    return n;
  }

  /** Waits until at least `n` watches (of one kind, or in all) are open. */
  async waitForWatches(n: number, opts: { kind?: string; timeoutMs?: number } = {}): Promise<void> {
    const deadline = Date.now() + (opts.timeoutMs ?? 5000);
    while (this.activeWatches(opts.kind) < n) {
      if (Date.now() > deadline) {
        throw new Error(`fake API server: ${this.activeWatches(opts.kind)} watches open, waited for ${n}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Cuts every watch connection (or one kind's) without ending the stream; returns how many. */
  dropWatches(kind?: string): number {
    let n = 0;
    for (const w of [...this.watches]) {
      if (kind !== undefined && w.state.def.kind !== kind) continue;
      this.closeWatch(w, 'destroy');
      n++;
    }
    return n;
  }

  /** Ends every watch (or one kind's) cleanly, as the server's watch timeout does. */
  endWatches(kind?: string): number {
    let n = 0;
    for (const w of [...this.watches]) {
      if (kind !== undefined && w.state.def.kind !== kind) continue;
      this.closeWatch(w, 'end');
      n++;
    }
    return n;
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allows them. */
  sendBookmarks(): void {
    for (const w of this.watches) if (w.bookmarks) this.writeBookmark(w);
  }

  /** The next matching request(s) fail with `status`. */
  failNext(rule: FailureRule): void {
    this.failures.push({ count: 1, ...rule });
  }

  /** Requests so far that match. */
  countRequests(filter: { verb?: RequestVerb; kind?: string } = {}): number {
    return this.requests.filter(
      (r) =>
        (filter.verb === undefined || r.verb === filter.verb) && (filter.kind === undefined || r.kind === filter.kind),
    ).length;
  }

  private closeWatch(w: WatchConn, how: 'end' | 'destroy'): void {
    clearTimeout(w.timer);
    this.watches.delete(w);
    if (how === 'end') w.res.end();
    else w.res.destroy();
  }

  private writeEvent(res: http.ServerResponse, type: string, object: unknown): void {
    res.write(JSON.stringify({ type, object }) + '\n');
  }

  private writeBookmark(w: WatchConn): void {
    const def = w.state.def;
    this.writeEvent(w.res, 'BOOKMARK', {
      kind: def.kind,
      apiVersion: groupVersion(def),
      metadata: { resourceVersion: String(this.rv), creationTimestamp: null },
    });
  }

  // -- HTTP

  private route(pathname: string): { st: ResourceState; namespace?: string; name?: string } | undefined {
    const seg = pathname.split('/').filter((s) => s !== '');
    let group: string;
    let version: string;
    let rest: string[];
    if (seg[0] === 'api' && seg.length >= 3) {
      group = '';
      version = seg[1];
      rest = seg.slice(2);
    } else if (seg[0] === 'apis' && seg.length >= 4) {
      group = seg[1];
      version = seg[2];
      rest = seg.slice(3);
    } else {
      return undefined;
    }
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    if (rest.length > 2) return undefined;
    const def = FAKE_RESOURCES.find((d) => d.group === group && d.version === version && d.plural === rest[0]);
    if (!def || (namespace !== undefined && !def.namespaced)) return undefined;
    return { st: this.state(def.kind), namespace, name: rest[1] };
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const query = Object.fromEntries(url.searchParams);
    const route = this.route(url.pathname);
    const watch = query.watch === 'true' || query.watch === '1';
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      verb: !route ? 'other' : route.name !== undefined ? 'get' : watch ? 'watch' : 'list',
      kind: route?.st.def.kind,
      namespace: route?.namespace,
      status: 0,
    };
    this.requests.push(rec);
    this.onRequest?.(rec);
    const send = (code: number, body: unknown): void => {
      rec.status = code;
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      send(401, status(401, 'Unauthorized'));
      return;
    }
    if (rec.method !== 'GET') {
      send(405, status(405, `the server does not allow this method on the requested resource`));
      return;
    }
    const rule = this.failures.find(
      (f) => (f.verb === undefined || f.verb === rec.verb) && (f.kind === undefined || f.kind === rec.kind),
    );
    if (rule) {
      rule.count = (rule.count ?? 1) - 1;
      if (rule.count <= 0) this.failures.splice(this.failures.indexOf(rule), 1);
      send(rule.status, status(rule.status, rule.message ?? 'injected failure'));
      return;
    }
    if (!route || !route.st.installed) {
      send(404, status(404, 'the server could not find the requested resource'));
      return;
    }
    const { st, namespace, name } = route;
    if (name !== undefined) {
      const o = st.objects.get(keyOf(st.def, namespace, name));
      if (o) send(200, o);
      else send(404, status(404, `${st.def.plural} "${name}" not found`));
      return;
    }
    if (watch) this.serveWatch(st, namespace, query, rec, res);
    else this.serveList(st, namespace, query, send);
  }

  private serveList(
    st: ResourceState,
    namespace: string | undefined,
    query: Record<string, string>,
    send: (code: number, body: unknown) => void,
  ): void {
    const limit = query.limit !== undefined ? Number(query.limit) : 0;
    if (!Number.isInteger(limit) || limit < 0) {
      send(400, status(400, `limit: Invalid value: ${JSON.stringify(query.limit)}`));
      return;
    }
    let snapshot = this.rv;
    let after = '';
    if (query.continue) {
      const c = decodeContinue(query.continue);
      if (!c) {
        send(400, status(400, 'continue key is not valid'));
        return;
      }
      if (c.rv < st.compactedRv) {
        send(
          410,
          status(
            410,
            'The provided continue parameter is too old to display a consistent list result. ' +
              'You can start a new list without the continue parameter.',
          ),
        );
        return;
      }
      snapshot = c.rv;
      after = c.start;
    }
    const byKey = (a: [string, FakeObject], b: [string, FakeObject]): number =>
      a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
    let rows: Array<[string, FakeObject]>;
    if (snapshot >= this.rv) rows = st.sorted ??= [...st.objects].sort(byKey);
    else rows = [...this.stateAt(st, snapshot)].sort(byKey);
    // The first row after the continue key (binary search), then up to `limit` rows in the namespace.
    let lo = 0;
    for (let hi = rows.length; lo < hi;) {
      const mid = (lo + hi) >>> 1;
      if (rows[mid][0] <= after) lo = mid + 1;
      else hi = mid;
    }
    const inNs = (o: FakeObject): boolean => namespace === undefined || o.metadata.namespace === namespace;
    const page: Array<[string, FakeObject]> = [];
    let i = lo;
    for (; i < rows.length && (limit === 0 || page.length < limit); i++) if (inNs(rows[i][1])) page.push(rows[i]);
    let remaining = 0;
    if (namespace === undefined) remaining = rows.length - i;
    else for (let j = i; j < rows.length; j++) if (inNs(rows[j][1])) remaining++;
    const metadata: Record<string, unknown> = { resourceVersion: String(snapshot) };
    if (limit > 0 && remaining > 0) {
      metadata.continue = encodeContinue(snapshot, page[page.length - 1][0]);
      metadata.remainingItemCount = remaining;
    }
    const items = page.map(([, o]) => {
      if (st.def.custom) return o;
      const { apiVersion: _a, kind: _k, ...rest } = o;
      return rest;
    });
    send(200, { kind: `${st.def.kind}List`, apiVersion: groupVersion(st.def), metadata, items });
  }

  private serveWatch(
    st: ResourceState,
    namespace: string | undefined,
    query: Record<string, string>,
    rec: RecordedRequest,
    res: http.ServerResponse,
  ): void {
    const rvParam = query.resourceVersion ?? '';
    const fail = (code: number, body: Status): void => {
      rec.status = code;
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) {
      fail(400, status(400, `resourceVersion: Invalid value: ${JSON.stringify(rvParam)}`));
      return;
    }
    const timeoutSeconds =
      query.timeoutSeconds !== undefined ? Number(query.timeoutSeconds) : this.defaultWatchTimeoutSeconds;
    const inNs = (o: FakeObject): boolean => namespace === undefined || o.metadata.namespace === namespace;
    let backlog: Array<{ type: EventType; object: FakeObject }>;
    if (rvParam === '' || rvParam === '0') {
      backlog = [...st.objects.values()].filter(inNs).map((object) => ({ type: 'ADDED' as const, object }));
    } else {
      const from = Number(rvParam);
      if (from < st.compactedRv) {
        const expired = status(410, `too old resource version: ${from} (${st.compactedRv + 1})`);
        if (this.expiredWatch === 'http') {
          fail(410, expired);
        } else {
          rec.status = 200;
          res.writeHead(200, { 'Content-Type': 'application/json' });
          this.writeEvent(res, 'ERROR', expired);
          res.end();
        }
        return;
      }
      backlog = st.events.filter((e) => e.rv > from && inNs(e.object));
    }
    rec.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    for (const e of backlog) this.writeEvent(res, e.type, e.object);
    const w: WatchConn = {
      state: st,
      namespace,
      bookmarks: query.allowWatchBookmarks === 'true',
      res,
      timer: setTimeout(() => {
        if (w.bookmarks) this.writeBookmark(w);
        this.closeWatch(w, 'end');
      }, timeoutSeconds * 1000),
    };
    w.timer.unref();
    this.watches.add(w);
    res.on('close', () => {
      clearTimeout(w.timer);
      this.watches.delete(w);
    });
  }

  // -- client configuration

  /** A kubeconfig (JSON, which is YAML) for this server, with its CA and token. */
  kubeconfig(token = this.token): string {
    return JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'fake',
          cluster: { server: this.url, 'certificate-authority-data': Buffer.from(this.caPem).toString('base64') },
        },
      ],
      users: [{ name: 'fake', user: token !== undefined ? { token } : {} }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake' } }],
      'current-context': 'fake',
    });
  }

  writeKubeconfig(file: string, token = this.token): string {
    fs.writeFileSync(file, this.kubeconfig(token), { mode: 0o600 });
    return file;
  }

  /** Writes a service account directory (token, ca.crt, namespace) as the kubelet mounts it. */
  writeServiceAccount(dir: string, opts: { token?: string; namespace?: string } = {}): string {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'token'), opts.token ?? this.token ?? 'no-token', { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'ca.crt'), this.caPem);
    fs.writeFileSync(path.join(dir, 'namespace'), opts.namespace ?? 'kube-system');
    return dir;
  }
}

// ---------------------------------------------------------------------------------------------
// A self-signed certificate (ECDSA P-256) for 127.0.0.1 and localhost, built with a minimal DER
// encoder so tests need neither openssl nor a dependency.

function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  let len: Buffer;
  if (body.length < 0x80) {
    len = Buffer.from([body.length]);
  } else {
    const bytes: number[] = [];
    for (let n = body.length; n > 0; n >>= 8) bytes.unshift(n & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

const seq = (...parts: Buffer[]): Buffer => der(0x30, ...parts);

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const bytes = [40 * a + b];
  for (const n of rest) {
    const groups: number[] = [n & 0x7f];
    for (let v = n >>> 7; v > 0; v >>>= 7) groups.unshift(0x80 | (v & 0x7f));
    bytes.push(...groups);
  }
  return der(0x06, Buffer.from(bytes));
}

function utcTime(d: Date): Buffer {
  const p = (n: number): string => String(n).padStart(2, '0');
  const s =
    p(d.getUTCFullYear() % 100) +
    p(d.getUTCMonth() + 1) +
    p(d.getUTCDate()) +
    p(d.getUTCHours()) +
    p(d.getUTCMinutes()) +
    p(d.getUTCSeconds()) +
    'Z';
  return der(0x17, Buffer.from(s, 'ascii'));
}

function selfSignedCertificate(commonName: string): { certPem: string; keyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const name = seq(der(0x31, seq(oid('2.5.4.3'), der(0x0c, Buffer.from(commonName, 'utf8')))));
  const serial = randomBytes(16);
  serial[0] = (serial[0] & 0x7f) | 0x01; // positive, and minimal (no leading zero byte)
  const now = Date.now();
  const extensions = der(
    0xa3,
    seq(
      // basicConstraints: CA (it signs itself), critical
      seq(oid('2.5.29.19'), der(0x01, Buffer.from([0xff])), der(0x04, seq(der(0x01, Buffer.from([0xff]))))),
      // subjectAltName: IP 127.0.0.1, DNS localhost
      seq(
        oid('2.5.29.17'),
        der(0x04, seq(der(0x87, Buffer.from([127, 0, 0, 1])), der(0x82, Buffer.from('localhost', 'ascii')))),
      ),
    ),
  );
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([2]))), // version v3
    der(0x02, serial),
    ecdsaWithSha256,
    name,
    seq(utcTime(new Date(now - 3600_000)), utcTime(new Date(now + 365 * 86400_000))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    extensions,
  );
  const signature = sign('sha256', tbs, privateKey as KeyObject);
  const cert = seq(tbs, ecdsaWithSha256, der(0x03, Buffer.concat([Buffer.from([0]), signature])));
  const b64 = cert.toString('base64').replace(/(.{64})/g, '$1\n');
  return {
    certPem: `-----BEGIN CERTIFICATE-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE-----\n`,
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}
