// The classic tc attach path, for kernels without tcx (before 6.6): a `clsact` qdisc on the
// interface and a direct-action `bpf` classifier on its ingress or egress hook, all over
// rtnetlink. Constants checked against /usr/include/linux/{pkt_sched,pkt_cls,rtnetlink}.h.
//
// Every function opens its own netlink socket in the calling thread's network namespace, or in
// `netns` when given (through withNetns); a TcFilter remembers the namespace it was made in.
import { BpfError, isErrno } from './errors.js';
import {
  attrMap,
  attrString,
  attrU32,
  decodeTcmsg,
  encodeTcmsg,
  NLM_F,
  RTM,
  rtattrNested,
  rtattrString,
  rtattrU32,
  withRtnl,
  type RtNetlink,
} from './netlink.js';
import { withNetns, type NetnsRef } from './netns.js';

/** TC_H_CLSACT == TC_H_INGRESS: the parent of the clsact qdisc. */
export const TC_H_CLSACT = 0xfffffff1;
export const TC_H_MIN_INGRESS = 0xfff2;
export const TC_H_MIN_EGRESS = 0xfff3;
/** The clsact qdisc's own handle, `ffff:` (TC_H_MAKE(TC_H_CLSACT, 0)). */
const CLSACT_HANDLE = 0xffff0000;
const ETH_P_ALL = 0x0003;

// enum TCA_* in rtnetlink.h
const TCA_KIND = 1;
const TCA_OPTIONS = 2;
const TCA_CHAIN = 11;
// enum TCA_BPF_* in pkt_cls.h
const TCA_BPF_FD = 6;
const TCA_BPF_NAME = 7;
const TCA_BPF_FLAGS = 8;
const TCA_BPF_TAG = 10;
const TCA_BPF_ID = 11;
const TCA_BPF_FLAG_ACT_DIRECT = 1 << 0;

export type TcDirection = 'ingress' | 'egress';

/** Where a filter lives: an interface, optionally named (for errors), in a namespace. */
export interface TcTarget {
  ifindex: number;
  /** The interface's name, used only in error messages. */
  ifname?: string;
  /** Run the netlink requests inside this network namespace (default: the current one). */
  netns?: NetnsRef;
}

function toTarget(t: number | TcTarget): TcTarget {
  return typeof t === 'number' ? { ifindex: t } : t;
}

function inNs<T>(t: TcTarget, fn: () => T): T {
  return t.netns === undefined ? fn() : withNetns(t.netns, fn);
}

function targetLabel(t: TcTarget, direction?: TcDirection): string {
  const iface = t.ifname ? `${t.ifname} (ifindex ${t.ifindex})` : `ifindex ${t.ifindex}`;
  const ns = t.netns === undefined ? '' : ` in netns ${typeof t.netns === 'string' ? t.netns : t.netns.path}`;
  return `${iface}${direction ? ` ${direction}` : ''}${ns}`;
}

/** The tcm_parent of a clsact hook: ffff:fff2 (ingress) or ffff:fff3 (egress). */
export function tcParent(direction: TcDirection): number {
  if (direction !== 'ingress' && direction !== 'egress') {
    throw new BpfError('EINVAL', {
      op: 'tc',
      message: `direction must be ingress or egress, not ${String(direction)}`,
    });
  }
  const minor = direction === 'ingress' ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS;
  return ((TC_H_CLSACT & 0xffff0000) | minor) >>> 0;
}

/** tcm_info of a filter: priority in the upper 16 bits, protocol (network order) below. */
export function tcInfo(priority: number, protocol = ETH_P_ALL): number {
  const be = ((protocol & 0xff) << 8) | ((protocol >> 8) & 0xff); // htons
  return ((priority << 16) | be) >>> 0;
}

function checkU16(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 1 || v > 0xffff) {
    throw new BpfError('EINVAL', {
      op: 'tc',
      message: `${what} must be 1..65535, not ${v}`,
    });
  }
}

