// From Kubernetes Services and EndpointSlices to the frontends one node's datapath must hold, with
// kube-proxy's semantics (IPv4 only for now). Pure: no BPF, no I/O. `computeFrontends` does the
// whole cluster at once; tracker.ts uses the same pieces (`parseEndpointSlice`, `computeService`,
// `FrontendClaims`) to recompute only the Services that changed.
//
// Invalid data produces a `ProxyError` naming the object and the field, and costs only what it
// must: a bad port loses that port, a bad externalIP that frontend; other Services never notice.
import { ipv4ToU32 } from '../packet/addr.js';
import { isIPv6 } from 'node:net';
import {
  ANNOTATION_LB_SOURCE_RANGES,
  DEFAULT_AFFINITY_TIMEOUT_SECONDS,
  FrontendFlags,
  LABEL_HEADLESS,
  LABEL_SERVICE_NAME,
  LABEL_SERVICE_PROXY_NAME,
  MAX_AFFINITY_TIMEOUT_SECONDS,
  NODEPORT_WILDCARD,
  frontendKeyOf,
  protocolNumbers,
  servicePortNameString,
  type DesiredBackend,
  type DesiredFrontend,
  type EndpointSliceObject,
  type FrontendKind,
  type HealthCheckNodePort,
  type ProxyError,
  type ServiceObject,
  type ServicePortName,
} from './model.js';

// ---------------------------------------------------------------------------------------------
// Addresses

/** "a.b.c.d" as an unsigned 32-bit number, or undefined. Leading zeros are decimal, as Kubernetes reads them. */
export function parseIPv4(s: unknown): number | undefined {
  if (typeof s !== 'string') return undefined;
  try {
    return ipv4ToU32(s);
  } catch {
    return undefined;
  }
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

const LEADING_ZERO = /(^|\.)0[0-9]/;

type Addr = { v4: string; num: number } | 'v6' | 'invalid';

/** An address from a Service: IPv4 (canonical form), IPv6 (ignored for now) or neither. */
function classify(s: unknown): Addr {
  const n = parseIPv4(s);
  if (n !== undefined) return { v4: LEADING_ZERO.test(s as string) ? formatIPv4(n) : (s as string), num: n };
  return typeof s === 'string' && isIPv6(s) ? 'v6' : 'invalid';
}

type Cidr = { v4: string } | 'v6' | { invalid: string };

/** A source range: a normalised IPv4 network, an IPv6 one (ignored for now), or why it is refused. */
export function parseCidr(raw: unknown): Cidr {
  if (typeof raw !== 'string') return { invalid: 'not a string' };
  const s = raw.trim();
  const slash = s.indexOf('/');
  if (slash < 0) return { invalid: `${JSON.stringify(raw)} is not a CIDR (no /prefix length)` };
  const ip = s.slice(0, slash);
  const len = s.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(len)) return { invalid: `${JSON.stringify(raw)} has an invalid prefix length` };
  const bits = Number(len);
  const n = parseIPv4(ip);
  if (n === undefined) {
    if (isIPv6(ip) && bits <= 128) return 'v6';
    return { invalid: `${JSON.stringify(raw)} is not a CIDR` };
  }
  if (bits > 32) return { invalid: `${JSON.stringify(raw)} has a prefix length over 32` };
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  if ((n & ~mask) >>> 0 !== 0) {
    const net = formatIPv4((n & mask) >>> 0);
    return { invalid: `${JSON.stringify(raw)} has host bits set (the network is ${net}/${bits}); range not applied` };
  }
  return { v4: `${formatIPv4(n)}/${bits}` };
}

const validPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;

// ---------------------------------------------------------------------------------------------
// Context

export interface NodeContext {
  /** This node's name, as endpoints' `nodeName` says it. */
  nodeName: string;
  /** This node's addresses: an endpoint without `nodeName` at one of them is local (host network). */
  nodeIPs: readonly string[];
  /**
   * Services labelled `service.kubernetes.io/service-proxy-name` belong to another proxy unless
   * the label equals this. Unlabelled Services are always handled.
   */
  serviceProxyName?: string;
}

export interface PreparedContext {
  nodeName: string;
  nodeIPs: ReadonlySet<string>;
  serviceProxyName?: string;
}

