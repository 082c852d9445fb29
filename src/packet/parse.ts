// Frame parser and checksum verifier. Both share one walker so the bounds
// logic (IP total length vs. buffer end, truncation, fragments) is written
// once; verification is the walk with a problem list attached.

import { bytesToMac, readIpv4 } from './addr.js';
import { finishChecksum, onesSum } from './checksum.js';
import { ETHERTYPE, IPPROTO, ICMP_FRAG_NEEDED, VXLAN_PORT, decodeTcpFlags, isIcmpError } from './constants.js';
import { EMPTY } from './layer.js';
import type {
  ChecksumProblem,
  ParsedFrame,
  ParsedIcmp,
  ParsedIpv4,
  ParsedPacket,
  ParseOptions,
  ParsedTcp,
} from './parsed.js';

export interface ChecksumOptions extends ParseOptions {
  /** Where the buffer starts: an Ethernet header (default) or an IP header. */
  from?: 'eth' | 'ip';
}

interface Walk {
  readonly buf: Buffer;
  readonly vxlanPorts: readonly number[];
  /** Set when verifying checksums. */
  readonly problems: ChecksumProblem[] | undefined;
}

const DEFAULT_VXLAN_PORTS: readonly number[] = [VXLAN_PORT];

/** Parse an Ethernet frame. Throws only if it is too short for an Ethernet header. */
export function parseFrame(buf: Uint8Array, opts: ParseOptions = {}): ParsedFrame {
  const w = walker(buf, opts, undefined);
  return walkFrame(w, 0, w.buf.length, '', true);
}

/** Parse a packet that starts at the IP header (no Ethernet). */
export function parsePacket(buf: Uint8Array, opts: ParseOptions = {}): ParsedPacket {
  const w = walker(buf, opts, undefined);
  return walkPacket(w, 0, w.buf.length);
}

/**
 * Verify IPv4 header, TCP, UDP (0 = none is fine) and ICMP checksums,
 * recursing into VXLAN inner frames; inside ICMP error quotes only the inner
 * IP header is checked, since the quote usually cuts the L4 segment short.
 * Fragments' L4 checksums are skipped: they cover the reassembled datagram.
 */
export function checkChecksums(buf: Uint8Array, opts: ChecksumOptions = {}): ChecksumProblem[] {
  const w = walker(buf, opts, []);
  if (opts.from === 'ip') walkPacket(w, 0, w.buf.length);
  else walkFrame(w, 0, w.buf.length, '', true);
  return w.problems ?? [];
}

export class ChecksumError extends Error {
  constructor(readonly problems: readonly ChecksumProblem[]) {
    super(`bad checksums:\n${problems.map((p) => `  - ${p.message}`).join('\n')}`);
    this.name = 'ChecksumError';
  }
}

/** Like checkChecksums() but throws a ChecksumError listing every problem. */
export function verifyChecksums(buf: Uint8Array, opts: ChecksumOptions = {}): void {
  const problems = checkChecksums(buf, opts);
  if (problems.length > 0) throw new ChecksumError(problems);
}

function walker(buf: Uint8Array, opts: ParseOptions, problems: ChecksumProblem[] | undefined): Walk {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    buf: b,
    vxlanPorts: opts.vxlanPorts ?? DEFAULT_VXLAN_PORTS,
    problems,
  };
}

function walkFrame(w: Walk, start: number, end: number, path: string, checkL4: boolean): ParsedFrame {
  const b = w.buf;
  if (end - start < 14) {
    throw new Error(`frame too short for Ethernet: ${end - start} bytes`);
  }
  const out: ParsedFrame = {
    eth: {
      offset: start,
      dst: bytesToMac(b, start),
      src: bytesToMac(b, start + 6),
      type: b.readUInt16BE(start + 12),
    },
    payload: EMPTY,
    trailer: EMPTY,
  };
  const l3 = start + 14;
  if (!(out.eth.type === ETHERTYPE.IPV4 && walkIpv4(w, out, l3, end, path, checkL4))) {
    out.payload = b.subarray(l3, end);
  }
  return out;
}

function walkPacket(w: Walk, start: number, end: number): ParsedPacket {
  const out: ParsedPacket = { payload: EMPTY, trailer: EMPTY };
  // Dispatch on the version nibble; IPv6 slots in here.
  if (!walkIpv4(w, out, start, end, '', true)) out.payload = w.buf.subarray(start, end);
  return out;
}

