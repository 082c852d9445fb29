// A minimal rtnetlink (NETLINK_ROUTE) client: message building and parsing, and a synchronous
// request/ack and dump loop over a raw netlink socket bound through koffi.
//
// Wire format (all host byte order, little-endian here):
//   nlmsghdr   { u32 len; u16 type; u16 flags; u32 seq; u32 pid }           16 bytes
//   family msg (tcmsg 20 bytes, ifinfomsg 16 bytes), padded to 4
//   rtattr*    { u16 len; u16 type; payload }, each padded to 4; len excludes the padding
// Numbers were checked against /usr/include/linux/{netlink,rtnetlink}.h.
//
// A netlink socket belongs to the network namespace its creating thread was in when socket(2)
// ran. Every public entry point here opens its own socket, so callers pick the namespace by
// calling them inside withNetns() (see netns.ts).
import { BpfError } from './errors.js';
import { bind, close, errno, recv, send, setsockopt, socket } from './libc.js';

const AF_NETLINK = 16;
export const AF_UNSPEC = 0;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20; // SO_RCVTIMEO_OLD on x86-64: struct timeval { long sec; long usec }
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const MSG_TRUNC = 0x20;
const EINTR = 4;
const EAGAIN = 11;

/** nlmsghdr flags. The meaning of 0x100-0x800 depends on the request kind (get / new / delete). */
export const NLM_F = {
  REQUEST: 0x01,
  MULTI: 0x02,
  ACK: 0x04,
  ECHO: 0x08,
  DUMP_INTR: 0x10,
  // GET requests
  ROOT: 0x100,
  MATCH: 0x200,
  DUMP: 0x300,
  // NEW requests
  REPLACE: 0x100,
  EXCL: 0x200,
  CREATE: 0x400,
  APPEND: 0x800,
  // NLMSG_ERROR replies
  CAPPED: 0x100,
  ACK_TLVS: 0x200,
} as const;

export const NLMSG = { NOOP: 1, ERROR: 2, DONE: 3, OVERRUN: 4 } as const;

export const RTM = {
  NEWLINK: 16,
  DELLINK: 17,
  GETLINK: 18,
  SETLINK: 19,
  NEWQDISC: 36,
  DELQDISC: 37,
  GETQDISC: 38,
  NEWTFILTER: 44,
  DELTFILTER: 45,
  GETTFILTER: 46,
} as const;

const rtmNames: Record<number, string> = Object.fromEntries(Object.entries(RTM).map(([k, v]) => [v, `RTM_${k}`]));

/** The name of a message type, for errors: `RTM_NEWTFILTER`. */
export function rtmName(type: number): string {
  return rtmNames[type] ?? `netlink message type ${type}`;
}

export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = 0x3fff;

const NLMSGERR_ATTR_MSG = 1;

export const NLMSG_HDRLEN = 16;
const RTA_HDRLEN = 4;

export function align4(n: number): number {
  return (n + 3) & ~3;
}

// ---------------------------------------------------------------------------------------------
// Building

/** One encoded attribute, padded to 4 bytes. `payload` is copied. */
export function rtattr(type: number, payload: Buffer): Buffer {
  const len = RTA_HDRLEN + payload.length;
  if (len > 0xffff)
    throw new BpfError('E2BIG', {
      op: 'netlink',
      message: `attribute ${type} is ${len} bytes`,
    });
  const out = Buffer.alloc(align4(len));
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, RTA_HDRLEN);
  return out;
}

export function rtattrU32(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0, 0);
  return rtattr(type, b);
}

export function rtattrU16(type: number, value: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value, 0);
  return rtattr(type, b);
}

/** A NUL-terminated string attribute. */
export function rtattrString(type: number, value: string): Buffer {
  return rtattr(type, Buffer.from(value + '\0', 'utf8'));
}

/**
 * A nested attribute holding `children` (already encoded). The kernel's tc and link parsers
 * accept nests with or without NLA_F_NESTED; it is left off unless asked for, as iproute2
 * has always sent them.
 */
export function rtattrNested(type: number, children: Buffer[], flagNested = false): Buffer {
  return rtattr(flagNested ? type | NLA_F_NESTED : type, Buffer.concat(children));
}

export interface TcMsg {
  family?: number;
  ifindex: number;
  handle?: number;
  parent?: number;
  info?: number;
}

