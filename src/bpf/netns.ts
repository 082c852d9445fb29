// Running synchronous code inside another network namespace, by moving the calling thread
// there with setns(2) and back again.
//
// Why this is safe only for synchronous code:
// - setns(2) moves the calling *thread* only. Node runs JavaScript on its main thread, but
//   file system, DNS and crypto work runs on libuv's thread pool, which stays in the original
//   namespace. Anything asynchronous started inside `fn` (fs.promises, dns.lookup, a socket's
//   connect completing later) either runs on those threads or after `fn` has returned and the
//   thread has moved back, i.e. in the wrong namespace.
// - While `fn` runs, the event loop cannot run, so no other JavaScript observes the switched
//   namespace. `fn` must not return a promise; withNetns refuses one.
// - Objects created during `fn` keep the namespace they were created in: a socket (netlink,
//   ioctl) opened in `fn` stays bound to the target namespace after the switch back, and an
//   ifindex looked up in `fn` is only meaningful inside that namespace. Child processes forked
//   synchronously from this thread during `fn` also start in it.
// - Only the network namespace changes: /sys still shows the mounting namespace's devices, so
//   use if_nametoindex (a socket ioctl), not /sys/class/net, to find interfaces.
import fs from 'node:fs';
import { BpfError } from './errors.js';
import { CLONE_NEWNET, O_CLOEXEC, O_RDONLY, close, errno, ifNametoindex, open, setns } from './libc.js';

/** A namespace made by `ip netns add NAME` (pinned at /run/netns/NAME), or any nsfs path. */
export type NetnsRef = string | { path: string };

const SELF = '/proc/thread-self/ns/net';

export function netnsPath(ns: NetnsRef): string {
  if (typeof ns !== 'string') return ns.path;
  if (ns === '' || ns.includes('/') || ns === '.' || ns === '..') {
    throw new BpfError('EINVAL', {
      op: 'withNetns',
      object: ns,
      message: 'not a namespace name',
    });
  }
  return `/run/netns/${ns}`;
}

function label(ns: NetnsRef): string {
  return typeof ns === 'string' ? ns : ns.path;
}

function openNs(path: string, object: string): number {
  const fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw BpfError.fromErrno(errno(), 'open', object);
  return fd;
}

function isThenable(v: unknown): boolean {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

/**
 * Runs the synchronous `fn` with the calling thread in network namespace `ns` and always moves
 * the thread back to the namespace it was in, also when `fn` throws. Nesting works.
 */
export function withNetns<T>(ns: NetnsRef, fn: () => T): T {
  const path = netnsPath(ns);
  const original = openNs(SELF, SELF);
  let target = -1;
  try {
    target = openNs(path, label(ns));
    if (setns(target, CLONE_NEWNET) < 0) throw BpfError.fromErrno(errno(), 'setns', label(ns));
  } catch (err) {
    if (target >= 0) close(target);
    close(original);
    throw err;
  }
  close(target);

  let result: T;
  try {
    result = fn();
  } catch (err) {
    restore(original, ns, err);
    throw err;
  }
  restore(original, ns, undefined);
  if (isThenable(result)) {
    // The asynchronous part would run in the wrong namespace; refuse, and keep its eventual
    // rejection from surfacing as an unhandled one on top of this error.
    (result as PromiseLike<unknown>).then(undefined, () => undefined);
    throw new BpfError('EINVAL', {
      op: 'withNetns',
      object: label(ns),
      message: 'fn returned a promise; only synchronous code may run in a switched namespace',
    });
  }
  return result;
}

function restore(original: number, ns: NetnsRef, pending: unknown): void {
  const r = setns(original, CLONE_NEWNET);
  const e = r < 0 ? errno() : 0;
  close(original);
  if (r < 0) {
    // The main thread is now stuck in the other namespace; nothing after this can be trusted.
    throw new BpfError('EFATAL', {
      op: 'setns',
      object: SELF,
      errno: e,
      message: `could not return from network namespace ${label(ns)}`,
      cause: pending,
    });
  }
}

/** The ifindex of `ifname` inside namespace `ns`. Throws BpfError (ENODEV) if there is none. */
export function ifindexIn(ns: NetnsRef, ifname: string): number {
  return withNetns(ns, () => ifindexHere(ifname, `${label(ns)}/${ifname}`));
}

/** The ifindex of `ifname` in the calling thread's current namespace. */
export function ifindexHere(ifname: string, object = ifname): number {
  const idx = ifNametoindex(ifname);
  if (idx === 0) throw BpfError.fromErrno(errno() || 19 /* ENODEV */, 'if_nametoindex', object);
  return idx;
}

/** Identifies the calling thread's network namespace (`dev:inode` of its nsfs file). */
export function currentNetnsId(): string {
  // A synchronous stat runs on the calling (main) thread, so thread-self is this thread.
  const st = fs.statSync(SELF);
  return `${st.dev}:${st.ino}`;
}
