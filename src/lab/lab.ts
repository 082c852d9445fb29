// The lab, as the `sluice lab` commands drive it: up / status / exec / logs / apply / delete /
// down, and the demo's live check. The pieces:
//   topology.ts    the network (namespaces, underlay, overlay, pods' veths), crash-safe sweep
//   store.ts       the datastore of Kubernetes objects, under /run/sluice/lab-<name>/store
//   resources.ts   YAML, validation, defaults, allocation (ClusterIPs, NodePorts, LB IPs)
//   controller.ts  one process per lab: Deployments, scheduling, kubelet (kubelet.ts),
//                  EndpointSlices (endpointslices.ts), namespace deletion, external routes
//   kubernetes/    with `up --kubernetes`: a real control plane (etcd, kube-apiserver,
//                  kube-controller-manager) in the control-plane namespace, the agents on its API
//                  server, the lab kubelet running its pods; -f files and apply/delete go there
// `up` builds the topology, starts the controller, applies files and waits for the pods; the
// other commands find the lab by name, or the only one there is.
//
// Agents: the node agent (kube-proxy replacement) does not exist yet. `startAgents` is where `up`
// will start one agent process per node (recorded like every lab process, logging to
// agentLogPath, pinning under labPinRoot), and `agentHealth` where status will ask them.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removePinDir } from '../bpf/bpffs.js';
import { CliError, formatTable, type Cell, type Printer } from '../cli/output.js';
import { packageRoot } from '../paths.js';
import { askEchoIn, type EchoResult } from './echo.js';
import { nsArgv, ProcessRecorder } from './exec.js';
import {
  controllerLogPath,
  controllerStatePath,
  killPodProcesses,
  liveController,
  logDir,
  procStarttime,
  storeDir,
} from './controller.js';
import { isPodReady } from './endpointslices.js';
import { containerLogPath, NETNS_ANNOTATION } from './kubelet.js';
import {
  admit,
  labClusterConfig,
  loadSchemas,
  manifestRef,
  ObjectError,
  readManifests,
  requestDelete,
  resourceName,
} from './resources.js';
import { describeObject, FileStore, type Kind, type Pod, type Service } from './store.js';
import { LAB_RUN_DIR, Topology, type Overlay } from './topology.js';
import { agentNodeFlags } from '../agent/runtime.js';
import { findKubernetesBinaries } from './kubernetes/binaries.js';
import {
  componentLogPath,
  controlPlaneState,
  isKubernetesLab,
  kubeContainerLogDir,
  liveKubelet,
  startControlPlane,
  stopKubeKubelet,
  stopKubernetes,
  waitPodsAdmitted,
  type Component,
  type StartedControlPlane,
} from './kubernetes/control-plane.js';
import { agentBaseEnv, agentPodEnvironment, type AgentPodEnvironment } from './kubernetes/agent-env.js';
import { findKubePod, kubeconfigHint, kubectlFiles, waitKubePodsReady } from './kubernetes/commands.js';
import { readKubePods } from './kubernetes/kubelet.js';
import { installKubeProxy, readProxySetup, writeProxySetup, type ProxyMode } from './kubernetes/kube-proxy.js';

export const DEFAULT_LAB = 'lab';
export const DEFAULT_NODES = 3;
export const DEMO_FILE = path.join(packageRoot, 'deploy', 'lab', 'demo.yaml');
const SLUICE_BIN = path.join(packageRoot, 'bin', 'sluice.js');

/** Where the agents of a lab will pin their maps and links (removed by down). */
export function labPinRoot(name: string): string {
  return `/sys/fs/bpf/sluice-lab-${name}`;
}

/** The log file of a node's agent. */
export function agentLogPath(name: string, node: string): string {
  return path.join(Topology.stateDir(name), 'agents', `${node}.log`);
}

function upLockPath(name: string): string {
  return path.join(LAB_RUN_DIR, `lab-${name}.up.lock`);
}

// ---------------------------------------------------------------------------------------------
// Finding the lab

/** Labs on this machine: those with a state file, and namespaces of half-made ones. */
export function listLabs(): string[] {
  const names = new Set<string>();
  try {
    for (const d of fs.readdirSync(LAB_RUN_DIR)) {
      const m = /^lab-([a-z0-9]{1,8})$/.exec(d);
      if (m && fs.existsSync(path.join(LAB_RUN_DIR, d, 'state.json'))) names.add(m[1]);
    }
  } catch {
    // no /run/sluice
  }
  return [...names].sort();
}

/** The lab a command means: `name`, or the only lab there is. */
export function resolveLab(name?: string): string {
  if (name) {
    Topology.stateDir(name); // checks the name
    return name;
  }
  const labs = listLabs();
  if (labs.length === 1) return labs[0];
  if (labs.length === 0) throw new CliError('no lab is running (start one with `sluice lab up`)');
  throw new CliError(`there are several labs (${labs.join(', ')}): say which with --name`);
}

function openTopology(name: string): Topology {
  const topo = Topology.open(name);
  if (!topo)
    throw new CliError(`there is no lab ${JSON.stringify(name)} (start it with \`sluice lab up --name ${name}\`)`);
  return topo;
}

async function openStore(name: string): Promise<FileStore> {
  return FileStore.open(storeDir(name), { create: false }).catch(() => {
    throw new CliError(`lab ${name} has no datastore yet (run \`sluice lab up --name ${name}\`)`);
  });
}

// ---------------------------------------------------------------------------------------------
// Locks, processes

interface Owner {
  pid: number;
  starttime: string;
}

function liveOwner(file: string): Owner | undefined {
  try {
    const o = JSON.parse(fs.readFileSync(file, 'utf8')) as Owner;
    return procStarttime(o.pid) === o.starttime ? o : undefined;
  } catch {
    return undefined;
  }
}

