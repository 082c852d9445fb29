// One node's datapath: the Service programs loaded with the node's constants, maps pinned under
// the node's pin root (shared by every program and kept across restarts), and attachments to
// workload and host interfaces (tcx where the kernel has it, else clsact) and to cgroups.
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Collection } from '../bpf/collection.js';
import { loadObjectFile } from '../bpf/spec.js';
import { attachCgroup, attachTcx, Link, type Direction } from '../bpf/link.js';
import { attachTcLegacy, listTcFilters, type TcFilter } from '../bpf/tc-legacy.js';
import { withNetns, type NetnsRef } from '../bpf/netns.js';
import { probeTcx } from '../bpf/features.js';
import { AttachType } from '../bpf/syscall.js';
import { ensurePinDir } from '../bpf/bpffs.js';
import type { MismatchPolicy } from '../bpf/map.js';
import { BpfError } from '../bpf/errors.js';
import { bpfObjectPath } from '../paths.js';
import { ipv4Constant } from '../bpf/codec.js';
import { natMaps, Proto, type NatMaps } from './nat.js';
import { destroySockets } from '../bpf/sock-diag.js';
import { routesMap } from './routes.js';
import { ctMap, CtType, type CtKey } from './conntrack.js';
import { CT_MAP, ROUTES_MAP } from './index.js';

export type AttachMode = 'tcx' | 'legacy';
/**
 * `overlay`: the kernel's tunnel device (vxlan.sl, vxlan.calico, tunl0), where traffic from other
 * nodes arrives decapsulated; its ingress program only tells the kernel's conntrack which path a
 * packet is on (bpf/tc.c sl_from_overlay).
 */
export type InterfaceRole = 'workload' | 'host' | 'overlay';

export interface NodeDatapathConfig {
  /** bpffs directory for this node's maps and links. */
  pinRoot: string;
  /** The node's IP: source of tunnel packets and of ICMP errors. */
  hostIp: string;
  vxlanPort?: number;
  vxlanVni?: number;
  tunnelMtu?: number;
  /** bpfExternalServiceMode: DSR. */
  dsr?: boolean;
  attachMode?: AttachMode | 'auto';
  /** Run attach calls in this network namespace (the agent itself already runs inside it). */
  netns?: NetnsRef;
  maxEntries?: Record<string, number>;
  /** When a pinned map's size differs from `maxEntries` (configuration changed): default 'error'. */
  onPinMismatch?: MismatchPolicy;
}

const programsFor: Record<InterfaceRole, Partial<Record<Direction, string>>> = {
  workload: { ingress: 'sl_from_wep', egress: 'sl_to_wep' },
  host: { ingress: 'sl_from_hep', egress: 'sl_to_hep' },
  overlay: { ingress: 'sl_from_overlay' },
};

interface Attachment {
  ifname: string;
  ifindex: number;
  role: InterfaceRole;
  direction: Direction;
  link?: Link;
  filter?: TcFilter;
}

export class NodeDatapath {
  readonly tc: Collection;
  readonly ctlb: Collection;
  readonly nat: NatMaps;
  readonly mode: AttachMode;
  private readonly attachments = new Map<string, Attachment>();
  private readonly cgroupLinks = new Map<string, Link[]>();

  private constructor(
    readonly config: NodeDatapathConfig,
    tc: Collection,
    ctlb: Collection,
  ) {
    this.tc = tc;
    this.ctlb = ctlb;
    this.nat = natMaps(tc);
    const wanted = config.attachMode ?? 'auto';
    this.mode = wanted === 'auto' ? (probeTcx().status === 'supported' ? 'tcx' : 'legacy') : wanted;
  }

  static load(config: NodeDatapathConfig): NodeDatapath {
    ensurePinDir(config.pinRoot);
    const constants = {
      sl_host_ip: ipv4Constant(config.hostIp),
      sl_vxlan_port: config.vxlanPort ?? 4789,
      sl_vxlan_vni: config.vxlanVni ?? 0x5c1,
      sl_tunnel_mtu: config.tunnelMtu ?? 1450,
      sl_dsr: config.dsr ? 1 : 0,
    };
    const opts = {
      pinRoot: config.pinRoot,
      constants,
      maxEntries: config.maxEntries,
      onPinMismatch: config.onPinMismatch,
    };
    const tc = Collection.load(loadObjectFile(bpfObjectPath('tc')), opts);
    try {
      const ctlbSpec = loadObjectFile(bpfObjectPath('connect'));
      const ctlbConstants = { sl_host_ip: constants.sl_host_ip };
      const ctlb = Collection.load(ctlbSpec, { ...opts, constants: ctlbConstants });
      return new NodeDatapath(config, tc, ctlb);
    } catch (err) {
      tc.close();
      throw err;
    }
  }

