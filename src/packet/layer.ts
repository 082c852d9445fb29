// The contract between frame() and the individual layer builders. Anything
// implementing Layer can be stacked, which is how IPv6, ARP, VLAN tags etc.
// can be added later without touching the assembler.

export interface Layer {
  readonly kind: string;
  /** Bytes this layer writes itself, before the next layer begins. */
  readonly headerLength: number;
  /** EtherType an enclosing Ethernet header should announce for this layer. */
  readonly ethertype?: number;
  /** Protocol number an enclosing IP header should announce for this layer. */
  readonly ipProtocol?: number;
  /** Destination port an enclosing UDP header should default to (VXLAN). */
  readonly udpPort?: number;
  /**
   * Total bytes of this layer including everything it carries, given the
   * length of what it carries. Defaults to headerLength + carried; Ethernet
   * overrides it to pad short frames.
   */
  totalLength?(carried: number): number;
  /** Write the header at `offset`; the layer and its contents span [offset, end). */
  write(buf: Buffer, offset: number, end: number, prev?: Layer, next?: Layer): void;
  /**
   * Called innermost layer first, after every layer is written, so a checksum
   * sees the final bytes of everything it covers (including inner checksums).
   */
  finalize?(buf: Buffer, offset: number, end: number, prev?: Layer): void;
}

/** A layer that provides the pseudo-header for transport checksums (IPv4 now, IPv6 later). */
export interface NetworkLayer extends Layer {
  pseudoHeaderSum(protocol: number, l4Length: number): number;
}

export function isNetworkLayer(layer: Layer | undefined): layer is NetworkLayer {
  return layer !== undefined && 'pseudoHeaderSum' in layer;
}

/**
 * A checksum field setting: omitted means "compute it", a number is written
 * verbatim, and 'bad' writes a value guaranteed to fail verification.
 */
export type ChecksumOption = number | 'bad';

/**
 * A value that is wrong for `correct` under one's-complement comparison (so
 * not the 0x0000/0xffff twin) and never 0, which UDP would read as "no
 * checksum".
 */
export function wrongChecksum(correct: number): number {
  const bad = correct ^ 0x5555;
  return bad === 0 || bad === 0xffff ? correct ^ 0xaaaa : bad;
}

/** Write a checksum field honouring the caller's override; `compute` runs only when needed. */
export function writeChecksum(
  buf: Buffer,
  at: number,
  option: ChecksumOption | undefined,
  compute: () => number,
): void {
  let value: number;
  if (option === undefined) value = compute();
  else if (option === 'bad') value = wrongChecksum(compute());
  else value = option;
  buf.writeUInt16BE(value, at);
}

/** Assemble layers, outermost first, into one buffer. */
export function assemble(layers: readonly Layer[]): Buffer {
  const n = layers.length;
  // sizes[i] is the length of layers[i] plus everything after it.
  const sizes = new Array<number>(n + 1);
  sizes[n] = 0;
  for (let i = n - 1; i >= 0; i--) {
    const layer = layers[i];
    sizes[i] = layer.totalLength ? layer.totalLength(sizes[i + 1]) : layer.headerLength + sizes[i + 1];
  }
  // Zero-filled so reserved fields, padding and checksum fields start at 0.
  // allocUnsafe draws from the shared pool, far cheaper than alloc() for small frames.
  const buf = Buffer.allocUnsafe(sizes[0]).fill(0);
  const offsets = new Array<number>(n);
  let offset = 0;
  for (let i = 0; i < n; i++) {
    offsets[i] = offset;
    layers[i].write(buf, offset, offset + sizes[i], layers[i - 1], layers[i + 1]);
    offset += layers[i].headerLength;
  }
  for (let i = n - 1; i >= 0; i--) {
    layers[i].finalize?.(buf, offsets[i], offsets[i] + sizes[i], layers[i - 1]);
  }
  return buf;
}

/** Range-check an integer option so a typo fails loudly instead of wrapping. */
export function checkUint(layer: string, name: string, value: number, bits: number): number {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new RangeError(`${layer}: ${name} ${value} does not fit in ${bits} bits`);
  }
  return value;
}

/** Pad option bytes to a multiple of 4 with zeros (end-of-option-list). */
export function padOptions(layer: string, options: Uint8Array | undefined, max: number): Buffer {
  if (!options || options.length === 0) return EMPTY;
  if (options.length > max) {
    throw new RangeError(`${layer}: ${options.length} bytes of options exceed ${max}`);
  }
  const padded = Buffer.alloc((options.length + 3) & ~3);
  padded.set(options);
  return padded;
}

export const EMPTY: Buffer = Buffer.alloc(0);