function takeUpLock(name: string): () => void {
  const file = upLockPath(name);
  fs.mkdirSync(LAB_RUN_DIR, { recursive: true, mode: 0o755 });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify({ pid: process.pid, starttime: procStarttime(process.pid) ?? '' }), {
        flag: 'wx',
        mode: 0o600,
      });
      return () => fs.rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = liveOwner(file);
    if (owner) throw new CliError(`\`sluice lab up\` (pid ${owner.pid}) is already working on lab ${name}`);
    fs.rmSync(file, { force: true }); // left by a killed `up`
  }
  throw new CliError(`cannot lock lab ${name}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The process runs (a zombie does not). */
export function alive(pid: number): boolean {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\S+ \(.*\) [ZX] /.test(st);
  } catch {
    return false;
  }
}

async function stopController(name: string, timeoutMs = 10_000): Promise<boolean> {
  const c = liveController(name);
  if (!c) return false;
  try {
    process.kill(c.pid, 'SIGTERM');
  } catch {
    return false;
  }
  const deadline = Date.now() + timeoutMs;
  while (alive(c.pid) && Date.now() < deadline) await sleep(20);
  if (alive(c.pid) && procStarttime(c.pid) === c.starttime) {
    process.kill(c.pid, 'SIGKILL');
    while (alive(c.pid) && Date.now() < deadline + 5000) await sleep(20);
  }
  fs.rmSync(controllerStatePath(name), { force: true });
  return true;
}

function tail(file: string, lines = 15): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

async function startController(name: string): Promise<number> {
  fs.mkdirSync(Topology.stateDir(name), { recursive: true, mode: 0o700 });
  const logFile = controllerLogPath(name);
  const fd = fs.openSync(logFile, 'a', 0o600);
  const argv = [process.execPath, SLUICE_BIN, 'lab', 'controller', '--name', name];
  let child;
  try {
    child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', fd, fd], cwd: '/' });
  } finally {
    fs.closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new CliError('cannot start the lab controller');
  new ProcessRecorder(Topology.procsDir(name)).record(pid, [argv], 'controller');
  child.unref();
  const deadline = Date.now() + 60_000;
  for (;;) {
    const s = liveController(name);
    if (s?.pid === pid && s.state === 'ready') return pid;
    if (!alive(pid) || s?.error) {
      throw new CliError(`the lab controller failed to start:\n${tail(logFile)}`);
    }
    if (Date.now() > deadline) throw new CliError(`the lab controller did not get ready in 60 s:\n${tail(logFile)}`);
    await sleep(25);
  }
}

// ---------------------------------------------------------------------------------------------
// Agents (the node agent comes with the agent issue)

export interface AgentHealth {
  node: string;
  running: boolean;
  detail: string;
}

export const NO_AGENT = 'no node agent running: Services are stored but not programmed';

/** The status file an agent rewrites after every sync. */
export function agentStatusPath(name: string, node: string): string {
  return path.join(Topology.stateDir(name), 'agents', `${node}.json`);
}

/** A node's sub-cgroup: processes in it get connect-time load balancing from the node's agent. */
export function nodeCgroup(name: string, node: string): string | undefined {
  const root = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].find((d) => fs.existsSync(path.join(d, 'cgroup.procs')));
  return root ? path.join(root, `sluice-lab-${name}-${node}`) : undefined;
}

interface AgentStatusFile {
  pid: number;
  ready: boolean;
  bpfEnabled: boolean;
  lastSyncMs: number;
  revision?: string;
  frontends?: number;
  mode?: string;
  /** Service ports left unprogrammed because a NAT map is full (the agent's error log names each). */
  mapFull?: { servicePorts: number; fields: string[]; examples: string[] };
}

function readAgentStatus(name: string, node: string): AgentStatusFile | undefined {
  try {
    return JSON.parse(fs.readFileSync(agentStatusPath(name, node), 'utf8')) as AgentStatusFile;
  } catch {
    return undefined;
  }
}

/** The lab runs the eBPF dataplane unless a FelixConfiguration says otherwise. */
async function ensureFelixDefault(store: FileStore): Promise<void> {
  if (await store.get('FelixConfiguration', undefined, 'default')) return;
  await store.apply({
    apiVersion: 'projectcalico.org/v3',
    kind: 'FelixConfiguration',
    metadata: { name: 'default' },
    spec: { bpfEnabled: true, bpfExternalServiceMode: 'Tunnel', bpfKubeProxyIptablesCleanupEnabled: false },
  } as never);
}

/**
 * One `sluice agent` process per node, in the node's network namespace (so it sees and attaches
 * to that node's interfaces only), recorded like every lab process, logging to agentLogPath(),
 * pinning under labPinRoot()/<node>, watching the lab store; then waits until each has synced.
 */
async function startAgents(topo: Topology, store: FileStore, kubernetes = false): Promise<AgentHealth[]> {
  await ensureFelixDefault(store);
  const name = topo.name;
  let pod: AgentPodEnvironment | undefined;
  fs.mkdirSync(path.join(Topology.stateDir(name), 'agents'), { recursive: true, mode: 0o700 });
  const recorder = new ProcessRecorder(Topology.procsDir(name));
  const pids = new Map<string, number>();
  for (const n of topo.nodes) {
    const st = readAgentStatus(name, n.name);
    if (st && alive(st.pid)) {
      pids.set(n.name, st.pid);
      continue;
    }
    fs.rmSync(agentStatusPath(name, n.name), { force: true });
    // A lab with an API server: the agents start as the DaemonSet's container would (agent-env.ts).
    if (kubernetes) pod ??= await agentPodEnvironment(name);
    const cg = nodeCgroup(name, n.name);
    if (cg) fs.mkdirSync(cg, { recursive: true });
    const argv = [
      'nsenter',
      `--net=/run/netns/${n.ns}`,
      process.execPath,
      ...agentNodeFlags(),
      SLUICE_BIN,
      'agent',
      // a lab with a Kubernetes control plane: the agents watch its API server, in-cluster
      ...(pod ? ['--service-account-dir', pod.serviceAccountDir] : ['--lab', name]),
      '--node-name',
      n.name,
      '--node-ip',
      n.ip,
      '--pin-root',
      path.join(labPinRoot(name), n.name),
      '--status-file',
      agentStatusPath(name, n.name),
      ...(cg ? ['--cgroup', cg] : []),
    ];
    const fd = fs.openSync(agentLogPath(name, n.name), 'a', 0o600);
    let child;
    try {
      child = spawn(argv[0], argv.slice(1), {
        detached: true,
        stdio: ['ignore', fd, fd],
        cwd: '/',
        ...(pod ? { env: { ...agentBaseEnv(), ...pod.env } } : {}),
      });
    } finally {
      fs.closeSync(fd);
    }
    if (child.pid === undefined) throw new CliError(`cannot start the agent of ${n.name}`);
    recorder.record(child.pid, [argv, argv.slice(2)], `agent ${n.name}`);
    pids.set(n.name, child.pid);
    child.unref();
  }
  const deadline = Date.now() + 60_000;
  for (;;) {
    const health = agentHealth(topo);
    if (health.every((h) => h.running && h.detail.startsWith('ready'))) return health;
    // An agent that has not written its status yet is starting (slow under load, or waiting for
    // an API server): only one whose process ended is dead.
    const dead = health.find((h) => !h.running && !alive(pids.get(h.node) ?? 0));
    if (dead) {
      throw new CliError(`the agent of ${dead.node} is not running:\n${tail(agentLogPath(name, dead.node))}`);
    }
    if (Date.now() > deadline)
      throw new CliError(
        `the agents did not get ready in 60 s:\n${health.map((h) => `${h.node}: ${h.detail}`).join('\n')}`,
      );
    await sleep(50);
  }
}

/**
 * Waits until every agent has programmed the store as it is now and attached to every pod of its
 * node: then traffic through Services works the moment `up` returns.
 */
async function waitAgentsProgrammed(
  name: string,
  store: FileStore,
  say: (l: string) => void,
  timeoutMs = 30_000,
  kubernetes = false,
): Promise<boolean> {
  store.refresh();
  const target = Number((await store.list('Pod')).resourceVersion);
  const topo = openTopology(name);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending: string[] = [];
    for (const n of topo.nodes) {
      const st = readAgentStatus(name, n.name) as (AgentStatusFile & { interfaces?: string[] }) | undefined;
      if (!st || !alive(st.pid)) {
        pending.push(`${n.name}: no agent`);
        continue;
      }
      if (!st.bpfEnabled) continue;
      // Against the API server there is no one revision to compare with: the `kubernetes`
      // Service (10.96.0.1) programmed shows the agent is reading it.
      if (kubernetes) {
        if (!st.ready || (st.frontends ?? 0) < 1) pending.push(`${n.name}: nothing programmed from the API server yet`);
      } else if (Number(st.revision ?? 0) < target)
        pending.push(`${n.name}: at store revision ${st.revision}, want ${target}`);
      const attached = new Set((st.interfaces ?? []).map((i) => i.split(':')[0]));
      const missing = topo.podsOn(n.index).filter((p) => !attached.has(p.hostIf));
      if (missing.length) pending.push(`${n.name}: ${missing.length} pod interface(s) not attached yet`);
    }
    if (pending.length === 0) {
      say('agents: datapath programmed on every node');
      return true;
    }
    if (Date.now() > deadline) {
      say(`agents: not programmed in ${timeoutMs / 1000} s: ${pending.join('; ')}`);
      return false;
    }
    await sleep(50);
  }
}

/** Each node agent's health, from the status file it rewrites after every sync. */
export function agentHealth(topo: Topology): AgentHealth[] {
  return topo.nodes.map((n) => {
    const st = readAgentStatus(topo.name, n.name);
    if (!st) return { node: n.name, running: false, detail: 'not started' };
    if (!alive(st.pid))
      return { node: n.name, running: false, detail: `exited (pid ${st.pid}); see sluice lab logs node/${n.name}` };
    if (!st.ready) return { node: n.name, running: true, detail: `starting (pid ${st.pid})` };
    const dp = st.bpfEnabled ? `eBPF (${st.mode ?? '?'}), ${st.frontends ?? 0} frontends` : 'bpfEnabled is false';
    // against an API server the revision is per kind (Kind=rv,...): its newest is enough here
    const apiRevs = (st.revision ?? '').split(',').flatMap((x) => {
      const m = /^\w+=(\d+)$/.exec(x);
      return m ? [Number(m[1])] : [];
    });
    const rev = apiRevs.length > 0 ? `API revision ${Math.max(...apiRevs)}` : `store revision ${st.revision ?? '?'}`;
    const full = st.mapFull
      ? `; ${st.mapFull.servicePorts} Service port(s) not programmed, a NAT map is full ` +
        `(${st.mapFull.examples.join(', ')}${st.mapFull.servicePorts > st.mapFull.examples.length ? ', ...' : ''}): ` +
        `raise ${st.mapFull.fields.join(' and ')} in FelixConfiguration`
      : '';
    return {
      node: n.name,
      running: true,
      detail: `ready (pid ${st.pid}): ${dp}, ${rev}${full}`,
    };
  });
}

export function agentsRunning(topo: Topology): boolean {
  return agentHealth(topo).some((a) => a.running);
}

// ---------------------------------------------------------------------------------------------
// up

export interface UpOptions {
  name?: string;
  nodes?: number;
  overlay?: Overlay;
  files?: string[];
  demo?: boolean;
  /** How long to wait for pods to become ready (default 120 s). */
  waitMs?: number;
  /** Run a real Kubernetes control plane in the lab; the agents use its API server. */
  kubernetes?: boolean;
  /**
   * With `kubernetes`: who serves Services. `sluice` (default): the agents in eBPF mode.
   * `kube-proxy-iptables|nftables`: a real kube-proxy DaemonSet, and the agents in the standard
   * dataplane (bpfEnabled: false), as a Calico node is before the seed's steps.
   */
  proxy?: ProxyMode;
  /** Start Sluice's agents (default true); false with a kube-proxy mode leaves kube-proxy alone. */
  sluice?: boolean;
  out: Printer;
}

/** `sluice lab up`; returns the exit code. */
export async function labUp(opts: UpOptions): Promise<number> {
  const t0 = performance.now();
  const out = opts.out;
  const at = (): string => `[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s]`;
  const say = (s: string): void => out.out(`${at()} ${s}`);
  const labs = listLabs();
  const name = opts.name ?? (labs.length === 1 ? labs[0] : DEFAULT_LAB);
  Topology.stateDir(name); // checks the name
  const release = takeUpLock(name);
  try {
    const prev = Topology.open(name);
    const nodes = opts.nodes ?? prev?.nodes.length ?? DEFAULT_NODES;
    const overlay = opts.overlay ?? prev?.overlay ?? 'vxlan';
    if (prev && (prev.nodes.length !== nodes || prev.overlay !== overlay)) {
      throw new CliError(
        `lab ${name} exists with ${prev.nodes.length} nodes and the ${prev.overlay} overlay; ` +
          `remove it first (\`sluice lab down --name ${name}\`) to make it with ${nodes} nodes and the ${overlay} overlay`,
      );
    }
    const kubernetes = opts.kubernetes ?? Boolean(prev?.controlPlane);
    if (prev && Boolean(prev.controlPlane) !== kubernetes) {
      throw new CliError(
        `lab ${name} exists ${prev.controlPlane ? 'with' : 'without'} a Kubernetes control plane; ` +
          `remove it first (\`sluice lab down --name ${name}\`) to make it ${kubernetes ? 'with' : 'without'} one`,
      );
    }
    if (kubernetes && opts.demo)
      throw new CliError('--demo runs on the lab store: it is not available with --kubernetes yet (use -f FILE)');
    if (!kubernetes && (opts.proxy !== undefined || opts.sluice === false))
      throw new CliError('--proxy and --no-sluice need a Kubernetes control plane: add --kubernetes');
    const prevProxy = prev ? readProxySetup(name) : undefined;
    const proxy = opts.proxy ?? prevProxy?.proxy ?? 'sluice';
    const withSluice = opts.sluice ?? prevProxy?.sluice ?? true;
    if (prevProxy && (prevProxy.proxy !== proxy || prevProxy.sluice !== withSluice))
      throw new CliError(
        `lab ${name} exists with --proxy ${prevProxy.proxy}${prevProxy.sluice ? '' : ' --no-sluice'}; ` +
          `remove it first (\`sluice lab down --name ${name}\`) to change that`,
      );
    if (proxy === 'sluice' && !withSluice)
      throw new CliError('--no-sluice with --proxy sluice leaves no one to serve Services: pick a kube-proxy mode');
    const binaries = kubernetes ? findKubernetesBinaries() : undefined; // before anything is made
    out.out(
      `lab "${name}": ${nodes} node${nodes === 1 ? '' : 's'}, ${overlay} overlay` +
        (kubernetes ? ', Kubernetes control plane' : '') +
        (proxy !== 'sluice' ? `, ${proxy}${withSluice ? ' beside Sluice (standard dataplane)' : ', no Sluice'}` : ''),
    );
    let controller = liveController(name);
    let controlPlane: Promise<StartedControlPlane> | undefined;
    const k0 = performance.now();
    if (prev?.running && controller?.state === 'ready') {
      say(`network: up (${prev.namespaces.length} namespaces); controller: running (pid ${controller.pid})`);
    } else {
      if (controller) {
        say('controller: stopping the old one to repair the lab');
        await stopController(name);
      }
      // likewise the lab kubelet: it holds the topology's pods in memory
      if (kubernetes && (await stopKubeKubelet(name))) say('kubernetes: stopping the lab kubelet to repair the lab');
      const topo = new Topology({ name, nodes, overlay, controlPlane: kubernetes || undefined });
      await topo.up({
        progress: (step) => {
          if (step !== 'done') say(`network: ${step}`);
        },
      });
      const n = topo.nodes.map((x) => `${x.name} ${x.ip}`).join(', ');
      say(
        `network: ready: ${n}${topo.external ? `, external ${topo.external.ip}` : ''}` +
          (topo.controlPlane ? `, control plane ${topo.controlPlane.ip}` : ''),
      );
      // The control plane starts meanwhile (it takes the longest).
      if (kubernetes) {
        controlPlane = startControlPlane(topo, { binaries, say });
        controlPlane.catch(() => undefined); // awaited below; not unhandled if the controller fails first
      }
      const pid = await startController(name);
      controller = liveController(name);
      say(`controller: running (pid ${pid}): scheduler, deployments, kubelet, endpointslices`);
    }
    const topo = openTopology(name);
    let kubeconfig: string | undefined;
    if (kubernetes) {
      const cp = await (controlPlane ?? startControlPlane(topo, { binaries, say }));
      kubeconfig = cp.kubeconfig;
      say(
        `kubernetes: API server ${cp.server} ready` +
          (cp.started.length > 0
            ? ` in ${((performance.now() - k0) / 1000).toFixed(1)} s` +
              (cp.readyzSeconds !== undefined && cp.started.includes('kube-apiserver')
                ? ` (kube-apiserver /readyz ok ${cp.readyzSeconds} s after its start)`
                : '') +
              ': nodes registered, CRDs and FelixConfiguration installed'
            : ' (already running)'),
      );
    }
    if (kubernetes && kubeconfig) {
      writeProxySetup(name, { proxy, sluice: withSluice });
      if (proxy !== 'sluice') {
        await installKubeProxy(name, {
          binaries: binaries ?? findKubernetesBinaries(),
          mode: proxy === 'kube-proxy-nftables' ? 'nftables' : 'iptables',
          kubeconfig,
          clusterCidr: topo.podCidr,
        });
        say(
          `kube-proxy: DaemonSet kube-system/kube-proxy (${proxy.slice('kube-proxy-'.length)} mode) installed; Sluice's FelixConfiguration default set to bpfEnabled: false`,
        );
      }
    }
    const store = await openStore(name);
    try {
      const [agents] = await Promise.all([
        withSluice ? startAgents(topo, store, kubernetes) : Promise.resolve([]),
        kubernetes ? waitPodsAdmitted(name) : undefined,
      ]);
      if (withSluice) say(`agents: ${agents.map((a) => `${a.node} ${a.detail.split(':')[0]}`).join(', ')}`);
      else say('agents: not started (--no-sluice): kube-proxy alone serves Services');
      const files = [...(opts.demo ? [DEMO_FILE] : []), ...(opts.files ?? [])];
      let failed = false;
      if (files.length > 0) {
        say(`apply: ${files.map((f) => path.relative(process.cwd(), f) || f).join(', ')}`);
        const printer: Printer = { out: (l) => out.out(`        ${l}`), err: (l) => out.err(l) };
        if (kubernetes) failed = (await kubectlFiles(name, 'apply', files, printer)) !== 0;
        else failed = (await applyFiles(topo, store, files, printer)).errors > 0;
      }
      const ok = kubernetes
        ? (await waitKubePodsReady(name, opts.waitMs ?? 120_000, (l) => say(l))) &&
          (!withSluice || (await waitAgentsProgrammed(name, store, say, 30_000, true)))
        : (await waitPodsReady(store, opts.waitMs ?? 120_000, (l) => say(l), name)) &&
          (await waitAgentsProgrammed(name, store, say));
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      out.out(`lab "${name}" is up in ${secs} s` + (failed ? ' (some objects were refused, see above)' : ''));
      out.out(
        `  sluice lab status${labs.length > 1 || opts.name ? ` --name ${name}` : ''}    sluice lab exec POD -- CMD    sluice lab down`,
      );
      for (const l of kubeconfigHint(name)) out.out(l);
      if (!ok) return 1;
      if (opts.demo) {
        out.out('');
        // The demo's promise is its live check: a failed line fails the command.
        if (!(await demoCheck(name, out))) return 1;
      }
      return failed ? 1 : 0;
    } finally {
      store.close();
    }
  } finally {
    release();
  }
}

