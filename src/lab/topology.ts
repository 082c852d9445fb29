// The lab network: a multi-node cluster in network namespaces, modelled on a Calico cluster.
//
//   sl-<lab>-fabric   bridge br0, the underlay; one veth port per node (node<i>) and one for ext
//   sl-<lab>-node<i>  eth0 = underlay .1x (node1 = .11), ip_forward=1, rp_filter=0;
//                     vxlan overlay: vxlan.sl (VNI 4096, port 4789, nolearning, MTU 1450) with the
//                     .1 of the node's pod CIDR, static routes/neighbours/FDB entries per remote
//                     node; direct overlay: remote pod CIDR via remote node IP dev eth0
//   sl-<lab>-ext      an external client, .200 on the underlay; knows only node IPs (and routes
//                     added with addExternalRoute)
//   sl-<lab>-cp       with controlPlane only: the host of a real Kubernetes control plane
//                     (src/lab/kubernetes/), .250 on the underlay, attached like ext; routes each
//                     node's pod CIDR via that node so that pods reach the API server directly
//   sl-<lab>-p-<pod>  a pod: eth0 with a /32 from its node's pod CIDR, default route via
//                     169.254.1.1 (link scope) answered by proxy ARP on the host side veth
//                     `slw<8 hex>` (MAC ee:ee:ee:ee:ee:ee), which has a /32 route to the pod
//
// Safety: nothing is created in the root network namespace (veths are created with `ip -n`
// directly inside lab namespaces, or with their peer placed straight into another lab namespace),
// and no lab namespace has a link to the root namespace, so no traffic leaves the lab. IPv6 is
// disabled in every lab namespace so that only the traffic tests send is on the wire.
//
// State lives in /run/sluice/lab-<name>/: state.json (configuration, pods, external routes) and
// procs/<pid>.json (processes started with exec/spawn), so `Topology.sweep(name)` removes a lab
// even when the process that built it was killed with SIGKILL.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { ifindexIn, withNetns } from '../bpf/netns.js';
import {
  batch,
  describeFailure,
  execIn,
  killInNamespaces,
  killRecorded,
  ProcessRecorder,
  run,
  spawnIn,
  type ExecResult,
  type LabExecOptions,
  type LabSpawnOptions,
} from './exec.js';

export type Overlay = 'vxlan' | 'direct';

export interface TopologyOptions {
  /** Short lab name, [a-z0-9], at most 8 characters; namespaces are `sl-<name>-*`. */
  name: string;
  /** Number of nodes (default 3). */
  nodes?: number;
  /** How pod traffic crosses nodes (default 'vxlan'). */
  overlay?: Overlay;
  /** Underlay network; node i gets host .10+i, ext gets .200 (default 192.168.77.0/24). */
  underlay?: string;
  /** Pod network; node i gets the i-th /24 in it (default 10.65.0.0/16, node 1 = 10.65.1.0/24). */
  podCidr?: string;
  /** Create the external namespace (default true). */
  external?: boolean;
  /** Create the control-plane namespace `cp` (.250 on the underlay; default false). */
  controlPlane?: boolean;
  /** Pods that up() creates, in order. */
  pods?: Array<{ node: number; name: string }>;
  /** Called with a short description of each step of up()/down(). */
  progress?: (step: string) => void;
}

export interface LabNode {
  /** 1-based index. */
  index: number;
  /** `node<i>`: the exec target. */
  name: string;
  ns: string;
  ip: string;
  podCidr: string;
  /** vxlan overlay only: the node's tunnel address (.1 of its pod CIDR) and vxlan.sl's MAC. */
  tunnelIp?: string;
  vxlanMac?: string;
  eth0Mac: string;
  /** Set by up(); 0 before. */
  eth0Ifindex: number;
  vxlanIfindex?: number;
}

export interface Pod {
  name: string;
  ns: string;
  ip: string;
  /** Index of the node the pod runs on (exec target `node<i>`). */
  node: number;
  /** Host side veth in the node namespace. */
  hostIf: string;
  /** ifindex of hostIf in the node namespace; 0 until the pod exists. */
  hostIfindex: number;
}

export interface ExternalHost {
  name: 'ext';
  ns: string;
  ip: string;
  eth0Mac: string;
  eth0Ifindex: number;
  routes: Array<{ cidr: string; via: string }>;
}

/** The host of the lab's Kubernetes control plane (a namespace on the underlay, like ext). */
export interface ControlPlaneHost {
  name: 'cp';
  ns: string;
  ip: string;
  eth0Mac: string;
  eth0Ifindex: number;
}

