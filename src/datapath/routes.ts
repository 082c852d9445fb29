// Schema of sl_routes_v1 (bpf/include/routes.h): what an address is to this node.
import { ipv4, pad, struct, u32 } from '../bpf/codec.js';
import { TypedMap } from '../bpf/typed-map.js';
import type { BpfMap } from '../bpf/map.js';

export const ROUTES_MAP = 'sl_routes_v1';

export const RouteFlags = {
  LOCAL_HOST: 1 << 0,
  REMOTE_HOST: 1 << 1,
  LOCAL_WL: 1 << 2,
  REMOTE_WL: 1 << 3,
  IN_POOL: 1 << 4,
  TUNNELED: 1 << 5,
} as const;

export const routeKey = struct('sl_route_key', { prefixlen: u32, addr: ipv4 });
export const routeValue = struct('sl_route', { flags: u32, ifindex: u32, nextHop: ipv4, _pad: pad(4) });

export type RouteKey = ReturnType<typeof routeKey.decode>;
export type Route = ReturnType<typeof routeValue.decode>;

export function routesMap(map: BpfMap): TypedMap<RouteKey, Route> {
  return new TypedMap(map, routeKey, routeValue);
}

/** "10.65.1.0/24" -> LPM key. */
export function cidrKey(cidr: string): RouteKey {
  const [addr, len] = cidr.split('/');
  return { prefixlen: len === undefined ? 32 : Number(len), addr };
}

export function routeFlagNames(flags: number): string[] {
  return Object.entries(RouteFlags)
    .filter(([, bit]) => flags & bit)
    .map(([name]) => name.toLowerCase().replace('_', '-'));
}
