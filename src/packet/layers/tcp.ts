import { IPPROTO, encodeTcpFlags } from '../constants.js';
import { checkUint, padOptions, writeChecksum, type ChecksumOption, type Layer } from '../layer.js';
import { transportChecksum } from './transport.js';

export interface TcpOptions {
  /** Default 40000. */
  sport?: number;
  /** Default 80. */
  dport?: number;
  seq?: number;
  ack?: number;
  /** Letters from "FSRPAUEC" in any order ("S", "SA", "PA", ...) or raw bits; default "S". */
  flags?: string | number;
  /** Default 65535. */
  window?: number;
  urgent?: number;
  /** Option bytes; zero-padded to a multiple of 4 (max 40). */
  options?: Uint8Array;
  /** Header length in 32-bit words; computed unless overridden. */
  dataOffset?: number;
  checksum?: ChecksumOption;
}

class TcpLayer implements Layer {
  readonly kind = 'tcp';
  readonly ipProtocol = IPPROTO.TCP;
  readonly headerLength: number;
  private readonly sport: number;
  private readonly dport: number;
  private readonly seq: number;
  private readonly ack: number;
  private readonly offsetFlags: number;
  private readonly window: number;
  private readonly urgent: number;
  private readonly options: Buffer;
  private readonly checksum: ChecksumOption | undefined;

  constructor(opts: TcpOptions) {
    this.sport = checkUint('tcp', 'sport', opts.sport ?? 40000, 16);
    this.dport = checkUint('tcp', 'dport', opts.dport ?? 80, 16);
    this.seq = checkUint('tcp', 'seq', opts.seq ?? 0, 32);
    this.ack = checkUint('tcp', 'ack', opts.ack ?? 0, 32);
    this.window = checkUint('tcp', 'window', opts.window ?? 65535, 16);
    this.urgent = checkUint('tcp', 'urgent', opts.urgent ?? 0, 16);
    this.options = padOptions('tcp', opts.options, 40);
    this.headerLength = 20 + this.options.length;
    const flags = opts.flags ?? 'S';
    const bits = typeof flags === 'string' ? encodeTcpFlags(flags) : flags;
    const dataOffset = checkUint('tcp', 'dataOffset', opts.dataOffset ?? this.headerLength / 4, 4);
    // The NS bit (0x100) shares the byte with the data offset.
    this.offsetFlags = (dataOffset << 12) | checkUint('tcp', 'flags', bits, 9);
    this.checksum = opts.checksum;
  }

  write(buf: Buffer, offset: number): void {
    buf.writeUInt16BE(this.sport, offset);
    buf.writeUInt16BE(this.dport, offset + 2);
    buf.writeUInt32BE(this.seq, offset + 4);
    buf.writeUInt32BE(this.ack, offset + 8);
    buf.writeUInt16BE(this.offsetFlags, offset + 12);
    buf.writeUInt16BE(this.window, offset + 14);
    buf.writeUInt16BE(this.urgent, offset + 18);
    this.options.copy(buf, offset + 20);
  }

  finalize(buf: Buffer, offset: number, end: number, prev?: Layer): void {
    writeChecksum(buf, offset + 16, this.checksum, () => transportChecksum('tcp', IPPROTO.TCP, buf, offset, end, prev));
  }
}

/** TCP header; the segment data is whatever layers follow. */
export function tcp(opts: TcpOptions = {}): Layer {
  return new TcpLayer(opts);
}