export interface LabDescription {
  name: string;
  overlay: Overlay;
  underlay: string;
  podCidr: string;
  mtu: number;
  fabric: { ns: string; bridge: string };
  nodes: LabNode[];
  external: ExternalHost | null;
  controlPlane: ControlPlaneHost | null;
  pods: Pod[];
}

interface LabConfig {
  name: string;
  nodes: number;
  overlay: Overlay;
  underlay: string;
  podCidr: string;
  external: boolean;
  /** Only present when true, so that the state of labs without it reads the same as before. */
  controlPlane?: true;
}

interface LabState {
  version: 1;
  config: LabConfig;
  pods: Array<{ name: string; node: number; ip: string; hostIf: string }>;
  externalRoutes: Array<{ cidr: string; via: string }>;
}

export const LAB_RUN_DIR = '/run/sluice';
export const VXLAN_DEV = 'vxlan.sl';
export const VXLAN_VNI = 4096;
export const VXLAN_PORT = 4789;
export const VXLAN_MTU = 1450;
export const POD_GATEWAY = '169.254.1.1';
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
const BRIDGE = 'br0';
const NSFS_MAGIC = 0x6e736673;
const MAX_NODES = 100;

// ---------------------------------------------------------------------------------------------
// IPv4 arithmetic

function parseIp(s: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) throw new Error(`not an IPv4 address: ${s}`);
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) throw new Error(`not an IPv4 address: ${s}`);
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

function ipString(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function parseCidr(s: string): { base: number; prefix: number } {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
  if (!m) throw new Error(`not an IPv4 CIDR: ${s}`);
  const prefix = Number(m[2]);
  if (prefix > 32) throw new Error(`not an IPv4 CIDR: ${s}`);
  const base = parseIp(m[1]);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((base & mask) >>> 0 !== base) throw new Error(`${s} has host bits set`);
  return { base, prefix };
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

// ---------------------------------------------------------------------------------------------
// Names and files

function checkLabName(name: string): void {
  if (!/^[a-z0-9]{1,8}$/.test(name))
    throw new Error(`lab name must be 1-8 characters [a-z0-9]: ${JSON.stringify(name)}`);
  // `sl-t-*` belongs to the test fixture (src/testing/netns.ts); a lab `t` would sweep its namespaces.
  if (name === 't') throw new Error('lab name "t" is reserved for the test fixture namespaces (sl-t-*)');
}

function checkPodName(name: string): void {
  if (!/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/.test(name))
    throw new Error(`pod name must be 1-40 characters [a-z0-9-], starting and ending alphanumeric: ${name}`);
  if (name === 'ext' || name === 'fabric' || /^node\d+$/.test(name))
    throw new Error(`pod name ${name} is reserved for an exec target`);
}

function labDir(name: string): string {
  return path.join(LAB_RUN_DIR, `lab-${name}`);
}

function stateFile(name: string): string {
  return path.join(labDir(name), 'state.json');
}

function procsDir(name: string): string {
  return path.join(labDir(name), 'procs');
}

function readState(name: string): LabState | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(stateFile(name), 'utf8')) as LabState;
    return s.version === 1 ? s : undefined;
  } catch {
    return undefined;
  }
}

