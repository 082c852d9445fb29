// The lab's real Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager as
// processes in the lab's control-plane namespace (`sl-<lab>-cp`, on the underlay at .250 like
// the external client at .200), and the lab's kubelet (kubelet.ts) beside them. The flags are the
// ones docs/kubernetes-lab-notes.md records as working, with the API server listening on the
// underlay so the nodes (and their agents) reach it at https://<cp IP>:6443.
//
// Files, all under /run/sluice/lab-<name>/kubernetes/ (removed by `down` with the lab's state):
//   pki/                          certificates (pki.ts)
//   admin.kubeconfig              the lab's KUBECONFIG (agents, kubectl, the lab kubelet)
//   controller-manager.kubeconfig
//   etcd/                         etcd's data directory
//   control-plane.json            the processes (pid, start time) and the API server's URL
//   kubelet.json                  the lab kubelet's state (starting / ready / error)
//   pods.json                     the pods the lab kubelet runs (for `lab exec` and `lab status`)
//   pods/                         their process groups, for `down`
//   logs/<component>.log          etcd, kube-apiserver, kube-controller-manager, kubelet
//   logs/containers/              the pods' output
//
// Every process is recorded with the lab's ProcessRecorder, so `down` (and a sweep after a crash)
// kills them; `stopKubernetes` stops them first in reverse start order, and the pods' processes.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CliError } from '../../cli/output.js';
import { packageRoot } from '../../paths.js';
import { procStarttime } from '../controller.js';
import { ProcessRecorder, run, type ExecResult } from '../exec.js';
import { SERVICE_CIDR, reservedClusterIp } from '../resources.js';
import { Topology } from '../topology.js';
import { findKubernetesBinaries, type KubernetesBinaries } from './binaries.js';
import { ensurePki, writeKubeconfig, type Pki } from './pki.js';

export const API_PORT = 6443;
const SLUICE_BIN = path.join(packageRoot, 'bin', 'sluice.js');

export type Component = 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kubelet';
const START_ORDER: readonly Component[] = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubelet'];

export function kubernetesDir(name: string): string {
  return path.join(Topology.stateDir(name), 'kubernetes');
}
export function kubeconfigPath(name: string): string {
  return path.join(kubernetesDir(name), 'admin.kubeconfig');
}
export function componentLogPath(name: string, c: Component): string {
  return path.join(kubernetesDir(name), 'logs', `${c}.log`);
}
export function kubeletStatePath(name: string): string {
  return path.join(kubernetesDir(name), 'kubelet.json');
}
export function kubePodsPath(name: string): string {
  return path.join(kubernetesDir(name), 'pods.json');
}
export function kubePodRunDir(name: string): string {
  return path.join(kubernetesDir(name), 'pods');
}
export function kubeContainerLogDir(name: string): string {
  return path.join(kubernetesDir(name), 'logs', 'containers');
}
function controlPlaneStatePath(name: string): string {
  return path.join(kubernetesDir(name), 'control-plane.json');
}

interface ProcRef {
  pid: number;
  starttime: string;
}

export interface ControlPlaneState {
  server: string;
  controlPlaneIp: string;
  kubeconfig: string;
  binDir: string;
  serviceCidr: string;
  processes: Partial<Record<Component, ProcRef>>;
}

