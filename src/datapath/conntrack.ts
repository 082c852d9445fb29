// Schema of sl_ct_v1 (bpf/include/conntrack.h): one entry per direction-independent 5-tuple.
import { be16, ipv4, pad, struct, u64n, u8 } from '../bpf/codec.js';
import { TypedMap } from '../bpf/typed-map.js';
import type { BpfMap } from '../bpf/map.js';

export const CT_MAP = 'sl_ct_v1';

export const CtType = { NORMAL: 0, NAT_FWD: 1, NAT_REV: 2 } as const;
export const ctTypeNames = ['normal', 'nat-fwd', 'nat-rev'] as const;

export const CtFlags = {
  FWD_TUNNEL: 1 << 0,
  FROM_TUNNEL: 1 << 1,
  REPLY_TUNNEL: 1 << 2,
  DSR: 1 << 3,
  EXTERNAL: 1 << 4,
  HAIRPIN: 1 << 5,
  HOST: 1 << 6,
} as const;

export const TcpSeen = { SYN: 1, ACK: 2, FIN: 4, RST: 8 } as const;
/** sl_ct.pol: whose policy on this node has allowed the flow (enum sl_ct_pol). */
export const CtPol = { OPENER: 1, RESPONDER: 2, FWD_IN: 4, FWD_OUT: 8 } as const;

export const ctKey = struct('sl_ct_key', {
  addrA: ipv4,
  addrB: ipv4,
  portA: be16,
  portB: be16,
  proto: u8,
  _pad: pad(3),
});
export const ctValue = struct('sl_ct', {
  createdNs: u64n,
  lastSeenNs: u64n,
  type: u8,
  flags: u8,
  tcpA: u8,
  tcpB: u8,
  openerIsB: u8,
  pol: u8,
  _pad: pad(2),
  tunIp: ipv4,
  natAddr: ipv4,
  natPort: be16,
  snatPort: be16,
  snatAddr: ipv4,
});

export type CtKey = ReturnType<typeof ctKey.decode>;
export type CtEntry = ReturnType<typeof ctValue.decode>;

export function ctMap(map: BpfMap): TypedMap<CtKey, CtEntry> {
  return new TypedMap(map, ctKey, ctValue);
}

function ipToU32(ip: string): number {
  return ip.split('.').reduce((a, b) => a * 256 + Number(b), 0);
}

/** The normalised key of a flow, as the datapath builds it (lower address/port first). */
export function ctKeyOf(saddr: string, sport: number, daddr: string, dport: number, proto: number): CtKey {
  const s = ipToU32(saddr);
  const d = ipToU32(daddr);
  const srcIsB = s > d || (s === d && sport > dport);
  return srcIsB
    ? { addrA: daddr, addrB: saddr, portA: dport, portB: sport, proto }
    : { addrA: saddr, addrB: daddr, portA: sport, portB: dport, proto };
}

export function ctFlagNames(flags: number): string[] {
  return Object.entries(CtFlags)
    .filter(([, bit]) => flags & bit)
    .map(([name]) => name.toLowerCase().replace('_', '-'));
}
