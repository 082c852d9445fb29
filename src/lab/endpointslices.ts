// EndpointSlices derived from Services and Pods, the way Kubernetes' EndpointSlice controller
// derives them (pkg/controller/endpointslice): what it puts in an endpoint, when a pod is in a
// Service's slices at all, how named target ports resolve per pod, and how endpoints are kept in
// the slices they are already in so that an unrelated change does not rewrite every slice.
//
//   - only Services with a non-empty selector get slices; ExternalName Services get none;
//     headless Services with a selector do (labelled service.kubernetes.io/headless)
//   - a pod is an endpoint when it is not terminal (Succeeded/Failed) and has an IP; pods being
//     deleted stay in, as terminating
//   - conditions: serving = the pod's Ready condition; terminating = deletionTimestamp set;
//     ready = publishNotReadyAddresses || (serving && !terminating)
//   - ports: each Service port with its target port resolved against the pod's containers (a
//     named port must match name and protocol); a pod where a name does not resolve goes without
//     that port, so endpoints are grouped into slices by their resolved port list
//   - at most 100 endpoints a slice; a Service that selects nothing has one empty placeholder slice
import { randomInt } from 'node:crypto';
import { matchesMap } from './resources.js';
import type { EndpointSlice, Pod, Service } from './store.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY = 'endpointslice-controller.k8s.io';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const MAX_ENDPOINTS_PER_SLICE = 100;

type Endpoint = EndpointSlice['endpoints'][number];
type EndpointPort = NonNullable<EndpointSlice['ports']>[number];
type ServicePort = NonNullable<NonNullable<Service['spec']>['ports']>[number];

/** True when the controller manages slices for this Service. */
export function wantsSlices(svc: Service): boolean {
  if (svc.spec?.type === 'ExternalName') return false;
  return Object.keys(svc.spec?.selector ?? {}).length > 0;
}

export function isPodReady(pod: Pod): boolean {
  return (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

export function isPodTerminal(pod: Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

/** Whether a pod belongs in a Service's slices at all (terminating pods do). */
export function shouldPodBeInEndpoints(pod: Pod): boolean {
  if (isPodTerminal(pod)) return false;
  return Boolean(pod.status?.podIP) || (pod.status?.podIPs ?? []).length > 0;
}

/** The pod's port for a Service port (podutil.FindPort): numbers as they are, names looked up. */
export function findPort(pod: Pod, sp: ServicePort): number | undefined {
  const target = sp.targetPort ?? sp.port;
  if (typeof target === 'number') return target;
  if (/^\d+$/.test(target)) return Number(target);
  const proto = sp.protocol ?? 'TCP';
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) if (p.name === target && (p.protocol ?? 'TCP') === proto) return p.containerPort;
  }
  return undefined;
}

/** The slice ports of one pod for a Service (ports whose name does not resolve are left out). */
export function endpointPorts(pod: Pod, svc: Service): EndpointPort[] {
  const out: EndpointPort[] = [];
  for (const sp of svc.spec?.ports ?? []) {
    const port = findPort(pod, sp);
    if (port === undefined) continue;
    const ep: EndpointPort = { name: sp.name ?? '', port, protocol: sp.protocol ?? 'TCP' };
    if (sp.appProtocol !== undefined) ep.appProtocol = sp.appProtocol;
    out.push(ep);
  }
  return out;
}

/** The endpoint for a pod (podToEndpoint). */
export function podEndpoint(pod: Pod, svc: Service, zoneOf?: (node: string) => string | undefined): Endpoint {
  const serving = isPodReady(pod);
  const terminating = Boolean(pod.metadata?.deletionTimestamp);
  const ready = svc.spec?.publishNotReadyAddresses === true || (serving && !terminating);
  const ip = pod.status?.podIP ?? pod.status?.podIPs?.[0]?.ip ?? '';
  const ep: Endpoint = {
    addresses: [ip],
    conditions: { ready, serving, terminating },
    targetRef: { kind: 'Pod', namespace: pod.metadata?.namespace, name: pod.metadata?.name, uid: pod.metadata?.uid },
  };
  const node = pod.spec?.nodeName;
  if (node) {
    ep.nodeName = node;
    const zone = zoneOf?.(node);
    if (zone) ep.zone = zone;
  }
  if (
    pod.spec?.hostname &&
    pod.spec.subdomain === svc.metadata?.name &&
    pod.metadata?.namespace === svc.metadata?.namespace
  )
    ep.hostname = pod.spec.hostname;
  return ep;
}

function portsKey(ports: readonly EndpointPort[] | undefined): string {
  return JSON.stringify((ports ?? []).map((p) => [p.name ?? '', p.port, p.protocol ?? 'TCP', p.appProtocol ?? '']));
}

function endpointKey(ep: Endpoint): string {
  return `${ep.targetRef?.namespace ?? ''}/${ep.targetRef?.name ?? ''}/${ep.addresses[0] ?? ''}`;
}

function byEndpoint(a: Endpoint, b: Endpoint): number {
  const ka = endpointKey(a);
  const kb = endpointKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

export interface DesiredGroup {
  ports: EndpointPort[];
  endpoints: Endpoint[];
}

/** The endpoints a Service should have, grouped by their resolved ports. */
export function desiredEndpoints(
  svc: Service,
  pods: readonly Pod[],
  zoneOf?: (node: string) => string | undefined,
): DesiredGroup[] {
  if (!wantsSlices(svc)) return [];
  const selector = svc.spec?.selector ?? {};
  const groups = new Map<string, DesiredGroup>();
  for (const pod of pods) {
    if (pod.metadata?.namespace !== svc.metadata?.namespace) continue;
    if (!matchesMap(pod.metadata?.labels, selector)) continue;
    if (!shouldPodBeInEndpoints(pod)) continue;
    const ports = endpointPorts(pod, svc);
    const key = portsKey(ports);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { ports, endpoints: [] }));
    g.endpoints.push(podEndpoint(pod, svc, zoneOf));
  }
  for (const g of groups.values()) g.endpoints.sort(byEndpoint);
  return [...groups.values()];
}