  get routes() {
    return routesMap(this.tc.map(ROUTES_MAP));
  }

  get conntrack() {
    return ctMap(this.tc.map(CT_MAP));
  }

  private inNs<T>(fn: () => T): T {
    return this.config.netns === undefined ? fn() : withNetns(this.config.netns, fn);
  }

  /** bpffs refuses names with a dot, which interface names may have (vxlan.calico). */
  private linkPin(ifname: string, direction: Direction): string {
    return path.join(this.config.pinRoot, 'links', `${ifname.replace(/%/g, '%25').replace(/\./g, '%2e')}@${direction}`);
  }

  /** Attaches the programs for `role` to both directions of an interface (idempotent). */
  attach(ifname: string, ifindex: number, role: InterfaceRole): void {
    for (const direction of ['ingress', 'egress'] as const) {
      const key = `${ifname}/${direction}`;
      const progName = programsFor[role][direction];
      if (!progName) {
        const existing = this.attachments.get(key);
        if (existing) this.detachOne(existing);
        this.attachments.delete(key);
        continue;
      }
      const prog = this.tc.program(progName);
      const existing = this.attachments.get(key);
      if (existing && existing.ifindex === ifindex && existing.role === role) {
        // Same interface: swap in this load's program atomically.
        if (existing.link) existing.link.update(prog);
        else existing.filter?.replace(prog.fd, prog.name);
        continue;
      }
      if (existing) this.detachOne(existing);
      const a: Attachment = { ifname, ifindex, role, direction };
      const adopted = this.mode === 'tcx' ? this.adoptPinnedLink(ifname, ifindex, direction) : undefined;
      if (adopted) {
        // A previous agent's link: the new program replaces the old in place, no gap between.
        adopted.update(prog);
        a.link = adopted;
      } else if (this.mode === 'tcx') {
        a.link = this.inNs(() => attachTcx(prog, ifindex, direction));
        mkdirSync(path.dirname(this.linkPin(ifname, direction)), { recursive: true });
        rmSync(this.linkPin(ifname, direction), { force: true });
        a.link.pin(this.linkPin(ifname, direction));
      } else {
        a.filter = attachTcLegacy({
          ifindex,
          ifname,
          netns: this.config.netns,
          direction,
          progFd: prog.fd,
          name: prog.name,
          priority: 1,
          handle: 1,
        });
      }
      this.attachments.set(key, a);
    }
  }

  /** The link a previous agent pinned for this interface, if it is still attached to it. */
  private adoptPinnedLink(ifname: string, ifindex: number, direction: Direction): Link | undefined {
    const pin = this.linkPin(ifname, direction);
    if (!existsSync(pin)) return undefined;
    const link = Link.openPinned(pin);
    const info = link.info();
    const want = direction === 'ingress' ? AttachType.TCX_INGRESS : AttachType.TCX_EGRESS;
    if (info.ifindex === ifindex && info.attachType === want) return link;
    // The interface was recreated (same name, new ifindex): the old link is defunct.
    link.close();
    rmSync(pin, { force: true });
    return undefined;
  }

  /** Interfaces a previous agent attached to (from its pinned links), for cleanup of gone ones. */
  pinnedInterfaces(): string[] {
    const dir = path.join(this.config.pinRoot, 'links');
    if (!existsSync(dir)) return [];
    const names = new Set<string>();
    for (const f of readdirSync(dir)) {
      const at = f.lastIndexOf('@');
      if (at > 0) names.add(decodeURIComponent(f.slice(0, at)));
    }
    return [...names];
  }

  /** Removes a pinned link left for an interface this agent no longer serves. */
  dropPinned(ifname: string): void {
    for (const direction of ['ingress', 'egress'] as const) {
      const pin = this.linkPin(ifname, direction);
      if (!existsSync(pin)) continue;
      const link = Link.openPinned(pin);
      try {
        link.detach();
      } catch (err) {
        if (!(err instanceof BpfError)) throw err;
      } finally {
        link.close();
        rmSync(pin, { force: true });
      }
    }
  }

