// The lab controller: one process per lab, started by `sluice lab up`, doing what a cluster's
// control plane and kubelets do, all through the lab's datastore:
//   - Deployment controller: a Deployment's replicas become Pods `<deploy>-<hash>-<5 chars>`
//     (hash of the pod template: a changed template rolls the pods over), spread over the nodes
//   - scheduler: a Pod without spec.nodeName goes to the node with the fewest pods (ties in
//     turn), within its nodeSelector
//   - kubelet (kubelet.ts): runs each scheduled Pod and writes its status back; finishes deletions
//   - EndpointSlice controller (endpointslices.ts): slices from Services and Pods
//   - namespace deletion and garbage collection of owned objects
//   - LoadBalancer ingress IPs and externalIPs: the external namespace routes each via a node
// Its writes go through store transactions; what it writes is put into its cache at once, so a
// decision never waits for its own write to come back through the watch.
//
// It runs until SIGTERM/SIGINT, then kills its pods' processes (their namespaces stay; a new
// controller starts the containers again). /run/sluice/lab-<name>/controller.json says whether
// it is ready; its log is controller.log beside it.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ProcessRecorder } from './exec.js';
import { applyExternalRoutes, wantedExternalRoutes } from './external-routes.js';
import { desiredEndpoints, isPodReady, isSliceOf, reconcileSlices, isPodTerminal } from './endpointslices.js';
import { containerLogPath, NETNS_ANNOTATION, PodRunner, type KubeletContext } from './kubelet.js';
import { matchesMap, requestDelete } from './resources.js';
import {
  FileStore,
  keyOf,
  timestamp,
  type Deployment,
  type EndpointSlice,
  type Kind,
  type KindTypes,
  type KubeObject,
  type Namespace,
  type Node,
  type Pod,
  type StoreTx,
  type WatchEvent,
} from './store.js';
import { Topology } from './topology.js';

// ---------------------------------------------------------------------------------------------
// Files of a lab

export function storeDir(lab: string): string {
  return path.join(Topology.stateDir(lab), 'store');
}
export function logDir(lab: string): string {
  return path.join(Topology.stateDir(lab), 'logs');
}
/** Per-pod process groups (kubelet records), read by killPodProcesses. */
export function podRunDir(lab: string): string {
  return path.join(Topology.stateDir(lab), 'pods');
}
export function controllerStatePath(lab: string): string {
  return path.join(Topology.stateDir(lab), 'controller.json');
}
export function controllerLogPath(lab: string): string {
  return path.join(Topology.stateDir(lab), 'controller.log');
}

export interface ControllerState {
  pid: number;
  /** /proc/PID/stat start time, to tell a reused PID apart. */
  starttime: string;
  state: 'starting' | 'ready' | 'stopping';
  since: string;
  error?: string;
}

/** The start time (/proc/PID/stat field 22) of a live process; undefined when gone or a zombie. */
export function procStarttime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

/** The controller's state file, if the process it names is alive. */
export function liveController(lab: string): ControllerState | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(controllerStatePath(lab), 'utf8')) as ControllerState;
    return procStarttime(s.pid) === s.starttime ? s : undefined;
  } catch {
    return undefined;
  }
}

function writeControllerState(lab: string, state: ControllerState['state'], error?: string): void {
  const s: ControllerState = {
    pid: process.pid,
    starttime: procStarttime(process.pid) ?? '',
    state,
    since: timestamp(),
    ...(error ? { error } : {}),
  };
  const file = controllerStatePath(lab);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(s) + '\n', { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

function netnsInode(ns: string): number | undefined {
  try {
    return fs.statSync(`/run/netns/${ns}`).ino;
  } catch {
    return undefined;
  }
}

/**
 * Kills what is left of pods' processes: every process in a process group the kubelet recorded
 * (a container's command and whatever it started) that is still in one of the lab's network
 * namespaces. For a controller that was killed without stopping its pods. Returns the PIDs.
 */
export function killPodProcesses(lab: string): number[] {
  const dir = podRunDir(lab);
  const pgids = new Set<number>();
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  for (const f of files) {
    try {
      const rec = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { pgids?: number[] };
      for (const g of rec.pgids ?? []) if (Number.isInteger(g) && g > 1) pgids.add(g);
    } catch {
      // half-written
    }
  }
  const inodes = new Set<number>();
  try {
    for (const ns of fs.readdirSync('/run/netns')) {
      if (!ns.startsWith(`sl-${lab}-`)) continue;
      const ino = netnsInode(ns);
      if (ino !== undefined) inodes.add(ino);
    }
  } catch {
    // no namespaces
  }
  const killed: number[] = [];
  if (pgids.size > 0 && inodes.size > 0) {
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (pid === process.pid) continue;
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
        if (!pgids.has(pgrp)) continue;
        const link = fs.readlinkSync(`/proc/${pid}/ns/net`);
        const ino = Number(/\[(\d+)\]/.exec(link)?.[1]);
        if (!inodes.has(ino)) continue;
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      } catch {
        // gone meanwhile
      }
    }
  }
  for (const f of files) fs.rmSync(path.join(dir, f), { force: true });
  return killed;
}