/** The labels of a Service's slices: the Service's own (less the reserved ones) and the controller's. */
export function sliceLabels(svc: Service): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(svc.metadata?.labels ?? {})) {
    if (k === SERVICE_NAME_LABEL || k === MANAGED_BY_LABEL || k === HEADLESS_LABEL) continue;
    labels[k] = v;
  }
  labels[SERVICE_NAME_LABEL] = svc.metadata?.name ?? '';
  labels[MANAGED_BY_LABEL] = MANAGED_BY;
  if (svc.spec?.clusterIP === 'None') labels[HEADLESS_LABEL] = '';
  return labels;
}

/** True when `slice` is one of the controller's slices for `svc` (by label). */
export function isSliceOf(slice: EndpointSlice, namespace: string, name: string): boolean {
  const l = slice.metadata?.labels ?? {};
  return (
    slice.metadata?.namespace === namespace && l[SERVICE_NAME_LABEL] === name && l[MANAGED_BY_LABEL] === MANAGED_BY
  );
}

const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

/** `<service>-<5 random characters>`, like generateName. */
export function sliceName(service: string, taken: (name: string) => boolean): string {
  const base = service.slice(0, 57);
  for (;;) {
    let s = '';
    for (let i = 0; i < 5; i++) s += NAME_CHARS[randomInt(NAME_CHARS.length)];
    const name = `${base}-${s}`;
    if (!taken(name)) return name;
  }
}

export interface SliceChanges {
  create: EndpointSlice[];
  update: EndpointSlice[];
  delete: EndpointSlice[];
}

function newSlice(svc: Service, name: string, ports: EndpointPort[], endpoints: Endpoint[]): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: svc.metadata?.namespace,
      labels: sliceLabels(svc),
      ownerReferences: [
        {
          apiVersion: 'v1',
          kind: 'Service',
          name: svc.metadata?.name ?? '',
          uid: svc.metadata?.uid ?? '',
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    addressType: 'IPv4',
    endpoints,
    ports,
  };
}

function sameSlice(a: EndpointSlice, b: EndpointSlice): boolean {
  return (
    JSON.stringify(a.endpoints) === JSON.stringify(b.endpoints) &&
    portsKey(a.ports) === portsKey(b.ports) &&
    JSON.stringify(a.metadata?.labels ?? {}) === JSON.stringify(b.metadata?.labels ?? {}) &&
    JSON.stringify(a.metadata?.ownerReferences ?? []) === JSON.stringify(b.metadata?.ownerReferences ?? [])
  );
}

