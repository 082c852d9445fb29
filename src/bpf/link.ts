// BPF links: tcx (kernel >= 6.6), XDP and cgroup attachments through BPF_LINK_CREATE.
// A link detaches when its last fd closes unless it is pinned, so pinning is what keeps the
// datapath running while the agent restarts. The legacy clsact path is in tc-legacy.ts.
import { readFileSync, realpathSync } from 'node:fs';
import { BpfError } from './errors.js';
import { O_CLOEXEC, O_DIRECTORY, O_RDONLY, errno, open } from './libc.js';
import { AttachType, bpf, closeFd, Cmd, newAttr, objGet, objInfo, objPin, writePtr } from './syscall.js';
import type { Program } from './program.js';

export type LinkKind = 'tcx' | 'xdp' | 'cgroup' | 'other';

export interface LinkInfo {
  id: number;
  progId: number;
  type: number;
  /** ifindex for tcx and XDP links. */
  ifindex?: number;
  attachType?: number;
}

const LINK_TYPE_CGROUP = 3;
const LINK_TYPE_XDP = 6;
const LINK_TYPE_TCX = 11;

export class Link {
  constructor(
    readonly fd: number,
    readonly description: string,
  ) {}

  info(): LinkInfo {
    const b = objInfo(this.fd, 64, 'BPF_OBJ_GET_INFO_BY_FD', this.description);
    const type = b.readUInt32LE(0);
    const out: LinkInfo = { type, id: b.readUInt32LE(4), progId: b.readUInt32LE(8) };
    if (type === LINK_TYPE_TCX) {
      out.ifindex = b.readUInt32LE(16);
      out.attachType = b.readUInt32LE(20);
    } else if (type === LINK_TYPE_XDP) {
      out.ifindex = b.readUInt32LE(16);
    } else if (type === LINK_TYPE_CGROUP) {
      out.attachType = b.readUInt32LE(24);
    }
    return out;
  }

  get kind(): LinkKind {
    const t = this.info().type;
    return t === LINK_TYPE_TCX ? 'tcx' : t === LINK_TYPE_XDP ? 'xdp' : t === LINK_TYPE_CGROUP ? 'cgroup' : 'other';
  }

  pin(path: string): void {
    objPin(this.fd, path, this.description);
  }

  /** Swaps the program atomically: no packet runs without one. `expected` guards a race. */
  update(prog: Program, expected?: Program): void {
    const attr = newAttr();
    attr.writeUInt32LE(this.fd, 0);
    attr.writeUInt32LE(prog.fd, 4);
    if (expected) {
      attr.writeUInt32LE(4, 8); // BPF_F_REPLACE
      attr.writeUInt32LE(expected.fd, 12);
    }
    bpf(Cmd.LINK_UPDATE, attr, 'BPF_LINK_UPDATE', this.description);
  }

  /** Detaches even if the link is pinned (the pin then refers to a defunct link). */
  detach(): void {
    const attr = newAttr();
    attr.writeUInt32LE(this.fd, 0);
    bpf(Cmd.LINK_DETACH, attr, 'BPF_LINK_DETACH', this.description);
  }

  close(): void {
    closeFd(this.fd);
    (this as { fd: number }).fd = -1;
  }

  static openPinned(path: string): Link {
    return new Link(objGet(path, path), path);
  }
}

function linkCreate(progFd: number, target: number, attachType: number, flags: number, what: string): Link {
  const attr = newAttr();
  attr.writeUInt32LE(progFd, 0);
  attr.writeUInt32LE(target, 4);
  attr.writeUInt32LE(attachType, 8);
  attr.writeUInt32LE(flags, 12);
  return new Link(bpf(Cmd.LINK_CREATE, attr, 'BPF_LINK_CREATE', what), what);
}

export type Direction = 'ingress' | 'egress';

/** tcx attach of a SCHED_CLS program. The ifindex is resolved in the calling thread's netns. */
export function attachTcx(prog: Program, ifindex: number, direction: Direction): Link {
  const type = direction === 'ingress' ? AttachType.TCX_INGRESS : AttachType.TCX_EGRESS;
  return linkCreate(prog.fd, ifindex, type, 0, `${prog.name} tcx/${direction} ifindex ${ifindex}`);
}

/** Programs (and their links) attached with tcx to one hook of an interface, in run order. */
export function queryTcx(
  ifindex: number,
  direction: Direction,
): { progIds: number[]; linkIds: number[]; revision: bigint } {
  const max = 64;
  const progIds = Buffer.alloc(4 * max);
  const linkIds = Buffer.alloc(4 * max);
  const attr = newAttr();
  attr.writeUInt32LE(ifindex, 0);
  attr.writeUInt32LE(direction === 'ingress' ? AttachType.TCX_INGRESS : AttachType.TCX_EGRESS, 4);
  writePtr(attr, 16, progIds);
  attr.writeUInt32LE(max, 24);
  writePtr(attr, 40, linkIds);
  bpf(Cmd.PROG_QUERY, attr, 'BPF_PROG_QUERY', `tcx/${direction} ifindex ${ifindex}`);
  const n = attr.readUInt32LE(24);
  const ids = (b: Buffer) => Array.from({ length: n }, (_, i) => b.readUInt32LE(4 * i));
  return { progIds: ids(progIds), linkIds: ids(linkIds), revision: attr.readBigUInt64LE(56) };
}

export const XdpMode = { AUTO: 0, SKB: 2, DRV: 4 } as const;

export function attachXdp(prog: Program, ifindex: number, mode: number = XdpMode.AUTO): Link {
  return linkCreate(prog.fd, ifindex, AttachType.XDP, mode, `${prog.name} xdp ifindex ${ifindex}`);
}

/** cgroup v2 mount points: attaching to one of these would affect the whole machine. */
function cgroupRoots(): Set<string> {
  const roots = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post) continue;
    const fstype = post.split(' ')[0];
    if (fstype === 'cgroup2' || fstype === 'cgroup') roots.add(pre.split(' ')[4]);
  }
  return roots;
}

/**
 * Attaches a cgroup program (connect4, sendmsg4, ...) to a cgroup v2 directory. Refuses a cgroup
 * root: a hook there would rewrite every connection on the machine.
 */
export function attachCgroup(prog: Program, cgroupDir: string, attachType: number): Link {
  const real = realpathSync(cgroupDir);
  if (cgroupRoots().has(real)) {
    throw new BpfError('EPERM', {
      op: 'attach cgroup program',
      object: real,
      message: 'refusing to attach to a cgroup root; create a sub-cgroup for the processes to balance',
    });
  }
  const fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw BpfError.fromErrno(errno(), 'open cgroup', real);
  try {
    return linkCreate(prog.fd, fd, attachType, 0, `${prog.name} cgroup ${real}`);
  } finally {
    closeFd(fd);
  }
}