/** Returns false (parsing nothing) if there is no complete IPv4 header. */
function walkIpv4(w: Walk, out: ParsedPacket, start: number, end: number, path: string, checkL4: boolean): boolean {
  const b = w.buf;
  if (end - start < 20) return false;
  const version = b[start] >> 4;
  const ihl = b[start] & 0x0f;
  const headerEnd = start + ihl * 4;
  if (version !== 4 || ihl < 5 || headerEnd > end) return false;

  const totalLength = b.readUInt16BE(start + 2);
  const truncated = start + totalLength > end;
  // A bogus total length shorter than the header still leaves the header parsed.
  const ipEnd = truncated ? end : Math.max(start + totalLength, headerEnd);
  const flagsFrag = b.readUInt16BE(start + 6);
  const ip: ParsedIpv4 = {
    offset: start,
    version,
    ihl,
    tos: b[start + 1],
    totalLength,
    id: b.readUInt16BE(start + 4),
    flags: flagsFrag >> 13,
    df: (flagsFrag & 0x4000) !== 0,
    mf: (flagsFrag & 0x2000) !== 0,
    fragOffset: flagsFrag & 0x1fff,
    ttl: b[start + 8],
    proto: b[start + 9],
    checksum: b.readUInt16BE(start + 10),
    src: readIpv4(b, start + 12),
    dst: readIpv4(b, start + 16),
    options: b.subarray(start + 20, headerEnd),
    truncated,
  };
  out.ipv4 = ip;
  out.trailer = b.subarray(ipEnd, end);
  out.payload = b.subarray(headerEnd, ipEnd);
  const at = path + 'ipv4';
  if (w.problems) {
    checkField(
      w,
      at,
      'ipv4',
      start,
      start + 10,
      onesSum(b, start, start + 10) + onesSum(b, start + 12, headerEnd),
      false,
    );
  }

  // Only the first fragment carries the L4 header.
  if (ip.fragOffset > 0) return true;
  const known = ip.proto === IPPROTO.TCP || ip.proto === IPPROTO.UDP || ip.proto === IPPROTO.ICMP;
  if (w.problems && checkL4 && known && truncated) {
    w.problems.push({
      path: at,
      layer: 'ipv4',
      offset: start,
      message: `${at}: total length ${totalLength} exceeds the ${end - start} bytes present; cannot verify L4 checksum`,
    });
  }
  // A first fragment's L4 checksum covers the reassembled datagram, so it can't be checked here.
  const verifyL4 = checkL4 && !truncated && !ip.mf;
  // Address part of the pseudo-header; protocol and length are added per L4.
  const addrSum = verifyL4 ? onesSum(b, start + 12, start + 20) : undefined;
  switch (ip.proto) {
    case IPPROTO.TCP:
      walkTcp(w, out, headerEnd, ipEnd, path, addrSum);
      break;
    case IPPROTO.UDP:
      walkUdp(w, out, headerEnd, ipEnd, path, addrSum);
      break;
    case IPPROTO.ICMP:
      walkIcmp(w, out, headerEnd, ipEnd, path, verifyL4);
      break;
  }
  return true;
}

/** Reads that tolerate a header cut short: missing bytes read as 0. */
function u16(b: Buffer, at: number, end: number): number {
  return at + 2 <= end ? b.readUInt16BE(at) : 0;
}
function u32(b: Buffer, at: number, end: number): number {
  return at + 4 <= end ? b.readUInt32BE(at) : 0;
}

function walkTcp(
  w: Walk,
  out: ParsedPacket,
  start: number,
  end: number,
  path: string,
  addrSum: number | undefined,
): void {
  const b = w.buf;
  // 8 bytes (ports + seq) is what an ICMP error is guaranteed to quote.
  if (end - start < 8) return;
  const offsetFlags = u16(b, start + 12, end);
  const dataOffset = offsetFlags >> 12;
  const headerEnd = start + Math.max(dataOffset, 5) * 4;
  const truncated = headerEnd > end;
  const tcp: ParsedTcp = {
    offset: start,
    sport: b.readUInt16BE(start),
    dport: b.readUInt16BE(start + 2),
    seq: b.readUInt32BE(start + 4),
    ack: u32(b, start + 8, end),
    dataOffset,
    flags: decodeTcpFlags(offsetFlags & 0xff),
    flagBits: offsetFlags & 0x1ff,
    window: u16(b, start + 14, end),
    checksum: u16(b, start + 16, end),
    urgent: u16(b, start + 18, end),
    options: truncated ? EMPTY : b.subarray(start + 20, headerEnd),
    truncated,
  };
  out.tcp = tcp;
  out.payload = truncated ? EMPTY : b.subarray(headerEnd, end);
  if (w.problems && addrSum !== undefined) {
    if (truncated) {
      truncatedProblem(w, path + 'tcp', 'tcp', start);
    } else {
      const sum = addrSum + IPPROTO.TCP + (end - start) + onesSum(b, start, start + 16) + onesSum(b, start + 18, end);
      checkField(w, path + 'tcp', 'tcp', start, start + 16, sum, false);
    }
  }
}

