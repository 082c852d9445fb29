// One contender's lab for the Service benchmarks: brought up and down with the `sluice lab`
// command (as a user would), every client started inside a lab namespace with nsenter. Nothing
// here sends a packet from the root namespace: the lab's addresses (192.168.77.x, 10.x) only
// exist inside the lab, and from the root namespace they would leave the machine.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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
  dsr: boolean;
  frontends: number;
}

export class BenchLab {
  /** How many times `up` had to start over. */
  upRetries = 0;

  constructor(
    readonly name: string,
    readonly contender: Contender,
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

  /** `sluice lab up` with this contender's proxy; the baseline lab ends with no Service dataplane at all. */
  async up(): Promise<void> {
    const app = path.join('/tmp', `sluice-bench-${this.name}-app.yaml`);
    fs.writeFileSync(app, appYaml());
    const proxy =
      this.contender === 'sluice'
        ? []
        : [
            '--proxy',
            this.contender === 'kube-proxy-nftables' ? 'kube-proxy-nftables' : 'kube-proxy-iptables',
            '--no-sluice',
          ];
    const argv = [process.execPath, SLUICE, 'lab', 'up', '--kubernetes', '--name', this.name, '--nodes', '2'];
    // A second try from scratch: on this shared machine the lab kubelet has been seen to stop
    // probing readiness (pods Running, never Ready), and `up` then fails after its timeout.
    for (let attempt = 1; ; attempt++) {
      const r = await run([...argv, ...proxy, '--timeout', '120', '-f', app], {
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
    if (this.contender === 'baseline') await this.removeKubeProxy();
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
   * The baseline: no proxy at all. The lab installs kube-proxy; its DaemonSet is deleted (the lab
   * kubelet stops the pods) and `kube-proxy --cleanup` removes what it wrote in each node's
   * namespace, as an operator would.
   */
  private async removeKubeProxy(): Promise<void> {
    const d = await this.kubectl(['delete', 'daemonset', '-n', 'kube-system', 'kube-proxy', '--wait=true']);
    if (d.code !== 0) throw new Error(`deleting kube-proxy: ${d.stderr}`);
    const deadline = Date.now() + 60_000;
    while (NODES.some((n) => findProcesses(this.ns(n), /kube-proxy/).length > 0)) {
      if (Date.now() > deadline) throw new Error('kube-proxy still runs 60 s after its DaemonSet was deleted');
      await sleep(500);
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
    if (this.contender === 'sluice') {
      const s = this.agentStatus(node);
      return s ? [s.pid] : [];
    }
    if (this.contender === 'baseline') return [];
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
