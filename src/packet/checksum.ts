// RFC 1071 internet checksum.
//
// Sums are kept as plain (unfolded) numbers: a 64 KiB packet adds at most
// 32768 words of 0xffff, far below 2^53, so no carry handling is needed until
// the final fold. That lets callers add partial sums of several ranges (e.g. a
// pseudo-header plus the segment with its checksum field skipped).

/**
 * One's-complement partial sum of the 16-bit big-endian words in
 * buf[start, end), added to `initial`. An odd trailing byte is padded with a
 * zero low byte. When summing a region in several pieces, every piece except
 * the last must have even length so words stay aligned.
 */
export function onesSum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  if (start < 0 || end > buf.length || start > end) {
    throw new RangeError(`checksum range [${start}, ${end}) outside buffer of ${buf.length}`);
  }
  let sum = initial;
  const last = end - 1;
  let i = start;
  for (; i < last; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (i === last) sum += buf[i] << 8;
  return sum;
}

/** Fold carries back in (end-around carry) to a 16-bit one's-complement sum. */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** The value to store in a checksum field given the partial sum of everything it covers. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/** Internet checksum of buf[start, end); `initial` adds e.g. a pseudo-header sum. */
export function internetChecksum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  return finishChecksum(onesSum(buf, start, end, initial));
}

/**
 * Partial sum of the IPv4 pseudo-header used by TCP and UDP (RFC 793/768):
 * source, destination, zero+protocol, and the L4 length.
 */
export function ipv4PseudoHeaderSum(src: number, dst: number, protocol: number, l4Length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + l4Length;
}