/** Waits until every Deployment has its replicas ready and every other Pod is ready or done. */
export async function waitPodsReady(
  store: FileStore,
  timeoutMs: number,
  say: (l: string) => void,
  lab?: string,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let checked = Date.now();
  for (;;) {
    if (lab && Date.now() - checked > 1000) {
      checked = Date.now();
      if (!liveController(lab)) {
        say(`the lab controller is not running: see \`sluice lab logs controller\`, restart it with \`sluice lab up\``);
        return false;
      }
    }
    store.refresh();
    const pods = store.snapshot('Pod').filter((p) => !p.metadata?.deletionTimestamp);
    const deployments = store.snapshot('Deployment');
    const pending: string[] = [];
    for (const d of deployments) {
      const want = d.spec?.replicas ?? 1;
      const s = d.status ?? {};
      const settled =
        (s.observedGeneration ?? 0) >= (d.metadata?.generation ?? 1) &&
        (s.readyReplicas ?? 0) === want &&
        (s.updatedReplicas ?? 0) === want &&
        (s.replicas ?? 0) === want;
      if (!settled)
        pending.push(`deployment ${d.metadata?.namespace}/${d.metadata?.name} ${s.readyReplicas ?? 0}/${want}`);
    }
    const notReady = pods.filter((p) => !isPodReady(p) && p.status?.phase !== 'Succeeded');
    const terminating = store.snapshot('Pod').filter((p) => p.metadata?.deletionTimestamp).length;
    const ready = pods.length - notReady.length;
    const line = `pods: ${ready}/${pods.length} ready${terminating ? `, ${terminating} terminating` : ''}`;
    if (line !== last && (pods.length > 0 || pending.length === 0)) {
      say(line);
      last = line;
    }
    if (pending.length === 0 && notReady.length === 0) return true;
    if (Date.now() > deadline) {
      say(`not ready after ${Math.round(timeoutMs / 1000)} s:`);
      for (const p of pending) say(`  ${p}`);
      for (const p of notReady) say(`  pod ${p.metadata?.namespace}/${p.metadata?.name}: ${podState(p)}`);
      say("  (sluice lab logs POD shows a pod's output)");
      return false;
    }
    await sleep(50);
  }
}