/**
 * What to write so that `existing` (the Service's current slices) become what `desired` says:
 * endpoints stay in the slice they are in, new ones fill slices with room before new slices are
 * made, slices whose port list is no longer wanted go, and nothing unchanged is rewritten.
 * `taken` tells which slice names exist in the namespace.
 */
export function reconcileSlices(
  svc: Service,
  desired: readonly DesiredGroup[],
  existing: readonly EndpointSlice[],
  taken: (name: string) => boolean = () => false,
): SliceChanges {
  const changes: SliceChanges = { create: [], update: [], delete: [] };
  const svcName = svc.metadata?.name ?? '';
  const names = new Set(existing.map((s) => s.metadata?.name ?? ''));
  const isTaken = (n: string): boolean => names.has(n) || taken(n);
  const fresh = (ports: EndpointPort[], endpoints: Endpoint[]): EndpointSlice => {
    const name = sliceName(svcName, isTaken);
    names.add(name);
    return newSlice(svc, name, ports, endpoints);
  };
  // The wanted state of each existing slice, by name.
  const result = new Map<string, EndpointSlice>();
  const byPorts = new Map<string, EndpointSlice[]>();
  for (const s of existing) {
    const name = s.metadata?.name ?? '';
    result.set(name, {
      ...s,
      metadata: {
        ...s.metadata,
        labels: sliceLabels(svc),
        ownerReferences: newSlice(svc, name, [], []).metadata?.ownerReferences,
      },
      ports: s.ports ?? [],
      endpoints: [],
    });
    const k = portsKey(s.ports);
    const list = byPorts.get(k) ?? [];
    list.push(s);
    byPorts.set(k, list);
  }
  const total = desired.reduce((n, g) => n + g.endpoints.length, 0);
  const created: EndpointSlice[] = [];
  if (total === 0) {
    // One placeholder slice: no ports, no endpoints.
    const keep = existing.find((s) => (s.endpoints ?? []).length === 0 && (s.ports ?? []).length === 0) ?? existing[0];
    if (keep) {
      const name = keep.metadata?.name ?? '';
      const r = result.get(name) as EndpointSlice;
      r.ports = [];
      r.endpoints = [];
    } else if (wantsSlices(svc)) created.push(fresh([], []));
    for (const s of existing) {
      if (s === keep) continue;
      changes.delete.push(s);
      result.delete(s.metadata?.name ?? '');
    }
  } else {
    const used = new Set<string>();
    for (const g of desired) {
      const k = portsKey(g.ports);
      const slices = byPorts.get(k) ?? [];
      const wanted = new Map(g.endpoints.map((e) => [endpointKey(e), e]));
      const placed = new Set<string>();
      // endpoints that are already in a slice stay there
      for (const s of slices) {
        const r = result.get(s.metadata?.name ?? '') as EndpointSlice;
        for (const e of s.endpoints ?? []) {
          const key = endpointKey(e);
          const w = wanted.get(key);
          if (w && !placed.has(key) && r.endpoints.length < MAX_ENDPOINTS_PER_SLICE) {
            r.endpoints.push(w);
            placed.add(key);
          }
        }
        used.add(s.metadata?.name ?? '');
      }
      const rest = g.endpoints.filter((e) => !placed.has(endpointKey(e)));
      for (const s of slices) {
        const r = result.get(s.metadata?.name ?? '') as EndpointSlice;
        while (rest.length > 0 && r.endpoints.length < MAX_ENDPOINTS_PER_SLICE)
          r.endpoints.push(rest.shift() as Endpoint);
      }
      while (rest.length > 0) created.push(fresh(g.ports, rest.splice(0, MAX_ENDPOINTS_PER_SLICE)));
    }
    for (const s of existing) {
      const r = result.get(s.metadata?.name ?? '') as EndpointSlice;
      if (!used.has(s.metadata?.name ?? '') || r.endpoints.length === 0) {
        changes.delete.push(s);
        result.delete(s.metadata?.name ?? '');
      }
    }
  }
  for (const s of existing) {
    const r = result.get(s.metadata?.name ?? '');
    if (!r) continue;
    r.endpoints.sort(byEndpoint);
    if (!sameSlice(s, r)) changes.update.push(r);
  }
  for (const s of created) s.endpoints.sort(byEndpoint);
  changes.create.push(...created);
  return changes;
}