export function prepareContext(c: NodeContext): PreparedContext {
  const ips = new Set<string>();
  for (const ip of c.nodeIPs) {
    const a = classify(ip);
    if (typeof a === 'object') ips.add(a.v4);
  }
  return { nodeName: c.nodeName, nodeIPs: ips, serviceProxyName: c.serviceProxyName };
}

function otherProxy(labels: Record<string, string> | undefined, ctx: PreparedContext): boolean {
  const v = labels?.[LABEL_SERVICE_PROXY_NAME];
  return v !== undefined && v !== ctx.serviceProxyName;
}

// ---------------------------------------------------------------------------------------------
// EndpointSlices

export interface SlicePort {
  name: string;
  protocol: string;
  port: number;
}

export interface SliceEndpoint {
  addr: string;
  addrNum: number;
  nodeName?: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

/** What the calculation needs of an EndpointSlice, read once when the slice arrives. */
export interface ParsedSlice {
  /** `namespace/name` of the slice. */
  id: string;
  name: string;
  /** `namespace/name` of its Service (label `kubernetes.io/service-name`); none: not a Service's. */
  serviceKey?: string;
  proxyName?: string;
  headless: boolean;
  /**
   * Usable ports (valid numbers) and IPv4 endpoints, sorted by address, each address once;
   * empty for IPv6 and FQDN slices.
   */
  ports: SlicePort[];
  endpoints: SliceEndpoint[];
  /** Reported when its Service is computed. */
  errors: ProxyError[];
}

export function sliceId(s: EndpointSliceObject): string {
  return `${s.metadata?.namespace ?? 'default'}/${s.metadata?.name ?? ''}`;
}

/** A state's rank when one endpoint is listed twice: the readier copy wins. */
const epRank = (e: { ready: boolean; serving: boolean }) => (e.ready ? 2 : e.serving ? 1 : 0);

/** Sorted endpoints without repeated addresses (the readier copy kept). */
function dedupe(eps: SliceEndpoint[]): SliceEndpoint[] {
  const out: SliceEndpoint[] = [];
  for (const e of eps) {
    const last = out[out.length - 1];
    if (last && last.addrNum === e.addrNum) {
      if (epRank(e) > epRank(last)) out[out.length - 1] = e;
    } else {
      out.push(e);
    }
  }
  return out;
}

function portsEqual(a: SlicePort[], b: SlicePort[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i].name !== b[i].name || a[i].protocol !== b[i].protocol || a[i].port !== b[i].port) return false;
  }
  return true;
}

/** Two parsed slices with the same content (what the calculation reads of them). */
export function parsedSlicesEqual(a: ParsedSlice, b: ParsedSlice): boolean {
  if (a === b) return true;
  if (
    a.id !== b.id ||
    a.serviceKey !== b.serviceKey ||
    a.proxyName !== b.proxyName ||
    a.headless !== b.headless ||
    !portsEqual(a.ports, b.ports) ||
    a.endpoints.length !== b.endpoints.length ||
    a.errors.length !== b.errors.length
  ) {
    return false;
  }
  for (let i = 0; i < a.endpoints.length; i++) {
    const x = a.endpoints[i];
    const y = b.endpoints[i];
    if (
      x.addrNum !== y.addrNum ||
      x.addr !== y.addr ||
      x.nodeName !== y.nodeName ||
      x.ready !== y.ready ||
      x.serving !== y.serving ||
      x.terminating !== y.terminating
    ) {
      return false;
    }
  }
  for (let i = 0; i < a.errors.length; i++) {
    if (a.errors[i].field !== b.errors[i].field || a.errors[i].reason !== b.errors[i].reason) return false;
  }
  return true;
}