function podState(p: Pod): string {
  const cs = p.status?.containerStatuses ?? [];
  const parts = [p.status?.phase ?? 'Pending'];
  for (const c of cs) {
    if (c.state?.waiting) parts.push(`${c.name}: ${c.state.waiting.reason ?? 'waiting'}`);
    else if (c.state?.terminated) parts.push(`${c.name}: exited ${c.state.terminated.exitCode}`);
    else if (!c.ready) parts.push(`${c.name}: not ready`);
  }
  if (!p.spec?.nodeName) parts.push('not scheduled');
  if (p.status?.message) parts.push(p.status.message);
  return parts.join(', ');
}

// ---------------------------------------------------------------------------------------------
// apply / delete

export interface ApplyReport {
  applied: number;
  errors: number;
}

async function applyFiles(topo: Topology, store: FileStore, files: string[], out: Printer): Promise<ApplyReport> {
  const { manifests, errors } = readManifests(files);
  for (const e of errors) out.err(`sluice: ${e.source}: ${e.message}`);
  await loadSchemas();
  const cfg = labClusterConfig(topo);
  let applied = 0;
  let failed = errors.length;
  for (const m of manifests) {
    try {
      const r = await store.transaction((tx) => admit(tx, m.value, cfg, m.source));
      const kind = r.object.kind as Kind;
      const extra = describeAllocation(r.object);
      out.out(`${resourceName(kind, r.object.metadata?.name ?? '')} ${r.result}${extra}`);
      applied++;
    } catch (err) {
      failed++;
      if (err instanceof ObjectError) out.err(`sluice: ${m.source}: ${err.message}`);
      else out.err(`sluice: ${m.source}: ${(err as Error).message}`);
    }
  }
  return { applied, errors: failed };
}

