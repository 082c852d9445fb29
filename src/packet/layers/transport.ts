import { finishChecksum, onesSum } from '../checksum.js';
import { isNetworkLayer, type Layer } from '../layer.js';

/**
 * Transport checksum of [offset, end) with the pseudo-header of the enclosing
 * network layer. The checksum field must still be zero when this runs.
 */
export function transportChecksum(
  kind: string,
  protocol: number,
  buf: Buffer,
  offset: number,
  end: number,
  prev: Layer | undefined,
): number {
  if (!isNetworkLayer(prev)) {
    throw new Error(
      `${kind}: checksum needs an enclosing IP layer (got ${prev?.kind ?? 'none'}); set checksum explicitly`,
    );
  }
  const length = end - offset;
  return finishChecksum(onesSum(buf, offset, end, prev.pseudoHeaderSum(protocol, length)));
}
