// The Kubernetes API datastore: list+watch of the kinds the agent reads, presented through the
// same Datastore interface as the lab's store (see types.ts).
//
// One loop per kind (a reflector, in client-go's terms):
//   list (paged with limit/continue, a consistent read) -> deliver the difference against what
//   this watch already told its handler -> watch from the list's resourceVersion with bookmarks
//   -> on a clean close (the server's timeoutSeconds) or a dropped connection, watch again from
//   the last resourceVersion seen (event or bookmark): nothing is listed or re-delivered
//   -> on 410 Gone (an ERROR event with a Status of code 410, or an HTTP 410, or an expired
//   continue token) list again and deliver only the difference: ADDED for new objects, MODIFIED
//   only when an object's resourceVersion changed, DELETED for objects that went away during the
//   gap (with their last known state), then onSynced
//   -> any other error: exponential backoff with jitter, then resume where it stopped.
// An optional kind whose API is not served (FelixConfiguration without Calico's CRD: 404) counts
// as an empty set, so it never holds up the other kinds or the initial sync; the list is retried
// every `missingApiRetryMs` and the objects arrive as ADDED once the CRD is installed.
//
// Why not client-node's informer (ListWatch): it stops for good on any error other than 410 (no
// retry or backoff), has no way to say when the initial list is done, sends no
// allowWatchBookmarks, and its list goes through the typed API (Date objects, unknown fields
// dropped) while its watch yields raw JSON. client-node provides the configuration and the
// credentials (KubeConfig.applyToHTTPSOptions: CA, client certificates, bearer tokens re-read
// from the service account file, exec plugins); the requests are plain node:https GETs.
//
// Events of one kind are delivered in the server's order; all kinds share one delivery queue,
// so the handler runs for one event at a time. Objects are not copied (a copy of 10,000
// EndpointSlices costs hundreds of milliseconds): handlers treat them as read-only. The datastore
// keeps each object's resourceVersion apart, so even a handler that modifies an object cannot
// make it deliver a wrong difference; a DELETED found by a relist carries the object as delivered. A watch's resourceVersion is a per-kind position:
// the plain resourceVersion for a one-kind watch, `Kind=rv,Kind=rv,...` for several (accepted
// back by WatchOptions.resourceVersion and waitFor, which also take a plain resourceVersion
// meaning "this revision for every kind"; waitFor compares revisions as numbers, as etcd makes
// them, and a quiet kind moves forward with bookmarks).
import { setMaxListeners } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { resolveApiServer, type ApiServerEndpoint, type ResolveApiServerOptions } from './endpoint.js';
import {
  API_VERSIONS,
  DatastoreError,
  isDatastoreError,
  keyOf,
  silentLogger,
  type Datastore,
  type DatastoreErrorCode,
  type DatastoreLogger,
  type EventOf,
  type EventType,
  type Kind,
  type KindTypes,
  type KubeObject,
  type ListResult,
  type Watch,
  type WatchEvent,
  type WatchOptions,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// Resources

export interface ResourceInfo {
  kind: Kind;
  /** API group; '' for the core group. */
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
  /** Served by a CRD that may be absent: a 404 means "no objects", not an error. */
  optional: boolean;
}

export const KUBERNETES_RESOURCES: Readonly<Record<Kind, ResourceInfo>> = {
  Namespace: { kind: 'Namespace', group: '', version: 'v1', plural: 'namespaces', namespaced: false, optional: false },
  Node: { kind: 'Node', group: '', version: 'v1', plural: 'nodes', namespaced: false, optional: false },
  Pod: { kind: 'Pod', group: '', version: 'v1', plural: 'pods', namespaced: true, optional: false },
  Deployment: {
    kind: 'Deployment',
    group: 'apps',
    version: 'v1',
    plural: 'deployments',
    namespaced: true,
    optional: false,
  },
  Service: { kind: 'Service', group: '', version: 'v1', plural: 'services', namespaced: true, optional: false },
  EndpointSlice: {
    kind: 'EndpointSlice',
    group: 'discovery.k8s.io',
    version: 'v1',
    plural: 'endpointslices',
    namespaced: true,
    optional: false,
  },
  NetworkPolicy: {
    kind: 'NetworkPolicy',
    group: 'networking.k8s.io',
    version: 'v1',
    plural: 'networkpolicies',
    namespaced: true,
    optional: false,
  },
  FelixConfiguration: {
    kind: 'FelixConfiguration',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'felixconfigurations',
    namespaced: false,
    optional: true,
  },
  Tier: {
    kind: 'Tier',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'tiers',
    namespaced: false,
    optional: true,
  },
  CalicoNetworkPolicy: {
    kind: 'CalicoNetworkPolicy',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'networkpolicies',
    namespaced: true,
    optional: true,
  },
  GlobalNetworkPolicy: {
    kind: 'GlobalNetworkPolicy',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'globalnetworkpolicies',
    namespaced: false,
    optional: true,
  },
  NetworkSet: {
    kind: 'NetworkSet',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'networksets',
    namespaced: true,
    optional: true,
  },
  GlobalNetworkSet: {
    kind: 'GlobalNetworkSet',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'globalnetworksets',
    namespaced: false,
    optional: true,
  },
  HostEndpoint: {
    kind: 'HostEndpoint',
    group: 'crd.projectcalico.org',
    version: 'v1',
    plural: 'hostendpoints',
    namespaced: false,
    optional: true,
  },
};

/** The collection path (all namespaces), e.g. `/apis/discovery.k8s.io/v1/endpointslices`. */
export function collectionPath(info: ResourceInfo): string {
  return info.group === ''
    ? `/api/${info.version}/${info.plural}`
    : `/apis/${info.group}/${info.version}/${info.plural}`;
}

function groupVersion(info: ResourceInfo): string {
  return info.group === '' ? info.version : `${info.group}/${info.version}`;
}

function resourceInfo(kind: Kind): ResourceInfo {
  const info = (KUBERNETES_RESOURCES as Partial<Record<string, ResourceInfo>>)[kind];
  if (!info) throw new DatastoreError('ECONFIG', { op: 'watch', message: `unknown kind ${JSON.stringify(kind)}` });
  return info;
}

// ---------------------------------------------------------------------------------------------
// Options

export interface BackoffOptions {
  /** First delay after a failure (ms). */
  initialMs: number;
  /** Longest delay (ms). */
  maxMs: number;
  factor: number;
  /** Each delay is stretched by a random fraction up to this (0.2 = up to +20%). */
  jitter: number;
  /** A watch that lasted this long (or delivered anything) resets the backoff. */
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = {
  initialMs: 200,
  maxMs: 30_000,
  factor: 2,
  jitter: 0.2,
  resetAfterMs: 2_000,
};

export interface KubernetesDatastoreOptions {
  /** Where the API server is and why (from resolveApiServer); logged at construction. */
  endpoint?: ApiServerEndpoint;
  /** Or just a KubeConfig (its current context). */
  kubeConfig?: KubeConfig;
  logger?: DatastoreLogger;
  backoff?: Partial<BackoffOptions>;
  /** `limit` of each list page; 0 lists in one response. Default 500. */
  pageSize?: number;
  /** Each watch asks the server to end it after a random time in [T, 2T) seconds. Default 300. */
  watchTimeoutSeconds?: number;
  /** A watch that has received nothing for its timeout plus this long is dropped. Default 60 s. */
  watchIdleGraceMs?: number;
  /** A list page that sees no data for this long fails. Default 60 s. */
  requestTimeoutMs?: number;
  /** How often the list of an optional kind whose API is missing is retried. Default 30 s. */
  missingApiRetryMs?: number;
}

interface Settings {
  backoff: BackoffOptions;
  pageSize: number;
  watchTimeoutSeconds: number;
  watchIdleGraceMs: number;
  requestTimeoutMs: number;
  missingApiRetryMs: number;
}

// ---------------------------------------------------------------------------------------------
// HTTP

const USER_AGENT = 'sluice-agent';

interface KubeStatus {
  kind?: string;
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function codeForStatus(status: number): DatastoreErrorCode {
  switch (status) {
    case 410:
      return 'EEXPIRED';
    case 404:
      return 'ENOTFOUND';
    case 401:
      return 'EUNAUTHORIZED';
    case 403:
      return 'EFORBIDDEN';
    default:
      return 'EAPI';
  }
}

function statusError(op: string, statusCode: number, status: KubeStatus | undefined, what: string): DatastoreError {
  const code = codeForStatus(statusCode);
  const hints: Partial<Record<DatastoreErrorCode, string>> = {
    EFORBIDDEN: `the agent's ClusterRole must allow list and watch on ${what}`,
    EUNAUTHORIZED: 'the API server refused the credentials (token or client certificate)',
    ENOTFOUND: `the API server does not serve ${what}`,
  };
  return new DatastoreError(code, {
    op,
    statusCode,
    reason: status?.reason ?? http.STATUS_CODES[statusCode],
    message: status?.message,
    hint: hints[code],
  });
}

function parseStatus(body: string): KubeStatus | undefined {
  try {
    const v: unknown = JSON.parse(body);
    return isRecord(v) && v.kind === 'Status' ? (v as KubeStatus) : undefined;
  } catch {
    return undefined;
  }
}

function networkError(op: string, server: string, err: unknown): DatastoreError {
  if (isDatastoreError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  return new DatastoreError('ENETWORK', {
    op,
    message: `${server}: ${e.code ? `${e.code} ` : ''}${e.message}`,
    hint:
      e.code === 'ECONNREFUSED' || e.code === 'EHOSTUNREACH' || e.code === 'ETIMEDOUT'
        ? 'is the API server reachable from this node?'
        : undefined,
    cause: err,
  });
}

/** Reads a whole response body; fails if the connection ends early. */
function readBody(res: http.IncomingMessage, op: string, server: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let done = false;
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      done = true;
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    res.on('error', (err) => reject(networkError(op, server, err)));
    res.on('close', () => {
      if (!done) reject(networkError(op, server, new Error('connection closed before the response ended')));
    });
  });
}

class ApiClient {
  readonly server: string;

  constructor(private readonly kc: KubeConfig) {
    const cluster = kc.getCurrentCluster();
    if (!cluster)
      throw new DatastoreError('ECONFIG', { op: 'connect', message: 'the kubeconfig has no current cluster' });
    this.server = cluster.server.replace(/\/+$/, '');
  }

  /** Sends a GET; resolves with the response once its headers are in. */
  private async send(
    op: string,
    path: string,
    query: Record<string, string | undefined>,
    signal: AbortSignal | undefined,
    idleMs: number,
  ): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
    const options: https.RequestOptions = {
      method: 'GET',
      headers: { Accept: 'application/json', 'User-Agent': USER_AGENT },
    };
    try {
      await this.kc.applyToHTTPSOptions(options);
    } catch (err) {
      throw new DatastoreError('ECONFIG', { op, message: `credentials: ${(err as Error).message}`, cause: err });
    }
    const mod = url.protocol === 'http:' ? http : https;
    return new Promise((resolve, reject) => {
      const req = mod.request(url, { ...options, signal }, (res) => resolve({ req, res }));
      req.on('socket', (s) => s.setKeepAlive(true, 30_000));
      req.setTimeout(idleMs, () =>
        req.destroy(new DatastoreError('ETIMEDOUT', { op, message: `${this.server}: no data for ${idleMs} ms` })),
      );
      req.on('error', (err) => reject(networkError(op, this.server, err)));
      req.end();
    });
  }

  async getJson(
    op: string,
    what: string,
    path: string,
    query: Record<string, string | undefined>,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<unknown> {
    const { res } = await this.send(op, path, query, signal, timeoutMs);
    const body = await readBody(res, op, this.server);
    if (res.statusCode !== 200) throw statusError(op, res.statusCode ?? 0, parseStatus(body), what);
    try {
      return JSON.parse(body) as unknown;
    } catch (err) {
      throw new DatastoreError('EBADRESPONSE', { op, message: 'the response is not JSON', cause: err });
    }
  }

  /** Opens a watch; resolves with the streaming response once the server has accepted it (200). */
  async openWatch(
    op: string,
    what: string,
    path: string,
    query: Record<string, string | undefined>,
    signal: AbortSignal,
    idleMs: number,
  ): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
    const sent = await this.send(op, path, query, signal, idleMs);
    if (sent.res.statusCode !== 200) {
      const body = await readBody(sent.res, op, this.server).catch(() => '');
      throw statusError(op, sent.res.statusCode ?? 0, parseStatus(body), what);
    }
    return sent;
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function rvOf(o: KubeObject): string {
  return o.metadata?.resourceVersion ?? '';
}

/** Compares two resourceVersions: as numbers when both are (etcd revisions), else only equality. */
function compareRv(a: string, b: string): number | undefined {
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return a === b ? 0 : undefined;
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

function normalize(info: ResourceInfo, raw: unknown, op: string): KubeObject {
  if (!isRecord(raw) || !isRecord(raw.metadata) || typeof raw.metadata.name !== 'string') {
    throw new DatastoreError('EBADRESPONSE', { op, message: 'an object without metadata.name' });
  }
  raw.kind = info.kind;
  raw.apiVersion = API_VERSIONS[info.kind];
  // Nothing that reads this datastore looks at who set which field, and they are 15% of the heap
  // a Service and its EndpointSlice take (4.7 against 4.0 KB, as the API server returns them);
  // kube-proxy's informers drop them too.
  delete raw.metadata.managedFields;
  return raw as KubeObject;
}

interface ListOutcome {
  items: KubeObject[];
  resourceVersion: string;
  pages: number;
}

/** A full list, page by page, restarted if its continue token expires. Null: the API is missing. */
async function listAll(
  client: ApiClient,
  info: ResourceInfo,
  settings: Settings,
  signal: AbortSignal | undefined,
  log: DatastoreLogger,
): Promise<ListOutcome | null> {
  const op = `list ${info.plural}`;
  const path = collectionPath(info);
  let restarts = 0;
  for (;;) {
    const items: KubeObject[] = [];
    let cont: string | undefined;
    let rv: string;
    let pages = 0;
    try {
      do {
        const query = { limit: settings.pageSize > 0 ? String(settings.pageSize) : undefined, continue: cont };
        const body = await client.getJson(op, info.plural, path, query, signal, settings.requestTimeoutMs);
        pages++;
        if (!isRecord(body) || !Array.isArray(body.items) || !isRecord(body.metadata)) {
          throw new DatastoreError('EBADRESPONSE', { op, message: 'not a list' });
        }
        for (const item of body.items) items.push(normalize(info, item, op));
        rv = typeof body.metadata.resourceVersion === 'string' ? body.metadata.resourceVersion : '';
        cont =
          typeof body.metadata.continue === 'string' && body.metadata.continue !== ''
            ? body.metadata.continue
            : undefined;
      } while (cont !== undefined);
      return { items, resourceVersion: rv, pages };
    } catch (err) {
      if (isDatastoreError(err, 'ENOTFOUND') && info.optional) return null;
      // The snapshot behind a continue token was compacted away: start the list again.
      if (isDatastoreError(err, 'EEXPIRED') && cont !== undefined && restarts < 3) {
        restarts++;
        log.info(
          { resource: info.plural, pages },
          `${op}: continue token expired (410 Gone): listing again from the start`,
        );
        continue;
      }
      throw err;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The datastore

export class KubernetesDatastore implements Datastore {
  readonly server: string;
  /** How the API server was found (when constructed from an endpoint). */
  readonly endpoint: ApiServerEndpoint | undefined;
  readonly description: string;
  private readonly client: ApiClient;
  private readonly log: DatastoreLogger;
  private readonly settings: Settings;
  private readonly watches = new Set<KubernetesWatch>();

  constructor(opts: KubernetesDatastoreOptions) {
    const kc = opts.endpoint?.kubeConfig ?? opts.kubeConfig;
    if (!kc)
      throw new DatastoreError('ECONFIG', { op: 'connect', message: 'neither an endpoint nor a kubeConfig given' });
    this.client = new ApiClient(kc);
    this.server = this.client.server;
    this.endpoint = opts.endpoint;
    this.log = opts.logger ?? silentLogger;
    this.description = opts.endpoint?.description ?? `using API server ${this.server}`;
    this.settings = {
      backoff: { ...DEFAULT_BACKOFF, ...opts.backoff },
      pageSize: opts.pageSize ?? 500,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
      watchIdleGraceMs: opts.watchIdleGraceMs ?? 60_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 60_000,
      missingApiRetryMs: opts.missingApiRetryMs ?? 30_000,
    };
    if (opts.endpoint) {
      const e = opts.endpoint;
      this.log.info({ server: e.server, source: e.source, clusterIp: e.clusterIp }, e.description);
      for (const w of e.warnings) this.log.warn({ server: e.server, source: e.source }, w);
    }
  }

  /** resolveApiServer() (flag, KUBECONFIG, in-cluster with overrides), then a datastore on it. */
  static fromEnvironment(
    opts: ResolveApiServerOptions & Omit<KubernetesDatastoreOptions, 'endpoint' | 'kubeConfig'> = {},
  ): KubernetesDatastore {
    return new KubernetesDatastore({ ...opts, endpoint: resolveApiServer(opts) });
  }

  /**
   * One consistent list of `kind`. An optional kind whose API is not served (a missing CRD)
   * lists as empty with resourceVersion ''.
   */
  async list<K extends Kind>(kind: K): Promise<ListResult<K>> {
    const r = await listAll(this.client, resourceInfo(kind), this.settings, undefined, this.log);
    return r
      ? { items: r.items as Array<KindTypes[K]>, resourceVersion: r.resourceVersion }
      : { items: [], resourceVersion: '' };
  }

  watch<K extends Kind>(
    kinds: readonly K[],
    handler: (event: EventOf<K>) => void | Promise<void>,
    opts: WatchOptions = {},
  ): KubernetesWatch {
    const w = new KubernetesWatch(
      { client: this.client, settings: this.settings, log: this.log },
      [...new Set(kinds)],
      handler as (e: WatchEvent) => void | Promise<void>,
      opts,
      () => this.watches.delete(w),
    );
    this.watches.add(w);
    return w;
  }

  /** Stops every watch and waits until their connections are closed. */
  async close(): Promise<void> {
    const all = [...this.watches];
    for (const w of all) w.stop();
    await Promise.all(all.map((w) => w.closed));
  }
}

// ---------------------------------------------------------------------------------------------
// A watch on several kinds

interface Shared {
  client: ApiClient;
  settings: Settings;
  log: DatastoreLogger;
}

type QueueEntry =
  /** `position`: the kind's position after this event (watch events; not list differences). */
  | { t: 'event'; event: WatchEvent; position?: string }
  | { t: 'position'; kind: Kind; rv: string }
  | { t: 'synced'; kind: Kind; initial: boolean };

export interface KindStats {
  kind: Kind;
  /** Where the watch resumes (the last resourceVersion received). */
  resourceVersion: string;
  synced: boolean;
  /** The API is not served (optional kind, CRD missing). */
  apiMissing: boolean;
  lists: number;
  relists: number;
  watches: number;
  /** 410 Gone seen (watch or continue token). */
  expired: number;
  /** Watch connections lost (not closed by the server's timeout). */
  drops: number;
  /** Failed requests (each followed by a backoff). */
  failures: number;
  /** Watch events dropped because they repeated what was already delivered. */
  duplicates: number;
}

interface ReflectorHost {
  readonly shared: Shared;
  readonly signal: AbortSignal;
  push(entry: QueueEntry): void;
  failed(err: DatastoreError): void;
}

function positionsOf(token: string, kinds: readonly Kind[]): Map<Kind, string> {
  const out = new Map<Kind, string>();
  if (token.includes('=')) {
    for (const part of token.split(',')) {
      const i = part.indexOf('=');
      const k = part.slice(0, i) as Kind;
      if (kinds.includes(k)) out.set(k, part.slice(i + 1));
    }
  } else {
    for (const k of kinds) out.set(k, token);
  }
  return out;
}

export class KubernetesWatch implements Watch {
  readonly synced: Promise<void>;
  /** Resolves once stopped and every connection is closed. */
  readonly closed: Promise<void>;
  readonly signal: AbortSignal;
  private readonly abort = new AbortController();
  private readonly reflectors: KindReflector[];
  private readonly queue: QueueEntry[] = [];
  private head = 0;
  private delivering = false;
  private stopped = false;
  private syncedYet = false;
  private readonly pendingInitial: Set<Kind>;
  private readonly delivered = new Map<Kind, string>();
  private readonly waiters = new Set<{ target: Map<Kind, string>; resolve: () => void; reject: (e: Error) => void }>();
  private markSynced!: () => void;
  private failSynced!: (e: Error) => void;

  constructor(
    readonly shared: Shared,
    readonly kinds: readonly Kind[],
    private readonly handler: (e: WatchEvent) => void | Promise<void>,
    private readonly opts: WatchOptions,
    private readonly onStop: () => void,
  ) {
    this.signal = this.abort.signal;
    // One watch per kind listens on this signal (14 kinds and counting): above Node's default
    // warning threshold of 10, and expected.
    setMaxListeners(64, this.signal);
    this.synced = new Promise<void>((resolve, reject) => {
      this.markSynced = resolve;
      this.failSynced = reject;
    });
    this.synced.catch(() => undefined); // stopping before the sync rejects it; nobody has to listen
    this.pendingInitial = new Set(kinds);
    const resume = opts.resourceVersion !== undefined ? positionsOf(opts.resourceVersion, kinds) : undefined;
    const known = resume ? [...(opts.known ?? [])] : [];
    this.reflectors = kinds.map((k) => {
      const info = resourceInfo(k);
      const rv = resume?.get(k);
      if (rv !== undefined) this.delivered.set(k, rv);
      return new KindReflector(this, info, rv, known);
    });
    if (kinds.length === 0) queueMicrotask(() => this.finishInitial());
    this.closed = Promise.all(this.reflectors.map((r) => r.run())).then(() => undefined);
  }

  /** Per-kind positions: a plain resourceVersion for one kind, `Kind=rv,...` for several. */
  get resourceVersion(): string {
    if (this.kinds.length === 1) return this.delivered.get(this.kinds[0]) ?? '';
    return this.kinds.map((k) => `${k}=${this.delivered.get(k) ?? ''}`).join(',');
  }

  stats(): KindStats[] {
    return this.reflectors.map((r) => r.stats());
  }

  waitFor(rv: string, timeoutMs = 30_000): Promise<void> {
    const target = positionsOf(rv, this.kinds);
    if (this.reached(target)) return Promise.resolve();
    if (this.stopped)
      return Promise.reject(new DatastoreError('ESTOPPED', { op: 'wait for', message: 'the watch was stopped' }));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`watch did not reach ${rv} within ${timeoutMs} ms (at ${this.resourceVersion})`));
      }, timeoutMs);
      const w = {
        target,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.add(w);
    });
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.abort.abort();
    this.queue.length = 0;
    this.head = 0;
    if (!this.syncedYet)
      this.failSynced(new DatastoreError('ESTOPPED', { op: 'watch', message: 'stopped before it synced' }));
    for (const w of this.waiters)
      w.reject(new DatastoreError('ESTOPPED', { op: 'wait for', message: 'the watch was stopped' }));
    this.waiters.clear();
    this.onStop();
  }

  // -- called by the reflectors

  push(entry: QueueEntry): void {
    if (this.stopped) return;
    this.queue.push(entry);
    this.deliver();
  }

  failed(err: DatastoreError): void {
    this.reportError(err);
  }

  /** onError, which must not be able to break a loop or the delivery. */
  private reportError(err: Error): void {
    try {
      this.opts.onError?.(err);
    } catch (e) {
      this.shared.log.error({ err: (e as Error).message }, `onError threw: ${(e as Error).message}`);
    }
  }

  // -- delivery

  private reached(target: Map<Kind, string>): boolean {
    if (!this.syncedYet) return false;
    for (const [k, rv] of target) {
      const c = compareRv(this.delivered.get(k) ?? '', rv);
      if (c === undefined || c < 0) return false;
    }
    return true;
  }

  private wake(): void {
    for (const w of this.waiters) {
      if (this.reached(w.target)) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  private finishInitial(): void {
    if (this.syncedYet || this.stopped) return;
    this.syncedYet = true;
    this.callOnSynced();
    this.markSynced();
    this.wake();
  }

  private callOnSynced(): void {
    try {
      this.opts.onSynced?.(this.resourceVersion);
    } catch (err) {
      this.handlerError(err);
    }
  }

  private handlerError(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    if (this.opts.onError) this.reportError(e);
    else this.shared.log.error({ err: e.message }, `datastore event handler failed: ${e.message}`);
  }

  private deliver(): void {
    if (this.delivering || this.stopped) return;
    this.delivering = true;
    void (async () => {
      try {
        while (this.head < this.queue.length && !this.stopped) {
          const e = this.queue[this.head++];
          if (this.head > 1024 && this.head * 2 > this.queue.length) {
            this.queue.splice(0, this.head);
            this.head = 0;
          }
          if (e.t === 'event') {
            try {
              const r = this.handler(e.event);
              if (r !== undefined) await r;
            } catch (err) {
              this.handlerError(err);
            }
            if (e.position !== undefined && !this.stopped) {
              this.delivered.set(e.event.kind, e.position);
              this.wake();
            }
          } else if (e.t === 'position') {
            this.delivered.set(e.kind, e.rv);
            this.wake();
          } else if (e.initial) {
            this.pendingInitial.delete(e.kind);
            if (this.pendingInitial.size === 0) this.finishInitial();
          } else if (this.syncedYet) {
            this.callOnSynced();
          }
        }
      } finally {
        this.delivering = false;
      }
    })();
  }
}

// ---------------------------------------------------------------------------------------------
// One kind's list+watch loop

class KindReflector {
  /**
   * What the handler has been told (or will be, once the queue drains), by key: the object as
   * delivered and its resourceVersion as received (kept apart, so a handler that modifies an
   * object cannot make the difference of a relist wrong).
   */
  private readonly cache = new Map<string, { rv: string; object: KubeObject }>();
  private rv: string;
  private needList: boolean;
  private initialDone = false;
  private apiMissing = false;
  private failures = 0;
  private readonly counters = { lists: 0, relists: 0, watches: 0, expired: 0, drops: 0, failures: 0, duplicates: 0 };
  private readonly path: string;
  private readonly ctx: { kind: Kind; resource: string };

  constructor(
    private readonly host: ReflectorHost,
    private readonly info: ResourceInfo,
    resumeRv: string | undefined,
    known: readonly KubeObject[],
  ) {
    this.path = collectionPath(info);
    this.ctx = { kind: info.kind, resource: `${info.plural}.${groupVersion(info)}` };
    this.rv = resumeRv ?? '';
    this.needList = resumeRv === undefined || resumeRv === '';
    if (!this.needList) {
      for (const o of known) if (o.kind === info.kind) this.cache.set(keyOf(o), { rv: rvOf(o), object: o });
    }
  }

  private get log(): DatastoreLogger {
    return this.host.shared.log;
  }

  stats(): KindStats {
    return {
      kind: this.info.kind,
      resourceVersion: this.rv,
      synced: this.initialDone,
      apiMissing: this.apiMissing,
      ...this.counters,
    };
  }

  async run(): Promise<void> {
    const signal = this.host.signal;
    while (!signal.aborted) {
      let delay = 0;
      try {
        if (this.needList) {
          if (!(await this.relist())) delay = this.host.shared.settings.missingApiRetryMs;
        } else {
          delay = await this.watchOnce();
        }
      } catch (err) {
        if (signal.aborted) break;
        delay = this.onFailure(err);
      }
      await abortableSleep(delay, signal);
    }
  }

  private backoffDelay(): number {
    const b = this.host.shared.settings.backoff;
    const base = Math.min(b.maxMs, b.initialMs * Math.pow(b.factor, Math.max(0, this.failures - 1)));
    return Math.round(base * (1 + Math.random() * b.jitter));
  }

  /** Decides what to do after an error; returns the delay before the next attempt. */
  private onFailure(raw: unknown): number {
    const err = isDatastoreError(raw) ? raw : networkError(`watch ${this.info.plural}`, '', raw);
    this.failures++;
    if (err.code === 'EEXPIRED') {
      this.counters.expired++;
      this.needList = true;
      this.log.info(
        { ...this.ctx, resourceVersion: this.rv },
        `${err.op}: resourceVersion ${this.rv} expired (410 Gone): relisting`,
      );
      // The first relist after an expiry is immediate; repeated expiries back off.
      return this.failures === 1 ? 0 : this.backoffDelay();
    }
    if (err.code === 'ENOTFOUND' && this.info.optional) {
      this.needList = true; // the list decides whether the API is gone
      return this.failures === 1 ? 0 : this.backoffDelay();
    }
    this.counters.failures++;
    const delay = this.backoffDelay();
    this.log.warn(
      { ...this.ctx, code: err.code, statusCode: err.statusCode, attempt: this.failures, retryInMs: delay },
      `${err.message} (retrying in ${delay} ms)`,
    );
    this.host.failed(err);
    return delay;
  }

  /** Lists and delivers the difference; false when the (optional) API is missing. */
  private async relist(): Promise<boolean> {
    const s = this.host.shared;
    const listed = await listAll(s.client, this.info, s.settings, this.host.signal, s.log);
    if (this.host.signal.aborted) return true;
    this.counters.lists++;
    if (listed === null) {
      if (!this.apiMissing) {
        this.log.warn(
          { ...this.ctx, retryInMs: s.settings.missingApiRetryMs },
          `${this.info.kind} API (${this.ctx.resource}) is not served (CRD not installed?): ` +
            `treating it as empty, looking again every ${s.settings.missingApiRetryMs} ms`,
        );
      }
      const wasMissing = this.apiMissing;
      this.apiMissing = true;
      this.applyList([], this.rv, !wasMissing);
      this.failures = 0;
      return false;
    }
    if (this.apiMissing) this.log.info(this.ctx, `${this.info.kind} API (${this.ctx.resource}) is served now`);
    this.apiMissing = false;
    this.applyList(listed.items, listed.resourceVersion, true);
    this.rv = listed.resourceVersion;
    this.needList = false;
    // `failures` is reset by a watch that works, not by the list: a server that answers every
    // fresh list's resourceVersion with 410 must not be relisted in a tight loop.
    return true;
  }

  /** Replaces the cache with a list, queueing only the differences. */
  private applyList(items: KubeObject[], listRv: string, announce: boolean): void {
    const before = this.cache;
    const seen = new Set<string>();
    const changes: Array<{ type: EventType; object: KubeObject }> = [];
    for (const o of items) {
      const key = keyOf(o);
      seen.add(key);
      const old = before.get(key);
      if (!old) changes.push({ type: 'ADDED', object: o });
      else if (old.rv !== rvOf(o) || old.rv === '') changes.push({ type: 'MODIFIED', object: o });
    }
    const deletions: Array<[string, KubeObject]> = [];
    for (const [key, old] of before) if (!seen.has(key)) deletions.push([key, old.object]);
    const initial = !this.initialDone;
    if (!initial) this.counters.relists++;

    // Changes in the order they were made (as far as revisions tell), after the deletions.
    const order = new Map(changes.map((c) => [c, /^\d+$/.test(rvOf(c.object)) ? BigInt(rvOf(c.object)) : undefined]));
    changes.sort((a, b) => {
      const x = order.get(a);
      const y = order.get(b);
      return x === undefined || y === undefined ? 0 : x < y ? -1 : x > y ? 1 : 0;
    });
    for (const [key, old] of deletions) {
      this.cache.delete(key);
      // The last state the handler was given, stamped with the revision the absence was seen at.
      const last = listRv !== '' ? { ...old, metadata: { ...old.metadata, resourceVersion: listRv } } : old;
      this.host.push({
        t: 'event',
        event: { type: 'DELETED', kind: this.info.kind, object: last, resourceVersion: rvOf(last) },
      });
    }
    for (const c of changes) {
      this.cache.set(keyOf(c.object), { rv: rvOf(c.object), object: c.object });
      this.host.push({
        t: 'event',
        event: { type: c.type, kind: this.info.kind, object: c.object, resourceVersion: rvOf(c.object) },
      });
    }
    if (listRv !== '') this.host.push({ t: 'position', kind: this.info.kind, rv: listRv });
    if (!initial) {
      const added = changes.filter((c) => c.type === 'ADDED').length;
      this.log.info(
        { ...this.ctx, resourceVersion: listRv, added, modified: changes.length - added, deleted: deletions.length },
        `relisted ${this.info.plural}: ${added} added, ${changes.length - added} modified, ${deletions.length} deleted`,
      );
    }
    if (initial || announce) this.host.push({ t: 'synced', kind: this.info.kind, initial });
    this.initialDone = true;
  }

  /** One watch connection; returns the delay before the next attempt (after a clean close). */
  private async watchOnce(): Promise<number> {
    const s = this.host.shared.settings;
    const op = `watch ${this.info.plural}`;
    const timeoutSeconds = s.watchTimeoutSeconds + Math.floor(Math.random() * s.watchTimeoutSeconds);
    const query = {
      watch: 'true',
      resourceVersion: this.rv,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
    };
    const started = Date.now();
    const { res } = await this.host.shared.client.openWatch(
      op,
      this.info.plural,
      this.path,
      query,
      this.host.signal,
      timeoutSeconds * 1000 + s.watchIdleGraceMs,
    );
    this.counters.watches++;
    if (!this.initialDone) {
      // A resumed watch (WatchOptions.resourceVersion): the server accepted the revision.
      this.initialDone = true;
      this.host.push({ t: 'synced', kind: this.info.kind, initial: true });
    }
    let received = 0;
    const from = this.rv;
    try {
      await new Promise<void>((resolve, reject) => {
        let buf = '';
        let ended = false;
        const fail = (err: unknown): void => {
          res.destroy();
          reject(err);
        };
        const lines = (text: string): boolean => {
          buf += text;
          for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line.trim() === '') continue;
            try {
              this.onWatchLine(line, op);
              received++;
            } catch (err) {
              fail(err);
              return false;
            }
          }
          return true;
        };
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => void lines(chunk));
        res.on('end', () => {
          ended = true;
          if (lines('\n')) resolve();
        });
        res.on('error', (err) => reject(networkError(op, this.host.shared.client.server, err)));
        res.on('close', () => {
          if (!ended) reject(networkError(op, this.host.shared.client.server, new Error('connection lost')));
        });
      });
    } catch (err) {
      // An established watch that loses its connection is routine (API server restart, load
      // balancer idle timeout): logged, not reported, and resumed after a short backoff.
      if (!this.host.signal.aborted && isDatastoreError(err) && (err.code === 'ENETWORK' || err.code === 'ETIMEDOUT')) {
        this.counters.drops++;
        if (received > 0 || Date.now() - started >= s.backoff.resetAfterMs) this.failures = 0;
        this.failures++;
        const delay = this.backoffDelay();
        this.log.info(
          { ...this.ctx, resourceVersion: this.rv, received, retryInMs: delay },
          `${err.message}: resuming from resourceVersion ${this.rv} in ${delay} ms`,
        );
        return delay;
      }
      throw err;
    }
    // The server ended the watch (its timeout): go on from where it stopped.
    const productive = received > 0 || Date.now() - started >= s.backoff.resetAfterMs;
    this.log.debug({ ...this.ctx, from, to: this.rv, received }, `${op}: closed by the server`);
    if (productive) {
      this.failures = 0;
      return 0;
    }
    this.failures++;
    return this.backoffDelay();
  }

  private onWatchLine(line: string, op: string): void {
    let ev: unknown;
    try {
      ev = JSON.parse(line);
    } catch (err) {
      throw new DatastoreError('EBADRESPONSE', { op, message: 'a watch event is not JSON', cause: err });
    }
    if (!isRecord(ev) || typeof ev.type !== 'string' || !isRecord(ev.object)) {
      throw new DatastoreError('EBADRESPONSE', { op, message: 'not a watch event' });
    }
    switch (ev.type) {
      case 'ERROR': {
        const st = ev.object as KubeStatus;
        throw statusError(op, typeof st.code === 'number' ? st.code : 500, st, this.info.plural);
      }
      case 'BOOKMARK': {
        const meta = ev.object.metadata;
        const rv = isRecord(meta) && typeof meta.resourceVersion === 'string' ? meta.resourceVersion : '';
        if (rv !== '') {
          this.rv = rv;
          this.host.push({ t: 'position', kind: this.info.kind, rv });
        }
        return;
      }
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED':
        break;
      default:
        throw new DatastoreError('EBADRESPONSE', { op, message: `unknown watch event type ${ev.type}` });
    }
    const obj = normalize(this.info, ev.object, op);
    const key = keyOf(obj);
    const old = this.cache.get(key);
    const rv = rvOf(obj);
    if (rv !== '') this.rv = rv;
    let type: EventType;
    if (ev.type === 'DELETED') {
      if (!old) {
        this.counters.duplicates++;
        this.host.push({ t: 'position', kind: this.info.kind, rv: this.rv });
        return;
      }
      this.cache.delete(key);
      type = 'DELETED';
    } else {
      if (old && old.rv === rv && rv !== '') {
        this.counters.duplicates++;
        this.host.push({ t: 'position', kind: this.info.kind, rv: this.rv });
        return;
      }
      this.cache.set(key, { rv, object: obj });
      type = old ? 'MODIFIED' : 'ADDED';
    }
    this.host.push({
      t: 'event',
      event: { type, kind: this.info.kind, object: obj, resourceVersion: rv },
      position: this.rv,
    });
  }
}
