import { VXLAN_PORT } from '../constants.js';
import { checkUint, type Layer } from '../layer.js';

export interface VxlanOptions {
  /** 24-bit VXLAN network identifier. Default 0. */
  vni?: number;
  /** Flags byte; default 0x08 (the I bit: VNI is valid). */
  flags?: number;
}

class VxlanLayer implements Layer {
  readonly kind = 'vxlan';
  readonly headerLength = 8;
  readonly udpPort = VXLAN_PORT;
  private readonly flags: number;
  private readonly vni: number;

  constructor(opts: VxlanOptions) {
    this.flags = checkUint('vxlan', 'flags', opts.flags ?? 0x08, 8);
    this.vni = checkUint('vxlan', 'vni', opts.vni ?? 0, 24);
  }

  write(buf: Buffer, offset: number): void {
    buf[offset] = this.flags;
    // Bytes 1-3 and 7 are reserved and already zero.
    buf.writeUIntBE(this.vni, offset + 4, 3);
  }
}

/** VXLAN header (RFC 7348); follow it with the inner eth() and the rest of the inner frame. */
export function vxlan(opts: VxlanOptions = {}): Layer {
  return new VxlanLayer(opts);
}
