import type { Layer } from '../layer.js';

class PayloadLayer implements Layer {
  readonly kind = 'payload';
  readonly headerLength: number;

  constructor(private readonly data: Buffer) {
    this.headerLength = data.length;
  }

  write(buf: Buffer, offset: number): void {
    this.data.copy(buf, offset);
  }
}

/**
 * Raw bytes. A string is UTF-8 encoded; a number n gives n bytes of the
 * pattern 0, 1, 2, ... 255, 0, ... so sized payloads are still recognisable.
 */
export function payload(data: Uint8Array | string | number): Layer {
  let bytes: Buffer;
  if (typeof data === 'string') {
    bytes = Buffer.from(data, 'utf8');
  } else if (typeof data === 'number') {
    if (!Number.isInteger(data) || data < 0) throw new RangeError(`payload: bad length ${data}`);
    bytes = Buffer.allocUnsafe(data);
    for (let i = 0; i < data; i++) bytes[i] = i & 0xff;
  } else {
    // Copied so later changes to the caller's array don't leak into frames.
    bytes = Buffer.from(data);
  }
  return new PayloadLayer(bytes);
}
