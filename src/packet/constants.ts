// Protocol numbers shared by the builder and the parser.

export const ETHERTYPE = {
  IPV4: 0x0800,
  ARP: 0x0806,
  VLAN: 0x8100,
  IPV6: 0x86dd,
  /** Transparent Ethernet bridging: an Ethernet frame carried inside a tunnel. */
  TEB: 0x6558,
} as const;

export const IPPROTO = {
  ICMP: 1,
  IPIP: 4,
  TCP: 6,
  UDP: 17,
  IPV6: 41,
  ICMPV6: 58,
} as const;

export const ICMP_TYPE = {
  ECHO_REPLY: 0,
  DEST_UNREACH: 3,
  SOURCE_QUENCH: 4,
  REDIRECT: 5,
  ECHO_REQUEST: 8,
  TIME_EXCEEDED: 11,
  PARAM_PROBLEM: 12,
} as const;

/** Destination-unreachable code whose `rest` field carries the next-hop MTU (RFC 1191). */
export const ICMP_FRAG_NEEDED = 4;

/** ICMP types whose body quotes the offending datagram (RFC 792). */
export function isIcmpError(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

export const VXLAN_PORT = 4789;

// Letters follow tcpdump; their order here (bit order) is the canonical order
// the parser emits, which gives the familiar "SA", "FA", "PA".
const TCP_FLAG_LETTERS = 'FSRPAUEC';

export const TCP_FLAGS = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

/** "SA" -> 0x12. Letters may come in any order; unknown letters throw. */
export function encodeTcpFlags(flags: string): number {
  let bits = 0;
  for (const ch of flags) {
    const bit = TCP_FLAG_LETTERS.indexOf(ch.toUpperCase());
    if (bit < 0) {
      throw new Error(`unknown TCP flag ${JSON.stringify(ch)} in ${JSON.stringify(flags)}`);
    }
    bits |= 1 << bit;
  }
  return bits;
}

/** 0x12 -> "SA"; no flags -> "". */
export function decodeTcpFlags(bits: number): string {
  let out = '';
  for (let i = 0; i < TCP_FLAG_LETTERS.length; i++) {
    if (bits & (1 << i)) out += TCP_FLAG_LETTERS[i];
  }
  return out;
}
