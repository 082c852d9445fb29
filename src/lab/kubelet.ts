// The lab's kubelet: runs one Pod for real. The pod gets a network namespace from the topology
// (the lab is its CNI plugin: address, routes, host-side veth), or the node's namespace with
// hostNetwork; each container's command/args runs inside it through nsenter, detached in its
// own process group, with its output in a log file under /run/sluice/lab-<name>/logs/. Every
// process is recorded (ProcessRecorder) so that `down` and a sweep kill it even without us.
//
// Readiness: a container is started once its process runs (a `sluice echo server` once it
// printed its ready line); the pod is Ready when every container is started and has passed its
// readinessProbe, if it has one (tcpSocket, httpGet and exec probes run from the node's
// namespace, as a kubelet probes a pod; until the first success they are retried every second).
// Containers are restarted by restartPolicy with a short back-off. Termination: the pod's
// preStop hooks, then SIGTERM to each container's process group, SIGKILL after the grace period.
//
// `sluice echo ...` as a command runs the built-in echo workload (node echo-main.js ...);
// `sluice ...` runs this build's CLI; `$(VAR)` in command and args is expanded from the
// container's env, as Kubernetes does; env valueFrom.fieldRef gives the downward API fields.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ECHO_MAIN } from './echo.js';
import { execIn, nsArgv, type ProcessRecorder } from './exec.js';
import type { Pod } from './store.js';
import { timestamp } from './store.js';
import type { Topology } from './topology.js';
import { packageRoot } from '../paths.js';

type Container = NonNullable<Pod['spec']>['containers'][number];
type Probe = NonNullable<Container['readinessProbe']>;
type PodStatus = NonNullable<Pod['status']>;
type ContainerStatus = NonNullable<PodStatus['containerStatuses']>[number];

/** Annotation the kubelet puts on a Pod: the network namespace its processes run in. */
export const NETNS_ANNOTATION = 'lab.sluice.dev/netns';

const SLUICE_BIN = path.join(packageRoot, 'bin', 'sluice.js');
const RESTART_BACKOFF_MS = [1000, 2000, 5000, 10_000, 20_000];

export interface KubeletContext {
  topo: Topology;
  recorder: ProcessRecorder;
  /** Directory of the container log files. */
  logDir: string;
  /** Directory of the per-pod process records `down` reads (process groups to kill). */
  runDir: string;
  /** Called whenever the pod's status changed. */
  onStatus(runner: PodRunner): void;
  log(msg: string): void;
}

/** The pod's log file of one container. */
export function containerLogPath(logDir: string, namespace: string, pod: string, container: string): string {
  return path.join(logDir, `${namespace}_${pod}_${container}.log`);
}

/**
 * The topology's name for a pod (its namespace is `sl-<lab>-p-<name>`): the pod name, prefixed
 * with its namespace unless `default`, or a hash when that is too long or not usable.
 */
export function topologyPodName(namespace: string, name: string, uid: string, taken: (n: string) => boolean): string {
  const plain = namespace === 'default' ? name : `${namespace}-${name}`;
  const usable =
    plain.length <= 40 &&
    /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(plain) &&
    plain !== 'ext' &&
    plain !== 'fabric' &&
    !/^node\d+$/.test(plain);
  if (usable && !taken(plain)) return plain;
  const hashed = `pod-${uid.replace(/[^a-z0-9]/g, '').slice(0, 12)}`;
  return hashed;
}

interface ContainerRun {
  spec: Container;
  child?: ChildProcess;
  pid?: number;
  restartCount: number;
  startedAt?: string;
  /** The process runs (and, for the echo workload, listens). */
  started: boolean;
  /** The readiness probe passed last time (true without a probe). */
  probeOk: boolean;
  state: 'waiting' | 'running' | 'terminated';
  waitingReason?: string;
  exitCode?: number;
  finishedAt?: string;
  lastTerminated?: { exitCode: number; startedAt?: string; finishedAt?: string; reason: string };
  timers: Set<NodeJS.Timeout>;
  exited?: Promise<void>;
}

/** Expands `$(VAR)` from `env` (`$$(VAR)` stays literal, unknown names are left as they are). */
export function expandVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (m === '$$') return '$';
    return name !== undefined && Object.prototype.hasOwnProperty.call(env, name) ? env[name] : m;
  });
}

