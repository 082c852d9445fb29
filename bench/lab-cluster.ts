// The lab of the Service benchmarks: ONE lab for every contender, brought up and down with the
// `sluice lab` command (as a user would), its Service proxy switched between the measurements the
// way an operator switches it: kube-proxy's DaemonSet moved off the nodes (the seed's nodeSelector
// patch) and `kube-proxy --cleanup`, Sluice's agents switched with bpfEnabled. Every client starts
// inside a lab namespace with nsenter. Nothing here sends a packet from the root namespace: the
// lab's addresses (192.168.77.x, 10.x) only exist inside the lab, and from the root namespace
// they would leave the machine.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { alive } from '../src/lab/lab.js';
import { packageRoot } from '../src/paths.js';
import type { BulkCommand, BulkResult } from './bulk-services.js';
import { findProcesses, processCpuSeconds, processRssMB } from './proc-stats.js';

export type Contender = 'baseline' | 'sluice' | 'kube-proxy-iptables' | 'kube-proxy-nftables';

export const NODES = ['node1', 'node2'] as const;
export const ECHO_PORT = 8080;
export const IPERF_PORT = 5201;
export const NODEPORT_ECHO = 30080;
export const NODEPORT_IPERF = 30201;
/** node1: the client's node, no backend. node2: the backend's. */
export const NODE_IPS = { node1: '192.168.77.11', node2: '192.168.77.12' } as const;
/** The external client's second address, for its direct-to-pod flows (its first is .200). */
export const EXT_DIRECT_IP = '192.168.77.201';

const SLUICE = path.join(packageRoot, 'bin', 'sluice.js');
const DIST_BENCH = path.join(packageRoot, 'dist', 'bench');

/**
 * The workload: an echo + iperf3 server on node2, two idle client pods on node1 (bench-client for
 * Service paths, bench-direct for the pod-IP path: distinct source addresses, so that a flow to
 * the pod IP never has the 5-tuple of an earlier flow through the Service; see the report), the
 * target Service.
 */
export function appYaml(): string {
  return `apiVersion: v1
kind: Pod
metadata: {name: bench-server, namespace: default, labels: {app: bench-server}}
spec:
  nodeName: node2
  containers:
    - name: echo
      image: sluice/echo # not pulled: the lab runs the command in the pod's namespace
      command: [sluice, echo, server, --name, bench-server, --tcp, '${ECHO_PORT}']
      ports: [{name: tcp, containerPort: ${ECHO_PORT}}]
      readinessProbe: {tcpSocket: {port: ${ECHO_PORT}}, periodSeconds: 1}
    - name: iperf
      image: sluice/iperf
      command: [iperf3, -s, -p, '${IPERF_PORT}']
---
apiVersion: v1
kind: Pod
metadata: {name: bench-client, namespace: default}
spec:
  nodeName: node1
  containers:
    - {name: idle, image: sluice/idle, command: [sleep, infinity]}
---
apiVersion: v1
kind: Pod
metadata: {name: bench-direct, namespace: default}
spec:
  nodeName: node1
  containers:
    - {name: idle, image: sluice/idle, command: [sleep, infinity]}
---
apiVersion: v1
kind: Service
metadata: {name: bench-target, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Cluster
  selector: {app: bench-server}
  ports:
    - {name: tcp, port: 80, targetPort: ${ECHO_PORT}, nodePort: ${NODEPORT_ECHO}}
    - {name: iperf, port: ${IPERF_PORT}, targetPort: ${IPERF_PORT}, nodePort: ${NODEPORT_IPERF}}
`;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The environment of the `sluice lab` commands (and so of the lab's processes): HOME is an empty
 * directory. Node gives a child's stdin as a socket, and bash (Debian's, built to detect being
 * run by rshd) then sources ~/.bashrc even for `bash -c`; root's .bashrc on this machine runs
 * `pyenv init`, which made every readiness probe of the lab kubelet (`bash -c exec 3<>/dev/tcp/..`)
 * outlast its 1 s timeout: pods stayed Running and never Ready. The Kubernetes binaries are
 * found through SLUICE_K8S_CACHE instead of HOME.
 */
function labEnv(): NodeJS.ProcessEnv {
  const home = path.join(os.tmpdir(), 'sluice-bench-home');
  fs.mkdirSync(home, { recursive: true });
  return {
    ...process.env,
    HOME: home,
    SLUICE_K8S_CACHE: process.env.SLUICE_K8S_CACHE ?? path.join(os.homedir(), '.cache', 'sluice', 'kubernetes'),
  };
}

const children = new Set<ChildProcess>();

/** Stops the commands still running (on SIGINT/SIGTERM, before `lab down`, which refuses while `up` runs). */
export function stopChildren(): void {
  for (const c of children) c.kill('SIGTERM');
}

/** Runs a command to completion; `onLine` sees stdout lines as they come (progress). */
export function run(
  argv: string[],
  opts: { timeoutMs?: number; onLine?: (l: string) => void; input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env });
    children.add(child);
    child.on('exit', () => children.delete(child));
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      if (!opts.onLine) return;
      partial += s;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) opts.onLine(l);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGTERM'), opts.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