export function parseEndpointSlice(s: EndpointSliceObject): ParsedSlice {
  const meta = s.metadata ?? {};
  const namespace = meta.namespace ?? 'default';
  const name = meta.name ?? '';
  const labels = meta.labels;
  const svcName = labels?.[LABEL_SERVICE_NAME];
  const out: ParsedSlice = {
    id: `${namespace}/${name}`,
    name,
    serviceKey: svcName ? `${namespace}/${svcName}` : undefined,
    proxyName: labels?.[LABEL_SERVICE_PROXY_NAME],
    headless: labels !== undefined && LABEL_HEADLESS in labels,
    ports: [],
    endpoints: [],
    errors: [],
  };
  if (s.addressType !== 'IPv4') return out; // IPv6 and FQDN slices: not for this datapath
  const object = `EndpointSlice ${out.id}`;
  const ports = s.ports ?? [];
  for (let j = 0; j < ports.length; j++) {
    const p = ports[j];
    const protocol = p.protocol ?? 'TCP';
    const pname = p.name ?? '';
    if (!validPort(p.port)) {
      out.errors.push({
        object,
        field: `ports[${j}].port`,
        reason: `${p.port === undefined || p.port === null ? 'no port number' : `invalid port ${JSON.stringify(p.port)}`}; this slice's endpoints are not used for port ${JSON.stringify(pname)}/${protocol}`,
      });
      continue;
    }
    if (out.ports.some((q) => q.name === pname && q.protocol === protocol)) continue;
    out.ports.push({ name: pname, protocol, port: p.port });
  }
  const eps = s.endpoints ?? [];
  let sorted = true;
  for (let i = 0; i < eps.length; i++) {
    const e = eps[i];
    const a = e.addresses?.[0];
    const num = parseIPv4(a);
    if (num === undefined) {
      out.errors.push({
        object,
        field: a === undefined ? `endpoints[${i}].addresses` : `endpoints[${i}].addresses[0]`,
        reason:
          a === undefined
            ? 'no address; endpoint ignored'
            : `${JSON.stringify(a)} is not an IPv4 address; endpoint ignored`,
      });
      continue;
    }
    const c = e.conditions ?? {};
    // API: ready and serving are "true" when unset, but a terminating endpoint is never ready.
    const terminating = c.terminating === true;
    const ready = (c.ready ?? !terminating) === true;
    const serving = (c.serving ?? c.ready ?? true) === true;
    const ep: SliceEndpoint = {
      addr: LEADING_ZERO.test(a as string) ? formatIPv4(num) : (a as string),
      addrNum: num,
      nodeName: e.nodeName || undefined,
      ready,
      serving,
      terminating,
    };
    const last = out.endpoints.length ? out.endpoints[out.endpoints.length - 1] : undefined;
    if (last && last.addrNum >= num) sorted = false;
    out.endpoints.push(ep);
  }
  if (!sorted) out.endpoints = dedupe(out.endpoints.sort((x, y) => x.addrNum - y.addrNum));
  return out;
}

// ---------------------------------------------------------------------------------------------
// One Service

/**
 * A frontend address as one number: (address, port, protocol) fit in 50 bits, so maps and sets of
 * frontend addresses need no strings.
 */
export function addrKeyOf(addrNum: number, port: number, proto: number): number {
  return (addrNum * 65536 + port) * 4 + (proto === 6 ? 0 : proto === 17 ? 1 : 2);
}

/** A frontend a Service asks for; several Services may ask for the same address (see FrontendClaims). */
export interface FrontendClaim {
  /** `namespace/name` of the Service. */
  serviceKey: string;
  /** `addrKeyOf(address, port, protocol)`: one datapath frontend. */
  addrKey: number;
  /** Precedence when Services collide: lower wins (cluster IPs cannot be taken over). */
  rank: number;
  /** The Service's creationTimestamp (ms): the older one keeps a contested address. */
  created: number;
  /** The field that asked for it, for the loser's error. */
  field: string;
  frontend: DesiredFrontend;
}

export interface ServiceComputation {
  serviceKey: string;
  /** In a stable order: per port, cluster IPs, NodePort, LoadBalancer IPs, externalIPs. */
  claims: FrontendClaim[];
  healthCheck?: HealthCheckNodePort;
  errors: ProxyError[];
  /** Why the Service was left out entirely, if it was. */
  skipped?: 'other-proxy' | 'headless' | 'external-name' | 'no-ipv4' | 'invalid';
}

const KIND_RANK: Record<FrontendKind, number> = { clusterIP: 0, nodePort: 1, loadBalancer: 2, externalIP: 3 };
const KNOWN_TYPES = new Set(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);
const isNil = (v: unknown): v is null | undefined => v === undefined || v === null;

export function serviceKeyOf(s: ServiceObject): string {
  return `${s.metadata?.namespace ?? 'default'}/${s.metadata?.name ?? ''}`;
}