// ---------------------------------------------------------------------------------------------
// Helpers

const WATCHED = ['Namespace', 'Pod', 'Deployment', 'Service', 'EndpointSlice'] as const;
type Watched = (typeof WATCHED)[number];

const HASH_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

/** A 10-character hash of a pod template (the pod-template-hash label). */
export function podTemplateHash(template: unknown): string {
  const h = createHash('sha256').update(JSON.stringify(template)).digest();
  let s = '';
  for (let i = 0; i < 10; i++) s += HASH_CHARS[h[i] % HASH_CHARS.length];
  return s;
}

function randomSuffix(): string {
  let s = '';
  for (let i = 0; i < 5; i++) s += HASH_CHARS[Math.floor(Math.random() * HASH_CHARS.length)];
  return s;
}

function rv(o: KubeObject | undefined): number {
  return Number(o?.metadata?.resourceVersion ?? 0);
}

function controllerOf(o: KubeObject): { kind: string; name: string; uid: string } | undefined {
  const r = (o.metadata?.ownerReferences ?? []).find((x) => x.controller);
  return r ? { kind: r.kind, name: r.name, uid: r.uid } : undefined;
}

/** Labels the lab's Node objects carry (what nodeSelector can use). */
export function nodeLabels(name: string): Record<string, string> {
  return {
    'kubernetes.io/hostname': name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': process.arch === 'x64' ? 'amd64' : process.arch,
  };
}

/** The Node objects of a lab topology. */
export function nodeObjects(topo: Topology): Node[] {
  const prefix = Number(topo.underlay.split('/')[1]);
  return topo.nodes.map((n) => {
    const annotations: Record<string, string> = { 'projectcalico.org/IPv4Address': `${n.ip}/${prefix}` };
    if (n.tunnelIp) annotations['projectcalico.org/IPv4VXLANTunnelAddr'] = n.tunnelIp;
    if (n.vxlanMac) annotations['lab.sluice.dev/vxlan-tunnel-mac'] = n.vxlanMac;
    annotations['lab.sluice.dev/netns'] = n.ns;
    return {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: n.name, labels: nodeLabels(n.name), annotations },
      spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
      status: {
        addresses: [
          { type: 'InternalIP', address: n.ip },
          { type: 'Hostname', address: n.name },
        ],
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'lab node' }],
        nodeInfo: {
          architecture: process.arch === 'x64' ? 'amd64' : process.arch,
          operatingSystem: 'linux',
          kernelVersion: '',
          osImage: 'sluice lab',
          containerRuntimeVersion: 'lab://nsenter',
          kubeletVersion: 'lab',
          kubeProxyVersion: '',
          bootID: '',
          machineID: '',
          systemUUID: '',
        },
      },
    } satisfies Node;
  });
}

/** Objects every lab has: its Nodes and the default and kube-system Namespaces. */
export function ensureClusterObjects(tx: StoreTx, topo: Topology): void {
  for (const n of nodeObjects(topo)) {
    const old = tx.get('Node', undefined, n.metadata?.name ?? '');
    if (
      !old ||
      JSON.stringify(old.spec) !== JSON.stringify(n.spec) ||
      JSON.stringify(old.metadata?.annotations) !== JSON.stringify(n.metadata?.annotations)
    )
      tx.put(n);
  }
  for (const name of ['default', 'kube-system']) {
    if (tx.get('Namespace', undefined, name)) continue;
    const ns: Namespace = {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name, labels: { 'kubernetes.io/metadata.name': name } },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    };
    tx.put(ns);
  }
}