function parseJson<T>(what: string, r: RunResult): T {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as T;
}

interface KubePod {
  name: string;
  ip: string | null;
  netns: string | null;
}

interface AgentStatus {
  pid: number;
  ready: boolean;
  bpfEnabled: boolean;
  /** Absent while no datapath is loaded. */
  mode?: string;
  dsr: boolean;
  frontends: number;
}

/** The proxies that program Services; the baseline is the lab with none of them. */
export const PROXIES = ['sluice', 'kube-proxy-iptables', 'kube-proxy-nftables'] as const;
export type Proxy = (typeof PROXIES)[number];
/** The Sluice policy table of the standard dataplane (src/policy/nftables.ts NFT_TABLE). */
const SLUICE_NFT_TABLE = 'sluice-policy';

export class BenchLab {
  /** How many times `up` had to start over. */
  upRetries = 0;
  /** Who serves Services now. */
  active: Contender = 'baseline';

  constructor(
    readonly name: string,
    private readonly say: (l: string) => void,
  ) {}

  get runDir(): string {
    return `/run/sluice/lab-${this.name}`;
  }
  get kubeconfig(): string {
    return path.join(this.runDir, 'kubernetes', 'admin.kubeconfig');
  }
  ns(host: 'node1' | 'node2' | 'ext' | 'cp'): string {
    return `sl-${this.name}-${host}`;
  }

  /** The `lab up` command line: kube-proxy's DaemonSet (iptables) installed, and Sluice's agents. */
  private upArgv(files: string[]): string[] {
    return [
      process.execPath,
      SLUICE,
      'lab',
      'up',
      '--kubernetes',
      '--name',
      this.name,
      '--nodes',
      '2',
      '--proxy',
      'kube-proxy-iptables',
      '--timeout',
      '120',
      ...files.flatMap((f) => ['-f', f]),
    ];
  }

