// The lab's kubelet (and scheduler) for the real API server: `sluice lab kubelet --name LAB`,
// started by `sluice lab up --kubernetes` in the control-plane namespace (where the API server is
// reachable), recorded like every lab process.
//
// It waits for the API server's /readyz, registers the cluster objects (bootstrap.ts), says
// `ready` in kubernetes/kubelet.json, then plays the kubelet of every lab node:
//   - watches Pods (the agent's list+watch datastore);
//   - scheduler: a Pod without spec.nodeName is bound (pods/binding) to the lab node with the
//     fewest pods, within its nodeSelector;
//   - a Pod bound to a lab node runs for real with the file-store lab's PodRunner (kubelet.ts of
//     the lab): a network namespace and address from the topology, the containers' commands in
//     it, readiness probes; its status (podIP, hostIP, phase, container states, Ready) is patched
//     back through pods/status, and the lab.sluice.dev/netns annotation says where it runs;
//   - LoadBalancer addresses and the external client's routes to them (service-lb.ts);
//   - a Pod being deleted is stopped gracefully and then removed (DELETE with grace 0 and the
//     uid as precondition, as a kubelet does).
// So the real endpointslice controller makes EndpointSlices from Pods the lab runs, and the
// agents program them.
//
// SIGTERM: kills the pods' processes (their namespaces stay for the next kubelet to adopt, or
// for `down`) and exits.
import fs from 'node:fs';
import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { KubernetesDatastore } from '../../agent/datastore/kubernetes.js';
import type { DatastoreLogger, Watch, WatchEvent } from '../../agent/datastore/types.js';
import { nodeLabels } from '../controller.js';
import { ProcessRecorder } from '../exec.js';
import { containerLogPath, NETNS_ANNOTATION, PodRunner, type KubeletContext } from '../kubelet.js';
import type { Pod } from '../store.js';
import { Topology } from '../topology.js';
import { KubeApi, KubeApiError } from './api.js';
import { KubeServiceLoadBalancer } from './service-lb.js';
import {
  ensureFelixConfiguration,
  ensureServicesEndpoint,
  installAgentRbac,
  installCrds,
  registerNodes,
  waitDefaultServiceAccount,
  waitReadyz,
} from './bootstrap.js';
import {
  controlPlaneState,
  killKubePodProcesses,
  kubeconfigPath,
  processAgeSeconds,
  kubeContainerLogDir,
  kubePodRunDir,
  kubePodsPath,
  liveKubelet,
  writeKubeletState,
} from './control-plane.js';

type PodStatus = NonNullable<Pod['status']>;

/** What `lab exec` and `lab status` read about the pods the lab kubelet runs. */
export interface KubePodRecord {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  ip: string | null;
  netns: string | null;
  phase: string;
  ready: boolean;
  /** Ready containers / containers, as kubectl shows them. */
  containers: string;
  restarts: number;
}

export function readKubePods(lab: string): KubePodRecord[] {
  try {
    return JSON.parse(fs.readFileSync(kubePodsPath(lab), 'utf8')) as KubePodRecord[];
  } catch {
    return [];
  }
}

