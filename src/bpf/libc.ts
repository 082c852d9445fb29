// The one place that binds libc through koffi. Everything that needs a raw system call
// (bpf(2), netlink sockets, setns) goes through these declarations.
import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

/** syscall(2) with the fixed arity bpf(2) needs; cheaper than the variadic form on x86-64. */
export const syscall4 = lib.func('long syscall(long, int, void *, uint32)') as (
  nr: number,
  cmd: number,
  attr: Buffer,
  size: number,
) => number;

export const close = lib.func('int close(int)') as (fd: number) => number;
export const open = lib.func('int open(const char *, int)') as (path: string, flags: number) => number;
export const setns = lib.func('int setns(int, int)') as (fd: number, nstype: number) => number;
export const socket = lib.func('int socket(int, int, int)') as (domain: number, type: number, proto: number) => number;
export const bind = lib.func('int bind(int, void *, uint32)') as (fd: number, addr: Buffer, len: number) => number;
export const send = lib.func('long send(int, void *, size_t, int)') as (
  fd: number,
  buf: Buffer,
  len: number,
  flags: number,
) => number;
export const recv = lib.func('long recv(int, void *, size_t, int)') as (
  fd: number,
  buf: Buffer,
  len: number,
  flags: number,
) => number;
export const setsockopt = lib.func('int setsockopt(int, int, int, void *, uint32)') as (
  fd: number,
  level: number,
  name: number,
  val: Buffer,
  len: number,
) => number;
export const ifNametoindex = lib.func('unsigned int if_nametoindex(const char *)') as (name: string) => number;
/** mmap(2); koffi returns a `void *` as a BigInt address (MAP_FAILED is 2^64 - 1). */
export const mmap = lib.func('void *mmap(void *, size_t, int, int, int, long)') as (
  addr: bigint | null,
  len: number,
  prot: number,
  flags: number,
  fd: number,
  offset: number,
) => bigint;
export const munmap = lib.func('int munmap(void *, size_t)') as (addr: bigint, len: number) => number;
export const sysconf = lib.func('long sysconf(int)') as (name: number) => number;

export function errno(): number {
  return koffi.errno();
}

/** The address of a Buffer's data, for pointer fields inside attribute structs. */
export function addressOf(buf: Buffer): bigint {
  return koffi.address(buf) as bigint;
}

/**
 * An ArrayBuffer over `len` bytes of foreign memory at `addr`, without a copy (koffi.view). It
 * does not own the memory: touching it after the memory is unmapped crashes the process.
 */
export function memoryView(addr: bigint, len: number): ArrayBuffer {
  return koffi.view(addr, len);
}

export const O_RDONLY = 0;
export const O_DIRECTORY = 0o200000;
export const O_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_FAILED = 0xffffffffffffffffn;
export const SC_PAGESIZE = 30;