/** creationTimestamp in ms (a Date, or RFC 3339 in wire form); unknown counts as newest. */
export function createdMs(t: Date | string | undefined): number {
  if (isNil(t)) return Number.POSITIVE_INFINITY;
  const ms = (t instanceof Date ? t : new Date(t)).getTime();
  return Number.isNaN(ms) ? Number.POSITIVE_INFINITY : ms;
}

interface PortBackends {
  /** Cluster-wide choice, local ones first. */
  cluster: DesiredBackend[];
  /** For Local-policy frontends: the local choice, then the cluster choice's remote ones. */
  local: DesiredBackend[];
  /** `local` is a different list from `cluster`. */
  localDiffers: boolean;
  localReady: DesiredBackend[];
}

const EMPTY_BACKENDS: DesiredBackend[] = [];

/**
 * The endpoints of one service port across the Service's slices (sorted by name; an address and
 * port listed twice counts once, its readiest copy), in address order, sorted into what the
 * datapath may use: ready ones, else serving terminating ones (KEP-1669), chosen cluster-wide and,
 * for Local policies, among this node's endpoints alone.
 */
function backendsFor(
  slices: readonly ParsedSlice[],
  portName: string,
  protocol: string,
  publishNotReady: boolean,
  ctx: PreparedContext,
): PortBackends {
  const readyLocal: DesiredBackend[] = [];
  const readyRemote: DesiredBackend[] = [];
  const termLocal: DesiredBackend[] = [];
  const termRemote: DesiredBackend[] = [];
  const emit = (e: SliceEndpoint, port: number): void => {
    const ready = publishNotReady || e.ready;
    const serving = publishNotReady || e.serving;
    if (!ready && !(serving && e.terminating)) return;
    const local = e.nodeName !== undefined ? e.nodeName === ctx.nodeName : ctx.nodeIPs.has(e.addr);
    const b: DesiredBackend =
      e.nodeName !== undefined
        ? { addr: e.addr, port, nodeName: e.nodeName, local, ready, serving, terminating: e.terminating }
        : { addr: e.addr, port, local, ready, serving, terminating: e.terminating };
    if (ready) (local ? readyLocal : readyRemote).push(b);
    else (local ? termLocal : termRemote).push(b);
  };
  const targetPort = (s: ParsedSlice): number | undefined => {
    for (const p of s.ports) if (p.name === portName && p.protocol === protocol) return p.port;
    return undefined;
  };

  let single: ParsedSlice | undefined;
  let singlePort = 0;
  let matching = 0;
  for (const s of slices) {
    const port = targetPort(s);
    if (port === undefined || s.endpoints.length === 0) continue;
    if (++matching === 1) {
      single = s;
      singlePort = port;
    }
  }
  if (matching === 1) {
    // The usual case: one slice, already sorted and without repeats.
    for (const e of single!.endpoints) emit(e, singlePort);
  } else if (matching > 1) {
    const byAddr = new Map<number, { e: SliceEndpoint; port: number }>();
    for (const s of slices) {
      const port = targetPort(s);
      if (port === undefined) continue;
      for (const e of s.endpoints) {
        const id = e.addrNum * 65536 + port;
        const seen = byAddr.get(id);
        if (!seen) byAddr.set(id, { e, port });
        else if (!publishNotReady && epRank(e) > epRank(seen.e)) seen.e = e;
      }
    }
    const ids = [...byAddr.keys()].sort((x, y) => x - y);
    for (const id of ids) {
      const x = byAddr.get(id)!;
      emit(x.e, x.port);
    }
  }

  const anyReady = readyLocal.length + readyRemote.length > 0;
  const l = anyReady ? readyLocal : termLocal;
  const r = anyReady ? readyRemote : termRemote;
  const cluster = l.length === 0 ? r : r.length === 0 ? l : l.concat(r);
  // Local policies choose among local endpoints alone: with none ready here, the local serving
  // terminating ones, even while other nodes have ready ones.
  const localDiffers = anyReady && readyLocal.length === 0 && termLocal.length > 0;
  return {
    cluster: cluster.length ? cluster : EMPTY_BACKENDS,
    local: localDiffers ? termLocal.concat(readyRemote) : cluster.length ? cluster : EMPTY_BACKENDS,
    localDiffers,
    localReady: readyLocal,
  };
}

