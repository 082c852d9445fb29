import { IPPROTO } from '../constants.js';
import { checkUint, writeChecksum, type ChecksumOption, type Layer } from '../layer.js';
import { transportChecksum } from './transport.js';

export interface UdpOptions {
  /** Default 40000. */
  sport?: number;
  /** Default: what the next layer asks for (4789 for vxlan()), else 53. */
  dport?: number;
  /** Length field; computed unless overridden. */
  length?: number;
  /** Computed by default; 0 means "no checksum" as RFC 768 allows over IPv4. */
  checksum?: ChecksumOption;
}

class UdpLayer implements Layer {
  readonly kind = 'udp';
  readonly ipProtocol = IPPROTO.UDP;
  readonly headerLength = 8;
  private readonly sport: number;
  private readonly dport: number | undefined;
  private readonly length: number | undefined;
  private readonly checksum: ChecksumOption | undefined;

  constructor(opts: UdpOptions) {
    this.sport = checkUint('udp', 'sport', opts.sport ?? 40000, 16);
    this.dport = opts.dport === undefined ? undefined : checkUint('udp', 'dport', opts.dport, 16);
    this.length = opts.length === undefined ? undefined : checkUint('udp', 'length', opts.length, 16);
    this.checksum = opts.checksum;
  }

  write(buf: Buffer, offset: number, end: number, _prev?: Layer, next?: Layer): void {
    buf.writeUInt16BE(this.sport, offset);
    buf.writeUInt16BE(this.dport ?? next?.udpPort ?? 53, offset + 2);
    buf.writeUInt16BE(this.length ?? end - offset, offset + 4);
  }

  finalize(buf: Buffer, offset: number, end: number, prev?: Layer): void {
    writeChecksum(buf, offset + 6, this.checksum, () => {
      const sum = transportChecksum('udp', IPPROTO.UDP, buf, offset, end, prev);
      // A computed 0 is sent as its one's-complement twin so it isn't read as "none".
      return sum === 0 ? 0xffff : sum;
    });
  }
}

/** UDP header; the datagram body is whatever layers follow. */
export function udp(opts: UdpOptions = {}): Layer {
  return new UdpLayer(opts);
}
