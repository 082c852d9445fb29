// The lab's datastore of Kubernetes objects, shared by the processes of one lab (the CLI, the lab
// controller, later one agent per node) through files under /run/sluice/lab-<name>/store/.
//
// The `Datastore` interface (list + watch with typed events) is what consumers see; the agent's
// Kubernetes-API datastore implements the same interface, so the calculation layer cannot tell
// them apart. Objects are in their JSON wire form, as `kubectl get -o json` prints them: the
// client-node model types with timestamps as RFC 3339 strings (`Wire<T>`).
//
// On disk (FileStore):
//   current          the generation number of the live log, replaced by rename
//   log-<gen>.jsonl  one JSON record a line: first `{"op":"snapshot","rev":R,"count":N}` and the N
//                    objects of the state at revision R (`{"op":"object","object":...}`), then
//                    one `{"op":"event","rev":r,"type":"ADDED|MODIFIED|DELETED","object":...}` per
//                    change, revisions strictly increasing by one
//   lock             held by a writer (O_EXCL file with its pid and start time; broken when that
//                    process is gone)
// Writers take the lock, read the log to its end, and append the events of one transaction with
// a single write. Readers never lock: they keep the log open and read complete lines (a reader may
// see a write half-way; it waits for the line's end). A writer killed in the middle of its write
// leaves a line without an end: the next writer ends it, and every reader skips it. When the log
// holds many more events than objects, a writer starts a new generation whose snapshot is the
// current state; readers holding the old file read it to its end first, so a running watch never
// misses an event. Only a watch resumed from a revision older than the snapshot has a gap: it
// relists, delivering the difference to the objects it was told it knows.
//
// Watching: fs.watch on the directory wakes readers when the log changes, with a slow poll as a
// fallback; events are delivered in revision order, one at a time (a handler's promise is awaited).
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type {
  V1Deployment,
  V1EndpointSlice,
  V1Namespace,
  V1NetworkPolicy,
  V1Node,
  V1ObjectMeta,
  V1Pod,
  V1Service,
} from '@kubernetes/client-node';

// ---------------------------------------------------------------------------------------------
// Object types

/** A client-node model in its JSON form: Date fields are RFC 3339 strings. */
export type Wire<T> = T extends Date
  ? string
  : T extends Array<infer U>
    ? Array<Wire<U>>
    : T extends object
      ? { [K in keyof T]: Wire<T[K]> }
      : T;

export type ObjectMeta = Wire<V1ObjectMeta>;
export type Namespace = Wire<V1Namespace>;
export type Node = Wire<V1Node>;
export type Pod = Wire<V1Pod>;
export type Deployment = Wire<V1Deployment>;
export type Service = Wire<V1Service>;
export type EndpointSlice = Wire<V1EndpointSlice>;
export type NetworkPolicy = Wire<V1NetworkPolicy>;

/** Calico's FelixConfiguration (projectcalico.org/v3 field names); the spec is checked by resources.ts. */
export interface FelixConfiguration {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  spec?: Record<string, unknown>;
}

/** Calico's projectcalico.org/v3 policy resources; the policy engine checks their specs. */
export interface CalicoResource {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  spec?: Record<string, unknown>;
}

export interface KindTypes {
  Namespace: Namespace;
  Node: Node;
  Pod: Pod;
  Deployment: Deployment;
  Service: Service;
  EndpointSlice: EndpointSlice;
  NetworkPolicy: NetworkPolicy;
  FelixConfiguration: FelixConfiguration;
  Tier: CalicoResource;
  /** projectcalico.org/v3 NetworkPolicy: named apart from Kubernetes' NetworkPolicy. */
  CalicoNetworkPolicy: CalicoResource;
  GlobalNetworkPolicy: CalicoResource;
  NetworkSet: CalicoResource;
  GlobalNetworkSet: CalicoResource;
  HostEndpoint: CalicoResource;
}

export type Kind = keyof KindTypes;
export type KubeObject = KindTypes[Kind];

export const KINDS: readonly Kind[] = [
  'Namespace',
  'Node',
  'Pod',
  'Deployment',
  'Service',
  'EndpointSlice',
  'NetworkPolicy',
  'FelixConfiguration',
  'Tier',
  'CalicoNetworkPolicy',
  'GlobalNetworkPolicy',
  'NetworkSet',
  'GlobalNetworkSet',
  'HostEndpoint',
];