export interface KubeletState {
  pid: number;
  starttime: string;
  state: 'starting' | 'ready' | 'stopping';
  since: string;
  /** What it is doing (while starting). */
  step?: string;
  error?: string;
  /** Seconds from the API server's start to its first ok from /readyz. */
  readyzSeconds?: number;
  /** The default ServiceAccount exists (pods are refused before). */
  serviceAccount?: boolean;
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function writeJson(file: string, v: unknown): void {
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(v, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

/** The control plane of lab `name`, as `up` recorded it; undefined for a lab without one. */
export function controlPlaneState(name: string): ControlPlaneState | undefined {
  return readJson<ControlPlaneState>(controlPlaneStatePath(name));
}

export function isKubernetesLab(name: string): boolean {
  return fs.existsSync(controlPlaneStatePath(name));
}

export function writeKubeletState(name: string, s: Omit<KubeletState, 'pid' | 'starttime' | 'since'>): void {
  writeJson(kubeletStatePath(name), {
    pid: process.pid,
    starttime: procStarttime(process.pid) ?? '',
    since: new Date().toISOString(),
    ...s,
  } satisfies KubeletState);
}

/** The lab kubelet's state file, if the process it names is alive. */
export function liveKubelet(name: string): KubeletState | undefined {
  const s = readJson<KubeletState>(kubeletStatePath(name));
  return s && procStarttime(s.pid) === s.starttime ? s : undefined;
}

/** Seconds since process `pid` started (its /proc start time; clock ticks of 100 Hz, as on Linux x86-64). */
export function processAgeSeconds(pid: number): number | undefined {
  const ticks = Number(procStarttime(pid));
  if (!Number.isFinite(ticks)) return undefined;
  const uptime = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  return Math.max(0, uptime - ticks / 100);
}

function alive(p: ProcRef | undefined): p is ProcRef {
  return p !== undefined && procStarttime(p.pid) === p.starttime;
}

function tail(file: string, lines = 12): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Flags

function etcdArgs(dataDir: string): string[] {
  return [
    '--name=lab',
    `--data-dir=${dataDir}`,
    '--listen-client-urls=http://127.0.0.1:2379',
    '--advertise-client-urls=http://127.0.0.1:2379',
    '--listen-peer-urls=http://127.0.0.1:2380',
    '--initial-advertise-peer-urls=http://127.0.0.1:2380',
    '--initial-cluster=lab=http://127.0.0.1:2380',
    '--initial-cluster-state=new',
    '--log-level=warn',
  ];
}

function apiserverArgs(pki: Pki, cpIp: string, serviceCidr: string): string[] {
  return [
    '--etcd-servers=http://127.0.0.1:2379',
    // On every address of the control-plane namespace: its underlay IP for the nodes, 127.0.0.1
    // for the controller-manager beside it.
    '--bind-address=0.0.0.0',
    `--secure-port=${API_PORT}`,
    `--advertise-address=${cpIp}`,
    `--service-cluster-ip-range=${serviceCidr}`,
    `--tls-cert-file=${pki.apiserverCert}`,
    `--tls-private-key-file=${pki.apiserverKey}`,
    `--client-ca-file=${pki.ca}`,
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    `--service-account-key-file=${pki.saPub}`,
    `--service-account-signing-key-file=${pki.saKey}`,
    '--authorization-mode=Node,RBAC',
    '--allow-privileged=true',
    '--profiling=false',
  ];
}

function controllerManagerArgs(pki: Pki, kubeconfig: string, serviceCidr: string): string[] {
  return [
    `--kubeconfig=${kubeconfig}`,
    '--bind-address=127.0.0.1',
    '--secure-port=10257',
    '--leader-elect=false',
    // No kubelet heartbeats in the lab: the node lifecycle controller would mark every node
    // NotReady after 50 s and every endpoint not ready with it (see the notes).
    '--controllers=*,-node-lifecycle-controller',
    '--use-service-account-credentials=true',
    `--service-account-private-key-file=${pki.saKey}`,
    `--root-ca-file=${pki.ca}`,
    `--cluster-signing-cert-file=${pki.ca}`,
    `--cluster-signing-key-file=${pki.caKey}`,
    `--service-cluster-ip-range=${serviceCidr}`,
    '--profiling=false',
  ];
}

// ---------------------------------------------------------------------------------------------
// Start

/** Starts argv (nsenter into the namespace first) detached, logging to `logFile`; records it. */
function startProcess(argv: string[], logFile: string, recorder: ProcessRecorder, what: string): ProcRef {
  fs.mkdirSync(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const fd = fs.openSync(logFile, 'a', 0o600);
  let child;
  try {
    child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', fd, fd], cwd: '/' });
  } finally {
    fs.closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new CliError(`cannot start ${what}`);
  // nsenter execs the command: the process shows nsenter's argv, then the command's.
  recorder.record(pid, [argv, argv.slice(2)], what);
  child.unref();
  return { pid, starttime: procStarttime(pid) ?? '' };
}

export interface StartedControlPlane {
  server: string;
  kubeconfig: string;
  /** Components started now (the others were running already). */
  started: Component[];
  /** Seconds from the API server's start until it answered /readyz, as the kubelet measured it. */
  readyzSeconds?: number;
}

/**
 * Starts (or keeps) the control plane of `topo` (a lab made with controlPlane) and waits until
 * the lab kubelet has registered the nodes and the cluster objects: then the API server serves
 * what the agents need. `pki` may be a promise started earlier (the certificates only need the
 * addresses), to overlap it with building the network.
 */
export async function startControlPlane(
  topo: Topology,
  opts: { binaries?: KubernetesBinaries; pki?: Promise<Pki>; say?: (line: string) => void; timeoutMs?: number } = {},
): Promise<StartedControlPlane> {
  const cp = topo.controlPlane;
  if (!cp) throw new CliError(`lab ${topo.name} has no control-plane namespace`);
  const say = opts.say ?? (() => undefined);
  const bins = opts.binaries ?? findKubernetesBinaries();
  const name = topo.name;
  const dir = kubernetesDir(name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const serviceCidr = SERVICE_CIDR;
  const pki = await (opts.pki ?? labPki(topo));
  const server = `https://${cp.ip}:${API_PORT}`;
  const kubeconfig = kubeconfigPath(name);
  writeKubeconfig(kubeconfig, { server, ca: pki.ca, cert: pki.adminCert, key: pki.adminKey, user: 'sluice-lab-admin' });
  const cmKubeconfig = path.join(dir, 'controller-manager.kubeconfig');
  writeKubeconfig(cmKubeconfig, {
    server: `https://127.0.0.1:${API_PORT}`,
    ca: pki.ca,
    cert: pki.cmCert,
    key: pki.cmKey,
    user: 'system:kube-controller-manager',
  });
  const etcdData = path.join(dir, 'etcd');
  fs.mkdirSync(etcdData, { recursive: true, mode: 0o700 });
  fs.chmodSync(etcdData, 0o700);

  const prev = controlPlaneState(name);
  const state: ControlPlaneState = {
    server,
    controlPlaneIp: cp.ip,
    kubeconfig,
    binDir: bins.dir,
    serviceCidr,
    processes: { ...(prev?.processes ?? {}) },
  };
  const recorder = new ProcessRecorder(Topology.procsDir(name));
  const nsenter = ['nsenter', `--net=/run/netns/${cp.ns}`];
  const commands: Record<Component, string[]> = {
    etcd: [bins.etcd, ...etcdArgs(etcdData)],
    'kube-apiserver': [bins.kubeApiserver, ...apiserverArgs(pki, cp.ip, serviceCidr)],
    'kube-controller-manager': [bins.kubeControllerManager, ...controllerManagerArgs(pki, cmKubeconfig, serviceCidr)],
    kubelet: [process.execPath, SLUICE_BIN, 'lab', 'kubelet', '--name', name],
  };
  const started: Component[] = [];
  // All at once: the API server retries etcd, the controller-manager and the kubelet wait for
  // the API server; starting them together saves their start-up times.
  for (const c of START_ORDER) {
    if (alive(state.processes[c])) continue;
    if (c === 'kubelet') fs.rmSync(kubeletStatePath(name), { force: true });
    state.processes[c] = startProcess(
      [...nsenter, ...commands[c]],
      componentLogPath(name, c),
      recorder,
      `${c} (${cp.ns})`,
    );
    started.push(c);
    writeJson(controlPlaneStatePath(name), state);
  }
  writeJson(controlPlaneStatePath(name), state);
  if (started.length > 0) say(`kubernetes: started ${started.join(', ')} in ${cp.ns} (API server ${server})`);

  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  let lastStep = '';
  for (;;) {
    const k = liveKubelet(name);
    if (k?.state === 'ready') return { server, kubeconfig, started, readyzSeconds: k.readyzSeconds };
    if (k?.step && k.step !== lastStep) {
      lastStep = k.step;
      say(`kubernetes: ${k.step}`);
    }
    const dead = START_ORDER.find((c) => !alive(state.processes[c]));
    if (k?.error || dead) {
      const which = dead ?? 'kubelet';
      throw new CliError(
        `the lab's Kubernetes control plane failed to start: ${dead ? `${dead} exited` : k?.error}\n` +
          `--- ${componentLogPath(name, which)} (last lines):\n${tail(componentLogPath(name, which))}` +
          (which !== 'kube-apiserver'
            ? `\n--- kube-apiserver log:\n${tail(componentLogPath(name, 'kube-apiserver'), 6)}`
            : ''),
      );
    }
    if (Date.now() > deadline) {
      throw new CliError(
        `the lab's Kubernetes control plane did not get ready in ${Math.round((opts.timeoutMs ?? 120_000) / 1000)} s` +
          ` (${lastStep || 'starting'}):\n--- kube-apiserver log:\n${tail(componentLogPath(name, 'kube-apiserver'))}` +
          `\n--- kubelet log:\n${tail(componentLogPath(name, 'kubelet'))}`,
      );
    }
    await sleep(50);
  }
}

/** Waits until pods can be created: the lab kubelet has seen the default ServiceAccount. */
export async function waitPodsAdmitted(name: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const k = liveKubelet(name);
    if (k?.serviceAccount) return;
    if (!k || k.error)
      throw new CliError(`the lab kubelet is not running:\n${tail(componentLogPath(name, 'kubelet'))}`);
    if (Date.now() > deadline)
      throw new CliError(
        `no default ServiceAccount after ${timeoutMs / 1000} s (is kube-controller-manager running?):\n` +
          tail(componentLogPath(name, 'kube-controller-manager')),
      );
    await sleep(50);
  }
}

/** The certificates of `topo`'s control plane (made or reused). */
export function labPki(topo: Topology): Promise<Pki> {
  const cp = topo.controlPlane;
  if (!cp) throw new CliError(`lab ${topo.name} has no control-plane namespace`);
  fs.mkdirSync(kubernetesDir(topo.name), { recursive: true, mode: 0o700 });
  return ensurePki(path.join(kubernetesDir(topo.name), 'pki'), {
    controlPlaneIp: cp.ip,
    serviceIp: reservedClusterIp(SERVICE_CIDR),
  });
}

// ---------------------------------------------------------------------------------------------
// Stop

async function waitGone(p: ProcRef, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(p) && Date.now() < deadline) await sleep(20);
  return !alive(p);
}

/**
 * Kills every process in a process group the lab kubelet recorded for its pods that is still in
 * one of the lab's network namespaces (as controller.ts's killPodProcesses does for the file
 * store's pods). Returns the PIDs.
 */
export function killKubePodProcesses(name: string): number[] {
  const dir = kubePodRunDir(name);
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  const pgids = new Set<number>();
  for (const f of files) {
    const rec = readJson<{ pgids?: number[] }>(path.join(dir, f));
    for (const g of rec?.pgids ?? []) if (Number.isInteger(g) && g > 1) pgids.add(g);
  }
  const inodes = new Set<number>();
  try {
    for (const ns of fs.readdirSync('/run/netns'))
      if (ns.startsWith(`sl-${name}-`)) inodes.add(fs.statSync(`/run/netns/${ns}`).ino);
  } catch {
    // no namespaces
  }
  const killed: number[] = [];
  if (pgids.size > 0 && inodes.size > 0) {
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
      try {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
        const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
        if (!pgids.has(pgrp)) continue;
        const ino = Number(/\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${entry}/ns/net`))?.[1]);
        if (!inodes.has(ino)) continue;
        process.kill(Number(entry), 'SIGKILL');
        killed.push(Number(entry));
      } catch {
        // gone meanwhile
      }
    }
  }
  for (const f of files) fs.rmSync(path.join(dir, f), { force: true });
  return killed;
}

/** Stops the lab kubelet only (SIGTERM; SIGKILL after 5 s), e.g. before the network is repaired. */
export async function stopKubeKubelet(name: string): Promise<boolean> {
  const k = controlPlaneState(name)?.processes.kubelet;
  if (!alive(k)) return false;
  try {
    process.kill(k.pid, 'SIGTERM');
  } catch {
    return false;
  }
  if (!(await waitGone(k, 5000)) && alive(k)) process.kill(k.pid, 'SIGKILL');
  await waitGone(k, 5000);
  return true;
}

/**
 * Stops the lab's control plane before `down` removes the rest: the kubelet (SIGTERM: it kills
 * its pods' processes), the pods' leftovers, then the controller-manager, the API server and
 * etcd in reverse start order. SIGKILL for the last three: their data goes with the lab anyway.
 * Returns how many processes were stopped; a lab without a control plane gives 0.
 */
export async function stopKubernetes(name: string): Promise<number> {
  const st = controlPlaneState(name);
  if (!st) return 0;
  let n = (await stopKubeKubelet(name)) ? 1 : 0;
  n += killKubePodProcesses(name).length;
  for (const c of ['kube-controller-manager', 'kube-apiserver', 'etcd'] as const) {
    const p = st.processes[c];
    if (!alive(p)) continue;
    n++;
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
    await waitGone(p, 5000);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// kubectl

/** argv of the lab's kubectl, run in the control-plane namespace (the API server is only reachable in the lab). */
export function kubectlArgv(name: string, args: readonly string[]): string[] {
  const st = controlPlaneState(name);
  if (!st)
    throw new CliError(
      `lab ${name} has no Kubernetes control plane (make it with \`sluice lab up --kubernetes --name ${name}\`)`,
    );
  // the kubectl of the binaries the control plane runs (checking the cache again costs a bash)
  let bin = path.join(st.binDir, 'kubectl');
  if (!fs.existsSync(bin)) bin = findKubernetesBinaries().kubectl;
  return ['nsenter', `--net=/run/netns/sl-${name}-cp`, bin, `--kubeconfig=${st.kubeconfig}`, ...args];
}

/** Runs the lab's kubectl and collects its output. */
export async function kubectl(
  name: string,
  args: readonly string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  const argv = kubectlArgv(name, args);
  return run(argv[0], argv.slice(1), { input: opts.input, timeoutMs: opts.timeoutMs ?? 60_000 });
}