  detach(ifname: string): void {
    for (const direction of ['ingress', 'egress'] as const) {
      const a = this.attachments.get(`${ifname}/${direction}`);
      if (a) this.detachOne(a);
    }
  }

  private detachOne(a: Attachment): void {
    this.attachments.delete(`${a.ifname}/${a.direction}`);
    rmSync(this.linkPin(a.ifname, a.direction), { force: true });
    try {
      if (a.link) {
        a.link.detach();
        a.link.close();
      } else {
        a.filter?.detach();
      }
    } catch (err) {
      // The interface may be gone already (a pod deleted): its programs went with it.
      if (!(err instanceof BpfError) || !['ENODEV', 'ENOENT', 'ENOLINK'].includes(err.code)) throw err;
    }
  }

  /** What is attached where, for status output and tests. */
  list(): { ifname: string; ifindex: number; role: InterfaceRole; direction: Direction; mode: AttachMode }[] {
    return [...this.attachments.values()].map((a) => ({
      ifname: a.ifname,
      ifindex: a.ifindex,
      role: a.role,
      direction: a.direction,
      mode: a.link ? 'tcx' : 'legacy',
    }));
  }

  /** Legacy filters as the kernel reports them (tests check nothing is left). */
  kernelFilters(ifindex: number, direction: Direction) {
    return this.inNs(() => listTcFilters(ifindex, direction));
  }

  /** Connect-time load balancing for the processes of a (sub-)cgroup. */
  attachCgroup(dir: string): void {
    if (this.cgroupLinks.has(dir)) return;
    const links = [
      attachCgroup(this.ctlb.program('sl_connect4'), dir, AttachType.CGROUP_INET4_CONNECT),
      attachCgroup(this.ctlb.program('sl_sendmsg4'), dir, AttachType.CGROUP_UDP4_SENDMSG),
      attachCgroup(this.ctlb.program('sl_recvmsg4'), dir, AttachType.CGROUP_UDP4_RECVMSG),
      attachCgroup(this.ctlb.program('sl_getpeername4'), dir, AttachType.CGROUP_INET4_GETPEERNAME),
    ];
    this.cgroupLinks.set(dir, links);
  }

  detachCgroup(dir: string): void {
    for (const l of this.cgroupLinks.get(dir) ?? []) {
      l.detach();
      l.close();
    }
    this.cgroupLinks.delete(dir);
  }

  /**
   * A backend left a Service: flows to it are forgotten and connected UDP sockets that the
   * connect-time balancer pointed at it are destroyed, so their owners reconnect to a live
   * backend instead of sending into the void (TCP fails on its own when the peer goes).
   */
  forgetBackend(b: { addr: string; port: number; proto: number }): { flows: number; sockets: number } {
    const stale: CtKey[] = [];
    for (const [k, v] of this.conntrack.entries()) {
      if (k.proto !== b.proto) continue;
      const toBackend = v.type === CtType.NAT_FWD && v.natAddr === b.addr && v.natPort === b.port;
      const fromBackend =
        v.type === CtType.NAT_REV &&
        ((k.addrA === b.addr && k.portA === b.port) || (k.addrB === b.addr && k.portB === b.port));
      if (toBackend || fromBackend) stale.push(k);
    }
    const flows = this.conntrack.deleteMany(stale);
    const sockets =
      b.proto === Proto.UDP
        ? this.inNs(() => destroySockets({ protocol: 'udp', dst: { addr: b.addr, port: b.port } }))
        : 0;
    return { flows, sockets };
  }

  /** Detaches everything and closes the programs; pinned maps stay unless `unpin`. */
  close(opts: { unpin?: boolean } = {}): void {
    for (const a of [...this.attachments.values()]) this.detachOne(a);
    for (const dir of [...this.cgroupLinks.keys()]) this.detachCgroup(dir);
    this.tc.close();
    this.ctlb.close();
    if (opts.unpin && existsSync(this.config.pinRoot)) {
      for (const f of readdirSync(this.config.pinRoot))
        rmSync(path.join(this.config.pinRoot, f), { recursive: true, force: true });
      rmSync(this.config.pinRoot, { recursive: true, force: true });
    }
  }
}