interface Address {
  addr: string;
  num: number;
  field: string;
}

/** Everything one Service asks of this node's datapath. */
export function computeService(
  svc: ServiceObject,
  slices: readonly ParsedSlice[],
  ctx: PreparedContext,
): ServiceComputation {
  const meta = svc.metadata ?? {};
  const namespace = meta.namespace ?? 'default';
  const name = meta.name ?? '';
  const serviceKey = `${namespace}/${name}`;
  const out: ServiceComputation = { serviceKey, claims: [], errors: [] };
  const err = (field: string, reason: string) => out.errors.push({ object: `Service ${serviceKey}`, field, reason });
  const labels = meta.labels;

  if (!name) {
    err('metadata.name', 'missing; Service not programmed');
    out.skipped = 'invalid';
    return out;
  }
  if (otherProxy(labels, ctx)) {
    out.skipped = 'other-proxy';
    return out;
  }
  if (labels !== undefined && LABEL_HEADLESS in labels) {
    out.skipped = 'headless';
    return out;
  }
  const spec = svc.spec;
  if (!spec) {
    err('spec', 'missing; Service not programmed');
    out.skipped = 'invalid';
    return out;
  }
  const type = spec.type ?? 'ClusterIP';
  if (type === 'ExternalName') {
    out.skipped = 'external-name';
    return out;
  }
  if (!KNOWN_TYPES.has(type)) {
    err('spec.type', `unknown type ${JSON.stringify(type)}; Service not programmed`);
    out.skipped = 'invalid';
    return out;
  }

  // Cluster IPs: `clusterIPs` (primary first) when present, else `clusterIP`. IPv4 ones only.
  const ipList: [unknown, string][] = spec.clusterIPs?.length
    ? spec.clusterIPs.map((ip, i): [unknown, string] => [ip, `spec.clusterIPs[${i}]`])
    : [[spec.clusterIP, 'spec.clusterIP']];
  if (ipList[0][0] === 'None' || spec.clusterIP === 'None') {
    out.skipped = 'headless';
    return out;
  }
  if (isNil(ipList[0][0]) || ipList[0][0] === '') {
    err(ipList[0][1], 'no cluster IP allocated; Service not programmed');
    out.skipped = 'invalid';
    return out;
  }
  const clusterIPs: Address[] = [];
  const badIPs: [unknown, string][] = [];
  for (const [ip, field] of ipList) {
    const a = classify(ip);
    if (a === 'invalid') badIPs.push([ip, field]);
    else if (a !== 'v6' && !clusterIPs.some((c) => c.num === a.num)) clusterIPs.push({ addr: a.v4, num: a.num, field });
  }
  const lost = clusterIPs.length === 0 ? '; Service not programmed' : '';
  for (const [ip, field] of badIPs) err(field, `${JSON.stringify(ip)} is not an IP address${lost}`);
  if (clusterIPs.length === 0) {
    // An IPv6 Service (nothing for this IPv4 datapath, as kube-proxy's IPv4 proxier), or no valid IP.
    out.skipped = badIPs.length ? 'invalid' : 'no-ipv4';
    return out;
  }

  // Session affinity.
  let affinity = 0;
  if (spec.sessionAffinity === 'ClientIP') {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
    if (isNil(t)) {
      affinity = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
    } else if (Number.isInteger(t) && t >= 1 && t <= MAX_AFFINITY_TIMEOUT_SECONDS) {
      affinity = t;
    } else {
      affinity = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
      err(
        'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
        `${JSON.stringify(t)} is not between 1 and ${MAX_AFFINITY_TIMEOUT_SECONDS}; using ${DEFAULT_AFFINITY_TIMEOUT_SECONDS}`,
      );
    }
  } else if (!isNil(spec.sessionAffinity) && spec.sessionAffinity !== 'None') {
    err('spec.sessionAffinity', `unknown value ${JSON.stringify(spec.sessionAffinity)}; no session affinity`);
  }

  // Traffic policies. The external one applies where the Service is reachable from outside
  // (NodePort, LoadBalancer IPs, externalIPs); the internal one to cluster IPs.
  const policy = (field: string, v: string | undefined): boolean => {
    if (isNil(v) || v === 'Cluster') return false;
    if (v === 'Local') return true;
    err(field, `unknown value ${JSON.stringify(v)}; using Cluster`);
    return false;
  };
  const etpLocal = policy('spec.externalTrafficPolicy', spec.externalTrafficPolicy);
  const itpLocal = policy('spec.internalTrafficPolicy', spec.internalTrafficPolicy);
  const extFlag = etpLocal ? FrontendFlags.EXT_LOCAL : 0;

  // External addresses.
  const externalIPs: Address[] = [];
  const extList = spec.externalIPs ?? [];
  for (let i = 0; i < extList.length; i++) {
    const a = classify(extList[i]);
    const field = `spec.externalIPs[${i}]`;
    if (a === 'invalid') err(field, `${JSON.stringify(extList[i])} is not an IP address; ignored`);
    else if (a !== 'v6') externalIPs.push({ addr: a.v4, num: a.num, field });
  }
  const lbIPs: Address[] = [];
  let sourceRanges: string[] | undefined;
  if (type === 'LoadBalancer') {
    const ingress = svc.status?.loadBalancer?.ingress ?? [];
    for (let i = 0; i < ingress.length; i++) {
      const ing = ingress[i];
      // A hostname-only ingress has nothing to program; ipMode Proxy means the load balancer
      // proxies to the nodes, which must not capture its address.
      if (isNil(ing.ip) || ing.ip === '' || ing.ipMode === 'Proxy') continue;
      const a = classify(ing.ip);
      const field = `status.loadBalancer.ingress[${i}].ip`;
      if (a === 'invalid') err(field, `${JSON.stringify(ing.ip)} is not an IP address; ignored`);
      else if (a !== 'v6') lbIPs.push({ addr: a.v4, num: a.num, field });
    }
    if (lbIPs.length) sourceRanges = lbSourceRanges(svc, err);
  }
  const lbFlags = sourceRanges !== undefined && sourceRanges.length === 0 ? FrontendFlags.SRC_DENIED : 0;

  // Slices this proxy may use (kube-proxy's informers filter them by the same labels).
  let own = slices;
  if (slices.some((s) => s.headless || (s.proxyName !== undefined && s.proxyName !== ctx.serviceProxyName))) {
    own = slices.filter((s) => !s.headless && !(s.proxyName !== undefined && s.proxyName !== ctx.serviceProxyName));
  }

  // Ports.
  const created = createdMs(meta.creationTimestamp);
  const publishNotReady = spec.publishNotReadyAddresses === true;
  const wantHealth = type === 'LoadBalancer' && etpLocal && !isNil(spec.healthCheckNodePort);
  const localReady = wantHealth ? new Set<string>() : undefined;
  const claims = out.claims;
  const ports = spec.ports ?? [];
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i];
    const protocol = p.protocol ?? 'TCP';
    const portName = p.name ?? '';
    if (protocol === 'SCTP') {
      const which = portName ? `${JSON.stringify(portName)} ` : '';
      err(`spec.ports[${i}].protocol`, `SCTP is not supported yet; port ${which}${p.port}/SCTP not programmed`);
      continue;
    }
    if (protocol !== 'TCP' && protocol !== 'UDP') {
      err(`spec.ports[${i}].protocol`, `unknown protocol ${JSON.stringify(protocol)}; port not programmed`);
      continue;
    }
    if (!validPort(p.port)) {
      err(`spec.ports[${i}].port`, `${JSON.stringify(p.port)} is not a port number (1-65535); port not programmed`);
      continue;
    }
    const spn: ServicePortName = { namespace, name, port: portName, protocol };
    const spnStr = servicePortNameString(spn);
    const proto = protocolNumbers[protocol];
    const be = backendsFor(own, portName, protocol, publishNotReady, ctx);
    if (localReady) for (const b of be.localReady) localReady.add(b.addr);

    const add = (kind: FrontendKind, a: Address, port: number, flags: number, local: boolean): void => {
      const key = frontendKeyOf(spnStr, a.addr, port);
      // The same address twice in one Service (an externalIP that is also its LB IP): the first kind wins.
      for (const c of claims) if (c.frontend.key === key) return;
      const frontend: DesiredFrontend = {
        key,
        group: local && be.localDiffers ? `${spnStr}|local` : spnStr,
        servicePort: spn,
        addr: a.addr,
        port,
        proto,
        kind,
        flags,
        affinityTimeoutSeconds: affinity,
        backends: local ? be.local : be.cluster,
      };
      if (kind === 'loadBalancer' && sourceRanges !== undefined) frontend.sourceRanges = sourceRanges;
      claims.push({
        serviceKey,
        addrKey: addrKeyOf(a.num, port, proto),
        rank: KIND_RANK[kind],
        created,
        field: a.field,
        frontend,
      });
    };

    for (const c of clusterIPs) add('clusterIP', c, p.port, itpLocal ? FrontendFlags.INT_LOCAL : 0, itpLocal);
    if ((type === 'NodePort' || type === 'LoadBalancer') && !isNil(p.nodePort) && p.nodePort !== 0) {
      const field = `spec.ports[${i}].nodePort`;
      if (validPort(p.nodePort)) {
        const wildcard = { addr: NODEPORT_WILDCARD, num: 0, field };
        add('nodePort', wildcard, p.nodePort, FrontendFlags.NODEPORT | extFlag, etpLocal);
      } else {
        err(field, `${JSON.stringify(p.nodePort)} is not a port number (1-65535); NodePort not programmed`);
      }
    }
    for (const l of lbIPs) add('loadBalancer', l, p.port, FrontendFlags.EXTERNAL | extFlag | lbFlags, etpLocal);
    for (const x of externalIPs) add('externalIP', x, p.port, FrontendFlags.EXTERNAL | extFlag, etpLocal);
  }

  // externalTrafficPolicy Local on a LoadBalancer: the load balancer asks each node whether it
  // has a ready endpoint of the Service.
  if (wantHealth) {
    if (validPort(spec.healthCheckNodePort)) {
      out.healthCheck = {
        port: spec.healthCheckNodePort,
        service: { namespace, name },
        localEndpoints: localReady!.size,
      };
    } else {
      err(
        'spec.healthCheckNodePort',
        `${JSON.stringify(spec.healthCheckNodePort)} is not a port number (1-65535); no health check`,
      );
    }
  }
  return out;
}