/** argv a container's command/args become (see the top of this file). */
export function containerArgv(c: Container, env: Record<string, string>): string[] {
  const argv = [...(c.command ?? []), ...(c.args ?? [])].map((a) => expandVars(a, env));
  if (argv[0] === 'sluice') {
    if (argv[1] === 'echo') return [process.execPath, ECHO_MAIN, ...argv.slice(2)];
    return [process.execPath, SLUICE_BIN, ...argv.slice(1)];
  }
  return argv;
}

function fieldRef(pod: Pod, path_: string): string {
  switch (path_) {
    case 'metadata.name':
      return pod.metadata?.name ?? '';
    case 'metadata.namespace':
      return pod.metadata?.namespace ?? '';
    case 'metadata.uid':
      return pod.metadata?.uid ?? '';
    case 'spec.nodeName':
      return pod.spec?.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? 'default';
    case 'status.podIP':
      return pod.status?.podIP ?? '';
    case 'status.hostIP':
      return pod.status?.hostIP ?? '';
    default:
      return '';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves with true when `p` settles within `ms`, false otherwise (the timer does not linger). */
function within(p: Promise<unknown> | undefined, ms: number): Promise<boolean> {
  if (!p) return Promise.resolve(true);
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.then(() => true),
    new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** One pod on one node, from start to removal. */
export class PodRunner {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly nodeIndex: number;
  readonly hostNetwork: boolean;
  /** Topology pod name (not for hostNetwork pods). */
  topoName = '';
  netns = '';
  podIP = '';
  hostIP = '';
  startTime?: string;
  phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed' = 'Pending';
  terminating = false;
  /** Set when the pod cannot run (e.g. its namespace could not be made). */
  failure?: string;
  private readonly containers = new Map<string, ContainerRun>();
  private stopped = false;
  private statusTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ctx: KubeletContext,
    private pod: Pod,
  ) {
    this.namespace = pod.metadata?.namespace ?? 'default';
    this.name = pod.metadata?.name ?? '';
    this.uid = pod.metadata?.uid ?? '';
    const nodeName = pod.spec?.nodeName ?? '';
    const node = ctx.topo.nodes.find((n) => n.name === nodeName);
    if (!node) throw new Error(`pod ${this.namespace}/${this.name}: no node ${nodeName}`);
    this.nodeIndex = node.index;
    this.hostNetwork = pod.spec?.hostNetwork === true;
    for (const c of pod.spec?.containers ?? []) {
      this.containers.set(c.name, {
        spec: c,
        restartCount: 0,
        started: false,
        probeOk: c.readinessProbe === undefined,
        state: 'waiting',
        waitingReason: 'ContainerCreating',
        timers: new Set(),
      });
    }
  }

  get key(): string {
    return `${this.namespace}/${this.name}`;
  }

  get ready(): boolean {
    return (
      this.phase === 'Running' &&
      [...this.containers.values()].every((c) => c.state === 'running' && c.started && c.probeOk)
    );
  }

  /** Process group ids of the running containers. */
  get pgids(): number[] {
    return [...this.containers.values()].flatMap((c) => (c.state === 'running' && c.pid ? [c.pid] : []));
  }

  private starting: Promise<void> | undefined;

  /** Creates the network namespace (or adopts the one the topology has) and starts the containers. */
  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const node = this.ctx.topo.node(this.nodeIndex);
    this.hostIP = node.ip;
    this.startTime = timestamp();
    try {
      if (this.hostNetwork) {
        this.netns = node.ns;
        this.podIP = node.ip;
      } else {
        const taken = (n: string): boolean => this.ctx.topo.pods.some((p) => p.name === n);
        const annotated = this.pod.metadata?.annotations?.[NETNS_ANNOTATION];
        const existing = this.ctx.topo.pods.find((p) => p.ns === annotated && p.node === this.nodeIndex);
        const tp =
          existing ??
          (await this.ctx.topo.addPod(this.nodeIndex, topologyPodName(this.namespace, this.name, this.uid, taken)));
        this.topoName = tp.name;
        this.netns = tp.ns;
        this.podIP = tp.ip;
      }
    } catch (err) {
      this.failure = `network: ${(err as Error).message}`;
      this.phase = 'Failed';
      for (const c of this.containers.values()) c.waitingReason = 'NetworkSetupFailed';
      this.ctx.log(`pod ${this.key}: ${this.failure}`);
      this.changed();
      return;
    }
    if (this.stopped) return;
    this.phase = 'Running';
    fs.mkdirSync(this.ctx.logDir, { recursive: true, mode: 0o700 });
    for (const c of this.containers.values()) this.startContainer(c);
    this.changed();
  }

  private env(c: Container): Record<string, string> {
    const env: Record<string, string> = {};
    const pod = { ...this.pod, status: { ...this.pod.status, podIP: this.podIP, hostIP: this.hostIP } };
    for (const e of c.env ?? []) {
      if (e.valueFrom?.fieldRef) env[e.name] = fieldRef(pod, e.valueFrom.fieldRef.fieldPath);
      else env[e.name] = expandVars(e.value ?? '', env);
    }
    return env;
  }

  private startContainer(c: ContainerRun): void {
    if (this.stopped || this.terminating) return;
    const env = this.env(c.spec);
    const argv = containerArgv(c.spec, env);
    const logFile = containerLogPath(this.ctx.logDir, this.namespace, this.name, c.spec.name);
    const fd = fs.openSync(logFile, 'a', 0o600);
    const logStart = fs.fstatSync(fd).size;
    const processEnv: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: '/root',
      HOSTNAME: this.name,
      ...env,
    };
    const full = nsArgv(this.netns, argv[0], argv.slice(1));
    let child: ChildProcess;
    try {
      child = spawn(full[0], full.slice(1), { detached: true, stdio: ['ignore', fd, fd], env: processEnv, cwd: '/' });
    } finally {
      fs.closeSync(fd);
    }
    this.ctx.recorder.track(child, [full, argv], this.netns);
    c.child = child;
    c.pid = child.pid;
    c.state = 'running';
    c.waitingReason = undefined;
    c.startedAt = timestamp();
    c.started = false;
    c.probeOk = c.spec.readinessProbe === undefined;
    this.recordPgids();
    c.exited = new Promise<void>((resolve) => {
      child.once('error', (err) => {
        this.ctx.log(`pod ${this.key}: container ${c.spec.name} cannot start: ${err.message}`);
      });
      child.once('close', (code, signal) => {
        this.onExit(c, code ?? (signal ? 128 + signalNumber(signal) : 1), signal);
        resolve();
      });
    });
    const isEcho = argv[1] === ECHO_MAIN && argv[2] === 'server';
    if (isEcho) this.waitEchoReady(c, logFile, logStart);
    else c.started = true;
    if (c.spec.readinessProbe)
      this.scheduleProbe(c, c.spec.readinessProbe, (c.spec.readinessProbe.initialDelaySeconds ?? 0) * 1000);
    this.changed();
  }

  /** The echo workload prints `{"event":"ready",...}` once it listens (looked for in this run's output). */
  private waitEchoReady(c: ContainerRun, logFile: string, from: number): void {
    const pid = c.pid;
    const started = Date.now();
    const check = (): void => {
      if (c.pid !== pid || c.state !== 'running') return;
      let text = '';
      try {
        const fd = fs.openSync(logFile, 'r');
        try {
          const buf = Buffer.alloc(64 * 1024);
          const n = fs.readSync(fd, buf, 0, buf.length, from);
          text = buf.toString('utf8', 0, n);
        } finally {
          fs.closeSync(fd);
        }
      } catch {
        // not there yet
      }
      if (text.includes('"event":"ready"')) {
        c.started = true;
        this.changed();
        return;
      }
      if (Date.now() - started > 60_000) return;
      this.timer(c, check, 25);
    };
    this.timer(c, check, 25);
  }

  private timer(c: ContainerRun, fn: () => void, ms: number): void {
    const t = setTimeout(() => {
      c.timers.delete(t);
      fn();
    }, ms);
    c.timers.add(t);
  }

  private scheduleProbe(c: ContainerRun, probe: Probe, delayMs: number): void {
    const pid = c.pid;
    this.timer(
      c,
      () => {
        if (c.pid !== pid || c.state !== 'running' || this.stopped) return;
        if (!c.started) return this.scheduleProbe(c, probe, 100);
        void this.runProbe(probe).then((ok) => {
          if (c.pid !== pid || c.state !== 'running' || this.stopped) return;
          if (ok !== c.probeOk) {
            c.probeOk = ok;
            this.changed();
          }
          const period = (probe.periodSeconds ?? 10) * 1000;
          this.scheduleProbe(c, probe, ok ? period : Math.min(period, 1000));
        });
      },
      delayMs,
    );
  }

  /** One probe from the node's namespace (exec probes run in the pod's). */
  async runProbe(probe: Probe): Promise<boolean> {
    const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
    const nodeNs = this.ctx.topo.node(this.nodeIndex).ns;
    const host = this.podIP;
    if (probe.exec) {
      const [cmd, ...args] = probe.exec.command ?? [];
      if (!cmd) return false;
      const r = await execIn(this.netns, cmd, args, { timeoutMs }, this.ctx.recorder);
      return r.code === 0;
    }
    const ref = probe.tcpSocket?.port ?? probe.httpGet?.port;
    const port = typeof ref === 'number' ? ref : this.namedPort(String(ref));
    if (port === undefined) return false;
    if (probe.tcpSocket) {
      const r = await execIn(
        nodeNs,
        'bash',
        ['-c', `exec 3<>/dev/tcp/${host}/${port}`],
        { timeoutMs },
        this.ctx.recorder,
      );
      return r.code === 0;
    }
    if (probe.httpGet) {
      const p = probe.httpGet.path ?? '/';
      const script =
        `exec 3<>/dev/tcp/${host}/${port} || exit 1; ` +
        `printf 'GET %s HTTP/1.1\\r\\nHost: %s\\r\\nUser-Agent: kube-probe/lab\\r\\nConnection: close\\r\\n\\r\\n' "$1" "$2" >&3; ` +
        `IFS=' ' read -r _ code _ <&3; [ "$code" -ge 200 ] && [ "$code" -lt 400 ]`;
      const r = await execIn(
        nodeNs,
        'bash',
        ['-c', script, 'probe', p, `${host}:${port}`],
        { timeoutMs },
        this.ctx.recorder,
      );
      return r.code === 0;
    }
    return false;
  }

  private namedPort(name: string): number | undefined {
    for (const c of this.containers.values())
      for (const p of c.spec.ports ?? []) if (p.name === name) return p.containerPort;
    return undefined;
  }

  private onExit(c: ContainerRun, code: number, signal: NodeJS.Signals | null): void {
    for (const t of c.timers) clearTimeout(t);
    c.timers.clear();
    c.finishedAt = timestamp();
    c.exitCode = code;
    c.state = 'terminated';
    c.child = undefined;
    this.recordPgids();
    const how = signal ? `signal ${signal}` : `code ${code}`;
    if (this.stopped || this.terminating) {
      this.changed();
      return;
    }
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    const restart = policy === 'Always' || (policy === 'OnFailure' && code !== 0);
    if (restart) {
      c.lastTerminated = {
        exitCode: code,
        startedAt: c.startedAt,
        finishedAt: c.finishedAt,
        reason: code === 0 ? 'Completed' : 'Error',
      };
      const delay = RESTART_BACKOFF_MS[Math.min(c.restartCount, RESTART_BACKOFF_MS.length - 1)];
      c.restartCount++;
      c.state = 'waiting';
      c.waitingReason = 'CrashLoopBackOff';
      this.timer(c, () => this.startContainer(c), delay);
      this.ctx.log(`pod ${this.key}: container ${c.spec.name} exited with ${how}; restarting in ${delay} ms`);
    } else {
      this.ctx.log(`pod ${this.key}: container ${c.spec.name} exited with ${how}`);
    }
    if (!restart && [...this.containers.values()].every((x) => x.state === 'terminated')) {
      this.phase = [...this.containers.values()].every((x) => x.exitCode === 0) ? 'Succeeded' : 'Failed';
    }
    this.changed();
  }

  /** Remembers the process groups of this pod for `down` (a crashed controller cannot kill them). */
  private recordPgids(): void {
    try {
      fs.mkdirSync(this.ctx.runDir, { recursive: true, mode: 0o700 });
      const file = path.join(this.ctx.runDir, `${this.uid}.json`);
      const pgids = this.pgids;
      if (pgids.length === 0 && this.terminating) {
        fs.rmSync(file, { force: true });
        return;
      }
      fs.writeFileSync(`${file}.tmp`, JSON.stringify({ pod: this.key, netns: this.netns, pgids }) + '\n', {
        mode: 0o600,
      });
      fs.renameSync(`${file}.tmp`, file);
    } catch {
      // best effort: the recorder's records still name the leaders
    }
  }

  private changed(): void {
    if (this.statusTimer) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.ctx.onStatus(this);
    }, 10);
  }

  /**
   * Stops the pod gracefully: preStop hooks, SIGTERM, SIGKILL after `graceSeconds`; then removes
   * its network namespace. Resolves when everything is gone.
   */
  async terminate(graceSeconds: number): Promise<void> {
    if (this.terminating) return;
    this.terminating = true;
    await this.starting;
    const deadline = Date.now() + graceSeconds * 1000;
    for (const c of this.containers.values()) {
      for (const t of c.timers) clearTimeout(t);
      c.timers.clear();
    }
    this.changed();
    await Promise.all(
      [...this.containers.values()].map(async (c) => {
        if (c.state !== 'running') return;
        const hook = c.spec.lifecycle?.preStop;
        if (hook?.sleep) await sleep(Math.min(hook.sleep.seconds * 1000, Math.max(0, deadline - Date.now())));
        else if (hook?.exec?.command?.length) {
          const [cmd, ...args] = hook.exec.command;
          await execIn(this.netns, cmd, args, { timeoutMs: Math.max(1, deadline - Date.now()) }, this.ctx.recorder);
        }
        this.signal(c, 'SIGTERM');
        const left = Math.max(0, deadline - Date.now());
        if (!(await within(c.exited, left))) {
          this.signal(c, 'SIGKILL');
          await within(c.exited, 5000);
        }
      }),
    );
    this.stopped = true;
    await this.removeNetwork();
    this.recordPgids();
  }

  /** Kills every process of the pod at once (the controller is stopping); keeps its namespace. */
  async kill(): Promise<void> {
    this.stopped = true;
    await this.starting;
    for (const c of this.containers.values()) {
      for (const t of c.timers) clearTimeout(t);
      c.timers.clear();
      if (c.state === 'running') this.signal(c, 'SIGKILL');
    }
    await Promise.all([...this.containers.values()].map((c) => within(c.exited, 5000)));
    if (this.statusTimer) clearTimeout(this.statusTimer);
  }

  private async removeNetwork(): Promise<void> {
    if (this.hostNetwork || !this.topoName) return;
    try {
      await this.ctx.topo.removePod(this.topoName);
    } catch (err) {
      this.ctx.log(`pod ${this.key}: removing its namespace: ${(err as Error).message}`);
    }
  }

  private signal(c: ContainerRun, sig: NodeJS.Signals): void {
    if (!c.pid) return;
    try {
      process.kill(-c.pid, sig); // its process group: the command and whatever it started
    } catch {
      try {
        process.kill(c.pid, sig);
      } catch {
        // gone
      }
    }
  }

  /** The pod's status as the kubelet reports it. */
  status(): PodStatus {
    const now = timestamp();
    const cs: ContainerStatus[] = [...this.containers.values()].map((c) => {
      const st: ContainerStatus = {
        name: c.spec.name,
        image: c.spec.image ?? '',
        imageID: '',
        ready: c.state === 'running' && c.started && c.probeOk,
        started: c.state === 'running' && c.started,
        restartCount: c.restartCount,
        state:
          c.state === 'running'
            ? { running: { startedAt: c.startedAt } }
            : c.state === 'terminated'
              ? {
                  terminated: {
                    exitCode: c.exitCode ?? 0,
                    reason: c.exitCode === 0 ? 'Completed' : 'Error',
                    startedAt: c.startedAt,
                    finishedAt: c.finishedAt,
                  },
                }
              : {
                  waiting: {
                    reason: c.waitingReason ?? 'ContainerCreating',
                    ...(this.failure ? { message: this.failure } : {}),
                  },
                },
      };
      if (c.pid) st.containerID = `lab://${c.pid}`;
      if (c.lastTerminated)
        st.lastState = {
          terminated: {
            exitCode: c.lastTerminated.exitCode,
            reason: c.lastTerminated.reason,
            startedAt: c.lastTerminated.startedAt,
            finishedAt: c.lastTerminated.finishedAt,
          },
        };
      return st;
    });
    const containersReady = cs.length > 0 && cs.every((c) => c.ready);
    const cond = (type: string, ok: boolean): NonNullable<PodStatus['conditions']>[number] => ({
      type,
      status: ok ? 'True' : 'False',
      lastTransitionTime: now,
    });
    const status: PodStatus = {
      phase: this.phase,
      conditions: [
        cond('PodScheduled', true),
        cond('Initialized', true),
        cond('ContainersReady', containersReady && this.phase === 'Running'),
        cond('Ready', this.ready),
      ],
      hostIP: this.hostIP,
      hostIPs: this.hostIP ? [{ ip: this.hostIP }] : [],
      startTime: this.startTime,
      containerStatuses: cs,
      qosClass: 'BestEffort',
    };
    if (this.podIP) {
      status.podIP = this.podIP;
      status.podIPs = [{ ip: this.podIP }];
    }
    if (this.failure) status.message = this.failure;
    return status;
  }

  /** Keeps the object the runner works from up to date (labels, annotations). */
  update(pod: Pod): void {
    this.pod = pod;
  }
}

function signalNumber(sig: NodeJS.Signals): number {
  return os.constants.signals[sig] ?? 0;
}
