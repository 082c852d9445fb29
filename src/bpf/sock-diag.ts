// Listing and destroying IPv4 TCP/UDP sockets over NETLINK_SOCK_DIAG.
//
// Why: the connect-time load balancer rewrites a UDP socket's destination to a Service backend
// when the application calls connect(). If that backend goes away, the connected socket would
// keep sending to it forever; destroying the socket (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY)
// makes the application see an error and reconnect, which picks a live backend.
//
// Wire format, from /usr/include/linux/{sock_diag,inet_diag}.h:
//   struct inet_diag_sockid {                                                   48 bytes
//     __be16 sport; __be16 dport;              network order
//     __be32 src[4]; __be32 dst[4];            network order; IPv4 uses [0] only
//     __u32 if;                                host order
//     __u32 cookie[2];                         host order, cookie[0] the low 32 bits
//   }
//   struct inet_diag_req_v2 {                                                   56 bytes
//     u8 family; u8 protocol; u8 ext; u8 pad; u32 states; inet_diag_sockid id (at 8)
//   }
//   struct inet_diag_msg {                                                      72 bytes
//     u8 family; u8 state; u8 timer; u8 retrans; inet_diag_sockid id (at 4);
//     u32 expires (52); u32 rqueue (56); u32 wqueue (60); u32 uid (64); u32 inode (68)
//   }
// A SOCK_DIAG_BY_FAMILY request with NLM_F_DUMP lists sockets; SOCK_DESTROY with the full
// sockid of one socket (ports, addresses, interface and cookie) destroys it. The kernel finds
// the socket by its 4-tuple and then refuses (ENOENT) if the cookie differs, so a socket that
// closed and was replaced by another with the same addresses is never hit by mistake.
//
// Host byte order is little-endian here, as everywhere in netlink.ts.
//
// Only AF_INET sockets are seen: an AF_INET6 socket connected to a v4-mapped address
// (::ffff:a.b.c.d) is an IPv6 socket to the kernel and is not listed or destroyed here.
import net from 'node:net';
import { BpfError, isErrno } from './errors.js';
import { RtNetlink, type NlMessage } from './netlink.js';
import { withNetns, type NetnsRef } from './netns.js';

const NETLINK_SOCK_DIAG = 4;
export const SOCK_DIAG_BY_FAMILY = 20;
export const SOCK_DESTROY = 21;
const AF_INET = 2;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const INET_DIAG_NOCOOKIE = 0xffffffff;

export const INET_DIAG_SOCKID_LEN = 48;
export const INET_DIAG_REQ_V2_LEN = 56;
export const INET_DIAG_MSG_LEN = 72;

export type InetProtocol = 'tcp' | 'udp';

/**
 * Socket states, numbered as the kernel's TCP states (include/net/tcp_states.h), which UDP
 * sockets share: an unconnected UDP socket is CLOSE, a connected one ESTABLISHED.
 */
export const SOCKET_STATES = [
  'ESTABLISHED', // 1
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
  'BOUND_INACTIVE', // 13, 6.8+
] as const;

export type SocketState = (typeof SOCKET_STATES)[number];

export function stateNumber(state: SocketState): number {
  return SOCKET_STATES.indexOf(state) + 1;
}

export function stateName(n: number): SocketState | `STATE_${number}` {
  return SOCKET_STATES[n - 1] ?? `STATE_${n}`;
}

export interface Endpoint {
  /** Dotted-quad IPv4 address. */
  addr: string;
  port: number;
}

/** The full identity of one socket, as the kernel reports it and as SOCK_DESTROY wants it. */
export interface SockId {
  src: Endpoint;
  dst: Endpoint;
  /** The interface the socket is bound to (idiag_if), 0 for none. */
  ifindex: number;
  /** The socket cookie (SO_COOKIE), unique per socket for the life of the kernel. */
  cookie: bigint;
}

export interface SocketInfo extends SockId {
  protocol: InetProtocol;
  state: SocketState | `STATE_${number}`;
  inode: number;
  uid: number;
}

/** Matches an address and/or a port; an omitted field matches anything. */
export interface EndpointFilter {
  addr?: string;
  port?: number;
}

export interface ListSocketsOptions {
  protocol: InetProtocol;
  /** Local end. */
  src?: EndpointFilter;
  /** Remote end. */
  dst?: EndpointFilter;
  /** Only sockets in these states (default: all). */
  states?: readonly SocketState[];
  /** Run inside this network namespace (default: the calling thread's). */
  netns?: NetnsRef;
}