/**
 * The Service's IPv4 source ranges, normalised and sorted; undefined when every source may
 * connect. Ranges that were given but refused are reported and left out; when none is left the
 * result is empty and the caller denies every source rather than opening the Service to all.
 */
function lbSourceRanges(svc: ServiceObject, err: (field: string, reason: string) => void): string[] | undefined {
  let raw: { value: unknown; field: string }[];
  const fromSpec = svc.spec?.loadBalancerSourceRanges ?? [];
  if (fromSpec.length) {
    raw = fromSpec.map((value, i) => ({ value, field: `spec.loadBalancerSourceRanges[${i}]` }));
  } else {
    const ann = svc.metadata?.annotations?.[ANNOTATION_LB_SOURCE_RANGES];
    if (isNil(ann) || ann.trim() === '') return undefined;
    raw = ann
      .split(',')
      .map((value) => ({ value: value.trim(), field: `metadata.annotations[${ANNOTATION_LB_SOURCE_RANGES}]` }))
      .filter((r) => r.value !== '');
  }
  const ranges = new Map<string, number>();
  let refused = 0;
  let v6 = 0;
  for (const r of raw) {
    const c = parseCidr(r.value);
    if (c === 'v6') v6++;
    else if ('invalid' in c) {
      refused++;
      err(r.field, c.invalid);
    } else
      ranges.set(c.v4, parseIPv4(c.v4.slice(0, c.v4.indexOf('/')))! * 64 + Number(c.v4.slice(c.v4.indexOf('/') + 1)));
  }
  if (ranges.has('0.0.0.0/0')) return undefined;
  if (ranges.size === 0 && (refused > 0 || v6 > 0)) {
    err(
      raw.length === 1 ? raw[0].field : 'spec.loadBalancerSourceRanges',
      'no usable IPv4 source range; LoadBalancer IPs deny every IPv4 source',
    );
  }
  return [...ranges].sort((a, b) => a[1] - b[1]).map(([r]) => r);
}

