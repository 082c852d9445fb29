import { macToBytes } from '../addr.js';
import { ETHERTYPE } from '../constants.js';
import { checkUint, type Layer } from '../layer.js';

export interface EthOptions {
  /** Default 02:00:00:00:00:01. */
  src?: string;
  /** Default 02:00:00:00:00:02. */
  dst?: string;
  /** EtherType; defaults to what the next layer announces (0x0800 for ipv4()). */
  type?: number;
  /**
   * Pad the whole frame (from this header on) with zeros up to this many
   * bytes, as a NIC does to reach the 60-byte minimum.
   */
  padTo?: number;
}

// Parsed once: eth() with defaults is the common case in tests and benchmarks.
const DEFAULT_SRC = macToBytes('02:00:00:00:00:01');
const DEFAULT_DST = macToBytes('02:00:00:00:00:02');

class EthLayer implements Layer {
  readonly kind = 'eth';
  readonly headerLength = 14;
  readonly ethertype = ETHERTYPE.TEB;
  private readonly src: Buffer;
  private readonly dst: Buffer;
  private readonly type: number | undefined;
  private readonly padTo: number;

  constructor(opts: EthOptions) {
    this.src = opts.src === undefined ? DEFAULT_SRC : macToBytes(opts.src);
    this.dst = opts.dst === undefined ? DEFAULT_DST : macToBytes(opts.dst);
    this.type = opts.type === undefined ? undefined : checkUint('eth', 'type', opts.type, 16);
    this.padTo = opts.padTo ?? 0;
  }

  totalLength(carried: number): number {
    return Math.max(this.headerLength + carried, this.padTo);
  }

  write(buf: Buffer, offset: number, _end: number, _prev?: Layer, next?: Layer): void {
    const type = this.type ?? next?.ethertype;
    if (type === undefined) {
      throw new Error(`eth: cannot infer EtherType from next layer (${next?.kind ?? 'none'}); set type`);
    }
    this.dst.copy(buf, offset);
    this.src.copy(buf, offset + 6);
    buf.writeUInt16BE(type, offset + 12);
  }
}

/** Ethernet II header. */
export function eth(opts: EthOptions = {}): Layer {
  return new EthLayer(opts);
}
