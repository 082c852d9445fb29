// bpf(2): command numbers, object type numbers and the one function that issues the call.
// Offsets inside `union bpf_attr` are written where each command is used; they were checked
// against the kernel's BTF (see docs/architecture.md).
import { addressOf, close, errno, syscall4 } from './libc.js';
import { BpfError } from './errors.js';

const SYS_bpf = 321; // x86-64

export const ATTR_SIZE = 168;

export const Cmd = {
  MAP_CREATE: 0,
  MAP_LOOKUP_ELEM: 1,
  MAP_UPDATE_ELEM: 2,
  MAP_DELETE_ELEM: 3,
  MAP_GET_NEXT_KEY: 4,
  PROG_LOAD: 5,
  OBJ_PIN: 6,
  OBJ_GET: 7,
  PROG_ATTACH: 8,
  PROG_DETACH: 9,
  PROG_TEST_RUN: 10,
  PROG_GET_NEXT_ID: 11,
  MAP_GET_NEXT_ID: 12,
  PROG_GET_FD_BY_ID: 13,
  MAP_GET_FD_BY_ID: 14,
  OBJ_GET_INFO_BY_FD: 15,
  PROG_QUERY: 16,
  BTF_LOAD: 18,
  MAP_LOOKUP_AND_DELETE_ELEM: 21,
  MAP_FREEZE: 22,
  MAP_LOOKUP_BATCH: 24,
  MAP_LOOKUP_AND_DELETE_BATCH: 25,
  MAP_UPDATE_BATCH: 26,
  MAP_DELETE_BATCH: 27,
  LINK_CREATE: 28,
  LINK_UPDATE: 29,
  LINK_GET_FD_BY_ID: 30,
  LINK_GET_NEXT_ID: 31,
  LINK_DETACH: 34,
} as const;

export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  RINGBUF: 27,
} as const;

export const mapTypeNames: Record<number, string> = Object.fromEntries(
  Object.entries(MapType).map(([k, v]) => [v, k.toLowerCase()]),
);

export const ProgType = {
  SOCKET_FILTER: 1,
  SCHED_CLS: 3,
  XDP: 6,
  CGROUP_SKB: 8,
  CGROUP_SOCK: 9,
  CGROUP_SOCK_ADDR: 18,
} as const;

export const AttachType = {
  CGROUP_INET_INGRESS: 0,
  CGROUP_INET_EGRESS: 1,
  CGROUP_INET_SOCK_CREATE: 2,
  CGROUP_INET4_CONNECT: 10,
  CGROUP_UDP4_SENDMSG: 14,
  CGROUP_UDP4_RECVMSG: 19,
  CGROUP_INET4_GETPEERNAME: 29,
  XDP: 37,
  TCX_INGRESS: 46,
  TCX_EGRESS: 47,
} as const;

export const MapFlags = {
  NO_PREALLOC: 1,
  RDONLY_PROG: 1 << 7,
} as const;

export const UpdateFlags = { ANY: 0, NOEXIST: 1, EXIST: 2 } as const;

/** A zeroed attribute buffer for one call. */
export function newAttr(): Buffer {
  return Buffer.alloc(ATTR_SIZE);
}

/** Writes a pointer field: the address of `buf`'s data, or NULL. */
export function writePtr(attr: Buffer, offset: number, buf: Buffer | null): void {
  attr.writeBigUInt64LE(buf ? addressOf(buf) : 0n, offset);
}

/**
 * Issues bpf(cmd, attr). Returns the (non-negative) result; throws BpfError on failure.
 * Every Buffer whose address was written into `attr` must stay referenced by the caller until
 * this returns, which holds because they are locals of the calling frame.
 */
export function bpf(cmd: number, attr: Buffer, op: string, object?: string): number {
  const r = syscall4(SYS_bpf, cmd, attr, ATTR_SIZE);
  if (r < 0) throw BpfError.fromErrno(errno(), op, object);
  return r;
}

/** bpf(cmd, attr) returning -errno instead of throwing, for hot paths that expect misses. */
export function bpfRaw(cmd: number, attr: Buffer): number {
  const r = syscall4(SYS_bpf, cmd, attr, ATTR_SIZE);
  return r < 0 ? -errno() : r;
}

export function closeFd(fd: number): void {
  if (fd >= 0) close(fd);
}

export function writeName(attr: Buffer, offset: number, name: string): void {
  // Kernel object names are at most 15 characters plus NUL, from [A-Za-z0-9_.].
  const clean = name.replace(/[^A-Za-z0-9_.]/g, '_').slice(0, 15);
  attr.write(clean, offset, 'latin1');
}

/** BPF_OBJ_GET_INFO_BY_FD into a buffer of `size` bytes. */
export function objInfo(fd: number, size: number, op: string, object?: string): Buffer {
  const info = Buffer.alloc(size);
  const attr = newAttr();
  attr.writeUInt32LE(fd, 0);
  attr.writeUInt32LE(size, 4);
  writePtr(attr, 8, info);
  bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, op, object);
  return info;
}

export function objPin(fd: number, path: string, object?: string): void {
  const p = Buffer.from(path + '\0');
  const attr = newAttr();
  writePtr(attr, 0, p);
  attr.writeUInt32LE(fd, 8);
  bpf(Cmd.OBJ_PIN, attr, 'BPF_OBJ_PIN', object ?? path);
}

export function objGet(path: string, object?: string): number {
  const p = Buffer.from(path + '\0');
  const attr = newAttr();
  writePtr(attr, 0, p);
  return bpf(Cmd.OBJ_GET, attr, 'BPF_OBJ_GET', object ?? path);
}