/** struct tcmsg: family u8, pad u8, pad u16, ifindex i32, handle u32, parent u32, info u32. */
export function encodeTcmsg(m: TcMsg): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt8(m.family ?? AF_UNSPEC, 0);
  b.writeInt32LE(m.ifindex, 4);
  b.writeUInt32LE((m.handle ?? 0) >>> 0, 8);
  b.writeUInt32LE((m.parent ?? 0) >>> 0, 12);
  b.writeUInt32LE((m.info ?? 0) >>> 0, 16);
  return b;
}

export interface IfInfoMsg {
  family?: number;
  type?: number;
  index: number;
  flags?: number;
  change?: number;
}

/** struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32. */
export function encodeIfinfomsg(m: IfInfoMsg): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(m.family ?? AF_UNSPEC, 0);
  b.writeUInt16LE(m.type ?? 0, 2);
  b.writeInt32LE(m.index, 4);
  b.writeUInt32LE((m.flags ?? 0) >>> 0, 8);
  b.writeUInt32LE((m.change ?? 0) >>> 0, 12);
  return b;
}

/** A whole message: nlmsghdr + family header (padded) + attributes. nlmsg_pid is 0. */
export function buildMessage(type: number, flags: number, seq: number, header: Buffer, attrs: Buffer[] = []): Buffer {
  const headerLen = align4(header.length);
  const attrsLen = attrs.reduce((n, a) => n + a.length, 0);
  const msg = Buffer.alloc(NLMSG_HDRLEN + headerLen + attrsLen);
  msg.writeUInt32LE(msg.length, 0);
  msg.writeUInt16LE(type, 4);
  msg.writeUInt16LE(flags, 6);
  msg.writeUInt32LE(seq >>> 0, 8);
  msg.writeUInt32LE(0, 12);
  header.copy(msg, NLMSG_HDRLEN);
  let off = NLMSG_HDRLEN + headerLen;
  for (const a of attrs) {
    a.copy(msg, off);
    off += a.length;
  }
  return msg;
}

// ---------------------------------------------------------------------------------------------
// Parsing

export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Everything after the nlmsghdr (a view into the receive buffer's copy). */
  payload: Buffer;
}

/** Splits one datagram into messages; stops at a truncated or malformed tail. */
export function parseMessages(buf: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) break;
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

export interface Attr {
  /** Type with NLA_F_NESTED / NLA_F_NET_BYTEORDER masked off. */
  type: number;
  nested: boolean;
  data: Buffer;
}

