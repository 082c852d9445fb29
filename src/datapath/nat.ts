// Schemas of the Service NAT maps (bpf/include/nat.h): frontends, backends, session affinity.
import { be16, ipv4, pad, struct, u32, u64n, u8 } from '../bpf/codec.js';
import { TypedMap } from '../bpf/typed-map.js';
import type { BpfMap } from '../bpf/map.js';

export const NAT_FE_MAP = 'sl_nat_fe_v1';
export const NAT_BE_MAP = 'sl_nat_be_v1';
export const NAT_AFF_MAP = 'sl_nat_aff_v1';

export const FrontendFlags = {
  EXT_LOCAL: 1 << 0,
  INT_LOCAL: 1 << 1,
  NODEPORT: 1 << 2,
  EXTERNAL: 1 << 3,
  SRC_DENIED: 1 << 4,
} as const;

export const Proto = { ICMP: 1, TCP: 6, UDP: 17 } as const;
export const protoNames: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 132: 'sctp' };

/** The first 64 bits of a frontend key (address, port, protocol, pad) always match in full. */
export const FE_PREFIX_FIXED = 64;

export const feKey = struct('sl_nat_fe_key', {
  prefixlen: u32,
  addr: ipv4,
  port: be16,
  proto: u8,
  _pad: pad(1),
  src: ipv4,
});
export const feValue = struct('sl_nat_fe', {
  svcId: u32,
  count: u32,
  localCount: u32,
  affinityTimeout: u32,
  flags: u32,
  _pad: pad(4),
});
export const beKey = struct('sl_nat_be_key', { svcId: u32, ordinal: u32 });
export const beValue = struct('sl_nat_be', { addr: ipv4, port: be16, _pad: pad(2) });
export const affKey = struct('sl_nat_aff_key', { svcId: u32, client: ipv4 });
export const affValue = struct('sl_nat_aff', {
  tsNs: u64n,
  ordinal: u32,
  addr: ipv4,
  port: be16,
  _pad: pad(2),
  _pad2: pad(4),
});

export type FrontendKey = ReturnType<typeof feKey.decode>;
export type Frontend = ReturnType<typeof feValue.decode>;
export type BackendKey = ReturnType<typeof beKey.decode>;
export type Backend = ReturnType<typeof beValue.decode>;

/** A frontend key; `src` is a client network for loadBalancerSourceRanges (default: any). */
export function frontendKey(addr: string, port: number, proto: number, src = '0.0.0.0/0'): FrontendKey {
  const [net, len] = src.split('/');
  return { prefixlen: FE_PREFIX_FIXED + Number(len ?? 32), addr, port, proto, src: net };
}

export interface NatMaps {
  frontends: TypedMap<FrontendKey, Frontend>;
  backends: TypedMap<BackendKey, Backend>;
  affinity: TypedMap<ReturnType<typeof affKey.decode>, ReturnType<typeof affValue.decode>>;
}

export function natMaps(maps: { map(name: string): BpfMap }): NatMaps {
  return {
    frontends: new TypedMap(maps.map(NAT_FE_MAP), feKey, feValue),
    backends: new TypedMap(maps.map(NAT_BE_MAP), beKey, beValue),
    affinity: new TypedMap(maps.map(NAT_AFF_MAP), affKey, affValue),
  };
}

export function frontendFlagNames(flags: number): string[] {
  return Object.entries(FrontendFlags)
    .filter(([, bit]) => flags & bit)
    .map(([name]) => name.toLowerCase().replace('_', '-'));
}