/** apiVersion of each kind as stored (crd.projectcalico.org/v1 is stored as projectcalico.org/v3). */
export const API_VERSIONS: Readonly<Record<Kind, string>> = {
  Namespace: 'v1',
  Node: 'v1',
  Pod: 'v1',
  Deployment: 'apps/v1',
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  NetworkPolicy: 'networking.k8s.io/v1',
  FelixConfiguration: 'projectcalico.org/v3',
  Tier: 'projectcalico.org/v3',
  CalicoNetworkPolicy: 'projectcalico.org/v3',
  GlobalNetworkPolicy: 'projectcalico.org/v3',
  NetworkSet: 'projectcalico.org/v3',
  GlobalNetworkSet: 'projectcalico.org/v3',
  HostEndpoint: 'projectcalico.org/v3',
};

/** The kind a manifest's (apiVersion, kind) is stored as. */
export function storedKind(apiVersion: unknown, kind: unknown): unknown {
  const calico = apiVersion === 'projectcalico.org/v3' || apiVersion === 'crd.projectcalico.org/v1';
  return calico && kind === 'NetworkPolicy' ? 'CalicoNetworkPolicy' : kind;
}

const CLUSTER_SCOPED: ReadonlySet<Kind> = new Set<Kind>([
  'Namespace',
  'Node',
  'FelixConfiguration',
  'Tier',
  'GlobalNetworkPolicy',
  'GlobalNetworkSet',
  'HostEndpoint',
]);

export function isKind(k: unknown): k is Kind {
  return typeof k === 'string' && (KINDS as readonly string[]).includes(k);
}

export function isNamespaced(kind: Kind): boolean {
  return !CLUSTER_SCOPED.has(kind);
}

/** `Kind/namespace/name` (namespace empty for cluster-scoped kinds): the identity of an object. */
export function objectKey(kind: Kind, namespace: string | undefined, name: string): string {
  return `${kind}/${isNamespaced(kind) ? (namespace ?? 'default') : ''}/${name}`;
}

export function keyOf(obj: KubeObject): string {
  if (!isKind(obj.kind)) throw new Error(`object without a known kind: ${JSON.stringify(obj.kind)}`);
  return objectKey(obj.kind, obj.metadata?.namespace, obj.metadata?.name ?? '');
}

/** `Kind namespace/name` or `Kind name`, for messages. */
export function describeObject(kind: string, namespace: string | undefined, name: string | undefined): string {
  const n = name || '(no name)';
  return isKind(kind) && !isNamespaced(kind) ? `${kind} ${n}` : `${kind} ${namespace ?? 'default'}/${n}`;
}

/** A Kubernetes timestamp (RFC 3339, seconds). */
export function timestamp(d: Date = new Date()): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// ---------------------------------------------------------------------------------------------
// The interface the agent consumes

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/**
 * One change. `resourceVersion` is the store revision of the change (for DELETED: of the
 * deletion; `object` is then the last state). Revisions are opaque strings to consumers; this
 * store's are decimal integers that increase by one per change.
 */
export interface WatchEvent<K extends Kind = Kind> {
  type: EventType;
  kind: K;
  object: KindTypes[K];
  resourceVersion: string;
}

/** The events of a watch on `K` kinds, a union discriminated by `kind`. */
export type EventOf<K extends Kind> = { [X in K]: WatchEvent<X> }[K];

export interface ListResult<K extends Kind> {
  items: Array<KindTypes[K]>;
  /** The revision the list is consistent at. */
  resourceVersion: string;
}

export interface WatchOptions {
  /**
   * Resume after this revision: deliver only the changes after it, no initial list. If the store
   * no longer has them (compacted), the watch relists and delivers the difference between the
   * current objects and `known` (ADDED / MODIFIED when the resourceVersion differs / DELETED).
   * Without it, the watch starts with the initial list: ADDED for every object.
   */
  resourceVersion?: string;
  /** The objects the consumer holds at `resourceVersion` (only used for a relist). */
  known?: Iterable<KubeObject>;
  /** Called after the initial list (or the catch-up of a resumed watch), and after a relist. */
  onSynced?: (resourceVersion: string) => void;
  /** A handler threw or the store could not be read (default: printed on stderr). */
  onError?: (err: Error) => void;
}