  /**
   * `sluice lab up` as the seed's starting point (kube-proxy iptables serving Services, Sluice's
   * agents in the standard dataplane), then every proxy stopped: the lab starts as the baseline.
   */
  async up(): Promise<void> {
    const app = path.join('/tmp', `sluice-bench-${this.name}-app.yaml`);
    fs.writeFileSync(app, appYaml());
    // A second try from scratch: on this shared machine the lab kubelet has been seen to stop
    // probing readiness (pods Running, never Ready), and `up` then fails after its timeout.
    for (let attempt = 1; ; attempt++) {
      const r = await run(this.upArgv([app]), {
        timeoutMs: 300_000,
        env: labEnv(),
        onLine: (l) => {
          if (/^\[|not ready|error|fail/i.test(l.trim())) this.say(`    lab: ${l.trim()}`);
        },
      });
      if (r.code === 0) break;
      const why = (r.stderr.trim() || r.stdout.trim()).slice(-800);
      if (attempt >= 2) throw new Error(`lab up ${this.name} failed twice: ${why}`);
      this.say(`  lab up ${this.name} failed (${why.split('\n').pop()}); removing it and trying once more`);
      this.upRetries++;
      await this.down();
    }
    this.active = 'kube-proxy-iptables';
    await this.stopKubeProxy();
    await this.stopSluice();
    this.active = 'baseline';
  }

  async down(): Promise<void> {
    const r = await run([process.execPath, SLUICE, 'lab', 'down', '--name', this.name], {
      timeoutMs: 180_000,
      env: labEnv(),
    });
    if (r.code !== 0) this.say(`  lab down ${this.name}: exit ${r.code}: ${r.stderr.trim().slice(-300)}`);
  }

  kubectl(args: string[], input?: string): Promise<RunResult> {
    return run([process.execPath, SLUICE, 'lab', 'kubectl', '--name', this.name, '--', ...args], {
      input,
      timeoutMs: 120_000,
      env: labEnv(),
    });
  }

  /**
   * Makes `c` the one proxy of the lab: the current one is stopped and what it wrote removed, then
   * `c` is started. Returns when `c`'s processes run; the caller waits for its dataplane.
   */
  async switchTo(c: Contender): Promise<void> {
    if (c === this.active) return;
    if (this.active === 'sluice') await this.stopSluice();
    else if (this.active !== 'baseline') await this.stopKubeProxy();
    this.active = 'baseline';
    if (c === 'sluice') await this.startSluice();
    else if (c !== 'baseline') await this.startKubeProxy(c === 'kube-proxy-nftables' ? 'nftables' : 'iptables');
    this.active = c;
  }

  /**
   * The seed's step: kube-proxy's DaemonSet gets a nodeSelector no node matches, its pods go (the
   * lab kubelet stops them), and `kube-proxy --cleanup` removes what it wrote in each node's
   * namespace (iptables and nftables), as an operator would before another proxy.
   */
  private async stopKubeProxy(): Promise<void> {
    await this.patchKubeProxy({ nodeSelector: { 'non-calico': 'true' } });
    const deadline = Date.now() + 60_000;
    while (NODES.some((n) => findProcesses(this.ns(n), /kube-proxy --kubeconfig/).length > 0)) {
      if (Date.now() > deadline)
        throw new Error('kube-proxy still runs 60 s after its nodeSelector excluded every node');
      await sleep(250);
    }
    const cp = JSON.parse(fs.readFileSync(path.join(this.runDir, 'kubernetes', 'control-plane.json'), 'utf8')) as {
      binDir: string;
    };
    for (const n of NODES) {
      const r = await run([
        'nsenter',
        `--net=/run/netns/${this.ns(n)}`,
        path.join(cp.binDir, 'kube-proxy'),
        '--cleanup',
      ]);
      if (r.code !== 0) throw new Error(`kube-proxy --cleanup on ${n}: ${r.stderr.trim().slice(-300)}`);
    }
  }

  /** kube-proxy back on every node, in `mode`: one patch of the DaemonSet (the controller makes new pods). */
  private async startKubeProxy(mode: 'iptables' | 'nftables'): Promise<void> {
    const ds = await this.kubectl(['get', 'daemonset', '-n', 'kube-system', 'kube-proxy', '-o', 'json']);
    if (ds.code !== 0) throw new Error(`kubectl get daemonset kube-proxy: ${ds.stderr}`);
    const spec = (
      JSON.parse(ds.stdout) as { spec: { template: { spec: { containers: Array<{ command: string[] }> } } } }
    ).spec.template.spec;
    const command = spec.containers[0].command.map((a) => (a.startsWith('--proxy-mode=') ? `--proxy-mode=${mode}` : a));
    await this.patchKubeProxy({ nodeSelector: { 'non-calico': null }, containers: [{ name: 'kube-proxy', command }] });
    const deadline = Date.now() + 120_000;
    const re = new RegExp(`kube-proxy --kubeconfig.*--proxy-mode=${mode}`);
    while (!NODES.every((n) => findProcesses(this.ns(n), re).length > 0)) {
      if (Date.now() > deadline) throw new Error(`kube-proxy (${mode}) not running on every node within 120 s`);
      await sleep(250);
    }
  }

  private async patchKubeProxy(podSpec: Record<string, unknown>): Promise<void> {
    const patch = JSON.stringify({ spec: { template: { spec: podSpec } } });
    const r = await this.kubectl(['patch', 'daemonset', '-n', 'kube-system', 'kube-proxy', '-p', patch]);
    if (r.code !== 0) throw new Error(`kubectl patch daemonset kube-proxy ${patch}: ${r.stderr}`);
  }

  /**
   * The seed's enable step: bpfEnabled true, then `lab up` starts the agents (stopped by
   * stopSluice), which load their programs, program every Service and remove kube-proxy's rules.
   * `up` waits a limited time for the agents; the caller waits for the dataplane itself.
   */
  private async startSluice(): Promise<void> {
    await this.patchFelix({ bpfEnabled: true });
    const r = await run(this.upArgv([]), { timeoutMs: 300_000, env: labEnv() });
    const deadline = Date.now() + 120_000;
    while (!NODES.every((n) => this.agentAlive(n))) {
      if (Date.now() > deadline)
        throw new Error(`Sluice's agents did not start (lab up exit ${r.code}: ${r.stderr.trim().slice(-300)})`);
      await sleep(250);
    }
  }

  /**
   * The seed's rollback, then the agents stopped: bpfEnabled false makes each agent detach every
   * program and remove its pins; the agent is then ended and the policy table of its standard
   * dataplane removed, so that kube-proxy (or the baseline) runs alone as on a node without Sluice.
   */
  private async stopSluice(): Promise<void> {
    const alive = NODES.filter((n) => this.agentAlive(n));
    if (alive.length === 0) return;
    await this.patchFelix({ bpfEnabled: false });
    const deadline = Date.now() + 60_000;
    while (
      !alive.every((n) => {
        const s = this.agentStatus(n);
        return s?.bpfEnabled === false && !s.mode;
      })
    ) {
      if (Date.now() > deadline) throw new Error('agents still in eBPF mode 60 s after bpfEnabled: false');
      await sleep(250);
    }
    for (const n of alive) process.kill(this.agentStatus(n)!.pid, 'SIGTERM');
    while (alive.some((n) => this.agentAlive(n))) {
      if (Date.now() > deadline + 30_000) throw new Error('agents still run 30 s after SIGTERM');
      await sleep(100);
    }
    for (const n of NODES) {
      const ns = this.ns(n);
      const list = await run(['ip', 'netns', 'exec', ns, 'nft', 'list', 'tables']);
      if (!list.stdout.includes(SLUICE_NFT_TABLE)) continue;
      const r = await run(['ip', 'netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', SLUICE_NFT_TABLE]);
      if (r.code !== 0) throw new Error(`nft delete table inet ${SLUICE_NFT_TABLE} in ${ns}: ${r.stderr}`);
    }
  }

  private agentAlive(node: string): boolean {
    const s = this.agentStatus(node);
    return s !== undefined && alive(s.pid);
  }

  pods(): KubePod[] {
    return JSON.parse(fs.readFileSync(path.join(this.runDir, 'kubernetes', 'pods.json'), 'utf8')) as KubePod[];
  }
  pod(name: string): { ip: string; netns: string } {
    const p = this.pods().find((x) => x.name === name);
    if (!p?.ip || !p.netns) throw new Error(`pod ${name} has no address or namespace yet`);
    return { ip: p.ip, netns: p.netns };
  }

  async clusterIP(service: string, namespace = 'default'): Promise<string> {
    const r = await this.kubectl(['get', 'service', '-n', namespace, service, '-o', 'jsonpath={.spec.clusterIP}']);
    if (r.code !== 0 || !r.stdout.trim()) throw new Error(`no clusterIP for ${service}: ${r.stderr}`);
    return r.stdout.trim();
  }

  /** The probe client (probe-client.ts) in a namespace; one JSON answer. */
  async probe<T>(netns: string, args: (string | number)[], timeoutMs = 120_000): Promise<T> {
    const argv = ['nsenter', `--net=/run/netns/${netns}`, process.execPath, path.join(DIST_BENCH, 'probe-client.js')];
    return parseJson<T>(
      `probe ${args.join(' ')} in ${netns}`,
      await run([...argv, ...args.map(String)], { timeoutMs }),
    );
  }

  /** Several probe clients at once (parallel client processes); their answers. */
  probeParallel<T>(netns: string, procs: number, args: (string | number)[]): Promise<T[]> {
    return Promise.all(Array.from({ length: procs }, () => this.probe<T>(netns, args)));
  }

  /** iperf3 in a namespace; returns Gbit/s and bytes received. */
  async iperf(netns: string, host: string, port: number, seconds: number, streams: number, reverse = false) {
    const argv = ['nsenter', `--net=/run/netns/${netns}`, 'iperf3', '-c', host, '-p', String(port)];
    if (reverse) argv.push('-R');
    const r = await run([...argv, '-t', String(seconds), '-P', String(streams), '-J'], {
      timeoutMs: (seconds + 30) * 1000,
    });
    const j = JSON.parse(r.stdout || '{}') as {
      error?: string;
      end?: { sum_received?: { bits_per_second: number; bytes: number } };
    };
    if (r.code !== 0 || !j.end?.sum_received) throw new Error(`iperf3 to ${host}:${port}: ${j.error ?? r.stderr}`);
    return { gbps: j.end.sum_received.bits_per_second / 1e9, bytes: j.end.sum_received.bytes };
  }

  /** Bulk Services through the API server (bulk-services.ts, run in the control-plane namespace). */
  async bulk(cmd: BulkCommand): Promise<BulkResult> {
    const argv = ['nsenter', `--net=/run/netns/${this.ns('cp')}`, process.execPath];
    const r = await run([...argv, path.join(DIST_BENCH, 'bulk-services.js'), this.kubeconfig, JSON.stringify(cmd)], {
      timeoutMs: 3_600_000,
    });
    return parseJson<BulkResult>(`bulk ${cmd.op}`, r);
  }

  agentStatus(node: string): AgentStatus | undefined {
    try {
      return JSON.parse(fs.readFileSync(path.join(this.runDir, 'agents', `${node}.json`), 'utf8')) as AgentStatus;
    } catch {
      return undefined;
    }
  }

  /** The processes that program Services on a node: Sluice's agent or kube-proxy. */
  proxyPids(node: string): number[] {
    if (this.active === 'sluice') {
      const s = this.agentStatus(node);
      return s ? [s.pid] : [];
    }
    if (this.active === 'baseline') return [];
    return findProcesses(this.ns(node as 'node1'), /kube-proxy --kubeconfig/);
  }

  /** CPU seconds so far of each node's proxy (with children such as iptables-restore or nft). */
  proxyCpu(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const n of NODES) out[n] = this.proxyPids(n).reduce((s, p) => s + (processCpuSeconds(p) ?? 0), 0);
    return out;
  }