function isReady(p: Pod): boolean {
  return (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

function isTerminal(p: Pod): boolean {
  return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';
}

/** The runner's status with the transition times of conditions that did not change kept. */
function mergeStatus(prev: PodStatus | undefined, next: PodStatus): PodStatus {
  const old = new Map((prev?.conditions ?? []).map((c) => [c.type, c]));
  const out: PodStatus = { ...next };
  delete out.qosClass; // set by the API server at creation, and immutable
  out.conditions = (next.conditions ?? []).map((c) => {
    const o = old.get(c.type);
    return o && o.status === c.status && o.lastTransitionTime ? { ...c, lastTransitionTime: o.lastTransitionTime } : c;
  });
  if (prev?.startTime) out.startTime = prev.startTime;
  return out;
}

/** The status without its times, to tell a real change from a rewrite. */
function statusDigest(s: PodStatus): string {
  return JSON.stringify(s, (k, v: unknown) => (k === 'lastTransitionTime' || k === 'lastProbeTime' ? undefined : v));
}

const podPath = (ns: string, name: string): string => `/api/v1/namespaces/${ns}/pods/${name}`;

export class KubeLabKubelet {
  private readonly pods = new Map<string, Pod>();
  private readonly runners = new Map<string, PodRunner>();
  private readonly sent = new Map<string, string>();
  private readonly annotated = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly statusQueue = new Set<PodRunner>();
  private draining = false;
  private flushing: Promise<void> | undefined;
  private snapshotTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private watch: Watch | undefined;
  private datastore: KubernetesDatastore | undefined;
  private readonly ctx: KubeletContext;
  private rr = 0;

  constructor(
    readonly topo: Topology,
    private readonly api: KubeApi,
    private readonly kc: KubeConfig,
    private readonly log: (m: string) => void,
  ) {
    this.ctx = {
      topo,
      recorder: new ProcessRecorder(Topology.procsDir(topo.name)),
      logDir: kubeContainerLogDir(topo.name),
      runDir: kubePodRunDir(topo.name),
      onStatus: (r) => this.queueStatus(r),
      log,
    };
  }

  async start(): Promise<void> {
    const logger: DatastoreLogger = {
      debug: () => undefined,
      info: (_o, m) => this.log(m),
      warn: (_o, m) => this.log(`warning: ${m}`),
      error: (_o, m) => this.log(`error: ${m}`),
    };
    this.datastore = new KubernetesDatastore({ kubeConfig: this.kc, logger });
    this.watch = this.datastore.watch(['Pod'], (ev) => this.onEvent(ev), {
      onError: (err) => this.log(`watch pods: ${err.message}`),
    });
    await this.watch.synced;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.stop();
    await this.datastore?.close();
    await Promise.all([...this.runners.values()].map((r) => r.kill()));
    this.writeSnapshot();
  }

  private onEvent(ev: WatchEvent<'Pod'>): void {
    const p = ev.object;
    const key = `${p.metadata?.namespace ?? 'default'}/${p.metadata?.name ?? ''}`;
    if (ev.type === 'DELETED') {
      if (this.pods.get(key)?.metadata?.uid === p.metadata?.uid) this.pods.delete(key);
    } else this.pods.set(key, p);
    this.kick(key);
  }

  private kick(key: string): void {
    this.dirty.add(key);
    if (this.draining) return;
    this.draining = true;
    setImmediate(() => void this.drain());
  }

  private async drain(): Promise<void> {
    while (this.dirty.size > 0 && !this.stopped) {
      const key = this.dirty.values().next().value as string;
      this.dirty.delete(key);
      try {
        await this.syncPod(key);
      } catch (err) {
        this.log(`pod ${key}: ${(err as Error).message}; retrying`);
        setTimeout(() => this.kick(key), 1000).unref();
      }
    }
    this.draining = false;
    this.scheduleSnapshot();
  }

  private labNode(name: string | undefined): boolean {
    return name !== undefined && this.topo.nodes.some((n) => n.name === name);
  }

  private pickNode(p: Pod): string | undefined {
    const sel = p.spec?.nodeSelector ?? {};
    const candidates = this.topo.nodes.filter((n) => {
      const labels = nodeLabels(n.name);
      return Object.entries(sel).every(([k, v]) => labels[k] === v) && nodeAffinityAdmits(p, n.name, labels);
    });
    if (candidates.length === 0) return undefined;
    const count = new Map(candidates.map((n) => [n.name, 0]));
    for (const q of this.pods.values()) {
      const n = q.spec?.nodeName;
      if (n && count.has(n) && !isTerminal(q)) count.set(n, (count.get(n) ?? 0) + 1);
    }
    const min = Math.min(...count.values());
    const tied = candidates.filter((n) => count.get(n.name) === min);
    return tied[this.rr++ % tied.length].name;
  }

  private async syncPod(key: string): Promise<void> {
    const [ns, name] = key.split('/');
    const pod = this.pods.get(key);
    const runner = this.runners.get(key);
    if (!pod) {
      if (runner && !runner.terminating) {
        this.runners.delete(key);
        this.log(`pod ${key}: deleted: stopping it`);
        void runner.terminate(0).then(() => this.forget(runner));
      }
      return;
    }
    if (runner && runner.uid !== pod.metadata?.uid) {
      if (!runner.terminating) await runner.terminate(0);
      this.runners.delete(key);
      this.forget(runner);
    }
    const deleting = Boolean(pod.metadata?.deletionTimestamp);
    const nodeName = pod.spec?.nodeName;
    if (!nodeName) {
      if (deleting || (pod.spec?.schedulerName ?? 'default-scheduler') !== 'default-scheduler') return;
      const node = this.pickNode(pod);
      if (!node) {
        this.log(`pod ${key}: no lab node matches its nodeSelector`);
        return;
      }
      await this.api.post(`${podPath(ns, name)}/binding`, {
        apiVersion: 'v1',
        kind: 'Binding',
        metadata: { name, namespace: ns, uid: pod.metadata?.uid },
        target: { apiVersion: 'v1', kind: 'Node', name: node },
      });
      // remembered at once, so that the next pick counts it before the watch brings it back
      if (this.pods.get(key) === pod) this.pods.set(key, { ...pod, spec: { ...pod.spec!, nodeName: node } });
      this.log(`pod ${key}: scheduled to ${node}`);
      return;
    }
    if (!this.labNode(nodeName)) return;
    const current = this.runners.get(key);
    if (deleting) {
      if (!current) {
        await this.finalize(ns, name, pod.metadata?.uid ?? '');
        return;
      }
      if (!current.terminating) {
        const grace = pod.metadata?.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
        this.log(`pod ${key}: terminating (grace ${grace} s)`);
        void current.terminate(grace).then(async () => {
          if (this.runners.get(key) === current) this.runners.delete(key);
          this.forget(current);
          try {
            await this.finalize(ns, name, current.uid);
          } catch (err) {
            this.log(`pod ${key}: ${(err as Error).message}`);
          }
          this.scheduleSnapshot();
        });
      }
      return;
    }
    if (!current) {
      if (isTerminal(pod)) return;
      const r = new PodRunner(this.ctx, pod);
      this.runners.set(key, r);
      this.log(`pod ${key}: starting on ${nodeName}`);
      void r.start().catch((err: unknown) => this.log(`pod ${key}: ${(err as Error).message}`));
      return;
    }
    current.update(pod);
  }

  private forget(r: PodRunner): void {
    this.sent.delete(r.uid);
    this.annotated.delete(r.uid);
    for (const c of this.podContainers(r))
      fs.rmSync(containerLogPath(this.ctx.logDir, r.namespace, r.name, c), { force: true });
    fs.rmSync(path.join(this.ctx.runDir, `${r.uid}.json`), { force: true });
  }

  private podContainers(r: PodRunner): string[] {
    return (this.pods.get(r.key)?.spec?.containers ?? []).map((c) => c.name);
  }

  /** The kubelet's last word on a pod: remove the object (grace 0, this very pod only). */
  private async finalize(ns: string, name: string, uid: string): Promise<void> {
    try {
      await this.api.delete(podPath(ns, name), {
        apiVersion: 'v1',
        kind: 'DeleteOptions',
        gracePeriodSeconds: 0,
        preconditions: { uid },
      });
      this.log(`pod ${ns}/${name}: deleted`);
    } catch (err) {
      if (err instanceof KubeApiError && (err.status === 404 || err.status === 409)) return;
      throw err;
    }
  }

  private queueStatus(r: PodRunner): void {
    if (this.stopped) return;
    this.statusQueue.add(r);
    this.flushing ??= (async () => {
      await new Promise((res) => setTimeout(res, 10));
      while (this.statusQueue.size > 0 && !this.stopped) {
        const batch = [...this.statusQueue];
        this.statusQueue.clear();
        await Promise.all(batch.map((x) => this.writeStatus(x)));
      }
      this.flushing = undefined;
      this.scheduleSnapshot();
    })();
  }

  private async writeStatus(r: PodRunner): Promise<void> {
    const cur = this.pods.get(r.key);
    if (!cur || cur.metadata?.uid !== r.uid) return;
    const [ns, name] = [r.namespace, r.name];
    try {
      if (r.netns && !r.hostNetwork && !this.annotated.has(r.uid)) {
        await this.api.patch(podPath(ns, name), {
          metadata: { uid: r.uid, annotations: { [NETNS_ANNOTATION]: r.netns } },
        });
        this.annotated.add(r.uid);
      }
      const status = mergeStatus(cur.status, r.status());
      const digest = statusDigest(status);
      if (this.sent.get(r.uid) === digest) return;
      await this.api.patch(`${podPath(ns, name)}/status`, { metadata: { uid: r.uid }, status });
      this.sent.set(r.uid, digest);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return;
      this.log(`pod ${r.key}: status: ${(err as Error).message}; retrying`);
      setTimeout(() => this.queueStatus(r), 500).unref();
    }
  }

  private scheduleSnapshot(): void {
    if (this.snapshotTimer || this.stopped) return;
    this.snapshotTimer = setTimeout(() => {
      this.snapshotTimer = undefined;
      this.writeSnapshot();
    }, 20);
  }

  private writeSnapshot(): void {
    const out: KubePodRecord[] = [];
    for (const [key, p] of this.pods) {
      const r = this.runners.get(key);
      if (!r && !this.labNode(p.spec?.nodeName)) continue;
      const cs = (r ? r.status() : p.status)?.containerStatuses ?? [];
      out.push({
        namespace: p.metadata?.namespace ?? 'default',
        name: p.metadata?.name ?? '',
        uid: p.metadata?.uid ?? '',
        node: p.spec?.nodeName ?? '',
        ip: r?.podIP || p.status?.podIP || null,
        netns: r?.netns || null,
        phase: r?.phase ?? p.status?.phase ?? 'Pending',
        ready: r ? r.ready : isReady(p),
        containers: `${cs.filter((c) => c.ready).length}/${(p.spec?.containers ?? []).length}`,
        restarts: cs.reduce((n, c) => n + (c.restartCount ?? 0), 0),
      });
    }
    try {
      const file = kubePodsPath(this.topo.name);
      fs.writeFileSync(`${file}.tmp`, JSON.stringify(out, null, 2) + '\n', { mode: 0o600 });
      fs.renameSync(`${file}.tmp`, file);
    } catch (err) {
      this.log(`writing ${kubePodsPath(this.topo.name)}: ${(err as Error).message}`);
    }
  }
}

/** `sluice lab kubelet --name LAB` (hidden; started by `lab up --kubernetes`): runs until SIGTERM. */
export async function runKubeKubelet(name: string): Promise<number> {
  const t0 = performance.now();
  const log = (m: string): void => {
    process.stdout.write(`${new Date().toISOString()} ${m}\n`);
  };
  const other = liveKubelet(name);
  if (other && other.pid !== process.pid) {
    log(`another lab kubelet (pid ${other.pid}) runs this lab`);
    return 1;
  }
  const stop = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const step = (s: string): void => {
    log(s);
    writeKubeletState(name, { state: 'starting', step: s });
  };
  let kubelet: KubeLabKubelet | undefined;
  let lb: KubeServiceLoadBalancer | undefined;
  let api: KubeApi | undefined;
  try {
    // An earlier kubelet killed without stopping its pods left their processes: they go, the
    // pods' namespaces stay and are adopted (their annotation names them).
    const killed = killKubePodProcesses(name);
    if (killed.length > 0) log(`killed ${killed.length} process(es) left by an earlier kubelet`);
    step('waiting for the API server (/readyz)');
    const topo = Topology.open(name);
    if (!topo?.controlPlane) throw new Error(`lab ${name} has no control plane`);
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath(name));
    api = new KubeApi(kc);
    await waitReadyz(api, 90_000);
    const apiserver = controlPlaneState(name)?.processes['kube-apiserver']?.pid;
    const age = apiserver ? processAgeSeconds(apiserver) : undefined;
    const readyzSeconds = Number((age ?? (performance.now() - t0) / 1000).toFixed(1));
    // (a kubelet restarted beside a running API server has nothing to time)
    const fresh = age !== undefined && age < process.uptime() + 5;
    step(
      `API server ready${fresh ? ` ${readyzSeconds} s after its start` : ''}: registering nodes, CRDs, FelixConfiguration`,
    );
    await Promise.all([
      installCrds(api, log).then(() => ensureFelixConfiguration(api!, log)),
      ensureServicesEndpoint(api, topo.controlPlane.ip),
      installAgentRbac(api, log),
      registerNodes(api, topo),
    ]);
    kubelet = new KubeLabKubelet(topo, api, kc, log);
    lb = new KubeServiceLoadBalancer(topo, api, kc, log);
    await Promise.all([kubelet.start(), lb.start()]);
    // Ready for the agents now; pods can be created once the default ServiceAccount exists.
    writeKubeletState(name, { state: 'ready', readyzSeconds, serviceAccount: false });
    log(
      `ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: kubelet of ${topo.nodes.map((n) => n.name).join(', ')}`,
    );
    await waitDefaultServiceAccount(api);
    writeKubeletState(name, { state: 'ready', readyzSeconds, serviceAccount: true });
    log(
      `the default ServiceAccount exists after ${((performance.now() - t0) / 1000).toFixed(1)} s: pods can be created`,
    );
  } catch (err) {
    log(`failed: ${(err as Error).message}`);
    writeKubeletState(name, { state: 'stopping', error: (err as Error).message });
    await Promise.all([kubelet?.stop(), lb?.stop()]);
    api?.close();
    return 1;
  }
  const keepAlive = setInterval(() => undefined, 1 << 30);
  const why = await stop;
  clearInterval(keepAlive);
  log(`${why}: stopping`);
  writeKubeletState(name, { state: 'stopping' });
  await Promise.all([kubelet.stop(), lb?.stop()]);
  api.close();
  return 0;
}

type NodeSelectorRequirement = { key: string; operator: string; values?: string[] };

function requirementHolds(r: NodeSelectorRequirement, value: string | undefined): boolean {
  const values = r.values ?? [];
  switch (r.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    case 'Gt':
    case 'Lt': {
      const a = Number(value);
      const b = Number(values[0]);
      if (value === undefined || !Number.isInteger(a) || !Number.isInteger(b)) return false;
      return r.operator === 'Gt' ? a > b : a < b;
    }
    default:
      return false;
  }
}

/**
 * The pod's required node affinity (the terms are ORed, the requirements of a term ANDed), as
 * the scheduler reads it. The DaemonSet controller pins each of its pods to one node with a
 * `metadata.name` field requirement.
 */
export function nodeAffinityAdmits(p: Pod, node: string, labels: Record<string, string>): boolean {
  const required = p.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution;
  const terms = required?.nodeSelectorTerms ?? [];
  if (terms.length === 0) return true;
  return terms.some(
    (t) =>
      (t.matchExpressions ?? []).every((r) => requirementHolds(r, labels[r.key])) &&
      (t.matchFields ?? []).every((r) => requirementHolds(r, r.key === 'metadata.name' ? node : undefined)),
  );
}