export interface Watch {
  /** Resolves once the initial list (or catch-up) has been delivered. */
  readonly synced: Promise<void>;
  /** The revision of the last change delivered (or of the initial list). */
  readonly resourceVersion: string;
  /** Resolves when every change up to revision `rv` has been delivered. */
  waitFor(rv: string, timeoutMs?: number): Promise<void>;
  stop(): void;
}

/**
 * A source of Kubernetes objects: the lab's FileStore, or the Kubernetes API (agent issue).
 * Events of one watch come in revision order; the handler is called for one event at a time.
 */
export interface Datastore {
  list<K extends Kind>(kind: K): Promise<ListResult<K>>;
  watch<K extends Kind>(
    kinds: readonly K[],
    handler: (event: EventOf<K>) => void | Promise<void>,
    opts?: WatchOptions,
  ): Watch;
}

export type PutResult = 'created' | 'configured' | 'unchanged';

/** Reads and writes inside one transaction: all of its writes are committed together, or none. */
export interface StoreTx {
  get<K extends Kind>(kind: K, namespace: string | undefined, name: string): KindTypes[K] | undefined;
  list<K extends Kind>(kind: K): Array<KindTypes[K]>;
  /**
   * Creates or replaces the object (identified by kind, namespace and name). Fills in uid,
   * creationTimestamp, generation (bumped when `spec` changes) and resourceVersion. Writing an
   * object equal to the stored one (metadata bookkeeping aside) changes nothing.
   */
  put<T extends KubeObject>(obj: T): { result: PutResult; object: T };
  /** Removes the object; returns the last state, or undefined if there was none. */
  delete<K extends Kind>(kind: K, namespace: string | undefined, name: string): KindTypes[K] | undefined;
  /** The revision the transaction started at. */
  readonly revision: number;
}

export interface WritableDatastore extends Datastore {
  get<K extends Kind>(kind: K, namespace: string | undefined, name: string): Promise<KindTypes[K] | undefined>;
  apply<T extends KubeObject>(obj: T): Promise<{ result: PutResult; object: T }>;
  delete<K extends Kind>(kind: K, namespace: string | undefined, name: string): Promise<KindTypes[K] | undefined>;
  transaction<T>(fn: (tx: StoreTx) => T): Promise<T>;
}

// ---------------------------------------------------------------------------------------------
// Log records and reading

interface SnapshotRecord {
  op: 'snapshot';
  rev: number;
  count: number;
}
interface ObjectRecord {
  op: 'object';
  object: KubeObject;
}
interface EventRecord {
  op: 'event';
  rev: number;
  type: EventType;
  object: KubeObject;
}
type LogRecord = SnapshotRecord | ObjectRecord | EventRecord;

const CURRENT = 'current';
const LOCK = 'lock';
const logName = (gen: number): string => `log-${gen}.jsonl`;

/** Compact when the live log holds more than this many events and twice as many as objects. */
const COMPACT_MIN_EVENTS = 20_000;
const POLL_MS = 500;
const LOCK_TIMEOUT_MS = 15_000;

