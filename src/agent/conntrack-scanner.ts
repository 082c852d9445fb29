// Expires conntrack entries in userspace (the datapath only creates and touches them), with
// Calico's BPFConntrackTimeouts semantics. The two entries of a NAT flow are judged together:
// each sees only one direction's packets, the flow is alive while either is.
import { ctKeyOf, CtType, TcpSeen, type CtEntry, type CtKey } from '../datapath/conntrack.js';
import type { TypedMap } from '../bpf/typed-map.js';
import { Proto } from '../datapath/nat.js';
import { CONNTRACK_AUTO_FALLBACK, type ConntrackTimeoutName } from './config-fields.js';

/** Seconds, per Calico's BPFConntrackTimeouts field ('Auto' already resolved). */
export type ConntrackTimeouts = Record<ConntrackTimeoutName, number>;

/** Calico's built-in values, as the configuration model defines them. */
export const DEFAULT_CONNTRACK_TIMEOUTS: ConntrackTimeouts = CONNTRACK_AUTO_FALLBACK;

export interface ScanResult {
  scanned: number;
  expired: number;
  /** Entries that changed between the scan and the delete (traffic came): kept. */
  raced: number;
}

const keyId = (k: CtKey) => `${k.addrA}:${k.portA}-${k.addrB}:${k.portB}/${k.proto}`;

/** The other entry of a NAT flow, from what this one records. */
function pairOf(k: CtKey, v: CtEntry): CtKey | undefined {
  const opener = v.openerIsB ? { addr: k.addrB, port: k.portB } : { addr: k.addrA, port: k.portA };
  if (v.type === CtType.NAT_FWD && v.natAddr !== '0.0.0.0') {
    // Hairpin flows were source-NATed too: their reverse entry starts at the node address.
    const src = v.snatAddr !== '0.0.0.0' ? { addr: v.snatAddr, port: v.snatPort } : opener;
    return ctKeyOf(src.addr, src.port, v.natAddr, v.natPort, k.proto);
  }
  if (v.type === CtType.NAT_REV) {
    const client = v.snatAddr !== '0.0.0.0' ? { addr: v.snatAddr, port: v.snatPort } : opener;
    return ctKeyOf(client.addr, client.port, v.natAddr, v.natPort, k.proto);
  }
  return undefined;
}

/** How long a flow in this state may stay idle, in seconds. */
export function idleTimeout(proto: number, opener: number, peer: number, t: ConntrackTimeouts): number {
  if (proto === Proto.TCP) {
    const all = opener | peer;
    if (all & TcpSeen.RST) return t.tcpResetSeen;
    if (opener & TcpSeen.FIN && peer & TcpSeen.FIN) return t.tcpFinsSeen;
    // Established once both sides have sent something beyond the opening SYN.
    if (opener & TcpSeen.ACK && peer & TcpSeen.ACK) return t.tcpEstablished;
    return t.tcpSynSent;
  }
  if (proto === Proto.UDP) return t.udpTimeout;
  if (proto === Proto.ICMP) return t.icmpTimeout;
  return t.genericTimeout;
}

export function scanConntrack(
  ct: TypedMap<CtKey, CtEntry>,
  t: ConntrackTimeouts,
  nowNs = Number(process.hrtime.bigint()),
): ScanResult {
  const entries = new Map<string, [CtKey, CtEntry]>();
  for (const [k, v] of ct.entries()) entries.set(keyId(k), [k, v]);
  const expired: { k: CtKey; v: CtEntry; pair?: [CtKey, CtEntry] }[] = [];
  for (const [k, v] of entries.values()) {
    const pk = pairOf(k, v);
    const pair = pk ? entries.get(keyId(pk)) : undefined;
    const lastSeen = Math.max(v.lastSeenNs, pair?.[1].lastSeenNs ?? 0);
    const created = Math.min(v.createdNs, pair?.[1].createdNs ?? Infinity);
    if ((nowNs - created) / 1e9 < t.creationGracePeriod) continue;
    // Both entries of a NAT flow are created by the client's first packet, so in each the opener
    // is the client (or, for hairpin, the address standing in for it): combine per role.
    const flags = (e: CtEntry) => (e.openerIsB ? [e.tcpB, e.tcpA] : [e.tcpA, e.tcpB]);
    const [o, p] = flags(v);
    const [po, pp] = pair ? flags(pair[1]) : [0, 0];
    const opener = o | po;
    const peer = p | pp;
    if ((nowNs - lastSeen) / 1e9 > idleTimeout(k.proto, opener, peer, t)) expired.push({ k, v, pair });
  }
  // Race-safety: delete only entries the datapath has not touched since they were read.
  let raced = 0;
  const doomed: CtKey[] = [];
  for (const { k, v, pair } of expired) {
    const now = ct.get(k);
    if (!now) continue;
    // A packet on either half of a NAT flow keeps both halves.
    const pairNow = pair ? ct.get(pair[0]) : undefined;
    if (now.lastSeenNs !== v.lastSeenNs || (pair && pairNow && pairNow.lastSeenNs !== pair[1].lastSeenNs)) {
      raced++;
      continue;
    }
    doomed.push(k);
  }
  const n = doomed.length ? ct.deleteMany(doomed) : 0;
  return { scanned: entries.size, expired: n, raced };
}
