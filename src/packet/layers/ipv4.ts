import { toIpv4U32 } from '../addr.js';
import { internetChecksum, ipv4PseudoHeaderSum } from '../checksum.js';
import { ETHERTYPE, IPPROTO } from '../constants.js';
import { checkUint, padOptions, writeChecksum, type ChecksumOption, type Layer, type NetworkLayer } from '../layer.js';

export type IpProtocolName = 'tcp' | 'udp' | 'icmp';

const PROTO_BY_NAME: Record<IpProtocolName, number> = {
  tcp: IPPROTO.TCP,
  udp: IPPROTO.UDP,
  icmp: IPPROTO.ICMP,
};

export interface Ipv4Options {
  /** Default 10.0.0.1. */
  src?: string | number;
  /** Default 10.0.0.2. */
  dst?: string | number;
  /** Default 64. */
  ttl?: number;
  /** Identification; default 0. */
  id?: number;
  /** Type of service / DSCP+ECN byte; default 0. */
  tos?: number;
  /** Don't-fragment flag. */
  df?: boolean;
  /** More-fragments flag. */
  mf?: boolean;
  /** Raw 3-bit flags field (reserved, DF, MF); overrides df/mf. */
  flags?: number;
  /** Fragment offset in 8-byte units, as on the wire. */
  fragOffset?: number;
  /** Option bytes; zero-padded to a multiple of 4 (max 40). */
  options?: Uint8Array;
  /** Protocol; defaults to what the next layer announces. */
  proto?: number | IpProtocolName;
  /** Header length in 32-bit words; computed unless overridden. */
  ihl?: number;
  /** Total length; computed unless overridden. */
  totalLength?: number;
  checksum?: ChecksumOption;
}

class Ipv4Layer implements NetworkLayer {
  readonly kind = 'ipv4';
  readonly ethertype = ETHERTYPE.IPV4;
  readonly ipProtocol = IPPROTO.IPIP;
  readonly headerLength: number;
  private readonly src: number;
  private readonly dst: number;
  private readonly proto: number | undefined;
  private readonly options: Buffer;
  // Fixed fields are validated and packed once, so reusing a layer across
  // many frames (benchmarks) only pays for the writes.
  private readonly ihlByte: number;
  private readonly tos: number;
  private readonly id: number;
  private readonly flagsFrag: number;
  private readonly ttl: number;
  private readonly totalLengthOverride: number | undefined;
  private readonly checksum: ChecksumOption | undefined;

  constructor(opts: Ipv4Options) {
    this.src = toIpv4U32(opts.src ?? '10.0.0.1');
    this.dst = toIpv4U32(opts.dst ?? '10.0.0.2');
    this.options = padOptions('ipv4', opts.options, 40);
    this.headerLength = 20 + this.options.length;
    const ihl = opts.ihl ?? this.headerLength / 4;
    this.ihlByte = 0x40 | checkUint('ipv4', 'ihl', ihl, 4);
    this.tos = checkUint('ipv4', 'tos', opts.tos ?? 0, 8);
    this.id = checkUint('ipv4', 'id', opts.id ?? 0, 16);
    this.ttl = checkUint('ipv4', 'ttl', opts.ttl ?? 64, 8);
    const flags = opts.flags ?? (opts.df ? 2 : 0) | (opts.mf ? 1 : 0);
    checkUint('ipv4', 'flags', flags, 3);
    this.flagsFrag = (flags << 13) | checkUint('ipv4', 'fragOffset', opts.fragOffset ?? 0, 13);
    const proto = opts.proto;
    this.proto = typeof proto === 'string' ? PROTO_BY_NAME[proto] : proto;
    if (this.proto !== undefined) checkUint('ipv4', 'proto', this.proto, 8);
    this.totalLengthOverride = opts.totalLength;
    this.checksum = opts.checksum;
  }

  pseudoHeaderSum(protocol: number, l4Length: number): number {
    return ipv4PseudoHeaderSum(this.src, this.dst, protocol, l4Length);
  }

  write(buf: Buffer, offset: number, end: number, _prev?: Layer, next?: Layer): void {
    const proto = this.proto ?? next?.ipProtocol;
    if (proto === undefined) {
      throw new Error(`ipv4: cannot infer protocol from next layer (${next?.kind ?? 'none'}); set proto`);
    }
    buf[offset] = this.ihlByte;
    buf[offset + 1] = this.tos;
    buf.writeUInt16BE(this.totalLengthOverride ?? end - offset, offset + 2);
    buf.writeUInt16BE(this.id, offset + 4);
    buf.writeUInt16BE(this.flagsFrag, offset + 6);
    buf[offset + 8] = this.ttl;
    buf[offset + 9] = proto;
    buf.writeUInt32BE(this.src, offset + 12);
    buf.writeUInt32BE(this.dst, offset + 16);
    this.options.copy(buf, offset + 20);
  }

  finalize(buf: Buffer, offset: number): void {
    writeChecksum(buf, offset + 10, this.checksum, () => internetChecksum(buf, offset, offset + this.headerLength));
  }
}

/** IPv4 header. */
export function ipv4(opts: Ipv4Options = {}): Layer {
  return new Ipv4Layer(opts);
}