function readCurrent(dir: string): number | undefined {
  try {
    const s = fs.readFileSync(path.join(dir, CURRENT), 'utf8').trim();
    return /^\d+$/.test(s) ? Number(s) : undefined;
  } catch {
    return undefined;
  }
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

/**
 * The state a log describes, read incrementally: follows generation switches, keeps an
 * incomplete last line until it is complete, skips lines that are not valid records.
 */
class LogReader {
  /** Objects by key at `rev`. */
  readonly objects = new Map<string, KubeObject>();
  rev = 0;
  gen = -1;
  /** Revision of the current file's snapshot. */
  snapshotRev = 0;
  eventsInFile = 0;
  skipped = 0;
  private fd = -1;
  private pos = 0;
  private partial = '';
  private buf: Buffer | undefined;
  /** Keeps a UTF-8 character split between two reads whole. */
  private decoder = new StringDecoder('utf8');
  private snapshotLeft = 0;
  /** While reading a new generation's snapshot during a switch: the objects it holds. */
  private pendingSnapshot: Map<string, KubeObject> | undefined;

  constructor(readonly dir: string) {}

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }

  /** True when the last line read has no end yet. */
  get hasPartial(): boolean {
    return this.partial.length > 0;
  }

  /** Bytes read from the current file (its size, when nothing is pending). */
  get position(): number {
    return this.pos;
  }

  /**
   * Reads everything new. Each event is passed to `onEvent` after it has been applied;
   * `onRelist` gets the previous and the new state when a new generation starts beyond `rev`.
   */
  read(
    onEvent?: (rec: EventRecord, previous: KubeObject | undefined) => void,
    onRelist?: (previous: Map<string, KubeObject>) => void,
  ): void {
    for (;;) {
      if (this.fd < 0) {
        const gen = readCurrent(this.dir);
        if (gen === undefined) throw new Error(`${this.dir} is not a lab store (no ${CURRENT} file)`);
        this.openGen(gen);
      }
      this.drain(onEvent, onRelist);
      // Has a writer started a new generation? The old file is complete then: drain it again
      // (a write may have landed after the drain above) and switch.
      const gen = readCurrent(this.dir);
      if (gen === undefined || gen === this.gen) return;
      this.drain(onEvent, onRelist);
      this.close();
      this.openGen(gen);
    }
  }

  private openGen(gen: number): void {
    this.fd = fs.openSync(path.join(this.dir, logName(gen)), 'r');
    this.gen = gen;
    this.pos = 0;
    this.partial = '';
    this.decoder = new StringDecoder('utf8');
    this.eventsInFile = 0;
    this.snapshotLeft = -1; // header expected
  }

  private drain(
    onEvent?: (rec: EventRecord, previous: KubeObject | undefined) => void,
    onRelist?: (previous: Map<string, KubeObject>) => void,
  ): void {
    const buf = (this.buf ??= Buffer.allocUnsafe(1 << 20));
    for (;;) {
      const n = fs.readSync(this.fd, buf, 0, buf.length, this.pos);
      if (n <= 0) return;
      this.pos += n;
      const text = this.partial + this.decoder.write(buf.subarray(0, n));
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) if (line !== '') this.apply(line, onEvent, onRelist);
    }
  }

  private apply(
    line: string,
    onEvent?: (rec: EventRecord, previous: KubeObject | undefined) => void,
    onRelist?: (previous: Map<string, KubeObject>) => void,
  ): void {
    let rec: LogRecord;
    try {
      rec = JSON.parse(line) as LogRecord;
    } catch {
      this.skipped++; // the remains of a writer killed mid-write
      return;
    }
    if (this.snapshotLeft === -1) {
      if (rec.op !== 'snapshot') throw new Error(`${this.dir}/${logName(this.gen)}: no snapshot header`);
      this.snapshotRev = rec.rev;
      this.snapshotLeft = rec.count;
      if (rec.rev > this.rev || this.rev === 0) this.pendingSnapshot = new Map();
      if (this.snapshotLeft === 0) this.finishSnapshot(onRelist);
      return;
    }
    if (this.snapshotLeft > 0) {
      if (rec.op === 'object') {
        this.pendingSnapshot?.set(keyOf(rec.object), rec.object);
        this.snapshotLeft--;
        if (this.snapshotLeft === 0) this.finishSnapshot(onRelist);
        return;
      }
      throw new Error(`${this.dir}/${logName(this.gen)}: snapshot shorter than its header says`);
    }
    if (rec.op !== 'event') return;
    this.eventsInFile++;
    if (rec.rev <= this.rev) return; // already known (a switch to a new generation)
    const key = keyOf(rec.object);
    const previous = this.objects.get(key);
    if (rec.type === 'DELETED') this.objects.delete(key);
    else this.objects.set(key, rec.object);
    this.rev = rec.rev;
    onEvent?.(rec, previous);
  }

  private finishSnapshot(onRelist?: (previous: Map<string, KubeObject>) => void): void {
    const snap = this.pendingSnapshot;
    this.pendingSnapshot = undefined;
    if (!snap) return; // we are ahead of (or at) the snapshot: the events follow
    const previous = new Map(this.objects);
    this.objects.clear();
    for (const [k, v] of snap) this.objects.set(k, v);
    this.rev = Math.max(this.rev, this.snapshotRev);
    onRelist?.(previous);
  }

  /** Seeds the state (a resumed watch): the objects the consumer holds at revision `rev`. */
  seed(rev: number, known: Iterable<KubeObject>): void {
    this.rev = rev;
    for (const o of known) this.objects.set(keyOf(o), o);
  }
}

