import { internetChecksum } from '../checksum.js';
import { ICMP_TYPE, IPPROTO } from '../constants.js';
import { assemble, checkUint, writeChecksum, EMPTY, type ChecksumOption, type Layer } from '../layer.js';

export interface IcmpOptions {
  /** Default 8 (echo request). See ICMP_TYPE. */
  type?: number;
  code?: number;
  /** Echo identifier (high half of `rest`). */
  id?: number;
  /** Echo sequence number (low half of `rest`). */
  seq?: number;
  /** Next-hop MTU for "fragmentation needed" (low half of `rest`, RFC 1191). */
  mtu?: number;
  /** The raw 4 bytes after the checksum, as a u32 or bytes; overrides id/seq/mtu. */
  rest?: number | Uint8Array;
  /**
   * For errors: the offending datagram, as layers starting at the IP header
   * (built in full, so its lengths and checksums are those of the original)
   * or as bytes. It is then cut to `innerLength`.
   */
  inner?: readonly Layer[] | Uint8Array;
  /**
   * How many bytes of `inner` the error quotes. Default: its IP header plus
   * 8 bytes, the minimum RFC 792 requires. Use Infinity to quote all of it.
   */
  innerLength?: number;
  checksum?: ChecksumOption;
}

class IcmpLayer implements Layer {
  readonly kind = 'icmp';
  readonly ipProtocol = IPPROTO.ICMP;
  readonly headerLength: number;
  private readonly typeCode: number;
  private readonly rest: Buffer;
  private readonly quote: Buffer;
  private readonly checksum: ChecksumOption | undefined;

  constructor(opts: IcmpOptions) {
    const type = checkUint('icmp', 'type', opts.type ?? ICMP_TYPE.ECHO_REQUEST, 8);
    this.typeCode = (type << 8) | checkUint('icmp', 'code', opts.code ?? 0, 8);
    this.rest = restBytes(opts);
    this.quote = quoteBytes(opts);
    this.headerLength = 8 + this.quote.length;
    this.checksum = opts.checksum;
  }

  write(buf: Buffer, offset: number): void {
    buf.writeUInt16BE(this.typeCode, offset);
    this.rest.copy(buf, offset + 4);
    this.quote.copy(buf, offset + 8);
  }

  finalize(buf: Buffer, offset: number, end: number): void {
    // ICMPv4 has no pseudo-header: the checksum covers the whole message.
    writeChecksum(buf, offset + 2, this.checksum, () => internetChecksum(buf, offset, end));
  }
}

function restBytes(opts: IcmpOptions): Buffer {
  const out = Buffer.alloc(4);
  const { rest } = opts;
  if (rest instanceof Uint8Array) {
    if (rest.length !== 4) throw new RangeError(`icmp: rest must be 4 bytes, got ${rest.length}`);
    out.set(rest);
  } else if (rest !== undefined) {
    out.writeUInt32BE(checkUint('icmp', 'rest', rest, 32));
  } else {
    out.writeUInt16BE(checkUint('icmp', 'id', opts.id ?? 0, 16), 0);
    const low = opts.mtu ?? opts.seq ?? 0;
    out.writeUInt16BE(checkUint('icmp', opts.mtu === undefined ? 'seq' : 'mtu', low, 16), 2);
  }
  return out;
}

function quoteBytes(opts: IcmpOptions): Buffer {
  const { inner } = opts;
  if (inner === undefined) return EMPTY;
  const full = inner instanceof Uint8Array ? Buffer.from(inner) : assemble(inner);
  let length = opts.innerLength;
  if (length === undefined) {
    const isIpv4 = full.length > 0 && full[0] >> 4 === 4;
    length = isIpv4 ? (full[0] & 0x0f) * 4 + 8 : full.length;
  }
  if (!(length >= 0)) throw new RangeError(`icmp: innerLength ${length} is negative`);
  return full.subarray(0, Math.min(length, full.length));
}

/** ICMP message; for errors pass `inner`, for echo the data is whatever layers follow. */
export function icmp(opts: IcmpOptions = {}): Layer {
  return new IcmpLayer(opts);
}