// ---------------------------------------------------------------------------------------------
// The controller

export interface ControllerOptions {
  log?: (msg: string) => void;
}

export class LabController {
  private readonly cache: { [K in Watched]: Map<string, KindTypes[K]> } = {
    Namespace: new Map(),
    Pod: new Map(),
    Deployment: new Map(),
    Service: new Map(),
    EndpointSlice: new Map(),
  };
  private readonly tombstones = new Map<string, number>();
  private readonly runners = new Map<string, PodRunner>();
  private readonly dirty = {
    deployments: new Set<string>(),
    pods: new Set<string>(),
    services: new Set<string>(),
    namespaces: new Set<string>(),
  };
  private running = false;
  private scheduled = false;
  private stopped = false;
  private rr = 0;
  private readonly statusQueue = new Set<PodRunner>();
  private statusFlush: Promise<void> | undefined;
  private readonly ctx: KubeletContext;
  private readonly log: (msg: string) => void;
  private watch: { stop(): void; synced: Promise<void> } | undefined;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly topo: Topology,
    readonly store: FileStore,
    opts: ControllerOptions = {},
  ) {
    this.log = opts.log ?? ((m) => process.stdout.write(`${timestamp()} ${m}\n`));
    this.ctx = {
      topo,
      recorder: new ProcessRecorder(Topology.procsDir(topo.name)),
      logDir: logDir(topo.name),
      runDir: podRunDir(topo.name),
      onStatus: (r) => this.queueStatus(r),
      log: this.log,
    };
  }

  async start(): Promise<void> {
    await this.store.transaction((tx) => ensureClusterObjects(tx, this.topo));
    const w = this.store.watch(WATCHED, (ev) => this.onEvent(ev as WatchEvent<Watched>), {
      onError: (err) => this.log(`watch: ${err.message}`),
    });
    this.watch = w;
    await w.synced;
    for (const k of this.cache.Deployment.keys()) this.dirty.deployments.add(k);
    for (const k of this.cache.Pod.keys()) this.dirty.pods.add(k);
    for (const k of this.cache.Service.keys()) this.dirty.services.add(k);
    for (const k of this.cache.Namespace.keys()) this.dirty.namespaces.add(k);
    this.kick();
    await this.idle();
  }

  /** Resolves when no work is queued or running. */
  async idle(): Promise<void> {
    while (this.running || this.scheduled || this.statusFlush) {
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Stops watching; kills the pods' processes (their namespaces stay). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.stop();
    clearTimeout(this.retryTimer);
    await Promise.all([...this.runners.values()].map((r) => r.kill()));
  }

  // --- cache ---------------------------------------------------------------------------------

  private onEvent(ev: WatchEvent<Watched>): void {
    const obj = ev.object;
    const key = keyOf(obj);
    const cache = this.cache[ev.kind] as Map<string, KubeObject>;
    const k = this.shortKey(obj);
    const dead = this.tombstones.get(key);
    if (dead !== undefined && Number(ev.resourceVersion) <= dead) return;
    if (ev.type === 'DELETED') {
      cache.delete(k);
      this.tombstones.set(key, Number(ev.resourceVersion));
    } else {
      const cur = cache.get(k);
      if (cur && rv(cur) >= rv(obj)) return;
      cache.set(k, obj);
    }
    this.markFor(ev.kind, obj);
    this.kick();
  }

  private shortKey(o: KubeObject): string {
    return o.kind === 'Namespace' ? (o.metadata?.name ?? '') : `${o.metadata?.namespace}/${o.metadata?.name}`;
  }

  /** Write-through: what we wrote is known before the watch brings it back. */
  private remember(o: KubeObject, deleted = false): void {
    const kind = o.kind as Watched;
    const cache = this.cache[kind] as Map<string, KubeObject> | undefined;
    if (!cache) return;
    const k = this.shortKey(o);
    if (deleted) {
      cache.delete(k);
      this.tombstones.set(keyOf(o), rv(o));
    } else if (rv(cache.get(k)) < rv(o)) cache.set(k, o);
    this.markFor(kind, o);
  }

  private markFor(kind: Kind, o: KubeObject): void {
    const ns = o.metadata?.namespace ?? '';
    switch (kind) {
      case 'Pod': {
        this.dirty.pods.add(this.shortKey(o));
        for (const [k, s] of this.cache.Service) if (s.metadata?.namespace === ns) this.dirty.services.add(k);
        const owner = controllerOf(o);
        if (owner?.kind === 'Deployment') this.dirty.deployments.add(`${ns}/${owner.name}`);
        this.dirty.namespaces.add(ns);
        break;
      }
      case 'Deployment':
        this.dirty.deployments.add(this.shortKey(o));
        this.dirty.namespaces.add(ns);
        break;
      case 'Service':
        this.dirty.services.add(this.shortKey(o));
        this.dirty.namespaces.add(ns);
        break;
      case 'EndpointSlice': {
        const svc = (o.metadata?.labels ?? {})['kubernetes.io/service-name'];
        if (svc) this.dirty.services.add(`${ns}/${svc}`);
        this.dirty.namespaces.add(ns);
        break;
      }
      case 'Namespace':
        this.dirty.namespaces.add(o.metadata?.name ?? '');
        break;
      default:
        break;
    }
  }

  // --- the work loop -------------------------------------------------------------------------

  private kick(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      for (let round = 0; round < 100; round++) {
        const d = this.dirty;
        if (d.deployments.size + d.pods.size + d.services.size + d.namespaces.size === 0) break;
        const deployments = [...d.deployments];
        const pods = [...d.pods];
        const services = [...d.services];
        const namespaces = [...d.namespaces];
        d.deployments.clear();
        d.pods.clear();
        d.services.clear();
        d.namespaces.clear();
        await this.step('deployments', deployments, (k) => this.syncDeployment(k), d.deployments);
        await this.step('pods', pods, (k) => this.syncPod(k), d.pods);
        await this.step('services', services, (k) => this.syncService(k), d.services);
        await this.step('namespaces', namespaces, (k) => this.syncNamespace(k), d.namespaces);
        await this.syncExternalRoutes();
      }
    } finally {
      this.running = false;
    }
    const d = this.dirty;
    if (d.deployments.size + d.pods.size + d.services.size + d.namespaces.size > 0) this.kick();
  }

  private async step(
    what: string,
    keys: string[],
    fn: (k: string) => Promise<void>,
    retry: Set<string>,
  ): Promise<void> {
    for (const k of keys) {
      if (this.stopped) return;
      try {
        await fn(k);
      } catch (err) {
        this.log(`${what} ${k}: ${(err as Error).message}`);
        // try again a little later
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => {
          retry.add(k);
          this.kick();
        }, 1000);
      }
    }
  }

  private async write<T>(fn: (tx: StoreTx) => T): Promise<T> {
    return this.store.transaction(fn);
  }

  // --- Deployments ---------------------------------------------------------------------------

  private podsOwnedBy(ns: string, kind: string, name: string, uid?: string): Pod[] {
    return [...this.cache.Pod.values()].filter((p) => {
      if (p.metadata?.namespace !== ns) return false;
      const o = controllerOf(p);
      return o?.kind === kind && o.name === name && (uid === undefined || o.uid === uid);
    });
  }

  private async syncDeployment(key: string): Promise<void> {
    const [ns, name] = key.split('/');
    const d = this.cache.Deployment.get(key);
    if (!d) {
      // garbage collection: pods whose Deployment is gone
      const orphans = this.podsOwnedBy(ns, 'Deployment', name).filter(
        (p) => !p.metadata?.deletionTimestamp && !this.deploymentByUid(controllerOf(p)?.uid ?? ''),
      );
      if (orphans.length > 0) await this.deletePods(orphans);
      return;
    }
    const uid = d.metadata?.uid ?? '';
    const spec = d.spec;
    const template = spec?.template ?? {};
    const hash = podTemplateHash(template);
    const owned = this.podsOwnedBy(ns, 'Deployment', name, uid);
    const active = owned.filter((p) => !p.metadata?.deletionTimestamp && !isPodTerminal(p));
    // pods owned by an earlier Deployment of the same name
    const stale = this.podsOwnedBy(ns, 'Deployment', name).filter(
      (p) => controllerOf(p)?.uid !== uid && !p.metadata?.deletionTimestamp,
    );
    const current = active.filter((p) => p.metadata?.labels?.['pod-template-hash'] === hash);
    const old = active.filter((p) => p.metadata?.labels?.['pod-template-hash'] !== hash);
    const want = spec?.replicas ?? 1;
    const toDelete: Pod[] = [...stale, ...owned.filter((p) => isPodTerminal(p) && !p.metadata?.deletionTimestamp)];

    const recreate = spec?.strategy?.type === 'Recreate';
    if (recreate && old.length > 0) {
      toDelete.push(...old);
    } else if (old.length > 0) {
      const readyCurrent = current.filter(isPodReady).length;
      const oldSorted = [...old].sort((a, b) => Number(isPodReady(a)) - Number(isPodReady(b)));
      const oldReady = old.filter(isPodReady).length;
      // keep at least `want` ready pods while rolling over
      let removable = Math.max(0, readyCurrent + oldReady - want) + old.filter((p) => !isPodReady(p)).length;
      if (readyCurrent >= want) removable = old.length;
      toDelete.push(...oldSorted.slice(0, Math.min(removable, old.length)));
    }
    const create = recreate && old.length > 0 ? 0 : Math.max(0, want - current.length);
    if (current.length > want) {
      const extra = [...current].sort((a, b) => Number(isPodReady(a)) - Number(isPodReady(b)) || rv(b) - rv(a));
      toDelete.push(...extra.slice(0, current.length - want));
    }
    if (toDelete.length > 0) await this.deletePods(toDelete);
    if (create > 0) {
      const pods: Pod[] = [];
      const names = new Set([...this.cache.Pod.keys()]);
      for (let i = 0; i < create; i++) {
        let podName: string;
        do podName = `${name.slice(0, 46)}-${hash}-${randomSuffix()}`;
        while (names.has(`${ns}/${podName}`));
        names.add(`${ns}/${podName}`);
        const tmeta = template.metadata ?? {};
        const pod: Pod = {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: {
            name: podName,
            namespace: ns,
            labels: { ...(tmeta.labels ?? {}), 'pod-template-hash': hash },
            ...(tmeta.annotations ? { annotations: { ...tmeta.annotations } } : {}),
            ownerReferences: [
              { apiVersion: 'apps/v1', kind: 'Deployment', name, uid, controller: true, blockOwnerDeletion: true },
            ],
          },
          spec: structuredClone(template.spec) as Pod['spec'],
          status: { phase: 'Pending' },
        };
        const node = this.pickNode(pod, pods);
        if (node && pod.spec) pod.spec.nodeName = node;
        pods.push(pod);
      }
      const written = await this.write((tx) => pods.map((p) => tx.put(p).object));
      for (const p of written) this.remember(p);
      this.log(
        `deployment ${key}: created ${written.map((p) => `${p.metadata?.name} on ${p.spec?.nodeName}`).join(', ')}`,
      );
    }
    // status
    const after = this.podsOwnedBy(ns, 'Deployment', name, uid).filter((p) => !p.metadata?.deletionTimestamp);
    const ready = after.filter(isPodReady).length;
    const updated = after.filter((p) => p.metadata?.labels?.['pod-template-hash'] === hash).length;
    const status: NonNullable<Deployment['status']> = {
      observedGeneration: d.metadata?.generation ?? 1,
      replicas: after.length,
      updatedReplicas: updated,
      readyReplicas: ready,
      availableReplicas: ready,
      unavailableReplicas: Math.max(0, want - ready),
    };
    if (JSON.stringify(pickStatus(d.status)) !== JSON.stringify(status)) {
      const res = await this.write((tx) => {
        const cur = tx.get('Deployment', ns, name);
        if (!cur || cur.metadata?.uid !== uid) return undefined;
        const prevConds = cur.status?.conditions ?? [];
        const availableNow = ready >= want;
        const prevAvail = prevConds.find((c) => c.type === 'Available');
        const cond = {
          type: 'Available',
          status: availableNow ? 'True' : 'False',
          reason: availableNow ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
          message: availableNow
            ? 'Deployment has minimum availability.'
            : 'Deployment does not have minimum availability.',
          lastUpdateTime: timestamp(),
          lastTransitionTime:
            prevAvail && prevAvail.status === (availableNow ? 'True' : 'False')
              ? prevAvail.lastTransitionTime
              : timestamp(),
        };
        cur.status = { ...status, conditions: [cond] };
        return tx.put(cur).object;
      });
      if (res) this.remember(res);
    }
  }

  private deploymentByUid(uid: string): Deployment | undefined {
    for (const d of this.cache.Deployment.values()) if (d.metadata?.uid === uid) return d;
    return undefined;
  }

  private async deletePods(pods: Pod[]): Promise<void> {
    const res = await this.write((tx) =>
      pods
        .map((p) => requestDelete(tx, 'Pod', p.metadata?.namespace, p.metadata?.name ?? ''))
        .filter((x): x is Pod => x !== undefined),
    );
    for (const p of res) this.remember(p);
  }

  // --- scheduler -----------------------------------------------------------------------------

  /** The node for a pod: fewest pods within its nodeSelector, ties in turn. */
  private pickNode(pod: Pod, alsoPlaced: readonly Pod[] = []): string | undefined {
    const selector = pod.spec?.nodeSelector ?? {};
    const candidates = this.topo.nodes.filter((n) => matchesMap(nodeLabels(n.name), selector));
    if (candidates.length === 0) return undefined;
    const count = new Map<string, number>(candidates.map((n) => [n.name, 0]));
    for (const p of [...this.cache.Pod.values(), ...alsoPlaced]) {
      const n = p.spec?.nodeName;
      if (n && count.has(n) && !isPodTerminal(p) && !p.metadata?.deletionTimestamp)
        count.set(n, (count.get(n) ?? 0) + 1);
    }
    const min = Math.min(...count.values());
    const tied = candidates.filter((n) => count.get(n.name) === min);
    const pick = tied[this.rr++ % tied.length];
    return pick.name;
  }

  // --- kubelet -------------------------------------------------------------------------------

  private async syncPod(key: string): Promise<void> {
    const pod = this.cache.Pod.get(key);
    const runner = this.runners.get(key);
    if (!pod) {
      if (runner && !runner.terminating) {
        this.runners.delete(key);
        void runner.terminate(0);
      }
      return;
    }
    if (runner && runner.uid !== pod.metadata?.uid) {
      // a new pod under an old name: the old one goes first
      if (!runner.terminating) await runner.terminate(0);
      this.runners.delete(key);
    }
    const [ns, name] = key.split('/');
    const deleting = Boolean(pod.metadata?.deletionTimestamp);
    if (!pod.spec?.nodeName) {
      if (deleting) {
        await this.finalizePod(ns, name, pod.metadata?.uid ?? '');
        return;
      }
      const node = this.pickNode(pod);
      if (!node) {
        this.log(`pod ${key}: no node matches its nodeSelector`);
        return;
      }
      const res = await this.write((tx) => {
        const cur = tx.get('Pod', ns, name);
        if (!cur || cur.metadata?.uid !== pod.metadata?.uid || cur.spec?.nodeName || !cur.spec) return undefined;
        cur.spec.nodeName = node;
        return tx.put(cur).object;
      });
      if (res) this.remember(res);
      return;
    }
    const current = this.runners.get(key);
    if (deleting) {
      if (!current) {
        await this.finalizePod(ns, name, pod.metadata?.uid ?? '');
        return;
      }
      if (!current.terminating) {
        const grace = pod.metadata?.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
        this.log(`pod ${key}: terminating (grace ${grace} s)`);
        void current.terminate(grace).then(async () => {
          if (this.runners.get(key) === current) this.runners.delete(key);
          try {
            await this.finalizePod(ns, name, current.uid);
          } catch (err) {
            this.log(`pod ${key}: ${(err as Error).message}`);
          }
        });
      }
      return;
    }
    if (isPodTerminal(pod) && !current) return;
    if (!current) {
      const r = new PodRunner(this.ctx, pod);
      this.runners.set(key, r);
      void r.start().catch((err: unknown) => this.log(`pod ${key}: ${(err as Error).message}`));
      return;
    }
    current.update(pod);
  }

  private async finalizePod(ns: string, name: string, uid: string): Promise<void> {
    const res = await this.write((tx) => {
      const cur = tx.get('Pod', ns, name);
      if (!cur || cur.metadata?.uid !== uid) return undefined;
      return tx.delete('Pod', ns, name);
    });
    if (res) {
      this.remember(res, true);
      for (const c of res.spec?.containers ?? [])
        fs.rmSync(containerLogPath(this.ctx.logDir, ns, name, c.name), { force: true });
      fs.rmSync(path.join(this.ctx.runDir, `${uid}.json`), { force: true });
      this.log(`pod ${ns}/${name}: deleted`);
    }
  }

  private queueStatus(r: PodRunner): void {
    if (this.stopped) return;
    this.statusQueue.add(r);
    if (this.statusFlush) return;
    this.statusFlush = (async () => {
      await new Promise((res) => setTimeout(res, 10));
      while (this.statusQueue.size > 0 && !this.stopped) {
        const batch = [...this.statusQueue];
        this.statusQueue.clear();
        try {
          const written = await this.write((tx) => {
            const out: Pod[] = [];
            for (const runner of batch) {
              const cur = tx.get('Pod', runner.namespace, runner.name);
              if (!cur || cur.metadata?.uid !== runner.uid) continue;
              const next = mergeStatus(cur.status, runner.status());
              const annotations = { ...(cur.metadata?.annotations ?? {}) };
              if (runner.netns && !runner.hostNetwork) annotations[NETNS_ANNOTATION] = runner.netns;
              const updated: Pod = { ...cur, metadata: { ...cur.metadata, annotations }, status: next };
              const r = tx.put(updated);
              if (r.result !== 'unchanged') out.push(r.object);
            }
            return out;
          });
          for (const p of written) this.remember(p);
          if (written.length > 0) this.kick();
        } catch (err) {
          this.log(`pod status: ${(err as Error).message}`);
          for (const r of batch) this.statusQueue.add(r);
          await new Promise((res) => setTimeout(res, 500));
        }
      }
      this.statusFlush = undefined;
    })();
  }

  // --- Services ------------------------------------------------------------------------------

  private slicesOf(ns: string, name: string): EndpointSlice[] {
    return [...this.cache.EndpointSlice.values()].filter((s) => isSliceOf(s, ns, name));
  }

  private async syncService(key: string): Promise<void> {
    const [ns, name] = key.split('/');
    const svc = this.cache.Service.get(key);
    const existing = this.slicesOf(ns, name);
    let create: EndpointSlice[] = [];
    let update: EndpointSlice[] = [];
    let remove: EndpointSlice[] = [];
    if (!svc) remove = existing;
    else {
      const pods = [...this.cache.Pod.values()].filter((p) => p.metadata?.namespace === ns);
      const taken = (n: string): boolean => this.cache.EndpointSlice.has(`${ns}/${n}`);
      const ch = reconcileSlices(svc, desiredEndpoints(svc, pods), existing, taken);
      // slices of a Service that no longer wants any (selector removed, ExternalName)
      create = ch.create;
      update = ch.update;
      remove = ch.delete;
      if (!svc.spec?.selector || Object.keys(svc.spec.selector).length === 0 || svc.spec.type === 'ExternalName') {
        create = [];
        update = [];
        remove = existing;
      }
    }
    if (create.length + update.length + remove.length === 0) return;
    const res = await this.write((tx) => {
      const out: Array<{ o: KubeObject; deleted: boolean }> = [];
      for (const s of [...create, ...update]) out.push({ o: tx.put(s).object, deleted: false });
      for (const s of remove) {
        const d = tx.delete('EndpointSlice', ns, s.metadata?.name ?? '');
        if (d) out.push({ o: d, deleted: true });
      }
      return out;
    });
    for (const r of res) this.remember(r.o, r.deleted);
  }

  /** Routes in the external namespace for LoadBalancer ingress IPs and externalIPs. */
  private async syncExternalRoutes(): Promise<void> {
    const want = wantedExternalRoutes(this.topo, [...this.cache.Service.values()], (ns, name) =>
      this.slicesOf(ns, name),
    );
    await applyExternalRoutes(this.topo, want, (m) => this.log(m));
  }

  // --- Namespaces ----------------------------------------------------------------------------

  private async syncNamespace(name: string): Promise<void> {
    const ns = this.cache.Namespace.get(name);
    if (!ns?.metadata?.deletionTimestamp) return;
    const inNs = <K extends Watched>(kind: K): Array<KindTypes[K]> =>
      [...(this.cache[kind] as Map<string, KindTypes[K]>).values()].filter((o) => o.metadata?.namespace === name);
    const pods = inNs('Pod');
    const others = [...inNs('Deployment'), ...inNs('Service'), ...inNs('EndpointSlice')];
    const policies = this.store.snapshot('NetworkPolicy').filter((p) => p.metadata?.namespace === name);
    if (pods.length + others.length + policies.length === 0) {
      const res = await this.write((tx) => tx.delete('Namespace', undefined, name));
      if (res) {
        this.remember(res, true);
        this.log(`namespace ${name}: deleted`);
      }
      return;
    }
    const res = await this.write((tx) => {
      const out: Array<{ o: KubeObject; deleted: boolean }> = [];
      for (const o of [...others, ...policies]) {
        const d = tx.delete(o.kind as Kind, name, o.metadata?.name ?? '');
        if (d) out.push({ o: d, deleted: true });
      }
      for (const p of pods) {
        if (p.metadata?.deletionTimestamp) continue;
        const d = requestDelete(tx, 'Pod', name, p.metadata?.name ?? '');
        if (d) out.push({ o: d, deleted: false });
      }
      return out;
    });
    for (const r of res) this.remember(r.o, r.deleted);
  }
}