function describeAllocation(o: { kind?: string }): string {
  if (o.kind !== 'Service') return '';
  const s = o as Service;
  const parts: string[] = [];
  if (s.spec?.clusterIP) parts.push(`cluster IP ${s.spec.clusterIP}`);
  const np = (s.spec?.ports ?? []).filter((p) => p.nodePort).map((p) => `${p.port}:${p.nodePort}/${p.protocol}`);
  if (np.length > 0) parts.push(`node ports ${np.join(',')}`);
  const lb = (s.status?.loadBalancer?.ingress ?? []).map((i) => i.ip);
  if (lb.length > 0) parts.push(`load balancer ${lb.join(',')}`);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

/** `sluice lab apply -f ...`; returns the exit code. */
export async function labApply(
  nameOpt: string | undefined,
  files: string[],
  out: Printer,
  opts: { wait?: boolean; waitMs?: number } = {},
): Promise<number> {
  const name = resolveLab(nameOpt);
  if (isKubernetesLab(name)) {
    // The agents read the lab's API server: objects go there.
    const code = await kubectlFiles(name, 'apply', files, out);
    const ok = code === 0 && (!opts.wait || (await waitKubePodsReady(name, opts.waitMs ?? 120_000, (l) => out.out(l))));
    return ok ? 0 : 1;
  }
  const topo = openTopology(name);
  const store = await openStore(name);
  try {
    if (!liveController(name))
      out.err(
        `sluice: warning: the controller of lab ${name} is not running (run \`sluice lab up\`): pods will not start`,
      );
    const r = await applyFiles(topo, store, files, out);
    let ok = true;
    if (opts.wait) ok = await waitPodsReady(store, opts.waitMs ?? 120_000, (l) => out.out(l), name);
    return r.errors > 0 || !ok ? 1 : 0;
  } finally {
    store.close();
  }
}

/** `sluice lab delete -f ...`; returns the exit code. */
export async function labDelete(
  nameOpt: string | undefined,
  files: string[],
  out: Printer,
  opts: { wait?: boolean; ignoreNotFound?: boolean; waitMs?: number } = {},
): Promise<number> {
  const name = resolveLab(nameOpt);
  if (isKubernetesLab(name))
    return kubectlFiles(name, 'delete', files, out, [
      ...(opts.ignoreNotFound ? ['--ignore-not-found'] : []),
      `--wait=${opts.wait !== false}`,
    ]);
  const store = await openStore(name);
  try {
    const { manifests, errors } = readManifests(files);
    let failed = errors.length;
    for (const e of errors) out.err(`sluice: ${e.source}: ${e.message}`);
    const gone: Array<{ kind: Kind; namespace: string | undefined; name: string; uid?: string }> = [];
    // Later objects first (a Namespace in the same file goes last).
    for (const m of [...manifests].reverse()) {
      const ref = manifestRef(m.value);
      if (!ref) {
        failed++;
        out.err(`sluice: ${m.source}: not an object the lab knows (needs kind and metadata.name)`);
        continue;
      }
      const res = await store.transaction((tx) => requestDelete(tx, ref.kind, ref.namespace, ref.name));
      const label = `${resourceName(ref.kind, ref.name).replace('/', ' "')}"`;
      if (!res) {
        if (!opts.ignoreNotFound) {
          failed++;
          out.err(`sluice: ${describeObject(ref.kind, ref.namespace, ref.name)}: not found`);
        }
        continue;
      }
      out.out(`${label} deleted`);
      gone.push({ ...ref, uid: res.metadata?.uid });
    }
    if (opts.wait !== false && gone.length > 0) {
      if (!liveController(name))
        out.err(`sluice: warning: the controller of lab ${name} is not running: pods cannot finish terminating`);
      const deadline = Date.now() + (opts.waitMs ?? 120_000);
      for (;;) {
        store.refresh();
        const left = gone.filter((g) => {
          if (g.kind === 'Deployment')
            return store
              .snapshot('Pod')
              .some(
                (p) =>
                  p.metadata?.namespace === g.namespace &&
                  (p.metadata?.ownerReferences ?? []).some((o) => o.uid === g.uid),
              );
          if (g.kind === 'Pod' || g.kind === 'Namespace') {
            return store.snapshot(g.kind).some((o) => o.metadata?.uid === g.uid);
          }
          return false;
        });
        if (left.length === 0) break;
        if (Date.now() > deadline) {
          out.err(
            `sluice: still being deleted: ${left.map((g) => describeObject(g.kind, g.namespace, g.name)).join(', ')}`,
          );
          return 1;
        }
        await sleep(50);
      }
    }
    return failed > 0 ? 1 : 0;
  } finally {
    store.close();
  }
}

// ---------------------------------------------------------------------------------------------
// status

export interface LabStatus {
  name: string;
  overlay: Overlay;
  underlay: string;
  podCidr: string;
  serviceCidr: string;
  loadBalancerPool: string;
  controller: { running: boolean; pid: number | null; state: string | null };
  agents: { running: boolean; detail: string; nodes: AgentHealth[] };
  datapath: { programmed: boolean; detail: string };
  nodes: Array<{ name: string; ip: string; podCidr: string; netns: string; tunnelIp: string | null; agent: string }>;
  external: { ip: string; netns: string; routes: Array<{ cidr: string; via: string }> } | null;
  pods: Array<{
    namespace: string;
    name: string;
    node: string | null;
    ip: string | null;
    phase: string;
    ready: boolean;
    containers: string;
    restarts: number;
    netns: string | null;
    terminating: boolean;
  }>;
  services: Array<{
    namespace: string;
    name: string;
    type: string;
    clusterIP: string | null;
    ports: Array<{
      name: string;
      port: number;
      protocol: string;
      targetPort: number | string;
      nodePort: number | null;
    }>;
    loadBalancerIPs: string[];
    externalIPs: string[];
    endpoints: { ready: number; total: number };
  }>;
  deployments: Array<{ namespace: string; name: string; replicas: number; ready: number }>;
  networkPolicies: Array<{ namespace: string; name: string }>;
  revision: string;
  /** A lab made with --kubernetes: its API server (pods then include the lab kubelet's). */
  kubernetes: { server: string; kubeconfig: string; kubelet: string; proxy: string } | null;
}

function kubernetesStatus(name: string): LabStatus['kubernetes'] {
  const st = controlPlaneState(name);
  if (!st) return null;
  const k = liveKubelet(name);
  return {
    server: st.server,
    kubeconfig: st.kubeconfig,
    kubelet: k ? `${k.state} (pid ${k.pid})${k.error ? `: ${k.error}` : ''}` : 'NOT RUNNING',
    proxy: ((p) => (p ? `${p.proxy}${p.proxy !== 'sluice' && !p.sluice ? ' (no Sluice)' : ''}` : 'sluice'))(
      readProxySetup(name),
    ),
  };
}

export async function labStatus(nameOpt?: string): Promise<LabStatus> {
  const name = resolveLab(nameOpt);
  const topo = openTopology(name);
  const store = await openStore(name);
  try {
    const cfg = labClusterConfig(topo);
    const c = liveController(name);
    const agents = agentHealth(topo);
    const pods = store.snapshot('Pod');
    const slices = store.snapshot('EndpointSlice');
    const kubePods = readKubePods(name).map((p) => ({
      namespace: p.namespace,
      name: p.name,
      node: p.node || null,
      ip: p.ip,
      phase: p.phase,
      ready: p.ready,
      containers: p.containers,
      restarts: p.restarts,
      netns: p.netns,
      terminating: false,
    }));
    return {
      name,
      overlay: topo.overlay,
      underlay: topo.underlay,
      podCidr: topo.podCidr,
      serviceCidr: cfg.serviceCidr,
      loadBalancerPool: cfg.lbPool,
      controller: { running: Boolean(c), pid: c?.pid ?? null, state: c?.state ?? null },
      agents: {
        running: agents.some((a) => a.running),
        detail: agents.some((a) => a.running) ? 'running' : NO_AGENT,
        nodes: agents,
      },
      datapath: {
        programmed: agents.some((a) => a.running),
        detail: agents.some((a) => a.running) ? 'programmed by the node agents' : 'not running: no node agent',
      },
      nodes: topo.nodes.map((n) => ({
        name: n.name,
        ip: n.ip,
        podCidr: n.podCidr,
        netns: n.ns,
        tunnelIp: n.tunnelIp ?? null,
        agent: agents.find((a) => a.node === n.name)?.detail ?? 'none',
      })),
      external: topo.external ? { ip: topo.external.ip, netns: topo.external.ns, routes: topo.external.routes } : null,
      pods: pods
        .map((p) => {
          const cs = p.status?.containerStatuses ?? [];
          return {
            namespace: p.metadata?.namespace ?? 'default',
            name: p.metadata?.name ?? '',
            node: p.spec?.nodeName ?? null,
            ip: p.status?.podIP ?? null,
            phase: p.status?.phase ?? 'Pending',
            ready: isPodReady(p),
            containers: `${cs.filter((x) => x.ready).length}/${(p.spec?.containers ?? []).length}`,
            restarts: cs.reduce((n, x) => n + (x.restartCount ?? 0), 0),
            netns: podNetns(topo, p) ?? null,
            terminating: Boolean(p.metadata?.deletionTimestamp),
          };
        })
        .concat(kubePods),
      services: store.snapshot('Service').map((s) => {
        const ns = s.metadata?.namespace ?? 'default';
        const eps = slices
          .filter(
            (sl) =>
              sl.metadata?.namespace === ns && sl.metadata?.labels?.['kubernetes.io/service-name'] === s.metadata?.name,
          )
          .flatMap((sl) => sl.endpoints ?? []);
        return {
          namespace: ns,
          name: s.metadata?.name ?? '',
          type: s.spec?.type ?? 'ClusterIP',
          clusterIP: s.spec?.clusterIP ?? null,
          ports: (s.spec?.ports ?? []).map((p) => ({
            name: p.name ?? '',
            port: p.port,
            protocol: p.protocol ?? 'TCP',
            targetPort: p.targetPort ?? p.port,
            nodePort: p.nodePort ?? null,
          })),
          loadBalancerIPs: (s.status?.loadBalancer?.ingress ?? []).flatMap((i) => (i.ip ? [i.ip] : [])),
          externalIPs: s.spec?.externalIPs ?? [],
          endpoints: { ready: eps.filter((e) => e.conditions?.ready).length, total: eps.length },
        };
      }),
      deployments: store.snapshot('Deployment').map((d) => ({
        namespace: d.metadata?.namespace ?? 'default',
        name: d.metadata?.name ?? '',
        replicas: d.spec?.replicas ?? 1,
        ready: d.status?.readyReplicas ?? 0,
      })),
      networkPolicies: store
        .snapshot('NetworkPolicy')
        .map((p) => ({ namespace: p.metadata?.namespace ?? 'default', name: p.metadata?.name ?? '' })),
      revision: String(store.revision),
      kubernetes: kubernetesStatus(name),
    };
  } finally {
    store.close();
  }
}

export function formatStatus(s: LabStatus): string {
  const lines: string[] = [];
  lines.push(
    `lab ${s.name}: ${s.nodes.length} nodes, ${s.overlay} overlay, underlay ${s.underlay}, pods ${s.podCidr}, services ${s.serviceCidr}`,
  );
  lines.push(
    `controller: ${s.controller.running ? `running (pid ${s.controller.pid})` : 'NOT RUNNING (run `sluice lab up` to restart it)'}`,
  );
  lines.push(`agents: ${s.agents.running ? 'running' : `none: ${s.agents.detail}`}`);
  if (s.kubernetes)
    lines.push(
      `kubernetes: API server ${s.kubernetes.server}, kubelet ${s.kubernetes.kubelet}, Services by ${s.kubernetes.proxy}; KUBECONFIG=${s.kubernetes.kubeconfig}`,
    );
  lines.push('');
  lines.push(
    formatTable(
      ['node', 'ip', 'pod cidr', 'tunnel ip', 'netns', 'agent'],
      s.nodes.map((n) => [n.name, n.ip, n.podCidr, n.tunnelIp, n.netns, n.agent]),
    ),
  );
  if (s.external) {
    const routes = s.external.routes.map((r) => `${r.cidr} via ${r.via}`).join(', ');
    lines.push(`external: ${s.external.ip} (${s.external.netns})${routes ? `, routes ${routes}` : ''}`);
  }
  lines.push('');
  if (s.pods.length === 0) lines.push('no pods');
  else
    lines.push(
      formatTable(
        ['namespace', 'pod', 'node', 'ip', 'phase', 'ready', { header: 'restarts', right: true }],
        s.pods.map((p): Cell[] => [
          p.namespace,
          p.name,
          p.node,
          p.ip,
          p.terminating ? 'Terminating' : p.phase,
          p.containers,
          p.restarts,
        ]),
      ),
    );
  lines.push('');
  if (s.services.length === 0)
    lines.push(s.kubernetes ? 'services: in the API server (`sluice lab kubectl -- get services -A`)' : 'no services');
  else
    lines.push(
      formatTable(
        ['namespace', 'service', 'type', 'cluster ip', 'ports', 'external', 'endpoints'],
        s.services.map((v): Cell[] => [
          v.namespace,
          v.name,
          v.type,
          v.clusterIP,
          v.ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol}`).join(',') || '-',
          [...v.loadBalancerIPs, ...v.externalIPs].join(',') || '-',
          `${v.endpoints.ready}/${v.endpoints.total}`,
        ]),
      ),
    );
  if (s.networkPolicies.length > 0) {
    lines.push('');
    lines.push(
      `network policies: ${s.networkPolicies.map((p) => `${p.namespace}/${p.name}`).join(', ')} (stored; enforced once policy lands)`,
    );
  }
  if (!s.datapath.programmed) {
    lines.push('');
    lines.push(`Service datapath: ${s.datapath.detail}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// exec / logs

function podNetns(topo: Topology, p: Pod): string | undefined {
  if (p.spec?.hostNetwork) {
    const n = topo.nodes.find((x) => x.name === p.spec?.nodeName);
    return n?.ns;
  }
  const ns = p.metadata?.annotations?.[NETNS_ANNOTATION];
  return ns && topo.pods.some((tp) => tp.ns === ns) ? ns : undefined;
}

/** `[namespace/]name` to a pod of the store (default namespace first, else a unique match). */
async function findPod(store: FileStore, target: string): Promise<Pod> {
  const slash = target.indexOf('/');
  if (slash >= 0) {
    const p = await store.get('Pod', target.slice(0, slash), target.slice(slash + 1));
    if (!p) throw new CliError(`no pod ${target}`);
    return p;
  }
  const all = (await store.list('Pod')).items.filter((p) => p.metadata?.name === target);
  const d = all.find((p) => p.metadata?.namespace === 'default');
  if (d) return d;
  if (all.length === 1) return all[0];
  if (all.length > 1)
    throw new CliError(
      `pod ${target} is in several namespaces (${all.map((p) => p.metadata?.namespace).join(', ')}): say NAMESPACE/${target}`,
    );
  throw new CliError(`no pod ${target} (targets: [namespace/]POD, node/NAME, external)`);
}

/** The network namespace of an exec target, and a description. */
export async function resolveTarget(name: string, target: string): Promise<{ ns: string; what: string }> {
  const topo = openTopology(name);
  if (target === 'external' || target === 'ext') {
    if (!topo.external) throw new CliError(`lab ${name} has no external namespace`);
    return { ns: topo.external.ns, what: 'external' };
  }
  if (target.startsWith('node/')) {
    const n = topo.nodes.find((x) => x.name === target.slice(5));
    if (!n) throw new CliError(`no node ${target.slice(5)} (nodes: ${topo.nodes.map((x) => x.name).join(', ')})`);
    return { ns: n.ns, what: target };
  }
  if (target === 'control-plane' && topo.controlPlane) return { ns: topo.controlPlane.ns, what: target };
  if (topo.controlPlane) {
    // pods of the API server, run by the lab kubelet
    const kp = findKubePod(name, target);
    if (kp?.netns) return { ns: kp.netns, what: `pod ${kp.namespace}/${kp.name}` };
    if (kp) throw new CliError(`pod ${kp.namespace}/${kp.name} is not running (phase ${kp.phase})`);
  }
  const store = await openStore(name);
  try {
    const p = await findPod(store, target);
    const ns = podNetns(topo, p);
    const id = `${p.metadata?.namespace}/${p.metadata?.name}`;
    if (!ns) throw new CliError(`pod ${id} is not running (phase ${p.status?.phase ?? 'Pending'})`);
    return { ns, what: `pod ${id}` };
  } finally {
    store.close();
  }
}

/** `sluice lab exec TARGET -- CMD ARGS...`: stdio passed through; returns the command's exit code. */
export async function labExec(nameOpt: string | undefined, target: string, argv: string[]): Promise<number> {
  if (argv.length === 0) throw new CliError('exec needs a command after --');
  const name = resolveLab(nameOpt);
  const { ns } = await resolveTarget(name, target);
  let full = nsArgv(ns, argv[0], argv.slice(1));
  // A node's own processes join its sub-cgroup, where the agent balances connections to Services
  // at connect time (host-networked clients never cross a pod or host interface on the way out).
  const cg = target.startsWith('node/') ? nodeCgroup(name, target.slice(5)) : undefined;
  if (cg && fs.existsSync(cg)) full = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg, ...full];
  const child = spawn(full[0], full.slice(1), { stdio: 'inherit' });
  new ProcessRecorder(Topology.procsDir(name)).track(child, [full, argv], ns);
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  process.on('SIGTERM', forward);
  process.on('SIGHUP', forward);
  try {
    return await new Promise<number>((resolve) => {
      child.once('error', (err) => {
        process.stderr.write(`sluice: ${err.message}\n`);
        resolve(127);
      });
      child.once('exit', (code, signal) => {
        if (code !== null) resolve(code);
        else resolve(128 + (signal ? (os.constants.signals[signal] ?? 0) : 0));
      });
    });
  } finally {
    process.off('SIGTERM', forward);
    process.off('SIGHUP', forward);
  }
}

/** `sluice lab logs TARGET`: a pod's output, a node's agent log, or the controller's. */
export async function labLogs(
  nameOpt: string | undefined,
  target: string,
  out: Printer,
  opts: { container?: string; follow?: boolean } = {},
): Promise<number> {
  const name = resolveLab(nameOpt);
  const topo = openTopology(name);
  let files: Array<{ file: string; prefix: string }>;
  const kubePod = topo.controlPlane && !target.startsWith('node/') ? findKubePod(name, target) : undefined;
  if (target === 'controller') files = [{ file: controllerLogPath(name), prefix: '' }];
  else if (topo.controlPlane && target.startsWith('control-plane/')) {
    const c = target.slice('control-plane/'.length) as Component;
    if (!['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubelet'].includes(c))
      throw new CliError('control-plane logs: etcd, kube-apiserver, kube-controller-manager or kubelet');
    files = [{ file: componentLogPath(name, c), prefix: '' }];
  } else if (kubePod) {
    const dir = kubeContainerLogDir(name);
    const prefix = `${kubePod.namespace}_${kubePod.name}_`;
    const logs = (fs.existsSync(dir) ? fs.readdirSync(dir) : []).filter((f) => f.startsWith(prefix)).sort();
    const chosen = logs.filter((f) => !opts.container || f === `${prefix}${opts.container}.log`);
    files = chosen.map((f) => ({
      file: path.join(dir, f),
      prefix: chosen.length > 1 ? `[${f.slice(prefix.length, -4)}] ` : '',
    }));
  } else if (target.startsWith('node/')) {
    const node = target.slice(5);
    if (!topo.nodes.some((n) => n.name === node))
      throw new CliError(`no node ${node} (nodes: ${topo.nodes.map((x) => x.name).join(', ')})`);
    const file = agentLogPath(name, node);
    if (!fs.existsSync(file)) {
      out.err(`${target}: no agent log: no agent has run on this node (${NO_AGENT})`);
      return 0;
    }
    files = [{ file, prefix: '' }];
  } else {
    const store = await openStore(name);
    let pod: Pod;
    try {
      pod = await findPod(store, target);
    } finally {
      store.close();
    }
    const containers = (pod.spec?.containers ?? []).map((c) => c.name);
    const chosen = opts.container ? [opts.container] : containers;
    if (opts.container && !containers.includes(opts.container))
      throw new CliError(`pod ${pod.metadata?.name} has no container ${opts.container} (${containers.join(', ')})`);
    files = chosen.map((c) => ({
      file: containerLogPath(logDir(name), pod.metadata?.namespace ?? 'default', pod.metadata?.name ?? '', c),
      prefix: chosen.length > 1 ? `[${c}] ` : '',
    }));
  }
  const offsets = new Map<string, number>();
  const dump = (): void => {
    for (const f of files) {
      let text = '';
      try {
        const fd = fs.openSync(f.file, 'r');
        try {
          const size = fs.fstatSync(fd).size;
          const from = offsets.get(f.file) ?? 0;
          if (size > from) {
            const buf = Buffer.alloc(size - from);
            fs.readSync(fd, buf, 0, buf.length, from);
            text = buf.toString('utf8');
            // keep an incomplete last line for the next round
            const cut = opts.follow ? text.lastIndexOf('\n') + 1 : text.length;
            text = text.slice(0, cut);
            offsets.set(f.file, from + Buffer.byteLength(text));
          }
        } finally {
          fs.closeSync(fd);
        }
      } catch {
        // no output yet
      }
      for (const line of text.replace(/\n$/, '').split('\n')) if (text !== '') out.out(`${f.prefix}${line}`);
    }
  };
  dump();
  if (!opts.follow) return 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(dump, 200);
    const stop = (): void => {
      clearInterval(timer);
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// down

export interface DownResult {
  name: string;
  namespaces: string[];
  processes: number;
  existed: boolean;
}

/** Removes everything lab `name` made, also after a crash half-way through `up`. */
/** The lab's node sub-cgroups, once their processes are gone. */
function removeNodeCgroups(name: string): void {
  const probe = nodeCgroup(name, 'x');
  if (!probe) return;
  const root = path.dirname(probe);
  for (const d of fs.readdirSync(root)) {
    if (!d.startsWith(`sluice-lab-${name}-`)) continue;
    try {
      fs.rmdirSync(path.join(root, d));
    } catch {
      // still has processes (should not happen after the sweep); left for the next down
    }
  }
}

export async function labDown(nameOpt: string | undefined, out: Printer): Promise<DownResult> {
  let name = nameOpt;
  if (!name) {
    const labs = listLabs();
    if (labs.length > 1) throw new CliError(`there are several labs (${labs.join(', ')}): say which with --name`);
    name = labs[0] ?? DEFAULT_LAB;
  }
  Topology.stateDir(name); // checks the name
  const upOwner = liveOwner(upLockPath(name));
  if (upOwner && upOwner.pid !== process.pid)
    throw new CliError(`\`sluice lab up\` (pid ${upOwner.pid}) is still working on lab ${name}: stop it first`);
  const existed =
    fs.existsSync(Topology.stateDir(name)) ||
    (() => {
      try {
        return fs.readdirSync('/run/netns').some((n) => n.startsWith(`sl-${name}-`));
      } catch {
        return false;
      }
    })();
  // The controller first, so that it starts nothing while the rest goes.
  const hadController = await stopController(name);
  if (hadController) out.out('controller: stopped');
  if ((await stopKubernetes(name)) > 0) out.out('kubernetes: control plane and kubelet stopped');
  // The agents are recorded processes: the sweep kills them. What they attached goes with the
  // namespaces (tc links), their file descriptors (cgroup links) and the pin directory.
  const orphans = killPodProcesses(name);
  const swept = await Topology.sweep(name);
  removePinDir(labPinRoot(name));
  removeNodeCgroups(name);
  fs.rmSync(upLockPath(name), { force: true });
  const processes = orphans.length + swept.killed.length + swept.strays.length;
  if (existed)
    out.out(
      `lab "${name}" removed: ${swept.namespaces.length} namespaces` +
        (processes > 0 ? `, ${processes} leftover processes killed` : '') +
        (swept.strays.length > 0 ? ` (unrecorded: ${swept.strays.map((s) => `${s.comm}[${s.pid}]`).join(', ')})` : ''),
    );
  else out.out(`no lab "${name}": nothing to remove`);
  return { name, namespaces: swept.namespaces, processes, existed };
}

// ---------------------------------------------------------------------------------------------
// The demo's live check

function check(ok: boolean): string {
  return ok ? 'ok' : 'FAILED';
}

function describeAnswer(r: EchoResult, expectClient: string): { ok: boolean; text: string } {
  if (!r.ok) return { ok: false, text: `no answer (${r.error})` };
  const clientIp = (r.client ?? '').split(':')[0];
  const ok = clientIp === expectClient;
  return { ok, text: `answered by ${r.name}, which saw client ${r.client}${ok ? '' : ` (expected ${expectClient})`}` };
}

/** The demo's live check: traffic through the lab with the client address each server saw. */
export async function demoCheck(name: string, out: Printer): Promise<boolean> {
  const topo = openTopology(name);
  const store = await openStore(name);
  let allOk = true;
  try {
    const pods = store
      .snapshot('Pod')
      .filter(
        (p) =>
          p.metadata?.labels?.app === 'echo' && isPodReady(p) && !p.metadata?.deletionTimestamp && podNetns(topo, p),
      );
    out.out('live check (sluice echo answers with its name and the client address it saw):');
    if (pods.length < 2) {
      out.out('  not enough ready echo pods for the check');
      return false;
    }
    const a = pods[0];
    const b = pods.find((p) => p.spec?.nodeName !== a.spec?.nodeName) ?? pods[1];
    const aNs = podNetns(topo, a) as string;
    const aIp = a.status?.podIP ?? '';
    const bIp = b.status?.podIP ?? '';
    const label = (p: Pod): string => `${p.metadata?.name} (${p.spec?.nodeName}, ${p.status?.podIP})`;
    const rows: string[] = [];
    for (const [proto, port] of [
      ['tcp', 8080],
      ['udp', 8081],
    ] as const) {
      const r = await askEchoIn(aNs, proto, bIp, port, { timeoutMs: 2000 });
      const d = describeAnswer(r, aIp);
      allOk &&= d.ok;
      rows.push(`  pod -> pod    ${proto}  ${label(a)} -> ${bIp}:${port}: ${d.text} [${check(d.ok)}]`);
    }
    const node = topo.nodes.find((n) => n.name !== b.spec?.nodeName) ?? topo.nodes[0];
    const nodeSrc = topo.overlay === 'vxlan' ? (node.tunnelIp ?? node.ip) : node.ip;
    {
      const r = await askEchoIn(node.ns, 'tcp', bIp, 8080, { timeoutMs: 2000 });
      const d = describeAnswer(r, nodeSrc);
      allOk &&= d.ok;
      rows.push(`  node -> pod   tcp  ${node.name} -> ${bIp}:8080: ${d.text} [${check(d.ok)}]`);
    }
    const services = store
      .snapshot('Service')
      .filter((s) => s.metadata?.namespace === 'default' && s.spec?.selector?.app === 'echo');
    const programmed = agentsRunning(topo);
    for (const s of services) {
      const tcp = (s.spec?.ports ?? []).find((p) => (p.protocol ?? 'TCP') === 'TCP');
      if (!tcp) continue;
      if (s.spec?.type === 'ClusterIP' && s.spec.clusterIP && s.spec.clusterIP !== 'None') {
        const where = `${label(a)} -> ${s.spec.clusterIP}:${tcp.port}`;
        if (!programmed) rows.push(`  ClusterIP     tcp  ${where}: not programmed yet (no node agent)`);
        else {
          const r = await askEchoIn(aNs, 'tcp', s.spec.clusterIP, tcp.port, { timeoutMs: 2000 });
          // A pod that reaches itself through its Service sees its node's address (hairpin
          // traffic is source-NATed, as kube-proxy does).
          const hairpin = r.ok && r.name === a.metadata?.name;
          const nodeIp = topo.nodes.find((n) => n.name === a.spec?.nodeName)?.ip ?? aIp;
          const d = describeAnswer(r, hairpin ? nodeIp : aIp);
          allOk &&= d.ok;
          rows.push(
            `  ClusterIP     tcp  ${where}: ${d.text}${hairpin ? ' (itself: hairpin, from its node)' : ''} [${check(d.ok)}]`,
          );
        }
      }
      if ((s.spec?.type === 'NodePort' || s.spec?.type === 'LoadBalancer') && tcp.nodePort && topo.external) {
        const where = `external (${topo.external.ip}) -> ${topo.nodes[0].ip}:${tcp.nodePort}`;
        if (!programmed) rows.push(`  NodePort      tcp  ${where}: not programmed yet (no node agent)`);
        else {
          const d = describeAnswer(
            await askEchoIn(topo.external.ns, 'tcp', topo.nodes[0].ip, tcp.nodePort, { timeoutMs: 2000 }),
            topo.external.ip,
          );
          allOk &&= d.ok;
          rows.push(`  NodePort      tcp  ${where}: ${d.text} [${check(d.ok)}]`);
        }
      }
    }
    for (const r of rows) out.out(r);
    if (!programmed) out.out(`Services: ${NO_AGENT}; they answer once the agent lands.`);
    return allOk;
  } finally {
    store.close();
  }
}
