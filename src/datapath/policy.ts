// Schemas of the policy maps (bpf/include/policy.h): endpoints, rule tables, IP sets.
import { array, ipv4, pad, struct, u16, u32, u64n, u8 } from '../bpf/codec.js';
import { TypedMap } from '../bpf/typed-map.js';
import type { BpfMap } from '../bpf/map.js';

export const EP_MAP = 'sl_ep_v2';
export const RULES_MAP = 'sl_rules_v1';
export const IPSETS_MAP = 'sl_ipsets_v1';
export const LOG_MAP = 'sl_log_v1';

export const EpFlags = {
  RPF: 1,
  HOST: 2,
  IN_POLICY: 4,
  EG_POLICY: 8,
  FWD_IN_POLICY: 16,
  FWD_EG_POLICY: 32,
  PRE_POLICY: 64,
} as const;
export const RuleAction = { NONE: 0, ALLOW: 1, DENY: 2, PASS: 3, LOG: 4 } as const;
export const RuleFlags = { ICMP_TYPE: 1, ICMP_CODE: 2, NOT_ICMP_TYPE: 4, NOT_ICMP_CODE: 8 } as const;
/** SL_RULE_PORTS: ranges per port field. */
export const RULE_PORT_SLOTS = 4;
export const IPSET_PREFIX_FIXED = 64;

export const epKey = struct('sl_ep_key', { ifindex: u32 });
export const epValue = struct('sl_ep', {
  addr: ipv4,
  flags: u32,
  inStart: u32,
  inLen: u32,
  egStart: u32,
  egLen: u32,
  fwdInStart: u32,
  fwdInLen: u32,
  fwdEgStart: u32,
  fwdEgLen: u32,
  preStart: u32,
  preLen: u32,
});

/** Port ranges as [lo0, hi0, lo1, hi1, ...], host byte order. */
const ranges = array(u16, RULE_PORT_SLOTS * 2);

export const ruleValue = struct('sl_rule', {
  action: u8,
  proto: u8,
  notProto: u8,
  flags: u8,
  icmpType: u8,
  icmpCode: u8,
  notIcmpType: u8,
  notIcmpCode: u8,
  nSport: u8,
  nNotSport: u8,
  nDport: u8,
  nNotDport: u8,
  jump: u32,
  id: u32,
  srcSet: array(u32, 2),
  srcNotSet: array(u32, 2),
  dstSet: array(u32, 2),
  dstNotSet: array(u32, 2),
  dstNamedSet: u32,
  _pad: pad(8),
  sport: ranges,
  notSport: ranges,
  dport: ranges,
  notDport: ranges,
});
export const ruleKey = struct('sl_rule_key', { index: u32 });

export const ipsetKey = struct('sl_ipset_key', { prefixlen: u32, setId: u32, portKey: u32, addr: ipv4 });
export const ipsetValue = struct('sl_ipset_value', { setId: u32 });

export const logEvent = struct('sl_log_event', {
  tsNs: u64n,
  ruleId: u32,
  ifindex: u32,
  saddr: ipv4,
  daddr: ipv4,
  sport: u16,
  dport: u16,
  proto: u8,
  ingress: u8,
  _pad: pad(2),
});

export type EpEntry = ReturnType<typeof epValue.decode>;
export type RuleEntry = ReturnType<typeof ruleValue.decode>;
export type IpsetKey = ReturnType<typeof ipsetKey.decode>;

export function epMap(map: BpfMap) {
  return new TypedMap(map, epKey, epValue);
}
export function rulesMap(map: BpfMap) {
  return new TypedMap(map, ruleKey, ruleValue);
}
export function ipsetsMap(map: BpfMap) {
  return new TypedMap(map, ipsetKey, ipsetValue);
}