function isNetnsMount(ns: string): boolean {
  try {
    return fs.statfsSync(`/run/netns/${ns}`).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

/** The lab's namespaces as listed in /run/netns (also half-made ones). */
function labNamespaces(name: string): string[] {
  try {
    return fs
      .readdirSync('/run/netns')
      .filter((n) => n.startsWith(`sl-${name}-`))
      .sort();
  } catch {
    return [];
  }
}

/** Deletes namespaces; returns the ones it could not delete. */
async function deleteNamespaces(names: readonly string[]): Promise<string[]> {
  if (names.length === 0) return [];
  await batch(
    'ip',
    undefined,
    names.map((n) => `netns del ${n}`),
    { force: true },
  );
  const left: string[] = [];
  for (const n of names) {
    const p = `/run/netns/${n}`;
    if (!fs.existsSync(p)) continue;
    // A file `ip netns add` created but never mounted (killed in between): just a file.
    if (!isNetnsMount(n)) {
      try {
        fs.unlinkSync(p);
        continue;
      } catch {
        // fall through
      }
    }
    const r = await run('ip', ['netns', 'del', n]);
    if (r.code !== 0 && fs.existsSync(p)) left.push(`${n}: ${r.stderr.trim()}`);
  }
  return left;
}

/**
 * Writes sysctls inside namespace `ns`, in-process: /proc/sys/net shows the namespace of the
 * thread that opens it, and withNetns moves this (main) thread there for the synchronous writes.
 * Keys are paths below /proc/sys (`net/ipv4/ip_forward`), so device names may contain dots.
 */
function sysctls(ns: string, settings: Array<[string, string]>, optional = false): void {
  withNetns(ns, () => {
    for (const [key, value] of settings) {
      try {
        fs.writeFileSync(`/proc/sys/${key}`, value);
      } catch (err) {
        if (optional && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new Error(`sysctl ${key}=${value} in ${ns}: ${(err as Error).message}`, { cause: err });
      }
    }
  });
}

async function offloadsOff(ns: string, devs: readonly string[]): Promise<void> {
  if (devs.length === 0) return;
  const script = devs.map((d) => `ethtool -K ${d} tx off rx off >/dev/null`).join(' && ');
  const r = await execIn(ns, 'sh', ['-c', script], { timeoutMs: 20_000 });
  if (r.code !== 0) throw describeFailure(`turning checksum offloads off in ${ns} (${devs.join(', ')})`, r);
}

async function linkNames(ns: string): Promise<Set<string>> {
  const r = await run('ip', ['-n', ns, '-j', 'link', 'show']);
  if (r.code !== 0) throw describeFailure(`ip -n ${ns} link show`, r);
  const links = JSON.parse(r.stdout || '[]') as Array<{ ifname: string }>;
  return new Set(links.map((l) => l.ifname));
}

// ---------------------------------------------------------------------------------------------

export interface SweepResult {
  namespaces: string[];
  /** Recorded processes that were still running. */
  killed: number[];
  /** Unrecorded processes found in the lab's namespaces, with their command names. */
  strays: Array<{ pid: number; comm: string }>;
}

export class Topology {
  readonly name: string;
  readonly overlay: Overlay;
  readonly underlay: string;
  readonly podCidr: string;
  readonly mtu: number;
  readonly fabric: { ns: string; bridge: string };
  readonly nodes: LabNode[] = [];
  readonly external: ExternalHost | null;
  readonly controlPlane: ControlPlaneHost | null;
  private readonly config: LabConfig;
  private readonly podMap = new Map<string, Pod>();
  private readonly extRoutes = new Map<string, string>();
  private readonly children = new Set<ChildProcess>();
  private readonly recorder: ProcessRecorder;
  private readonly progress?: (step: string) => void;
  private readonly podBase: number;
  private isUp = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: TopologyOptions) {
    checkLabName(opts.name);
    const nodes = opts.nodes ?? 3;
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES)
      throw new Error(`nodes must be an integer from 1 to ${MAX_NODES}`);
    const overlay = opts.overlay ?? 'vxlan';
    if (overlay !== 'vxlan' && overlay !== 'direct') throw new Error(`unknown overlay ${String(overlay)}`);
    const underlay = opts.underlay ?? '192.168.77.0/24';
    const podCidr = opts.podCidr ?? '10.65.0.0/16';
    const u = parseCidr(underlay);
    if (u.prefix > 24) throw new Error(`underlay ${underlay} must be /24 or larger (ext is .200)`);
    const p = parseCidr(podCidr);
    if (p.prefix > 24 || 2 ** (24 - p.prefix) <= nodes)
      throw new Error(`pod CIDR ${podCidr} has no room for ${nodes} node /24s (node i gets the i-th /24)`);
    this.config = { name: opts.name, nodes, overlay, underlay, podCidr, external: opts.external ?? true };
    if (opts.controlPlane) this.config.controlPlane = true;
    this.name = opts.name;
    this.overlay = overlay;
    this.underlay = underlay;
    this.podCidr = podCidr;
    this.podBase = p.base;
    this.mtu = overlay === 'vxlan' ? VXLAN_MTU : 1500;
    this.progress = opts.progress;
    this.recorder = new ProcessRecorder(procsDir(this.name));
    this.fabric = { ns: `sl-${this.name}-fabric`, bridge: BRIDGE };
    for (let i = 1; i <= nodes; i++) {
      const cidrBase = p.base + i * 256;
      this.nodes.push({
        index: i,
        name: `node${i}`,
        ns: `sl-${this.name}-node${i}`,
        ip: ipString(u.base + 10 + i),
        podCidr: `${ipString(cidrBase)}/24`,
        ...(overlay === 'vxlan'
          ? { tunnelIp: ipString(cidrBase + 1), vxlanMac: `02:5c:02:00:${hex2(i >> 8)}:${hex2(i & 255)}` }
          : {}),
        eth0Mac: `02:5c:01:00:${hex2(i >> 8)}:${hex2(i & 255)}`,
        eth0Ifindex: 0,
      });
    }
    this.external = this.config.external
      ? {
          name: 'ext',
          ns: `sl-${this.name}-ext`,
          ip: ipString(u.base + 200),
          eth0Mac: '02:5c:03:00:00:c8',
          eth0Ifindex: 0,
          routes: [],
        }
      : null;
    this.controlPlane = this.config.controlPlane
      ? {
          name: 'cp',
          ns: `sl-${this.name}-cp`,
          ip: ipString(u.base + 250),
          eth0Mac: '02:5c:04:00:00:fa',
          eth0Ifindex: 0,
        }
      : null;
    for (const pod of opts.pods ?? []) this.declarePod(pod.node, pod.name);
  }

  // -------------------------------------------------------------------------------------------
  // Description

  get pods(): Pod[] {
    return [...this.podMap.values()];
  }

  pod(name: string): Pod {
    const p = this.podMap.get(name);
    if (!p) throw new Error(`lab ${this.name} has no pod ${name}`);
    return p;
  }

  node(index: number): LabNode {
    const n = this.nodes[index - 1];
    if (!n) throw new Error(`lab ${this.name} has no node ${index}`);
    return n;
  }

  /** Pods on node `index`. */
  podsOn(index: number): Pod[] {
    return this.pods.filter((p) => p.node === index);
  }

  /** True once up() has completed (and until down()). */
  get running(): boolean {
    return this.isUp;
  }

  /** Every namespace the lab consists of. */
  get namespaces(): string[] {
    return [
      this.fabric.ns,
      ...this.nodes.map((n) => n.ns),
      ...(this.external ? [this.external.ns] : []),
      ...(this.controlPlane ? [this.controlPlane.ns] : []),
      ...this.pods.map((p) => p.ns),
    ];
  }

  /** The namespace of an exec target: a pod name, `node<i>`, `ext` or `fabric`. */
  nsOf(target: string): string {
    if (target === 'fabric') return this.fabric.ns;
    if (target === 'ext') {
      if (!this.external) throw new Error(`lab ${this.name} has no external namespace`);
      return this.external.ns;
    }
    const m = /^node(\d+)$/.exec(target);
    if (m) return this.node(Number(m[1])).ns;
    return this.pod(target).ns;
  }

  describe(): LabDescription {
    return {
      name: this.name,
      overlay: this.overlay,
      underlay: this.underlay,
      podCidr: this.podCidr,
      mtu: this.mtu,
      fabric: { ...this.fabric },
      nodes: this.nodes.map((n) => ({ ...n })),
      external: this.external ? { ...this.external, routes: this.externalRoutes() } : null,
      controlPlane: this.controlPlane ? { ...this.controlPlane } : null,
      pods: this.pods.map((p) => ({ ...p })),
    };
  }

  toJSON(): LabDescription {
    return this.describe();
  }

  private externalRoutes(): Array<{ cidr: string; via: string }> {
    return [...this.extRoutes].map(([cidr, via]) => ({ cidr, via }));
  }

  // -------------------------------------------------------------------------------------------
  // State

  static stateDir(name: string): string {
    checkLabName(name);
    return labDir(name);
  }

  /** Where processes started in the lab are recorded (for a ProcessRecorder of another process). */
  static procsDir(name: string): string {
    checkLabName(name);
    return procsDir(name);
  }

  /**
   * The lab `name` as recorded in its state file, or undefined if there is none. Makes no
   * changes; ifindexes are read when the namespaces exist, and the result counts as running
   * when all of them do.
   */
  static open(name: string, opts: { progress?: (step: string) => void } = {}): Topology | undefined {
    checkLabName(name);
    const state = readState(name);
    if (!state) return undefined;
    const topo = new Topology({ ...state.config, progress: opts.progress });
    topo.adopt(state);
    const present = new Set(labNamespaces(name));
    if (topo.namespaces.every((ns) => present.has(ns))) {
      try {
        topo.readIfindexes();
        topo.isUp = true;
      } catch {
        // half-made: up() repairs it
      }
    }
    return topo;
  }

  private adopt(state: LabState): void {
    for (const p of state.pods) {
      if (this.podMap.has(p.name)) continue;
      if (p.node < 1 || p.node > this.nodes.length) continue;
      this.podMap.set(p.name, {
        name: p.name,
        ns: `sl-${this.name}-p-${p.name}`,
        ip: p.ip,
        node: p.node,
        hostIf: p.hostIf,
        hostIfindex: 0,
      });
    }
    for (const r of state.externalRoutes) if (!this.extRoutes.has(r.cidr)) this.extRoutes.set(r.cidr, r.via);
    if (this.external) this.external.routes = this.externalRoutes();
  }

  private writeState(): void {
    const state: LabState = {
      version: 1,
      config: this.config,
      pods: this.pods.map((p) => ({ name: p.name, node: p.node, ip: p.ip, hostIf: p.hostIf })),
      externalRoutes: this.externalRoutes(),
    };
    fs.mkdirSync(labDir(this.name), { recursive: true, mode: 0o700 });
    const file = stateFile(this.name);
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
    fs.renameSync(`${file}.tmp`, file);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  // -------------------------------------------------------------------------------------------
  // Pods

  private declarePod(nodeIndex: number, name: string): Pod {
    checkPodName(name);
    const node = this.node(nodeIndex);
    if (this.podMap.has(name)) throw new Error(`lab ${this.name} already has a pod ${name}`);
    const used = new Set(this.pods.map((p) => p.ip));
    const cidrBase = this.podBase + nodeIndex * 256;
    let ip: string | undefined;
    for (let host = 2; host <= 254; host++) {
      const candidate = ipString(cidrBase + host);
      if (!used.has(candidate)) {
        ip = candidate;
        break;
      }
    }
    if (!ip) throw new Error(`pod CIDR ${node.podCidr} of ${node.name} is full`);
    const ifs = new Set(this.pods.map((p) => p.hostIf));
    let hostIf = '';
    for (let salt = 0; hostIf === '' || ifs.has(hostIf); salt++) {
      const h = createHash('sha1').update(`${this.name}/${name}${salt ? `/${salt}` : ''}`);
      hostIf = `slw${h.digest('hex').slice(0, 8)}`;
    }
    const pod: Pod = { name, ns: `sl-${this.name}-p-${name}`, ip, node: nodeIndex, hostIf, hostIfindex: 0 };
    this.podMap.set(name, pod);
    return pod;
  }

  /**
   * Adds pod `name` on node `nodeIndex`, with the lowest free address of the node's pod CIDR
   * from .2. When the lab is running the pod is created now; otherwise the next up() creates it
   * (and fills in hostIfindex of the returned object).
   */
  addPod(nodeIndex: number, name: string): Promise<Pod> {
    return this.serial(async () => {
      const pod = this.declarePod(nodeIndex, name);
      if (!this.isUp) return pod;
      try {
        this.writeState();
        // a namespace of that name left over from an earlier pod would be in the way
        await killRecorded(this.recorder.dir, 5000, pod.ns);
        const left = await deleteNamespaces(labNamespaces(this.name).filter((n) => n === pod.ns));
        if (left.length > 0) throw new Error(`cannot remove old namespace: ${left.join('; ')}`);
        await this.createPods([pod], new Set());
        pod.hostIfindex = ifindexIn(this.node(pod.node).ns, pod.hostIf);
      } catch (err) {
        this.podMap.delete(name);
        await killRecorded(this.recorder.dir, 5000, pod.ns);
        await deleteNamespaces([pod.ns]);
        this.writeState();
        throw err;
      }
      return pod;
    });
  }

  /** Removes pod `name`: kills the processes started in it and deletes its namespace. */
  removePod(name: string): Promise<void> {
    return this.serial(async () => {
      const pod = this.pod(name);
      await killRecorded(this.recorder.dir, 5000, pod.ns);
      const left = await deleteNamespaces(labNamespaces(this.name).filter((n) => n === pod.ns));
      if (left.length > 0) throw new Error(`removing pod ${name}: ${left.join('; ')}`);
      this.podMap.delete(name);
      this.writeState();
    });
  }

  /** Makes the external namespace route `cidr` via a node IP (e.g. LoadBalancer IPs). */
  addExternalRoute(cidr: string, viaNodeIp: string): Promise<void> {
    return this.serial(async () => {
      if (!this.external) throw new Error(`lab ${this.name} has no external namespace`);
      parseCidr(cidr);
      if (!this.nodes.some((n) => n.ip === viaNodeIp)) throw new Error(`${viaNodeIp} is not a node IP of ${this.name}`);
      this.extRoutes.set(cidr, viaNodeIp);
      this.external.routes = this.externalRoutes();
      this.writeState();
      if (this.isUp) await batch('ip', this.external.ns, [`route replace ${cidr} via ${viaNodeIp} dev eth0`]);
    });
  }

  removeExternalRoute(cidr: string): Promise<void> {
    return this.serial(async () => {
      if (!this.external || !this.extRoutes.has(cidr)) return;
      this.extRoutes.delete(cidr);
      this.external.routes = this.externalRoutes();
      this.writeState();
      if (this.isUp) await batch('ip', this.external.ns, [`route del ${cidr}`], { force: true });
    });
  }

  // -------------------------------------------------------------------------------------------
  // up / down

  /**
   * Builds the lab, or completes and repairs an existing one with the same configuration (a
   * lab with a different configuration under the same name is removed first). Pods recorded in
   * the state file by an earlier process are adopted. Prints nothing; `progress` gets the steps.
   */
  up(opts: { progress?: (step: string) => void } = {}): Promise<void> {
    return this.serial(() => this.doUp(opts.progress ?? this.progress));
  }

  private async doUp(progress: ((step: string) => void) | undefined): Promise<void> {
    const say = (s: string): void => progress?.(s);
    const prev = readState(this.name);
    if (prev && JSON.stringify(prev.config) !== JSON.stringify(this.config)) {
      say('configuration changed: removing the old lab');
      await Topology.sweep(this.name);
    } else if (prev) {
      this.adopt(prev);
    }
    this.writeState(); // first, so that even a half-made lab is on record

    say('namespaces');
    const wanted = this.namespaces;
    const existing = labNamespaces(this.name);
    const stale = existing.filter((n) => !wanted.includes(n) || !isNetnsMount(n));
    for (const ns of stale) if (!wanted.includes(ns)) await killRecorded(this.recorder.dir, 5000, ns);
    const left = await deleteNamespaces(stale);
    if (left.length > 0) throw new Error(`cannot remove stale namespaces: ${left.join('; ')}`);
    const present = new Set(labNamespaces(this.name));
    const fresh = new Set(wanted.filter((n) => !present.has(n)));
    await batch(
      'ip',
      undefined,
      [...fresh].map((n) => `netns add ${n}`),
    );

    say('sysctls');
    for (const ns of wanted) {
      sysctls(
        ns,
        [
          ['net/ipv6/conf/all/disable_ipv6', '1'],
          ['net/ipv6/conf/default/disable_ipv6', '1'],
        ],
        true,
      );
    }
    for (const n of this.nodes) {
      sysctls(n.ns, [
        ['net/ipv4/ip_forward', '1'],
        ['net/ipv4/conf/all/rp_filter', '0'],
        ['net/ipv4/conf/default/rp_filter', '0'],
      ]);
    }

    const links = new Map<string, Set<string>>();
    await Promise.all(
      wanted
        .filter((ns) => !fresh.has(ns))
        .map(async (ns) => {
          links.set(ns, await linkNames(ns));
        }),
    );
    const has = (ns: string, dev: string): boolean => links.get(ns)?.has(dev) ?? false;

    say('fabric');
    const f = this.fabric.ns;
    const fabricPorts = [
      ...this.nodes.map((n) => n.name),
      ...(this.external ? ['ext'] : []),
      ...(this.controlPlane ? ['cp'] : []),
    ];
    const fl: string[] = ['link set lo up'];
    if (!has(f, BRIDGE)) fl.push(`link add ${BRIDGE} type bridge stp_state 0`);
    fl.push(`link set ${BRIDGE} up`);
    for (const n of this.nodes) {
      if (!has(f, n.name)) fl.push(`link add ${n.name} type veth peer name eth0 netns ${n.ns}`);
    }
    if (this.external && !has(f, 'ext')) fl.push(`link add ext type veth peer name eth0 netns ${this.external.ns}`);
    if (this.controlPlane && !has(f, 'cp'))
      fl.push(`link add cp type veth peer name eth0 netns ${this.controlPlane.ns}`);
    for (const port of fabricPorts) fl.push(`link set ${port} master ${BRIDGE} up`);
    await batch('ip', f, fl);
    const fabricOffloads = offloadsOff(f, fabricPorts);

    const u = parseCidr(this.underlay);
    await Promise.all([
      fabricOffloads,
      ...this.nodes.map(async (n) => {
        say(n.name);
        await this.configureNode(n, u.prefix, has);
      }),
      this.configureExternal(u.prefix),
      this.configureControlPlane(u.prefix),
    ]);

    say('pods');
    await this.createPods(this.pods, fresh, has);

    this.readIfindexes();
    this.writeState();
    this.isUp = true;
    say('done');
  }

  private async configureNode(n: LabNode, underlayPrefix: number, has: (ns: string, dev: string) => boolean) {
    sysctls(n.ns, [['net/ipv4/conf/eth0/rp_filter', '0']]);
    const l: string[] = [
      'link set lo up',
      `link set eth0 address ${n.eth0Mac}`,
      `addr replace ${n.ip}/${underlayPrefix} dev eth0`,
      'link set eth0 up',
      // Proxy ARP answers for the pods' gateway only if the node has a unicast route to it
      // through another interface; nodes have no default route, so give them this one.
      `route replace ${POD_GATEWAY}/32 dev eth0 scope link`,
    ];
    const fdb: string[] = [];
    const others = this.nodes.filter((o) => o !== n);
    if (this.overlay === 'vxlan') {
      if (!has(n.ns, VXLAN_DEV)) {
        l.push(
          `link add ${VXLAN_DEV} type vxlan id ${VXLAN_VNI} dstport ${VXLAN_PORT} local ${n.ip} dev eth0 nolearning`,
        );
      }
      l.push(`link set ${VXLAN_DEV} address ${n.vxlanMac} mtu ${VXLAN_MTU} up`);
      l.push(`addr replace ${n.tunnelIp}/32 dev ${VXLAN_DEV}`);
      for (const o of others) {
        l.push(`neigh replace ${o.tunnelIp} lladdr ${o.vxlanMac} dev ${VXLAN_DEV} nud permanent`);
        l.push(`route replace ${o.podCidr} via ${o.tunnelIp} dev ${VXLAN_DEV} onlink`);
        fdb.push(`fdb replace ${o.vxlanMac} dev ${VXLAN_DEV} dst ${o.ip} self permanent`);
      }
    } else {
      for (const o of others) l.push(`route replace ${o.podCidr} via ${o.ip} dev eth0`);
    }
    await batch('ip', n.ns, l);
    await Promise.all([batch('bridge', n.ns, fdb), offloadsOff(n.ns, ['eth0'])]);
  }

  private async configureExternal(underlayPrefix: number): Promise<void> {
    const e = this.external;
    if (!e) return;
    const l = [
      'link set lo up',
      `link set eth0 address ${e.eth0Mac}`,
      `addr replace ${e.ip}/${underlayPrefix} dev eth0`,
      'link set eth0 up',
      ...this.externalRoutes().map((r) => `route replace ${r.cidr} via ${r.via} dev eth0`),
    ];
    await batch('ip', e.ns, l);
    await offloadsOff(e.ns, ['eth0']);
  }

  /** The control-plane host: like ext, plus a route to each node's pods via that node. */
  private async configureControlPlane(underlayPrefix: number): Promise<void> {
    const c = this.controlPlane;
    if (!c) return;
    await batch('ip', c.ns, [
      'link set lo up',
      `link set eth0 address ${c.eth0Mac}`,
      `addr replace ${c.ip}/${underlayPrefix} dev eth0`,
      'link set eth0 up',
      ...this.nodes.map((n) => `route replace ${n.podCidr} via ${n.ip} dev eth0`),
    ]);
    await offloadsOff(c.ns, ['eth0']);
  }

  /** Creates (or repairs) pods; their namespaces must be on record and their nodes configured. */
  private async createPods(
    pods: readonly Pod[],
    fresh: Set<string>,
    has: (ns: string, dev: string) => boolean = () => false,
  ): Promise<void> {
    if (pods.length === 0) return;
    // Namespaces first (for addPod after up: up() made the others already).
    const missing = pods.filter((p) => !fresh.has(p.ns) && !isNetnsMount(p.ns));
    if (missing.length > 0) {
      await deleteNamespaces(missing.filter((p) => fs.existsSync(`/run/netns/${p.ns}`)).map((p) => p.ns));
      await batch(
        'ip',
        undefined,
        missing.map((p) => `netns add ${p.ns}`),
      );
      for (const p of missing) {
        fresh.add(p.ns);
        sysctls(
          p.ns,
          [
            ['net/ipv6/conf/all/disable_ipv6', '1'],
            ['net/ipv6/conf/default/disable_ipv6', '1'],
          ],
          true,
        );
      }
    }
    const hasDev = (ns: string, dev: string): boolean => !fresh.has(ns) && has(ns, dev);
    await Promise.all(
      this.nodes.map(async (n) => {
        const mine = pods.filter((p) => p.node === n.index);
        if (mine.length === 0) return;
        const l: string[] = [];
        for (const p of mine) {
          // A pod namespace without its eth0 (e.g. the node was recreated) gets a new pair.
          if (!hasDev(n.ns, p.hostIf) || !hasDev(p.ns, 'eth0')) {
            if (hasDev(n.ns, p.hostIf)) l.push(`link del ${p.hostIf}`);
            l.push(`link add ${p.hostIf} type veth peer name eth0 netns ${p.ns}`);
          }
          l.push(`link set ${p.hostIf} address ${HOST_VETH_MAC} mtu ${this.mtu} up`);
          l.push(`route replace ${p.ip}/32 dev ${p.hostIf} scope link`);
        }
        await batch('ip', n.ns, l);
        sysctls(
          n.ns,
          mine.flatMap((p): Array<[string, string]> => [
            [`net/ipv4/conf/${p.hostIf}/proxy_arp`, '1'],
            [`net/ipv4/conf/${p.hostIf}/rp_filter`, '0'],
            [`net/ipv4/neigh/${p.hostIf}/proxy_delay`, '0'],
          ]),
        );
        await Promise.all([
          offloadsOff(
            n.ns,
            mine.map((p) => p.hostIf),
          ),
          ...mine.map(async (p) => {
            await batch('ip', p.ns, [
              'link set lo up',
              `link set eth0 mtu ${this.mtu}`,
              `addr replace ${p.ip}/32 dev eth0`,
              'link set eth0 up',
              `route replace ${POD_GATEWAY}/32 dev eth0 scope link`,
              `route replace default via ${POD_GATEWAY} dev eth0`,
            ]);
            await offloadsOff(p.ns, ['eth0']);
          }),
        ]);
      }),
    );
  }

  private readIfindexes(): void {
    for (const n of this.nodes) {
      n.eth0Ifindex = ifindexIn(n.ns, 'eth0');
      if (this.overlay === 'vxlan') n.vxlanIfindex = ifindexIn(n.ns, VXLAN_DEV);
    }
    if (this.external) this.external.eth0Ifindex = ifindexIn(this.external.ns, 'eth0');
    if (this.controlPlane) this.controlPlane.eth0Ifindex = ifindexIn(this.controlPlane.ns, 'eth0');
    for (const p of this.pods) p.hostIfindex = ifindexIn(this.node(p.node).ns, p.hostIf);
  }

  /** Removes everything of this lab (also a half-made one), including processes it started. */
  down(opts: { progress?: (step: string) => void } = {}): Promise<SweepResult> {
    return this.serial(async () => {
      const say = opts.progress ?? this.progress;
      say?.('stopping processes');
      const waits: Promise<void>[] = [];
      for (const child of this.children) {
        if (child.exitCode !== null || child.signalCode !== null) continue;
        waits.push(new Promise<void>((resolve) => child.once('exit', () => resolve())));
        child.kill('SIGKILL');
      }
      const timer = new Promise<void>((r) => setTimeout(r, 5000).unref());
      await Promise.race([Promise.all(waits), timer]);
      this.children.clear();
      say?.('deleting namespaces');
      const r = await Topology.sweep(this.name);
      this.isUp = false;
      for (const n of this.nodes) {
        n.eth0Ifindex = 0;
        if (n.vxlanIfindex !== undefined) n.vxlanIfindex = 0;
      }
      if (this.external) this.external.eth0Ifindex = 0;
      if (this.controlPlane) this.controlPlane.eth0Ifindex = 0;
      for (const p of this.pods) p.hostIfindex = 0;
      say?.('done');
      return r;
    });
  }

  /**
   * Removes every `sl-<name>-*` namespace and kills the processes recorded under
   * /run/sluice/lab-<name>/procs (only those whose /proc entry still matches the record), then
   * removes the state directory. Works without the process that built the lab.
   */
  static async sweep(name: string): Promise<SweepResult> {
    checkLabName(name);
    const killed = await killRecorded(procsDir(name));
    const namespaces = labNamespaces(name);
    const strays = await killInNamespaces(namespaces);
    const left = await deleteNamespaces(namespaces);
    if (left.length > 0) throw new Error(`lab ${name}: cannot delete namespaces: ${left.join('; ')}`);
    fs.rmSync(labDir(name), { recursive: true, force: true });
    return { namespaces, killed, strays };
  }

  // -------------------------------------------------------------------------------------------
  // Running commands

  /**
   * Runs `cmd args` in `target` (a pod name, `node<i>`, `ext` or `fabric`) with a timeout
   * (default 10 s); the exit code is passed through, failures do not throw.
   */
  exec(target: string, cmd: string, args: readonly string[] = [], opts: LabExecOptions = {}): Promise<ExecResult> {
    return execIn(this.nsOf(target), cmd, args, opts, this.recorder);
  }

  /** Like exec, but throws unless the command exits with 0; returns its stdout. */
  async mustExec(
    target: string,
    cmd: string,
    args: readonly string[] = [],
    opts: LabExecOptions = {},
  ): Promise<string> {
    const r = await this.exec(target, cmd, args, opts);
    if (r.code !== 0) throw describeFailure(`${cmd} ${args.join(' ')} in ${target}`, r);
    return r.stdout;
  }

  /** Starts a long-running `cmd args` in `target`; down() and sweep() kill it. */
  spawn(target: string, cmd: string, args: readonly string[] = [], opts: LabSpawnOptions = {}): ChildProcess {
    const child = spawnIn(this.nsOf(target), cmd, args, opts, this.recorder);
    this.children.add(child);
    const done = (): void => {
      this.children.delete(child);
    };
    child.once('exit', done);
    child.once('error', done);
    return child;
  }
}