export interface DestroySocketsOptions {
  protocol: InetProtocol;
  /** The remote end to cut off. The address is required and may not be 0.0.0.0. */
  dst: { addr: string; port?: number };
  src?: EndpointFilter;
  states?: readonly SocketState[];
  netns?: NetnsRef;
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding

function protocolNumber(protocol: InetProtocol): number {
  switch (protocol) {
    case 'tcp':
      return IPPROTO_TCP;
    case 'udp':
      return IPPROTO_UDP;
    default:
      throw new BpfError('EINVAL', {
        op: 'sock_diag',
        object: String(protocol),
        message: 'protocol must be tcp or udp',
      });
  }
}

function checkAddr(addr: string, op: string): Buffer {
  if (!net.isIPv4(addr)) throw new BpfError('EINVAL', { op, object: addr, message: 'not an IPv4 address' });
  return Buffer.from(addr.split('.').map(Number));
}

function checkPort(port: number, op: string): number {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new BpfError('EINVAL', { op, object: String(port), message: 'not a port number' });
  }
  return port;
}

function addrString(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** struct inet_diag_sockid for an IPv4 socket: ports and addresses in network byte order. */
export function encodeSockid(id: SockId): Buffer {
  const b = Buffer.alloc(INET_DIAG_SOCKID_LEN);
  b.writeUInt16BE(checkPort(id.src.port, 'sock_diag'), 0);
  b.writeUInt16BE(checkPort(id.dst.port, 'sock_diag'), 2);
  checkAddr(id.src.addr, 'sock_diag').copy(b, 4);
  checkAddr(id.dst.addr, 'sock_diag').copy(b, 20);
  b.writeUInt32LE(id.ifindex >>> 0, 36);
  b.writeUInt32LE(Number(id.cookie & 0xffffffffn), 40);
  b.writeUInt32LE(Number((id.cookie >> 32n) & 0xffffffffn), 44);
  return b;
}

export function decodeSockid(buf: Buffer, off = 0): SockId {
  if (buf.length < off + INET_DIAG_SOCKID_LEN) {
    throw new BpfError('EPROTO', { op: 'sock_diag', message: 'short inet_diag_sockid' });
  }
  return {
    src: { addr: addrString(buf, off + 4), port: buf.readUInt16BE(off) },
    dst: { addr: addrString(buf, off + 20), port: buf.readUInt16BE(off + 2) },
    ifindex: buf.readUInt32LE(off + 36),
    cookie: BigInt(buf.readUInt32LE(off + 40)) | (BigInt(buf.readUInt32LE(off + 44)) << 32n),
  };
}

/** The cookie that tells the kernel not to check one (INET_DIAG_NOCOOKIE in both halves). */
export const NO_COOKIE = (BigInt(INET_DIAG_NOCOOKIE) << 32n) | BigInt(INET_DIAG_NOCOOKIE);

function statesMask(states: readonly SocketState[] | undefined): number {
  if (states === undefined) return 0xffffffff;
  let mask = 0;
  for (const s of states) {
    const n = stateNumber(s);
    if (n <= 0) throw new BpfError('EINVAL', { op: 'sock_diag', object: String(s), message: 'unknown socket state' });
    mask |= 1 << n;
  }
  return mask >>> 0;
}

export interface InetDiagReq {
  protocol: InetProtocol;
  states?: readonly SocketState[];
  id?: SockId;
}

/** struct inet_diag_req_v2 for AF_INET. */
export function encodeInetDiagReq(r: InetDiagReq): Buffer {
  const b = Buffer.alloc(INET_DIAG_REQ_V2_LEN);
  b.writeUInt8(AF_INET, 0);
  b.writeUInt8(protocolNumber(r.protocol), 1);
  b.writeUInt32LE(statesMask(r.states), 4);
  if (r.id) encodeSockid(r.id).copy(b, 8);
  return b;
}

/** One struct inet_diag_msg (the payload of a SOCK_DIAG_BY_FAMILY reply; attributes ignored). */
export function decodeInetDiagMsg(payload: Buffer, protocol: InetProtocol): SocketInfo & { family: number } {
  if (payload.length < INET_DIAG_MSG_LEN) {
    throw new BpfError('EPROTO', { op: 'SOCK_DIAG_BY_FAMILY', message: 'short inet_diag_msg' });
  }
  return {
    family: payload.readUInt8(0),
    protocol,
    state: stateName(payload.readUInt8(1)),
    ...decodeSockid(payload, 4),
    uid: payload.readUInt32LE(64),
    inode: payload.readUInt32LE(68),
  };
}

/** `udp 10.0.0.1:40000 -> 10.96.0.10:53 cookie 4097`, for errors. */
export function describeSocket(s: SockId & { protocol: InetProtocol }): string {
  return `${s.protocol} ${s.src.addr}:${s.src.port} -> ${s.dst.addr}:${s.dst.port} cookie ${s.cookie}`;
}

// ---------------------------------------------------------------------------------------------
// Talking to the kernel

function inNs<T>(netns: NetnsRef | undefined, fn: () => T): T {
  return netns === undefined ? fn() : withNetns(netns, fn);
}

function withSockDiag<T>(fn: (nl: RtNetlink) => T): T {
  const nl = RtNetlink.open(NETLINK_SOCK_DIAG);
  try {
    return fn(nl);
  } finally {
    nl.close();
  }
}

function endpointMatches(e: Endpoint, f: EndpointFilter | undefined): boolean {
  if (!f) return true;
  if (f.addr !== undefined && e.addr !== f.addr) return false;
  if (f.port !== undefined && e.port !== f.port) return false;
  return true;
}

function validateFilter(f: EndpointFilter | undefined, op: string): void {
  if (f?.addr !== undefined) checkAddr(f.addr, op);
  if (f?.port !== undefined) checkPort(f.port, op);
}

function dumpSockets(nl: RtNetlink, opts: Omit<ListSocketsOptions, 'netns'>): SocketInfo[] {
  const op = 'SOCK_DIAG_BY_FAMILY';
  protocolNumber(opts.protocol);
  validateFilter(opts.src, op);
  validateFilter(opts.dst, op);
  // Ports narrow the dump in the kernel already (a zero port matches any); addresses are
  // compared here. Everything is compared here again, so the kernel's filter is only a speed-up.
  const id: SockId = {
    src: { addr: '0.0.0.0', port: opts.src?.port ?? 0 },
    dst: { addr: '0.0.0.0', port: opts.dst?.port ?? 0 },
    ifindex: 0,
    cookie: NO_COOKIE,
  };
  const header = encodeInetDiagReq({ protocol: opts.protocol, states: opts.states, id });
  const replies: NlMessage[] = nl.dump(SOCK_DIAG_BY_FAMILY, header, [], {
    op,
    object: `${opts.protocol} sockets (IPv4)`,
  });
  const out: SocketInfo[] = [];
  for (const m of replies) {
    if (m.type !== SOCK_DIAG_BY_FAMILY) continue;
    const { family, ...info } = decodeInetDiagMsg(m.payload, opts.protocol);
    if (family !== AF_INET) continue;
    if (!endpointMatches(info.src, opts.src) || !endpointMatches(info.dst, opts.dst)) continue;
    out.push(info);
  }
  return out;
}

/**
 * The IPv4 sockets of `protocol` in the calling thread's network namespace (or `netns`),
 * optionally only those whose local (`src`) and remote (`dst`) ends match.
 */
export function listInetSockets(opts: ListSocketsOptions): SocketInfo[] {
  return inNs(opts.netns, () => withSockDiag((nl) => dumpSockets(nl, opts)));
}

function destroyOne(nl: RtNetlink, s: SocketInfo): boolean {
  const header = encodeInetDiagReq({ protocol: s.protocol, id: s });
  try {
    nl.request(SOCK_DESTROY, 0, header, [], { op: 'SOCK_DESTROY', object: describeSocket(s) });
    return true;
  } catch (err) {
    // Gone since the dump (or replaced by another socket with the same addresses).
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

/**
 * Destroys one socket identified by a listing. Returns false when it no longer exists. The
 * owner sees ECONNABORTED; a UDP socket is also disconnected, so its next send() without an
 * address fails with EDESTADDRREQ; a TCP connection is reset.
 */
export function destroySocket(s: SocketInfo, opts: { netns?: NetnsRef } = {}): boolean {
  protocolNumber(s.protocol);
  return inNs(opts.netns, () => withSockDiag((nl) => destroyOne(nl, s)));
}

/**
 * Destroys every IPv4 socket of `protocol` whose remote end is `dst` (any port when it has
 * none), e.g. all UDP sockets connected to a backend that went away. Returns how many were
 * destroyed; sockets that closed meanwhile are not counted and are not an error.
 */
export function destroySockets(opts: DestroySocketsOptions): number {
  const op = 'SOCK_DESTROY';
  const dst = opts.dst as DestroySocketsOptions['dst'] | undefined;
  if (!dst || dst.addr === undefined) {
    throw new BpfError('EINVAL', { op, message: 'a destination address is required' });
  }
  checkAddr(dst.addr, op);
  if (dst.addr === '0.0.0.0') {
    // Every unconnected socket has this "remote" address.
    throw new BpfError('EINVAL', { op, object: dst.addr, message: 'the destination may not be 0.0.0.0' });
  }
  return inNs(opts.netns, () =>
    withSockDiag((nl) => {
      let n = 0;
      for (const s of dumpSockets(nl, opts)) if (destroyOne(nl, s)) n++;
      return n;
    }),
  );
}
