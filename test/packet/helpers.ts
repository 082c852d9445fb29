// Shared test helpers (not a test file: no .test suffix).

/** Hex with optional whitespace, so literal frames can be laid out by header. */
export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}
