// Public API of the packet library: build frames from layers, parse them
// back, and verify checksums. See build.ts and parse.ts.

export * from './build.js';
export { parseFrame, parsePacket, checkChecksums, verifyChecksums, ChecksumError } from './parse.js';
export type { ChecksumOptions } from './parse.js';
export type * from './parsed.js';
export { onesSum, foldSum, finishChecksum, internetChecksum, ipv4PseudoHeaderSum } from './checksum.js';
export { ipv4ToU32, u32ToIpv4, macToBytes, bytesToMac, readIpv4, writeMac } from './addr.js';
export {
  ETHERTYPE,
  IPPROTO,
  ICMP_TYPE,
  ICMP_FRAG_NEEDED,
  VXLAN_PORT,
  TCP_FLAGS,
  encodeTcpFlags,
  decodeTcpFlags,
  isIcmpError,
} from './constants.js';
export { toPcap } from './pcap.js';