// ---------------------------------------------------------------------------------------------
// Services competing for one address

function claimBefore(a: FrontendClaim, b: FrontendClaim): boolean {
  if (a.rank !== b.rank) return a.rank < b.rank;
  if (a.created !== b.created) return a.created < b.created;
  return a.frontend.key < b.frontend.key;
}

/**
 * Frontend claims by datapath address. Two Services asking for the same address, port and
 * protocol cannot both have it: a cluster IP beats a NodePort, which beats a LoadBalancer IP,
 * which beats an externalIP (so an externalIP cannot hijack a ClusterIP); then the older Service
 * wins, then the smaller key. The loser is reported and programmed once the winner goes.
 */
export class FrontendClaims {
  /** One claim, or (contested) several. */
  private readonly byAddr = new Map<number, FrontendClaim | FrontendClaim[]>();

  add(c: FrontendClaim): void {
    const cur = this.byAddr.get(c.addrKey);
    if (cur === undefined) this.byAddr.set(c.addrKey, c);
    else if (Array.isArray(cur)) cur.push(c);
    else this.byAddr.set(c.addrKey, [cur, c]);
  }

  remove(c: FrontendClaim): void {
    const cur = this.byAddr.get(c.addrKey);
    if (cur === c) {
      this.byAddr.delete(c.addrKey);
    } else if (Array.isArray(cur)) {
      const i = cur.indexOf(c);
      if (i >= 0) cur.splice(i, 1);
      if (cur.length === 1) this.byAddr.set(c.addrKey, cur[0]);
    }
  }

