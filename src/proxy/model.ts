// The proxy's model: what one node's datapath must hold for the Services of the cluster, as
// computed from Kubernetes objects (services.ts) and kept up to date by change (tracker.ts).
// Nothing here touches BPF; `toNatFrontend` hands a frontend to the NAT writer.
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { FrontendFlags } from '../datapath/nat.js';
import type { NatFrontend } from './nat-writer.js';

export { FrontendFlags };

/** A client-node model as deserialised (Date fields) or in its JSON wire form (RFC 3339 strings). */
export type JsonForm<T> = T extends Date
  ? string
  : T extends Array<infer U>
    ? Array<JsonForm<U>>
    : T extends object
      ? { [K in keyof T]: JsonForm<T[K]> }
      : T;
export type ServiceObject = V1Service | JsonForm<V1Service>;
export type EndpointSliceObject = V1EndpointSlice | JsonForm<V1EndpointSlice>;

export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';
export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';
/** Read when `spec.loadBalancerSourceRanges` is empty, as kube-proxy does. */
export const ANNOTATION_LB_SOURCE_RANGES = 'service.beta.kubernetes.io/load-balancer-source-ranges';

export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;

export type ServiceProtocol = 'TCP' | 'UDP' | 'SCTP';
export const protocolNumbers: Record<ServiceProtocol, 6 | 17 | 132> = { TCP: 6, UDP: 17, SCTP: 132 };

export interface ServiceName {
  namespace: string;
  name: string;
}

/** One port of one Service, named as kube-proxy names it: namespace/name, port name, protocol. */
export interface ServicePortName extends ServiceName {
  /** `spec.ports[].name`; '' for a single unnamed port. */
  port: string;
  protocol: ServiceProtocol;
}

/** `default/web:http/TCP`; an unnamed port has no `:name` part (`default/web/TCP`). */
export function servicePortNameString(p: ServicePortName): string {
  return `${p.namespace}/${p.name}${p.port ? `:${p.port}` : ''}/${p.protocol}`;
}

export type FrontendKind = 'clusterIP' | 'nodePort' | 'externalIP' | 'loadBalancer';

/** The NodePort wildcard: a NodePort answers on every node address. */
export const NODEPORT_WILDCARD = '0.0.0.0';

/**
 * `default/web:http/TCP@10.96.0.10:80`; the NodePort wildcard is written `*`
 * (`default/web:http/TCP@*:30080`). Unique per frontend address, port and protocol of a Service.
 */
export function frontendKeyOf(servicePort: string, addr: string, port: number): string {
  return `${servicePort}@${addr === NODEPORT_WILDCARD ? '*' : addr}:${port}`;
}

export interface DesiredBackend {
  addr: string;
  port: number;
  /** The node the endpoint is on, when the EndpointSlice says. */
  nodeName?: string;
  /** On this node. */
  local: boolean;
  /** Effective conditions (`publishNotReadyAddresses` makes every endpoint ready). */
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

export interface DesiredFrontend {
  /** Stable and unique: see `frontendKeyOf`. */
  key: string;
  /**
   * Frontends with the same group have the same backends, in the same order (the NAT writer gives
   * them one backend set). It is the service port (`servicePortNameString`), with `|local` added
   * for a Local-policy frontend whose backends differ from the service port's cluster-wide set.
   */
  group: string;
  servicePort: ServicePortName;
  /** Dotted quad; `0.0.0.0` for a NodePort (every node address). */
  addr: string;
  port: number;
  /** 6 (TCP), 17 (UDP); 132 (SCTP) is reported as unsupported and never produced for now. */
  proto: 6 | 17 | 132;
  kind: FrontendKind;
  /** `FrontendFlags` bits. */
  flags: number;
  /** 0 without session affinity. */
  affinityTimeoutSeconds: number;
  /**
   * LoadBalancer frontends with `loadBalancerSourceRanges`: the IPv4 networks allowed, normalised
   * (`a.b.c.d/n`, sorted, no duplicates). Absent when every source is allowed. Empty (with
   * `SRC_DENIED` in `flags`) when ranges were given but none is a usable IPv4 network: fail closed.
   */
  sourceRanges?: string[];
  /**
   * What the datapath chooses from, local ones first (the first `localCount` are what a Local
   * policy may use): the ready endpoints, or, when none is ready, the serving terminating ones.
   * For a frontend with a Local policy the local part is chosen on its own (local ready ones, else
   * local serving terminating ones), followed by the cluster-wide choice's remote endpoints.
   * Shared between frontends: treat as read-only.
   */
  backends: readonly DesiredBackend[];
}

export interface HealthCheckNodePort {
  /** `spec.healthCheckNodePort`. */
  port: number;
  /** The Service (the health check is per Service, not per service port). */
  service: ServiceName;
  /** Ready endpoints of the Service on this node (the check answers 200 when there is one). */
  localEndpoints: number;
}

/** A problem in one object: it names the object and the field, and says what was done instead. */
export interface ProxyError {
  /** `Service default/web`, `EndpointSlice default/web-x7k2p`. */
  object: string;
  /** `spec.ports[1].port`. */
  field: string;
  reason: string;
}

export function formatProxyError(e: ProxyError): string {
  return `${e.object}: ${e.field}: ${e.reason}`;
}

function backendsEqual(a: readonly DesiredBackend[], b: readonly DesiredBackend[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (
      x.addr !== y.addr ||
      x.port !== y.port ||
      x.nodeName !== y.nodeName ||
      x.local !== y.local ||
      x.ready !== y.ready ||
      x.serving !== y.serving ||
      x.terminating !== y.terminating
    ) {
      return false;
    }
  }
  return true;
}

function rangesEqual(a: string[] | undefined, b: string[] | undefined): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Deep equality of two frontends. */
export function frontendsEqual(a: DesiredFrontend, b: DesiredFrontend): boolean {
  return (
    a === b ||
    (a.key === b.key &&
      a.group === b.group &&
      a.addr === b.addr &&
      a.port === b.port &&
      a.proto === b.proto &&
      a.kind === b.kind &&
      a.flags === b.flags &&
      a.affinityTimeoutSeconds === b.affinityTimeoutSeconds &&
      a.servicePort.namespace === b.servicePort.namespace &&
      a.servicePort.name === b.servicePort.name &&
      a.servicePort.port === b.servicePort.port &&
      a.servicePort.protocol === b.servicePort.protocol &&
      rangesEqual(a.sourceRanges, b.sourceRanges) &&
      backendsEqual(a.backends, b.backends))
  );
}

/** The NAT writer's view of a frontend. */
export function toNatFrontend(f: DesiredFrontend): NatFrontend {
  return {
    key: f.key,
    group: f.group,
    addr: f.addr,
    port: f.port,
    proto: f.proto,
    flags: f.flags,
    affinityTimeout: f.affinityTimeoutSeconds,
    sourceRanges: f.sourceRanges,
    backends: f.backends.map((b) => ({ addr: b.addr, port: b.port, local: b.local })),
  };
}