function pickStatus(s: Deployment['status']): unknown {
  if (!s) return undefined;
  return {
    observedGeneration: s.observedGeneration,
    replicas: s.replicas,
    updatedReplicas: s.updatedReplicas,
    readyReplicas: s.readyReplicas,
    availableReplicas: s.availableReplicas,
    unavailableReplicas: s.unavailableReplicas,
  };
}

/** The new status, with condition transition times kept where the condition did not change. */
function mergeStatus(prev: Pod['status'], next: NonNullable<Pod['status']>): NonNullable<Pod['status']> {
  const old = new Map((prev?.conditions ?? []).map((c) => [c.type, c]));
  next.conditions = (next.conditions ?? []).map((c) => {
    const o = old.get(c.type);
    return o && o.status === c.status ? { ...c, lastTransitionTime: o.lastTransitionTime } : c;
  });
  if (prev?.startTime) next.startTime = prev.startTime;
  return next;
}

// ---------------------------------------------------------------------------------------------
// The process

/** Runs the controller of lab `name` until SIGTERM/SIGINT (the hidden `sluice lab controller`). */
export async function runController(name: string): Promise<number> {
  const log = (m: string): void => {
    process.stdout.write(`${new Date().toISOString()} ${m}\n`);
  };
  const other = liveController(name);
  if (other && other.pid !== process.pid) {
    log(`another controller (pid ${other.pid}) runs this lab`);
    return 1;
  }
  writeControllerState(name, 'starting');
  let controller: LabController | undefined;
  const stop = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  try {
    const topo = Topology.open(name);
    if (!topo) throw new Error(`lab ${name} does not exist`);
    if (!topo.running) throw new Error(`lab ${name} is not fully up (run sluice lab up)`);
    const killed = killPodProcesses(name);
    if (killed.length > 0) log(`killed ${killed.length} process(es) left by an earlier controller`);
    const store = await FileStore.open(storeDir(name));
    controller = new LabController(topo, store, { log });
    await controller.start();
    writeControllerState(name, 'ready');
    log(`ready: ${topo.nodes.length} nodes`);
  } catch (err) {
    log(`failed: ${(err as Error).message}`);
    writeControllerState(name, 'stopping', (err as Error).message);
    await controller?.stop();
    return 1;
  }
  // Signal handlers do not keep a process alive, and the store's watch does not either.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  const why = await stop;
  clearInterval(keepAlive);
  log(`${why}: stopping`);
  writeControllerState(name, 'stopping');
  await controller.stop();
  fs.rmSync(controllerStatePath(name), { force: true });
  return 0;
}