/** Parses a run of attributes (the tail of a message, or the data of a nested attribute). */
export function parseAttrs(buf: Buffer): Attr[] {
  const out: Attr[] = [];
  let off = 0;
  while (off + RTA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(off);
    const rawType = buf.readUInt16LE(off + 2);
    if (len < RTA_HDRLEN || off + len > buf.length) break;
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      data: buf.subarray(off + RTA_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Attributes by type; the first occurrence wins. */
export function attrMap(buf: Buffer): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  for (const a of parseAttrs(buf)) if (!m.has(a.type)) m.set(a.type, a.data);
  return m;
}

export function attrU32(data: Buffer | undefined): number | undefined {
  return data && data.length >= 4 ? data.readUInt32LE(0) : undefined;
}

/** A string attribute without its NUL terminator. */
export function attrString(data: Buffer | undefined): string | undefined {
  if (!data) return undefined;
  const end = data.indexOf(0);
  return data.toString('utf8', 0, end < 0 ? data.length : end);
}

export interface ParsedTcMsg extends Required<TcMsg> {
  attrs: Buffer;
}

export function decodeTcmsg(payload: Buffer): ParsedTcMsg {
  if (payload.length < 20) throw new BpfError('EPROTO', { op: 'netlink', message: 'short tcmsg' });
  return {
    family: payload.readUInt8(0),
    ifindex: payload.readInt32LE(4),
    handle: payload.readUInt32LE(8),
    parent: payload.readUInt32LE(12),
    info: payload.readUInt32LE(16),
    attrs: payload.subarray(20),
  };
}

export interface ParsedIfInfoMsg extends Required<IfInfoMsg> {
  attrs: Buffer;
}

export function decodeIfinfomsg(payload: Buffer): ParsedIfInfoMsg {
  if (payload.length < 16) throw new BpfError('EPROTO', { op: 'netlink', message: 'short ifinfomsg' });
  return {
    family: payload.readUInt8(0),
    type: payload.readUInt16LE(2),
    index: payload.readInt32LE(4),
    flags: payload.readUInt32LE(8),
    change: payload.readUInt32LE(12),
    attrs: payload.subarray(16),
  };
}

export interface NlError {
  /** 0 for an ACK, else a negative errno. */
  error: number;
  /** The kernel's extended-ACK text (NLMSGERR_ATTR_MSG), when it sent one. */
  message: string | undefined;
}

/**
 * Decodes an NLMSG_ERROR payload: i32 error, then the request's nlmsghdr (plus its payload
 * unless NLM_F_CAPPED), then extended-ACK attributes when NLM_F_ACK_TLVS is set.
 */
export function decodeError(msg: NlMessage): NlError {
  const p = msg.payload;
  if (p.length < 4)
    throw new BpfError('EPROTO', {
      op: 'netlink',
      message: 'short NLMSG_ERROR',
    });
  const error = p.readInt32LE(0);
  let message: string | undefined;
  if (msg.flags & NLM_F.ACK_TLVS && p.length >= 4 + NLMSG_HDRLEN) {
    const echoed = msg.flags & NLM_F.CAPPED ? NLMSG_HDRLEN : align4(p.readUInt32LE(4));
    const tlvs = p.subarray(Math.min(p.length, 4 + echoed));
    message = attrString(attrMap(tlvs).get(NLMSGERR_ATTR_MSG));
  }
  return { error, message };
}

// ---------------------------------------------------------------------------------------------
// The socket

export interface RequestContext {
  /** Operation name for errors; defaults to the message type's name (`RTM_NEWTFILTER`). */
  op?: string;
  /** What the request is about (an interface), for errors. */
  object?: string;
}

const RECV_BUFFER = 64 * 1024;
const RECV_TIMEOUT_S = 10;
const DUMP_ATTEMPTS = 3;

/**
 * One NETLINK_ROUTE socket. Blocking and synchronous: rtnetlink requests are answered by the
 * kernel in the same system call path, so a reply is always ready or arrives within
 * microseconds; a receive timeout guards against a reply that never comes.
 */
export class RtNetlink {
  private seq: number;
  private readonly rx = Buffer.alloc(RECV_BUFFER);

  private constructor(private fd: number) {
    // Start somewhere arbitrary so stale replies from an earlier socket are never mistaken.
    this.seq = (Date.now() & 0x7fffffff) >>> 0;
  }

  /**
   * Opens a socket in the calling thread's current network namespace. `protocol` picks the
   * netlink family (default NETLINK_ROUTE; e.g. 4 for NETLINK_SOCK_DIAG).
   */
  static open(protocol: number = NETLINK_ROUTE): RtNetlink {
    const fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
    if (fd < 0) throw BpfError.fromErrno(errno(), 'socket(AF_NETLINK)');
    try {
      const addr = Buffer.alloc(12); // sockaddr_nl: family u16, pad u16, pid u32 (0: kernel picks), groups u32
      addr.writeUInt16LE(AF_NETLINK, 0);
      if (bind(fd, addr, addr.length) < 0) throw BpfError.fromErrno(errno(), 'bind(AF_NETLINK)');
      const one = Buffer.alloc(4);
      one.writeInt32LE(1, 0);
      // Best effort: ask for error text, and for errors without a copy of our request.
      setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
      setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, one, 4);
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(BigInt(RECV_TIMEOUT_S), 0);
      if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) < 0) {
        throw BpfError.fromErrno(errno(), 'setsockopt(SO_RCVTIMEO)');
      }
    } catch (err) {
      close(fd);
      throw err;
    }
    return new RtNetlink(fd);
  }

  close(): void {
    if (this.fd >= 0) close(this.fd);
    this.fd = -1;
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    if (this.seq === 0) this.seq = 1;
    return this.seq;
  }

  private sendMessage(msg: Buffer, op: string, object?: string): void {
    for (;;) {
      const n = send(this.fd, msg, msg.length, 0);
      if (n >= 0) {
        if (n !== msg.length)
          throw new BpfError('EIO', {
            op,
            object,
            message: `short netlink send (${n}/${msg.length})`,
          });
        return;
      }
      const e = errno();
      if (e !== EINTR) throw BpfError.fromErrno(e, op, object);
    }
  }

  /** Receives one datagram and returns its messages. */
  private receive(op: string, object?: string): NlMessage[] {
    for (;;) {
      // MSG_TRUNC makes recv return the datagram's real length, so truncation is detected.
      const n = recv(this.fd, this.rx, this.rx.length, MSG_TRUNC);
      if (n >= 0) {
        if (n > this.rx.length) {
          throw new BpfError('EMSGSIZE', {
            op,
            object,
            message: `netlink reply of ${n} bytes exceeds the buffer`,
          });
        }
        return parseMessages(Buffer.from(this.rx.subarray(0, n)));
      }
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) {
        throw new BpfError('ETIMEDOUT', {
          op,
          object,
          message: `no netlink reply within ${RECV_TIMEOUT_S} s`,
        });
      }
      throw BpfError.fromErrno(e, op, object);
    }
  }

  private fail(err: NlError, op: string, object?: string): BpfError {
    return BpfError.fromErrno(-err.error, op, object, err.message ? `kernel says: ${err.message}` : undefined);
  }

  /**
   * Sends a request with NLM_F_REQUEST | NLM_F_ACK | `flags` and waits for its acknowledgement.
   * Returns the messages that came before the ACK (e.g. with NLM_F_ECHO). A negative error in
   * the ACK becomes a BpfError with `op` (default: the message type's name) and `object`.
   */
  request(type: number, flags: number, header: Buffer, attrs: Buffer[] = [], ctx: RequestContext = {}): NlMessage[] {
    const op = ctx.op ?? rtmName(type);
    const seq = this.nextSeq();
    this.sendMessage(buildMessage(type, NLM_F.REQUEST | NLM_F.ACK | flags, seq, header, attrs), op, ctx.object);
    const replies: NlMessage[] = [];
    for (;;) {
      for (const m of this.receive(op, ctx.object)) {
        if (m.seq !== seq) continue; // stale reply to an earlier, abandoned request
        if (m.type === NLMSG.ERROR) {
          const err = decodeError(m);
          if (err.error !== 0) throw this.fail(err, op, ctx.object);
          return replies;
        }
        if (m.type === NLMSG.NOOP) continue;
        replies.push(m);
      }
    }
  }

  /**
   * A dump: NLM_F_REQUEST | NLM_F_DUMP, collecting multi-part replies until NLMSG_DONE.
   * A dump the kernel marks inconsistent (NLM_F_DUMP_INTR: the table changed while it was
   * being read) is retried a few times.
   */
  dump(type: number, header: Buffer, attrs: Buffer[] = [], ctx: RequestContext = {}): NlMessage[] {
    const op = ctx.op ?? rtmName(type);
    for (let attempt = 1; ; attempt++) {
      const seq = this.nextSeq();
      this.sendMessage(buildMessage(type, NLM_F.REQUEST | NLM_F.DUMP, seq, header, attrs), op, ctx.object);
      const replies: NlMessage[] = [];
      let interrupted = false;
      let done = false;
      while (!done) {
        for (const m of this.receive(op, ctx.object)) {
          if (m.seq !== seq) continue;
          if (m.flags & NLM_F.DUMP_INTR) interrupted = true;
          if (m.type === NLMSG.DONE) {
            // Since 4.x the DONE payload carries an int status; negative means the dump failed.
            const status = m.payload.length >= 4 ? m.payload.readInt32LE(0) : 0;
            if (status < 0) throw this.fail({ error: status, message: undefined }, op, ctx.object);
            done = true;
            break;
          }
          if (m.type === NLMSG.ERROR) {
            const err = decodeError(m);
            if (err.error !== 0) throw this.fail(err, op, ctx.object);
            continue;
          }
          if (m.type === NLMSG.NOOP) continue;
          replies.push(m);
        }
      }
      if (!interrupted) return replies;
      if (attempt >= DUMP_ATTEMPTS) {
        throw new BpfError('EINTR', {
          op,
          object: ctx.object,
          message: 'dump kept changing while being read',
        });
      }
    }
  }
}

/** Opens a socket in the current network namespace, runs `fn`, and closes the socket. */
export function withRtnl<T>(fn: (nl: RtNetlink) => T): T {
  const nl = RtNetlink.open();
  try {
    return fn(nl);
  } finally {
    nl.close();
  }
}
