// The external client's routes to LoadBalancer ingress IPs and externalIPs: each via a node, as a
// router in front of the cluster would send them. Shared by the lab's own controller (file store)
// and the lab kubelet of a lab with a real API server.
import { createHash } from 'node:crypto';
import type { EndpointSlice, Service } from './store.js';
import type { Topology } from './topology.js';

/** A stable node index for an address, so each address keeps its node across syncs. */
export function hashIndex(s: string, n: number): number {
  const h = createHash('sha1').update(s).digest();
  return h.readUInt32BE(0) % n;
}

/** cidr -> node IP for every LoadBalancer ingress IP and externalIP of `services`. */
export function wantedExternalRoutes(
  topo: Topology,
  services: Service[],
  slicesOf: (namespace: string, name: string) => EndpointSlice[],
): Map<string, string> {
  const ext = topo.external;
  const want = new Map<string, string>();
  if (!ext) return want;
  const nodeIps = new Set(topo.nodes.map((n) => n.ip));
  const key = (s: Service): string => `${s.metadata?.namespace ?? ''}/${s.metadata?.name ?? ''}`;
  for (const s of [...services].sort((a, b) => (key(a) < key(b) ? -1 : 1))) {
    const ips = [
      ...(s.status?.loadBalancer?.ingress ?? []).flatMap((i) => (i.ip ? [i.ip] : [])),
      ...(s.spec?.externalIPs ?? []),
    ];
    if (ips.length === 0) continue;
    let via: string | undefined;
    if (s.spec?.externalTrafficPolicy === 'Local') {
      // a node with a ready local endpoint, as a LoadBalancer that health-checks nodes would pick
      const ready = slicesOf(s.metadata?.namespace ?? '', s.metadata?.name ?? '')
        .flatMap((sl) => sl.endpoints ?? [])
        .filter((e) => e.conditions?.ready)
        .map((e) => e.nodeName);
      via = topo.nodes.find((n) => ready.includes(n.name))?.ip;
    }
    for (const ip of ips) {
      if (nodeIps.has(ip) || ip === ext.ip) continue;
      want.set(`${ip}/32`, via ?? topo.nodes[hashIndex(ip, topo.nodes.length)].ip);
    }
  }
  return want;
}

/** Makes the external namespace's /32 routes exactly `want`. */
export async function applyExternalRoutes(
  topo: Topology,
  want: Map<string, string>,
  log: (m: string) => void,
): Promise<void> {
  const ext = topo.external;
  if (!ext) return;
  const have = new Map(ext.routes.map((r) => [r.cidr, r.via]));
  for (const [cidr, via] of want) {
    if (have.get(cidr) === via) continue;
    await topo.addExternalRoute(cidr, via);
    log(`external: route ${cidr} via ${via}`);
  }
  for (const cidr of have.keys()) {
    if (want.has(cidr) || !cidr.endsWith('/32')) continue;
    await topo.removeExternalRoute(cidr);
    log(`external: route ${cidr} removed`);
  }
}