// ---------------------------------------------------------------------------------------------
// Locking

interface LockOwner {
  pid: number;
  starttime: string;
}

function procStarttime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' || fields[0] === 'X' ? undefined : fields[19]; // a zombie holds nothing
  } catch {
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function acquireLock(dir: string): Promise<() => void> {
  const file = path.join(dir, LOCK);
  const me: LockOwner = { pid: process.pid, starttime: procStarttime(process.pid) ?? '' };
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  let delay = 1;
  for (;;) {
    try {
      const fd = fs.openSync(file, 'wx', 0o600);
      fs.writeSync(fd, JSON.stringify(me));
      fs.closeSync(fd);
      return () => {
        try {
          fs.unlinkSync(file);
        } catch {
          // removed by a sweep
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let owner: LockOwner | undefined;
    try {
      owner = JSON.parse(fs.readFileSync(file, 'utf8')) as LockOwner;
    } catch {
      owner = undefined; // being written, or just removed
    }
    if (owner && procStarttime(owner.pid) !== owner.starttime) {
      // Its owner is gone: break it by renaming (only one breaker wins the rename).
      const broken = `${file}.broken-${process.pid}-${Math.random().toString(36).slice(2)}`;
      try {
        fs.renameSync(file, broken);
        fs.unlinkSync(broken);
      } catch {
        // someone else broke it
      }
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `store ${dir} is locked${owner ? ` by pid ${owner.pid}` : ''} for more than ${LOCK_TIMEOUT_MS} ms`,
      );
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 20);
  }
}

// ---------------------------------------------------------------------------------------------
// The file store

function sameContent(a: KubeObject, b: KubeObject): boolean {
  const strip = (o: KubeObject): unknown => {
    const { resourceVersion: _rv, generation: _g, ...meta } = o.metadata ?? {};
    return { ...o, metadata: meta };
  };
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

function checkObject(obj: KubeObject): Kind {
  if (!isKind(obj.kind)) throw new Error(`cannot store kind ${JSON.stringify(obj.kind)}`);
  const name = obj.metadata?.name;
  if (!name) throw new Error(`cannot store a ${obj.kind} without metadata.name`);
  return obj.kind;
}

class Tx implements StoreTx {
  readonly events: EventRecord[] = [];
  private readonly changed = new Map<string, KubeObject | null>();

  constructor(
    private readonly base: Map<string, KubeObject>,
    readonly revision: number,
  ) {}

  private current(key: string): KubeObject | undefined {
    const c = this.changed.get(key);
    if (c === null) return undefined;
    return c ?? this.base.get(key);
  }

  get<K extends Kind>(kind: K, namespace: string | undefined, name: string): KindTypes[K] | undefined {
    const o = this.current(objectKey(kind, namespace, name));
    return o ? (clone(o) as KindTypes[K]) : undefined;
  }

  list<K extends Kind>(kind: K): Array<KindTypes[K]> {
    const out: Array<KindTypes[K]> = [];
    const prefix = `${kind}/`;
    for (const [k, v] of this.base) {
      if (!k.startsWith(prefix) || this.changed.has(k)) continue;
      out.push(clone(v) as KindTypes[K]);
    }
    for (const [k, v] of this.changed) if (v && k.startsWith(prefix)) out.push(clone(v) as KindTypes[K]);
    return out;
  }

  put<T extends KubeObject>(input: T): { result: PutResult; object: T } {
    const kind = checkObject(input);
    const obj = clone(input);
    obj.apiVersion ??= API_VERSIONS[kind];
    const meta = (obj.metadata ??= {});
    if (isNamespaced(kind)) meta.namespace ??= 'default';
    else delete meta.namespace;
    const key = keyOf(obj);
    const old = this.current(key);
    if (old) {
      meta.uid = old.metadata?.uid;
      meta.creationTimestamp = old.metadata?.creationTimestamp;
      meta.generation = old.metadata?.generation;
      if ('spec' in obj && JSON.stringify((old as { spec?: unknown }).spec) !== JSON.stringify(obj.spec))
        meta.generation = (meta.generation ?? 1) + 1;
      if (sameContent(old, obj)) return { result: 'unchanged', object: clone(old) as T };
    } else {
      meta.uid ??= randomUUID();
      meta.creationTimestamp ??= timestamp();
      if ('spec' in obj) meta.generation = 1;
    }
    const rev = this.revision + this.events.length + 1;
    meta.resourceVersion = String(rev);
    this.changed.set(key, obj);
    this.events.push({ op: 'event', rev, type: old ? 'MODIFIED' : 'ADDED', object: obj });
    return { result: old ? 'configured' : 'created', object: clone(obj) };
  }

  delete<K extends Kind>(kind: K, namespace: string | undefined, name: string): KindTypes[K] | undefined {
    const key = objectKey(kind, namespace, name);
    const old = this.current(key);
    if (!old) return undefined;
    const rev = this.revision + this.events.length + 1;
    const last = clone(old);
    (last.metadata ??= {}).resourceVersion = String(rev);
    this.changed.set(key, null);
    this.events.push({ op: 'event', rev, type: 'DELETED', object: last });
    return clone(last) as KindTypes[K];
  }
}

export interface FileStoreOptions {
  /** Create the store if it does not exist (default true). */
  create?: boolean;
  /** Start a new log generation once the log has this many events and twice as many as objects (default 20000). */
  compactMinEvents?: number;
}

/** The lab datastore on files; see the top of this file. */
export class FileStore implements WritableDatastore {
  private readonly reader: LogReader;
  private readonly watches = new Set<FileWatch>();

  private constructor(
    readonly dir: string,
    private readonly compactMinEvents: number,
  ) {
    this.reader = new LogReader(dir);
  }

  /** Opens (and by default creates) the store in `dir`. */
  static async open(dir: string, opts: FileStoreOptions = {}): Promise<FileStore> {
    if (readCurrent(dir) === undefined) {
      if (opts.create === false) throw new Error(`no lab store in ${dir}`);
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const release = await acquireLock(dir);
      try {
        if (readCurrent(dir) === undefined) {
          const header: SnapshotRecord = { op: 'snapshot', rev: 0, count: 0 };
          fs.writeFileSync(path.join(dir, logName(0)), JSON.stringify(header) + '\n', { mode: 0o600 });
          writeAtomic(path.join(dir, CURRENT), '0\n');
        }
      } finally {
        release();
      }
    }
    const s = new FileStore(dir, opts.compactMinEvents ?? COMPACT_MIN_EVENTS);
    s.reader.read();
    return s;
  }

  /** The generation of the live log (grows when the log is compacted). */
  get generation(): number {
    return this.reader.gen;
  }

  /** The store's current revision (as far as this process has read). */
  get revision(): number {
    return this.reader.rev;
  }

  /** Reads what other processes have written. */
  refresh(): void {
    this.reader.read();
  }

  close(): void {
    for (const w of this.watches) w.stop();
    this.reader.close();
  }

  async list<K extends Kind>(kind: K): Promise<ListResult<K>> {
    this.refresh();
    const prefix = `${kind}/`;
    const items: Array<KindTypes[K]> = [];
    for (const [k, v] of this.reader.objects) if (k.startsWith(prefix)) items.push(clone(v) as KindTypes[K]);
    items.sort(byKey);
    return { items, resourceVersion: String(this.reader.rev) };
  }

  /** Synchronous list of what this process has read so far (after refresh()). */
  snapshot<K extends Kind>(kind: K): Array<KindTypes[K]> {
    const prefix = `${kind}/`;
    const items: Array<KindTypes[K]> = [];
    for (const [k, v] of this.reader.objects) if (k.startsWith(prefix)) items.push(clone(v) as KindTypes[K]);
    return items.sort(byKey);
  }

  async get<K extends Kind>(kind: K, namespace: string | undefined, name: string): Promise<KindTypes[K] | undefined> {
    this.refresh();
    const o = this.reader.objects.get(objectKey(kind, namespace, name));
    return o ? (clone(o) as KindTypes[K]) : undefined;
  }

  apply<T extends KubeObject>(obj: T): Promise<{ result: PutResult; object: T }> {
    return this.transaction((tx) => tx.put(obj));
  }

  delete<K extends Kind>(kind: K, namespace: string | undefined, name: string): Promise<KindTypes[K] | undefined> {
    return this.transaction((tx) => tx.delete(kind, namespace, name));
  }

  /**
   * Runs `fn` under the store's lock on the latest state and commits its writes in one append.
   * If `fn` throws, nothing is written.
   */
  async transaction<T>(fn: (tx: StoreTx) => T): Promise<T> {
    const release = await acquireLock(this.dir);
    try {
      this.reader.read();
      if (this.reader.hasPartial) {
        // A writer was killed in the middle of its append: end its line so it is skipped.
        this.appendRaw('\n');
        this.reader.read();
      }
      const tx = new Tx(this.reader.objects, this.reader.rev);
      const result = fn(tx);
      if (tx.events.length > 0) {
        this.appendRaw(tx.events.map((e) => JSON.stringify(e) + '\n').join(''));
        this.reader.read();
        this.maybeCompact();
      }
      return result;
    } finally {
      release();
    }
  }

  private appendRaw(text: string): void {
    const file = path.join(this.dir, logName(this.reader.gen));
    const fd = fs.openSync(file, 'a');
    try {
      const buf = Buffer.from(text, 'utf8');
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
    } finally {
      fs.closeSync(fd);
    }
  }

  private maybeCompact(): void {
    const r = this.reader;
    if (r.eventsInFile < this.compactMinEvents || r.eventsInFile < 2 * r.objects.size) return;
    const gen = r.gen + 1;
    const lines = [JSON.stringify({ op: 'snapshot', rev: r.rev, count: r.objects.size } satisfies SnapshotRecord)];
    for (const o of r.objects.values()) lines.push(JSON.stringify({ op: 'object', object: o } satisfies ObjectRecord));
    writeAtomic(path.join(this.dir, logName(gen)), lines.join('\n') + '\n');
    writeAtomic(path.join(this.dir, CURRENT), `${gen}\n`);
    r.read();
    try {
      fs.unlinkSync(path.join(this.dir, logName(gen - 1)));
    } catch {
      // gone already
    }
  }

  watch<K extends Kind>(
    kinds: readonly K[],
    handler: (event: EventOf<K>) => void | Promise<void>,
    opts: WatchOptions = {},
  ): Watch {
    const w = new FileWatch(this.dir, kinds, handler as (e: WatchEvent) => void | Promise<void>, opts, () =>
      this.watches.delete(w),
    );
    this.watches.add(w);
    return w;
  }
}

function byKey(a: KubeObject, b: KubeObject): number {
  const ka = keyOf(a);
  const kb = keyOf(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

function rvOf(o: KubeObject): number {
  return Number(o.metadata?.resourceVersion ?? 0);
}

type QueueEntry = { event: WatchEvent } | { sync: number; notify: boolean };

class FileWatch implements Watch {
  readonly synced: Promise<void>;
  private readonly reader: LogReader;
  private readonly kinds: ReadonlySet<string>;
  private readonly queue: QueueEntry[] = [];
  private delivering = false;
  private delivered = 0;
  private stopped = false;
  private markSynced!: () => void;
  private syncedYet = false;
  private readonly waiters: Array<{ rv: number; resolve: () => void }> = [];
  private watcher: fs.FSWatcher | undefined;
  private readonly timer: NodeJS.Timeout;
  private scheduled = false;

  constructor(
    dir: string,
    kinds: readonly Kind[],
    private readonly handler: (e: WatchEvent) => void | Promise<void>,
    private readonly opts: WatchOptions,
    private readonly onStop: () => void,
  ) {
    this.reader = new LogReader(dir);
    this.kinds = new Set(kinds);
    this.synced = new Promise<void>((resolve) => (this.markSynced = resolve));
    if (opts.resourceVersion !== undefined) {
      const rv = Number(opts.resourceVersion);
      if (!/^\d+$/.test(opts.resourceVersion))
        throw new Error(`not a resourceVersion of this store: ${opts.resourceVersion}`);
      this.reader.seed(rv, opts.known ?? []);
      this.delivered = rv;
    }
    try {
      this.watcher = fs.watch(dir, { persistent: false }, () => this.schedule());
      this.watcher.on('error', () => undefined);
    } catch {
      this.watcher = undefined; // the poll below still works
    }
    this.timer = setInterval(() => this.schedule(), POLL_MS);
    this.timer.unref();
    setImmediate(() => this.poll(true));
  }

  get resourceVersion(): string {
    return String(this.delivered);
  }

  waitFor(rv: string, timeoutMs = 30_000): Promise<void> {
    const n = Number(rv);
    if (this.syncedYet && this.delivered >= n) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const entry = {
        rv: n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(entry);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`watch did not reach revision ${rv} within ${timeoutMs} ms (at ${this.delivered})`));
      }, timeoutMs);
      this.waiters.push(entry);
      this.schedule();
    });
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.watcher?.close();
    clearInterval(this.timer);
    this.reader.close();
    this.queue.length = 0;
    this.onStop();
  }

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.poll(false);
    });
  }

  private error(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    if (this.opts.onError) this.opts.onError(e);
    else process.stderr.write(`lab store watch: ${e.message}\n`);
  }

  private poll(initial: boolean): void {
    if (this.stopped) return;
    // The initial list: read the whole log, then deliver the state as ADDED events.
    const listing = initial && this.opts.resourceVersion === undefined;
    let relisted = false;
    try {
      this.reader.read(
        listing
          ? undefined
          : (rec) => {
              if (this.kinds.has(rec.object.kind ?? '')) this.push(rec.type, rec.object, rec.rev);
            },
        listing
          ? undefined
          : (previous) => {
              relisted = true;
              this.relist(previous);
            },
      );
    } catch (err) {
      this.error(err);
      return;
    }
    if (listing) {
      const items = [...this.reader.objects.values()].filter((o) => this.kinds.has(o.kind ?? ''));
      items.sort((a, b) => rvOf(a) - rvOf(b));
      for (const o of items) this.push('ADDED', o, rvOf(o));
    }
    this.queue.push({ sync: this.reader.rev, notify: initial || relisted });
    this.deliver();
  }

  /** The store moved past a gap: deliver the difference between what we had and what is. */
  private relist(previous: Map<string, KubeObject>): void {
    const now = this.reader.objects;
    const rev = this.reader.rev;
    for (const [k, o] of previous) {
      if (!now.has(k) && this.kinds.has(o.kind ?? '')) {
        const last = clone(o);
        (last.metadata ??= {}).resourceVersion = String(rev);
        this.push('DELETED', last, rev);
      }
    }
    const changed: Array<{ o: KubeObject; type: EventType }> = [];
    for (const [k, o] of now) {
      if (!this.kinds.has(o.kind ?? '')) continue;
      const before = previous.get(k);
      if (before?.metadata?.resourceVersion === o.metadata?.resourceVersion) continue;
      changed.push({ o, type: before ? 'MODIFIED' : 'ADDED' });
    }
    changed.sort((a, b) => rvOf(a.o) - rvOf(b.o));
    for (const c of changed) this.push(c.type, c.o, rvOf(c.o));
  }

  private push(type: EventType, object: KubeObject, rev: number): void {
    this.queue.push({
      event: { type, kind: object.kind as Kind, object: clone(object), resourceVersion: String(rev) },
    });
  }

  private deliver(): void {
    if (this.delivering || this.stopped) return;
    this.delivering = true;
    void (async () => {
      try {
        while (this.queue.length > 0 && !this.stopped) {
          const entry = this.queue.shift() as QueueEntry;
          if ('sync' in entry) {
            this.delivered = Math.max(this.delivered, entry.sync);
            if (entry.notify) {
              try {
                this.opts.onSynced?.(String(entry.sync));
              } catch (err) {
                this.error(err);
              }
              if (!this.syncedYet) {
                this.syncedYet = true;
                this.markSynced();
              }
            }
            this.wake();
            continue;
          }
          try {
            await this.handler(entry.event);
          } catch (err) {
            this.error(err);
          }
          // During the initial list events carry their objects' revisions, not the list's.
          if (this.syncedYet) {
            this.delivered = Math.max(this.delivered, Number(entry.event.resourceVersion));
            this.wake();
          }
        }
      } finally {
        this.delivering = false;
      }
    })();
  }

  private wake(): void {
    if (!this.syncedYet) return;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i];
      if (w.rv <= this.delivered) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }
}
