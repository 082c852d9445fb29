// Shapes returned by the parser. Every layer records `offset`, the absolute
// byte offset of its header in the buffer that was parsed, so tests can patch
// or slice bytes; Buffer fields are views into that buffer, not copies.

export interface ParsedEth {
  offset: number;
  dst: string;
  src: string;
  type: number;
}

export interface ParsedIpv4 {
  offset: number;
  version: number;
  /** Header length in 32-bit words. */
  ihl: number;
  tos: number;
  totalLength: number;
  id: number;
  /** Raw 3-bit flags field: 4 = reserved, 2 = DF, 1 = MF. */
  flags: number;
  df: boolean;
  mf: boolean;
  /** In 8-byte units, as on the wire. */
  fragOffset: number;
  ttl: number;
  proto: number;
  checksum: number;
  src: string;
  dst: string;
  options: Buffer;
  /** totalLength runs past the end of the buffer (normal inside ICMP errors). */
  truncated: boolean;
}

export interface ParsedTcp {
  offset: number;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  /** Header length in 32-bit words. */
  dataOffset: number;
  /** Canonical letters in "FSRPAUEC" order, e.g. "SA", "PA", "FA". */
  flags: string;
  /** The 9 flag bits including NS (0x100). */
  flagBits: number;
  window: number;
  checksum: number;
  urgent: number;
  options: Buffer;
  /**
   * The header is cut short (ICMP errors quote only 8 bytes of it). Ports and
   * seq are always real; fields past the cut read as 0.
   */
  truncated: boolean;
}

export interface ParsedUdp {
  offset: number;
  sport: number;
  dport: number;
  length: number;
  checksum: number;
  /** The length field runs past the end of the buffer. */
  truncated: boolean;
}

export interface ParsedIcmp {
  offset: number;
  type: number;
  code: number;
  checksum: number;
  /** The 4 bytes after the checksum as a u32. */
  rest: number;
  /** High half of rest (echo identifier). */
  id: number;
  /** Low half of rest (echo sequence). */
  seq: number;
  /** Next-hop MTU, present for "fragmentation needed" (type 3 code 4). */
  mtu?: number;
  /** For error types: the quoted datagram, parsed as far as it goes. */
  inner?: ParsedPacket;
}

export interface ParsedVxlan {
  offset: number;
  flags: number;
  vni: number;
  inner: ParsedFrame;
}

/** A packet starting at the network header. Absent layers were not present or not parsed. */
export interface ParsedPacket {
  ipv4?: ParsedIpv4;
  tcp?: ParsedTcp;
  udp?: ParsedUdp;
  icmp?: ParsedIcmp;
  vxlan?: ParsedVxlan;
  /** Bytes after the last parsed header, up to the end of the IP packet. */
  payload: Buffer;
  /** Bytes after the end of the IP packet, e.g. Ethernet padding. */
  trailer: Buffer;
}

export interface ParsedFrame extends ParsedPacket {
  eth: ParsedEth;
}

export interface ParseOptions {
  /** UDP destination ports whose payload is VXLAN; default [4789]; [] disables. */
  vxlanPorts?: readonly number[];
}

export interface ChecksumProblem {
  /** Where in the nesting, e.g. "tcp", "vxlan.inner.ipv4", "icmp.inner.ipv4". */
  path: string;
  layer: 'ipv4' | 'tcp' | 'udp' | 'icmp';
  /** Offset of the layer's header in the buffer. */
  offset: number;
  /** Correct value; absent when it cannot be computed (e.g. truncated). */
  expected?: number;
  actual?: number;
  message: string;
}