  addrKeys(): IterableIterator<number> {
    return this.byAddr.keys();
  }

  /** The claim that gets the address (none: nobody claims it); an error for each one that does not. */
  resolve(addrKey: number, errors: ProxyError[]): FrontendClaim | undefined {
    const cur = this.byAddr.get(addrKey);
    if (!Array.isArray(cur)) return cur;
    let winner = cur[0];
    for (let i = 1; i < cur.length; i++) if (claimBefore(cur[i], winner)) winner = cur[i];
    const w = winner.frontend;
    const where = `${w.addr === NODEPORT_WILDCARD ? '*' : w.addr}:${w.port}/${w.servicePort.protocol}`;
    for (const c of cur) {
      if (c === winner) continue;
      errors.push({
        object: `Service ${c.serviceKey}`,
        field: c.field,
        reason: `${where} is already the ${w.kind} frontend of ${servicePortNameString(w.servicePort)}; not programmed while that one holds it`,
      });
    }
    return winner;
  }
}

// ---------------------------------------------------------------------------------------------
// Everything at once

export interface ComputeInput extends NodeContext {
  services: readonly ServiceObject[];
  endpointSlices: readonly EndpointSliceObject[];
}

export interface ComputeResult {
  frontends: DesiredFrontend[];
  healthCheckNodePorts: HealthCheckNodePort[];
  errors: ProxyError[];
}

/** Slices of one Service in name order, so repeated endpoints resolve the same way every time. */
export function sortSlices(slices: ParsedSlice[]): ParsedSlice[] {
  return slices.length > 1 ? slices.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) : slices;
}

export function computeFrontends(input: ComputeInput): ComputeResult {
  const ctx = prepareContext(input);
  const slicesBySvc = new Map<string, ParsedSlice[]>();
  for (const s of input.endpointSlices) {
    const p = parseEndpointSlice(s);
    if (!p.serviceKey) continue;
    const list = slicesBySvc.get(p.serviceKey);
    if (list) list.push(p);
    else slicesBySvc.set(p.serviceKey, [p]);
  }
  const errors: ProxyError[] = [];
  const healthCheckNodePorts: HealthCheckNodePort[] = [];
  const claims = new FrontendClaims();
  const all: FrontendClaim[] = [];
  for (const svc of input.services) {
    const slices = sortSlices(slicesBySvc.get(serviceKeyOf(svc)) ?? []);
    const c = computeService(svc, slices, ctx);
    if (!c.skipped) for (const s of slices) errors.push(...s.errors);
    errors.push(...c.errors);
    if (c.healthCheck) healthCheckNodePorts.push(c.healthCheck);
    for (const claim of c.claims) {
      claims.add(claim);
      all.push(claim);
    }
  }
  const winners = new Set<FrontendClaim>();
  for (const addrKey of claims.addrKeys()) {
    const winner = claims.resolve(addrKey, errors);
    if (winner) winners.add(winner);
  }
  return { frontends: all.filter((c) => winners.has(c)).map((c) => c.frontend), healthCheckNodePorts, errors };
}