function checkHandle(v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > 0xffffffff) {
    throw new BpfError('EINVAL', {
      op: 'tc',
      message: `handle must be 1..0xffffffff, not ${v}`,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The clsact qdisc

/** The kind of the qdisc in the ingress/clsact slot of `ifindex` ('clsact', 'ingress'), if any. */
function clsactSlotKind(nl: RtNetlink, t: TcTarget): string | undefined {
  const msgs = nl.dump(RTM.GETQDISC, encodeTcmsg({ ifindex: t.ifindex }), [], {
    object: targetLabel(t),
  });
  for (const m of msgs) {
    if (m.type !== RTM.NEWQDISC) continue;
    const q = decodeTcmsg(m.payload);
    if (q.ifindex !== t.ifindex || q.parent !== TC_H_CLSACT) continue;
    return attrString(attrMap(q.attrs).get(TCA_KIND));
  }
  return undefined;
}

/**
 * Makes sure `ifindex` has a clsact qdisc. Idempotent: returns true if it was created now, false
 * if it was already there. Fails with EEXIST if an `ingress` qdisc occupies the slot.
 */
export function ensureClsact(target: number | TcTarget): boolean {
  const t = toTarget(target);
  return inNs(t, () =>
    withRtnl((nl) => {
      try {
        nl.request(
          RTM.NEWQDISC,
          NLM_F.CREATE | NLM_F.EXCL,
          encodeTcmsg({
            ifindex: t.ifindex,
            handle: CLSACT_HANDLE,
            parent: TC_H_CLSACT,
          }),
          [rtattrString(TCA_KIND, 'clsact')],
          { object: targetLabel(t) },
        );
        return true;
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw err;
        const kind = clsactSlotKind(nl, t);
        if (kind === 'clsact') return false;
        throw new BpfError('EEXIST', {
          op: 'RTM_NEWQDISC',
          object: targetLabel(t),
          message: `a qdisc of kind ${kind ?? 'unknown'} occupies the clsact slot`,
          cause: err,
        });
      }
    }),
  );
}

/**
 * Deletes the clsact qdisc of `ifindex` and with it every filter on both hooks. Idempotent:
 * returns false if there was none (an `ingress` qdisc in the slot is left alone).
 */
export function removeClsact(target: number | TcTarget): boolean {
  const t = toTarget(target);
  return inNs(t, () =>
    withRtnl((nl) => {
      if (clsactSlotKind(nl, t) !== 'clsact') return false;
      try {
        nl.request(
          RTM.DELQDISC,
          0,
          encodeTcmsg({
            ifindex: t.ifindex,
            handle: CLSACT_HANDLE,
            parent: TC_H_CLSACT,
          }),
          [rtattrString(TCA_KIND, 'clsact')],
          { object: targetLabel(t) },
        );
        return true;
      } catch (err) {
        if (isErrno(err, 'ENOENT')) return false; // removed by someone else meanwhile
        throw err;
      }
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// bpf filters

export interface TcAttachOptions extends TcTarget {
  direction: TcDirection;
  progFd: number;
  /** Shown by `tc filter show` and listTcFilters. */
  name: string;
  /** Filter priority (tc's `pref`), 1..65535; lower runs first. Default 1. */
  priority?: number;
  /** Filter handle within the priority. Default 1. */
  handle?: number;
  /** Create the clsact qdisc if missing (default true). */
  ensureClsact?: boolean;
}

export interface TcFilterInfo {
  ifindex: number;
  direction: TcDirection;
  priority: number;
  handle: number;
  /** Ethernet protocol in host order (3 = ETH_P_ALL). */
  protocol: number;
  /** Classifier kind ('bpf' for ours). */
  kind: string | undefined;
  chain: number;
  /** For bpf filters: */
  name?: string;
  progId?: number;
  /** The program tag as hex, as `tc` prints it. */
  tag?: string;
  directAction?: boolean;
}

function filterAttrs(progFd: number, name: string): Buffer[] {
  return [
    rtattrString(TCA_KIND, 'bpf'),
    rtattrNested(TCA_OPTIONS, [
      rtattrU32(TCA_BPF_FD, progFd),
      rtattrString(TCA_BPF_NAME, name),
      rtattrU32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT),
    ]),
  ];
}

/** A direct-action bpf filter on one clsact hook, identified by (priority, handle). */
export class TcFilter {
  constructor(
    readonly target: TcTarget,
    readonly direction: TcDirection,
    readonly priority: number,
    readonly handle: number,
    private currentName: string,
  ) {}

  get ifindex(): number {
    return this.target.ifindex;
  }

  get name(): string {
    return this.currentName;
  }

  private header(): Buffer {
    return encodeTcmsg({
      ifindex: this.target.ifindex,
      handle: this.handle,
      parent: tcParent(this.direction),
      info: tcInfo(this.priority),
    });
  }

  /** Creates the filter; fails with EEXIST if (priority, handle) is taken. */
  create(progFd: number): void {
    inNs(this.target, () =>
      withRtnl((nl) =>
        nl.request(RTM.NEWTFILTER, NLM_F.CREATE | NLM_F.EXCL, this.header(), filterAttrs(progFd, this.currentName), {
          object: targetLabel(this.target, this.direction),
        }),
      ),
    );
  }

  /**
   * Swaps in another program in one step: NLM_F_REPLACE on the same priority and handle makes
   * the kernel exchange the filter in place, so every packet sees either the old or the new
   * program, never none. Fails with ENOENT if the filter is gone.
   */
  replace(progFd: number, name = this.currentName): void {
    inNs(this.target, () =>
      withRtnl((nl) =>
        nl.request(RTM.NEWTFILTER, NLM_F.REPLACE, this.header(), filterAttrs(progFd, name), {
          object: targetLabel(this.target, this.direction),
        }),
      ),
    );
    this.currentName = name;
  }

  /** Deletes the filter. Idempotent: returns false if it was already gone. */
  detach(): boolean {
    return inNs(this.target, () =>
      withRtnl((nl) => {
        try {
          nl.request(RTM.DELTFILTER, 0, this.header(), [rtattrString(TCA_KIND, 'bpf')], {
            object: targetLabel(this.target, this.direction),
          });
          return true;
        } catch (err) {
          // ENOENT: no such filter; EINVAL: no clsact qdisc (so no filter) any more.
          if (isErrno(err, 'ENOENT') || (isErrno(err, 'EINVAL') && !hasClsact(nl, this.target))) return false;
          throw err;
        }
      }),
    );
  }

  /** The kernel's view of this filter, or undefined if it is gone. */
  info(): TcFilterInfo | undefined {
    return listTcFilters(this.target, this.direction).find(
      (f) => f.priority === this.priority && f.handle === this.handle,
    );
  }
}

function hasClsact(nl: RtNetlink, t: TcTarget): boolean {
  return clsactSlotKind(nl, t) === 'clsact';
}

/**
 * Attaches `progFd` as a direct-action bpf filter on the ingress or egress hook of `ifindex`,
 * creating the clsact qdisc first unless told not to.
 */
export function attachTcLegacy(opts: TcAttachOptions): TcFilter {
  const priority = opts.priority ?? 1;
  const handle = opts.handle ?? 1;
  checkU16(priority, 'priority');
  checkHandle(handle);
  tcParent(opts.direction);
  const target: TcTarget = {
    ifindex: opts.ifindex,
    ifname: opts.ifname,
    netns: opts.netns,
  };
  if (opts.ensureClsact !== false) ensureClsact(target);
  const filter = new TcFilter(target, opts.direction, priority, handle, opts.name);
  filter.create(opts.progFd);
  return filter;
}

/** The filters on one hook of `ifindex` (empty when there is no clsact qdisc). */
export function listTcFilters(target: number | TcTarget, direction: TcDirection): TcFilterInfo[] {
  const t = toTarget(target);
  const parent = tcParent(direction);
  const msgs = inNs(t, () =>
    withRtnl((nl) =>
      nl.dump(RTM.GETTFILTER, encodeTcmsg({ ifindex: t.ifindex, parent }), [], {
        object: targetLabel(t, direction),
      }),
    ),
  );
  const out: TcFilterInfo[] = [];
  for (const m of msgs) {
    if (m.type !== RTM.NEWTFILTER) continue;
    const f = decodeTcmsg(m.payload);
    // Each priority is also reported once on its own, with handle 0 and no options.
    if (f.ifindex !== t.ifindex || f.parent !== parent || f.handle === 0) continue;
    const attrs = attrMap(f.attrs);
    const kind = attrString(attrs.get(TCA_KIND));
    const info: TcFilterInfo = {
      ifindex: f.ifindex,
      direction,
      priority: f.info >>> 16,
      handle: f.handle,
      protocol: ((f.info & 0xff) << 8) | ((f.info >> 8) & 0xff),
      kind,
      chain: attrU32(attrs.get(TCA_CHAIN)) ?? 0,
    };
    const options = attrs.get(TCA_OPTIONS);
    if (kind === 'bpf' && options) {
      const o = attrMap(options);
      info.name = attrString(o.get(TCA_BPF_NAME));
      info.progId = attrU32(o.get(TCA_BPF_ID));
      info.tag = o.get(TCA_BPF_TAG)?.toString('hex');
      const flags = attrU32(o.get(TCA_BPF_FLAGS)) ?? 0;
      info.directAction = (flags & TCA_BPF_FLAG_ACT_DIRECT) !== 0;
    }
    out.push(info);
  }
  return out;
}
