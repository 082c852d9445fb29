// Address helpers. IPv4 addresses are carried as unsigned 32-bit numbers
// (host order) so they can be compared and written without re-parsing.

/** Parse "a.b.c.d" into an unsigned 32-bit number; throws on anything else. */
export function ipv4ToU32(addr: string): number {
  // Hand-rolled rather than split/regex: layer construction is on the benchmark path.
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < addr.length; i++) {
    const c = addr.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return invalid('IPv4 address', addr);
    } else if (c === 46 && digits > 0 && dots < 3) {
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else {
      return invalid('IPv4 address', addr);
    }
  }
  if (dots !== 3 || digits === 0) return invalid('IPv4 address', addr);
  return value * 256 + octet;
}

function invalid(what: string, text: string): never {
  throw new Error(`invalid ${what}: ${JSON.stringify(text)}`);
}

/** Format an unsigned 32-bit number as "a.b.c.d". */
export function u32ToIpv4(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Error(`invalid IPv4 u32: ${value}`);
  }
  return `${value >>> 24}.${(value >>> 16) & 0xff}.${(value >>> 8) & 0xff}.${value & 0xff}`;
}

/** Accept either form, so layer options can take a string or a number. */
export function toIpv4U32(addr: string | number): number {
  if (typeof addr === 'string') return ipv4ToU32(addr);
  u32ToIpv4(addr); // validates range
  return addr;
}

export function readIpv4(buf: Uint8Array, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** Parse "aa:bb:cc:dd:ee:ff" (or dash-separated) into 6 bytes. */
export function macToBytes(mac: string): Buffer {
  const out = Buffer.allocUnsafe(6);
  writeMac(out, 0, mac);
  return out;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Write a MAC string as 6 bytes at `offset`. */
export function writeMac(buf: Uint8Array, offset: number, mac: string): void {
  const sep = mac.charCodeAt(2);
  if (mac.length !== 17 || (sep !== 58 && sep !== 45)) invalid('MAC address', mac);
  for (let i = 0; i < 6; i++) {
    const at = i * 3;
    const hi = hexDigit(mac.charCodeAt(at));
    const lo = hexDigit(mac.charCodeAt(at + 1));
    if (hi < 0 || lo < 0 || (i < 5 && mac.charCodeAt(at + 2) !== sep)) invalid('MAC address', mac);
    buf[offset + i] = hi * 16 + lo;
  }
}

// Lookup table: formatting MACs shows up in every parsed frame.
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Format 6 bytes at `offset` as lower-case "aa:bb:cc:dd:ee:ff". */
export function bytesToMac(buf: Uint8Array, offset = 0): string {
  if (offset < 0 || offset + 6 > buf.length) throw new RangeError('MAC address out of range');
  return (
    `${HEX[buf[offset]]}:${HEX[buf[offset + 1]]}:${HEX[buf[offset + 2]]}:` +
    `${HEX[buf[offset + 3]]}:${HEX[buf[offset + 4]]}:${HEX[buf[offset + 5]]}`
  );
}
