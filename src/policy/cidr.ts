// IPv4 CIDRs as policy uses them: strict parsing (host bits must be zero) and containment.

export interface Cidr {
  /** Network address as an unsigned 32-bit number. */
  addr: number;
  len: number;
  /** Canonical text, e.g. 10.0.0.0/8; a bare address is a /32. */
  text: string;
}

const OCTETS = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseIpv4(text: string): number {
  const m = OCTETS.exec(text);
  if (!m) throw new Error(`${JSON.stringify(text)} is not an IPv4 address`);
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) throw new Error(`${JSON.stringify(text)} is not an IPv4 address`);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

export function parseCidr(text: string): Cidr {
  if (typeof text !== 'string') throw new Error(`${JSON.stringify(text)} is not a CIDR`);
  if (text.includes(':')) throw new Error(`${text}: IPv6 is not supported yet`);
  const [ip, lenText, ...rest] = text.split('/');
  if (rest.length > 0 || ip === undefined) throw new Error(`${JSON.stringify(text)} is not a CIDR`);
  const len = lenText === undefined ? 32 : /^\d{1,2}$/.test(lenText) ? Number(lenText) : NaN;
  if (!(len >= 0 && len <= 32)) throw new Error(`${JSON.stringify(text)}: prefix length must be 0-32`);
  const addr = parseIpv4(ip);
  if ((addr & ~maskOf(len)) >>> 0 !== 0)
    throw new Error(`${text} has host bits set (did you mean ${formatIpv4((addr & maskOf(len)) >>> 0)}/${len}?)`);
  return { addr, len, text: `${formatIpv4(addr)}/${len}` };
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return (ip & maskOf(c.len)) >>> 0 === c.addr;
}