function walkUdp(
  w: Walk,
  out: ParsedPacket,
  start: number,
  end: number,
  path: string,
  addrSum: number | undefined,
): void {
  const b = w.buf;
  if (end - start < 8) return;
  const length = b.readUInt16BE(start + 4);
  const lengthOk = length >= 8 && start + length <= end;
  const udpEnd = lengthOk ? start + length : end;
  const dport = b.readUInt16BE(start + 2);
  const checksum = b.readUInt16BE(start + 6);
  out.udp = {
    offset: start,
    sport: b.readUInt16BE(start),
    dport,
    length,
    checksum,
    truncated: start + length > end,
  };
  out.payload = b.subarray(start + 8, udpEnd);
  const at = path + 'udp';
  if (w.problems && addrSum !== undefined) {
    if (!lengthOk) {
      w.problems.push({
        path: at,
        layer: 'udp',
        offset: start,
        message: `${at}: length field ${length} does not fit the ${end - start} bytes of the IP payload; cannot verify checksum`,
      });
    } else if (checksum !== 0) {
      const sum = addrSum + IPPROTO.UDP + length + onesSum(b, start, start + 6) + onesSum(b, start + 8, udpEnd);
      checkField(w, at, 'udp', start, start + 6, sum, true);
    }
  }
  if (w.vxlanPorts.includes(dport) && udpEnd - start >= 8 + 8 + 14) {
    const vx = start + 8;
    out.vxlan = {
      offset: vx,
      flags: b[vx],
      vni: b.readUIntBE(vx + 4, 3),
      // Inner L4 is only checkable when the outer datagram is whole.
      inner: walkFrame(w, vx + 8, udpEnd, `${path}vxlan.inner.`, addrSum !== undefined),
    };
    out.payload = b.subarray(vx + 8, udpEnd);
  }
}

function walkIcmp(w: Walk, out: ParsedPacket, start: number, end: number, path: string, verify: boolean): void {
  const b = w.buf;
  if (end - start < 8) return;
  const type = b[start];
  const code = b[start + 1];
  const rest = b.readUInt32BE(start + 4);
  const icmp: ParsedIcmp = {
    offset: start,
    type,
    code,
    checksum: b.readUInt16BE(start + 2),
    rest,
    id: rest >>> 16,
    seq: rest & 0xffff,
  };
  if (type === 3 && code === ICMP_FRAG_NEEDED) icmp.mtu = rest & 0xffff;
  out.icmp = icmp;
  out.payload = b.subarray(start + 8, end);
  if (w.problems && verify) {
    const sum = onesSum(b, start, start + 2) + onesSum(b, start + 4, end);
    checkField(w, path + 'icmp', 'icmp', start, start + 2, sum, false);
  }
  if (isIcmpError(type)) {
    const inner: ParsedPacket = { payload: EMPTY, trailer: EMPTY };
    if (walkIpv4(w, inner, start + 8, end, `${path}icmp.inner.`, false)) icmp.inner = inner;
  }
}

function hex16(v: number): string {
  return `0x${v.toString(16).padStart(4, '0')}`;
}

/**
 * Compare the checksum field at `field` with the value computed from `sum`,
 * the partial sum of everything it covers except the field itself.
 */
function checkField(
  w: Walk,
  path: string,
  layer: ChecksumProblem['layer'],
  offset: number,
  field: number,
  sum: number,
  isUdp: boolean,
): void {
  const actual = w.buf.readUInt16BE(field);
  let expected = finishChecksum(sum);
  // UDP must send a computed 0 as 0xffff, since 0 means "no checksum".
  if (isUdp && expected === 0) expected = 0xffff;
  // 0x0000 and 0xffff are the same one's-complement number; receivers verify
  // by summing, so either form passes for IP, TCP and ICMP.
  const twin = !isUdp && (actual === 0 || actual === 0xffff) && (expected === 0 || expected === 0xffff);
  if (actual === expected || twin) return;
  w.problems?.push({
    path,
    layer,
    offset,
    expected,
    actual,
    message: `${path} checksum is ${hex16(actual)}, expected ${hex16(expected)} (header at byte ${offset})`,
  });
}

function truncatedProblem(w: Walk, path: string, layer: ChecksumProblem['layer'], offset: number): void {
  w.problems?.push({
    path,
    layer,
    offset,
    message: `${path}: header is truncated; cannot verify checksum`,
  });
}
