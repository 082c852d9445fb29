// The agent's view of a datastore: one interface, two implementations.
//
//   - the Kubernetes API (`kubernetes.ts`), list+watch against an API server;
//   - the lab's file-backed store (`src/lab/store.ts`, FileStore).
//
// The interface itself (Datastore, Watch, WatchEvent, WatchOptions, ListResult) and the object
// types are defined next to the lab store, which was written first; they are re-exported here so
// agent code imports one module and cannot tell the two stores apart. In short:
//
//   datastore.list(kind)                 -> { items, resourceVersion }
//   datastore.watch(kinds, handler, opts) -> Watch
//     handler({ type: 'ADDED' | 'MODIFIED' | 'DELETED', kind, object, resourceVersion })
//       called for one event at a time, a returned promise is awaited; events of one kind come
//       in the order the store made the changes;
//     watch.synced           resolves once every kind's initial list has been delivered
//                            (the "SYNCED" point);
//     opts.onSynced(rv)      called then, and again after every relist (a "RESYNC": the events
//                            just delivered were the difference between what the consumer was told
//                            and what the store holds; MODIFIED only when resourceVersion changed);
//     opts.resourceVersion + opts.known
//                            resume a watch after `resourceVersion` without an initial list;
//     watch.stop()           no handler call starts after it.
//
// Objects are in their JSON wire form; `object.kind` is always set and `object.apiVersion` is the
// kind's entry in API_VERSIONS (a FelixConfiguration read from crd.projectcalico.org/v1 is
// presented as projectcalico.org/v3, as the lab stores it; the field names are the same).
export type {
  Datastore,
  EventOf,
  EventType,
  Kind,
  KindTypes,
  KubeObject,
  ListResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from '../../lab/store.js';
export { API_VERSIONS, KINDS, isKind, isNamespaced, keyOf, objectKey } from '../../lab/store.js';

import { KINDS, type Kind } from '../../lab/store.js';

/** What the node agent watches (the lab's Deployments are the lab controller's business). */
export const AGENT_KINDS: readonly Kind[] = KINDS.filter((k) => k !== 'Deployment');

/** The subset of a pino logger the datastores use (a pino Logger satisfies it). */
export interface DatastoreLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export const silentLogger: DatastoreLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

/**
 * Codes of DatastoreError; callers branch on `code`.
 *   ECONFIG        no usable API server configuration (kubeconfig, service account, environment)
 *   EEXPIRED       410 Gone: the resourceVersion (or continue token) is older than the server keeps
 *   ENOTFOUND      404: the resource (API group, CRD) is not served
 *   EUNAUTHORIZED  401: the credentials were refused
 *   EFORBIDDEN     403: RBAC does not allow the request
 *   EAPI           any other error status from the API server
 *   ENETWORK       the connection failed or was lost
 *   ETIMEDOUT      no answer (or, for a watch, no data) in time
 *   EBADRESPONSE   the server answered something that is not the expected JSON
 *   ESTOPPED       the watch was stopped before it synced
 */
export type DatastoreErrorCode =
  | 'ECONFIG'
  | 'EEXPIRED'
  | 'ENOTFOUND'
  | 'EUNAUTHORIZED'
  | 'EFORBIDDEN'
  | 'EAPI'
  | 'ENETWORK'
  | 'ETIMEDOUT'
  | 'EBADRESPONSE'
  | 'ESTOPPED';

export interface DatastoreErrorInit {
  /** The step that failed, e.g. `list services` or `watch endpointslices`. */
  op: string;
  message?: string;
  /** HTTP status (or the code of a watch ERROR event's Status). */
  statusCode?: number;
  /** The Kubernetes Status reason (`Expired`, `Forbidden`, ...). */
  reason?: string;
  hint?: string;
  cause?: unknown;
}

/** The datastores' one error type; the message reads as colon-joined steps, then a hint. */
export class DatastoreError extends Error {
  readonly code: DatastoreErrorCode;
  readonly op: string;
  readonly statusCode: number | undefined;
  readonly reason: string | undefined;
  readonly hint: string | undefined;

  constructor(code: DatastoreErrorCode, init: DatastoreErrorInit) {
    const parts = [init.op];
    if (init.statusCode !== undefined) parts.push(`${init.statusCode}${init.reason ? ` ${init.reason}` : ''}`);
    if (init.message) parts.push(init.message);
    if (init.hint) parts.push(init.hint);
    super(parts.join(': '), { cause: init.cause });
    this.name = 'DatastoreError';
    this.code = code;
    this.op = init.op;
    this.statusCode = init.statusCode;
    this.reason = init.reason;
    this.hint = init.hint;
  }
}

export function isDatastoreError(err: unknown, code?: DatastoreErrorCode): err is DatastoreError {
  return err instanceof DatastoreError && (code === undefined || err.code === code);
}