  proxyRssMB(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const n of NODES) out[n] = this.proxyPids(n).reduce((s, p) => s + (processRssMB(p) ?? 0), 0);
    return out;
  }

  /** Sluice's NodePort mode (FelixConfiguration bpfExternalServiceMode); waits until both agents run it. */
  /** Merges `spec` into FelixConfiguration `default`. */
  async patchFelix(spec: Record<string, unknown>): Promise<void> {
    const r = await this.kubectl([
      'patch',
      'felixconfigurations.crd.projectcalico.org',
      'default',
      '--type=merge',
      '-p',
      JSON.stringify({ spec }),
    ]);
    if (r.code !== 0) throw new Error(`patch FelixConfiguration ${Object.keys(spec).join(', ')}: ${r.stderr}`);
  }

  async setExternalMode(mode: 'Tunnel' | 'DSR'): Promise<void> {
    await this.patchFelix({ bpfExternalServiceMode: mode });
    const deadline = Date.now() + 60_000;
    while (!NODES.every((n) => this.agentStatus(n)?.dsr === (mode === 'DSR'))) {
      if (Date.now() > deadline) throw new Error(`agents did not switch to ${mode} within 60 s`);
      await sleep(250);
    }
  }

  /**
   * The external client reaches pods straight through their node (the NodePort baseline's path),
   * from a second address of its own (EXT_DIRECT_IP, the route's source), so those flows never
   * share a 5-tuple with the NodePort flows. Both only in the lab's external namespace.
   */
  async routeExtToPods(): Promise<void> {
    const ext = this.ns('ext');
    for (const cmd of [
      ['addr', 'replace', `${EXT_DIRECT_IP}/24`, 'dev', 'eth0'],
      ['route', 'replace', '10.65.2.0/24', 'via', NODE_IPS.node2, 'src', EXT_DIRECT_IP],
    ]) {
      const r = await run(['ip', '-n', ext, ...cmd]);
      if (r.code !== 0) throw new Error(`ip ${cmd.join(' ')} in ${ext}: ${r.stderr}`);
    }
  }

  /** Per-namespace sysctls of the client namespaces: a wide source-port range for the connection tests. */
  async tuneClient(netns: string): Promise<void> {
    await run(['ip', 'netns', 'exec', netns, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000']);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
