// `npm run bench:services [-- --quick]`: Sluice against kube-proxy (iptables and nftables) and a
// no-Service baseline, in ONE real Kubernetes lab on this machine (issue 7): 2 nodes, an echo +
// iperf3 server pod on node2, client pods on node1, the target Service among N bulk Services. The
// Services are written once per size; the lab's Service proxy is then switched for each
// measurement (lab-cluster.ts: the seed's own steps), so every contender is measured on the same
// lab, the same objects, minutes apart.
//
//   --quick                 small sizes (100 and 1,000 Services), fewer repetitions
//   --sizes 100,1000,...    the numbers of Services to measure at
//   --control-services N    the control-plane test's size (default 10,000; 1,000 with --quick)
//   --contenders a,b        a subset of baseline,sluice,kube-proxy-iptables,kube-proxy-nftables
//                           (a fresh run of those only: it replaces the results file)
//   --report-only           rewrite the report from the results JSON, measure nothing
//
// Every figure is quoted against the baseline measured at the same size in the same lab; each
// proxy's measurement also measures the pod-IP path beside the Service path, interleaved.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FIELDS } from '../src/agent/config-fields.js';
import { packageRoot } from '../src/paths.js';
import { BenchLab, ECHO_PORT, IPERF_PORT, stopChildren, type Contender, type Proxy } from './lab-cluster.js';
import { machineCpuSeconds } from './proc-stats.js';
import { writeReport } from './report.js';
import type { ContenderResult, ProgramCost, ServicesBenchResult, Takeover } from './services-result.js';
import {
  measureConnRate,
  measureLatency,
  measurePaths,
  measureRR,
  measureThroughput,
  nodePortPaths,
  sleep,
  waitFor,
  type Sizes,
  type Target,
} from './services-measure.js';

const ALL: Contender[] = ['baseline', 'sluice', 'kube-proxy-iptables', 'kube-proxy-nftables'];
const LAB_NAME = 'bk1';
const ENDPOINTS = 10;
const CONCURRENCY = 16;
/** The sentinel's endpoint port while it must not answer: nothing listens there, the pod resets. */
const DEAD_PORT = 9;

const t0 = Date.now();
function say(line: string): void {
  const s = ((Date.now() - t0) / 1000).toFixed(0).padStart(5);
  console.log(`[${s}s] ${line}`);
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const quick = process.argv.includes('--quick');
const SIZES = (arg('--sizes') ?? (quick ? '100,1000' : '100,1000,10000,30000'))
  .split(',')
  .map(Number)
  .sort((a, b) => a - b);
/** The control-plane test: this many Services x 10 endpoints from nothing, then single-endpoint changes. */
const controlServices = Number(arg('--control-services') ?? (quick ? 1000 : 10_000));
const changes = quick ? 200 : 1000;
const settings: Sizes = quick
  ? { latencyConns: 500, reps: 3, rateSeconds: 2, iperfSeconds: 3, iperfRounds: 2 }
  : { latencyConns: 2000, reps: 5, rateSeconds: 2, iperfSeconds: 4, iperfRounds: 3 };
const contenders = ((arg('--contenders')?.split(',') as Contender[] | undefined) ?? ALL).sort(
  (a, b) => ALL.indexOf(a) - ALL.indexOf(b),
);
for (const c of contenders) if (!ALL.includes(c)) throw new Error(`--contenders: unknown ${c} (${ALL.join(', ')})`);
const proxies = contenders.filter((c): c is Proxy => c !== 'baseline');
const resultFile = path.join(packageRoot, 'bench', 'results', `services-${quick ? 'quick' : 'full'}.json`);
const reportDir = quick
  ? path.join(packageRoot, 'bench', 'results', 'services-quick')
  : path.join(packageRoot, 'docs', 'benchmarks');

function fmtUs(us: number): string {
  return `${(us / 1000).toFixed(3)} ms`;
}

/** The sentinel Service: answering once the dataplane holds every write made before it. */
class Sentinel {
  ip?: string;
  constructor(
    private readonly lab: BenchLab,
    private readonly netns: string,
    private readonly serverIp: string,
  ) {}

  private get target(): Target {
    return { host: this.ip!, port: 80, netns: this.netns };
  }

  /**
   * Makes the sentinel not answer (creating it if needed) and waits until the dataplane agrees:
   * twice, a second apart. A proxy rewriting its rules under load (kube-proxy iptables deleting
   * 10,000 Services) can refuse one connection in passing and then serve the old endpoint again,
   * which once made a batch look programmed before its last write.
   */
  async disarm(): Promise<void> {
    if (!this.ip) this.ip = (await this.lab.bulk({ op: 'sentinel', ip: this.serverIp, port: DEAD_PORT })).clusterIP;
    else await this.lab.bulk({ op: 'sentinel-port', port: DEAD_PORT });
    await waitFor(this.lab, this.target, 'fail', 1800);
    await sleep(1000);
    await waitFor(this.lab, this.target, 'fail', 1800);
  }

  /** Starts waiting (in the client namespace) for the sentinel to answer; resolves with when it did. */
  watch(): Promise<number> {
    return waitFor(this.lab, this.target, 'ok', 3600);
  }
}

/**
 * Runs a batch of API writes and measures until the dataplane has programmed all of it: the
 * sentinel is disarmed first; the batch's process then points it at the echo server right after
 * its last write, while a probe already waits for it to answer.
 */
async function timed(
  lab: BenchLab,
  sentinel: Sentinel,
  what: string,
  cmd: Parameters<BenchLab['bulk']>[0],
): Promise<ProgramCost> {
  await sentinel.disarm();
  const answered = sentinel.watch();
  answered.catch(() => undefined); // awaited below; not unhandled meanwhile
  const cpu0 = lab.proxyCpu();
  const m0 = machineCpuSeconds();
  const w = await lab.bulk({ ...cmd, sentinelPort: ECHO_PORT });
  say(`    ${what}: ${w.writes} writes in ${w.seconds.toFixed(1)} s; waiting for the dataplane...`);
  const end = await answered;
  const cpu1 = lab.proxyCpu();
  const cost: ProgramCost = {
    what,
    // from the first write (the batch's own clock: its process start is not the proxies' time)
    seconds: w.seconds + (end - w.lastWriteAt) / 1000,
    writeSeconds: w.seconds,
    lagSeconds: (end - w.lastWriteAt) / 1000,
    proxyCpuSeconds: Object.fromEntries(Object.keys(cpu1).map((n) => [n, cpu1[n] - (cpu0[n] ?? 0)])),
    machineCpuSeconds: machineCpuSeconds() - m0,
    writes: w.writes,
  };
  const cpu = Object.entries(cost.proxyCpuSeconds)
    .map(([n, s]) => `${n} ${s.toFixed(1)} s`)
    .join(', ');
  say(
    `    ${what}: programmed after ${cost.seconds.toFixed(1)} s (${cost.lagSeconds.toFixed(1)} s after the last write); proxy CPU ${cpu}`,
  );
  return cost;
}

/** The lab and its fixed paths, shared by every contender. */
interface Bench {
  lab: BenchLab;
  result: ServicesBenchResult;
  /** pod -> the target's ClusterIP, from bench-client. */
  svc: Target;
  /** pod -> the server's pod IP, from bench-direct (never the 5-tuple of a Service flow: see appYaml). */
  pod: Target;
  serverIp: string;
  sentinel: Sentinel;
  /** Bulk Services in the API now. */
  have: number;
}

function res(b: Bench, c: Contender): ContenderResult {
  return b.result.contenders.find((r) => r.contender === c)!;
}

/**
 * Makes `c` the lab's proxy and waits until it serves all `n` Services: for a proxy, the time from
 * the switch to the target's first answer and the proxy's CPU until then (its processes are new)
 * are kept as its takeover; the sentinel then proves every earlier write programmed. For the
 * baseline, the target must stop answering: no Service dataplane is left.
 */
async function activate(b: Bench, c: Contender): Promise<void> {
  if (b.lab.active === c) return;
  say(`  switching the lab to ${c}${b.lab.active === 'baseline' ? '' : ` (from ${b.lab.active})`}`);
  const s0 = Date.now();
  await b.lab.switchTo(c);
  if (c === 'baseline') {
    await waitFor(b.lab, b.svc, 'fail', 120);
    say(`    no proxy: the ClusterIP no longer answers (${((Date.now() - s0) / 1000).toFixed(1)} s)`);
    return;
  }
  const at = await waitFor(b.lab, b.svc, 'ok', 1800);
  const t: Takeover = {
    services: b.have,
    seconds: (at - s0) / 1000,
    proxyCpuSeconds: b.lab.proxyCpu(),
    rssMB: b.lab.proxyRssMB(),
  };
  (res(b, c).takeover ??= []).push(t);
  await timed(b.lab, b.sentinel, `after the switch, ${b.have} Services`, {
    op: 'create',
    from: b.have,
    to: b.have,
    endpoints: ENDPOINTS,
    concurrency: CONCURRENCY,
  });
  const cpu = Object.entries(t.proxyCpuSeconds)
    .map(([n, s]) => `${n} ${s.toFixed(1)} s`)
    .join(', ');
  say(`    ${c} serves ${b.have} Services ${t.seconds.toFixed(1)} s after the switch; its CPU so far ${cpu}`);
}

/** A batch of writes under the lab's proxy (Sluice if none serves: the sentinel needs a dataplane). */
async function batch(b: Bench, what: string, cmd: Parameters<BenchLab['bulk']>[0]): Promise<ProgramCost> {
  if (b.lab.active === 'baseline') await activate(b, proxies.includes('sluice') ? 'sluice' : proxies[0]);
  const cost = await timed(b.lab, b.sentinel, what, cmd);
  (res(b, b.lab.active).growth ??= []).push(cost);
  return cost;
}

async function grow(b: Bench, n: number): Promise<void> {
  if (n <= b.have) return;
  await batch(b, `${b.have} -> ${n} Services`, {
    op: 'create',
    from: b.have,
    to: n,
    endpoints: ENDPOINTS,
    concurrency: CONCURRENCY,
  });
  b.have = n;
}

async function removeAll(b: Bench): Promise<void> {
  if (b.have === 0) return;
  await batch(b, `delete ${b.have} Services`, { op: 'delete', from: 0, to: b.have, concurrency: CONCURRENCY });
  b.have = 0;
}

/** The contenders in the order to measure them: the lab's current one first (no switch), then on. */
function rotation(b: Bench): Contender[] {
  const i = Math.max(0, contenders.indexOf(b.lab.active));
  return [...contenders.slice(i), ...contenders.slice(0, i)];
}

/**
 * Every contender at `n` Services (those `include` keeps); at the largest size also the throughput
 * and NodePort paths.
 */
async function measureAll(
  b: Bench,
  n: number,
  largest: boolean,
  include: (c: Contender) => boolean = () => true,
): Promise<void> {
  for (const c of rotation(b).filter(include)) {
    const r = res(b, c);
    await phase(r, `at ${n} Services`, async () => {
      await activate(b, c);
      if (c === 'baseline') await measureBaseline(b, r, n, largest);
      else await measureProxy(b, r, n, largest);
    });
  }
}

async function measureProxy(b: Bench, r: ContenderResult, n: number, paths: boolean): Promise<void> {
  await measureAt(b, r, n);
  if (!paths) return;
  await phase(r, 'paths', () => measureServicePaths(b, r));
  await phase(r, 'NodePort', () => measureNodePort(b, r));
}

async function measureBaseline(b: Bench, r: ContenderResult, n: number, largest: boolean): Promise<void> {
  say(`  baseline at ${n} Services: pod -> pod IP latency, connection rate, request/response`);
  const [latency] = await measureLatency(b.lab, [b.pod], settings);
  const [connRate] = await measureConnRate(b.lab, [b.pod], settings);
  const [rr] = await measureRR(b.lab, [b.pod], settings);
  say(
    `    p50 ${fmtUs(latency.p50.median)} p99 ${fmtUs(latency.p99.median)}; ${connRate.median.toFixed(0)} conn/s; ${rr.median.toFixed(0)} req/s`,
  );
  (r.baselineScale ??= []).push({ services: n, latency, connRate, rr });
  if (!largest) return;
  say('  baseline: pod -> pod IP throughput (iperf3, 1 and 4 streams)');
  const [paths] = await measurePaths(b.lab, [{ echo: b.pod, iperf: { ...b.pod, port: IPERF_PORT } }], settings);
  say(
    `    ${paths.throughput1.gbps.median.toFixed(2)} / ${paths.throughput4.gbps.median.toFixed(2)} Gbit/s; ${paths.throughput1.cpuSecondsPerGB.median.toFixed(2)} CPU s/GB`,
  );
  say('  baseline: external client -> pod IP through node2');
  const { direct } = nodePortPaths(b.lab.ns('ext'), b.serverIp);
  const [ext] = await measurePaths(b.lab, [direct], settings);
  const [extReverse] = await measureThroughput(b.lab, [{ ...direct.iperf, reverse: true }], 1, settings);
  say(
    `    p50 ${fmtUs(ext.latency.p50.median)}; ${ext.throughput1.gbps.median.toFixed(2)} Gbit/s, ${extReverse.gbps.median.toFixed(2)} Gbit/s back (-R)`,
  );
  r.baseline = {
    services: n,
    latency,
    connRate,
    rr,
    throughput1: paths.throughput1,
    throughput4: paths.throughput4,
    extDirect: { ...ext, reverse1: extReverse },
  };
}

async function measureAt(b: Bench, r: ContenderResult, n: number): Promise<void> {
  const { lab, svc, pod } = b;
  say(`  ${r.contender} at ${n} Services: first-packet latency (ClusterIP and pod IP, interleaved)`);
  const [lc, lp] = await measureLatency(lab, [svc, pod], settings);
  say(
    `    ClusterIP p50 ${fmtUs(lc.p50.median)} p90 ${fmtUs(lc.p90.median)} p99 ${fmtUs(lc.p99.median)}; pod IP p50 ${fmtUs(lp.p50.median)} p99 ${fmtUs(lp.p99.median)}`,
  );
  say(`  ${r.contender} at ${n} Services: connection rate and request/response rate`);
  const [cc, cp] = await measureConnRate(lab, [svc, pod], settings);
  const [rc, rp] = await measureRR(lab, [svc, pod], settings);
  say(
    `    ClusterIP ${cc.median.toFixed(0)} conn/s, ${rc.median.toFixed(0)} req/s; pod IP ${cp.median.toFixed(0)} conn/s, ${rp.median.toFixed(0)} req/s`,
  );
  r.scale.push({
    services: n,
    clusterIp: lc,
    podIp: lp,
    connRate: { clusterIp: cc, podIp: cp },
    rr: { clusterIp: rc, podIp: rp },
    proxyRssMB: lab.proxyRssMB(),
  });
}

/**
 * The control-plane test, for each proxy in turn: with no bulk Service left, the proxy is made
 * the lab's, then `controlServices` x 10 endpoints are written from nothing and `changes`
 * single-endpoint changes after that. When that size is measured, the proxy is measured there
 * and then, on the Services it has just programmed itself (no restart at scale: kube-proxy
 * iptables needed more than 20 minutes of iptables-restore to start with 10,000 Services here),
 * with its paths and NodePort too. Every proxy but the last deletes the Services again.
 */
async function controlPlane(b: Bench, measure: boolean, paths: (c: Proxy) => boolean): Promise<void> {
  await removeAll(b);
  // Sluice last: the larger sizes are grown under it, the cheapest proxy to keep in sync
  const order = [
    ...proxies.filter((c) => c === b.lab.active && c !== 'sluice'),
    ...proxies.filter((c) => c !== b.lab.active && c !== 'sluice'),
    ...proxies.filter((c) => c === 'sluice'),
  ];
  for (const [i, c] of order.entries()) {
    const r = res(b, c);
    await phase(r, 'control plane', async () => {
      await activate(b, c);
      say(`  ${c}: control plane, ${controlServices} Services x ${ENDPOINTS} endpoints from nothing`);
      const create = await timed(b.lab, b.sentinel, `0 -> ${controlServices} Services`, {
        op: 'create',
        from: 0,
        to: controlServices,
        endpoints: ENDPOINTS,
        concurrency: CONCURRENCY,
      });
      b.have = controlServices;
      say(`  ${c}: control plane, ${changes} single-endpoint changes`);
      const changeCost = await timed(b.lab, b.sentinel, `${changes} endpoint changes`, {
        op: 'change',
        count: changes,
        services: controlServices,
        endpoints: ENDPOINTS,
        concurrency: CONCURRENCY,
      });
      r.controlPlane = { create, changes: changeCost, rssMB: b.lab.proxyRssMB() };
      if (measure) await measureProxy(b, r, controlServices, paths(c));
    });
    if (i < order.length - 1) await removeAll(b);
  }
  // a proxy whose test failed half-way may have left the count unknown: make it known
  if (b.have !== controlServices) await grow(b, controlServices);
}

/** Saves the results after each size: an interrupted run keeps what it measured. */
async function runAll(b: Bench, save: () => void): Promise<void> {
  const sizes = SIZES;
  const largest = sizes[sizes.length - 1];
  for (const n of sizes.filter((x) => x < controlServices)) {
    await grow(b, n);
    await measureAll(b, n, n === largest);
    save();
  }
  const atControl = sizes.includes(controlServices);
  const beyond = sizes.some((x) => x > controlServices);
  // The paths are measured at the largest size a proxy reaches. kube-proxy iptables stops at the
  // control-plane size: a later size would need it restarted on all the Services (see above), or
  // grown under it, which doubles the time the API server takes to write them.
  const stopsHere = (c: Contender): boolean => !beyond || c === 'kube-proxy-iptables';
  if (proxies.length > 0) await controlPlane(b, atControl, stopsHere);
  if (atControl && contenders.includes('baseline')) {
    const r = res(b, 'baseline');
    await phase(r, `at ${controlServices} Services`, async () => {
      await activate(b, 'baseline');
      await measureBaseline(b, r, controlServices, !beyond);
    });
  }
  save();
  for (const n of sizes.filter((x) => x > controlServices)) {
    if (proxies.includes('sluice') && b.lab.active !== 'sluice') await activate(b, 'sluice');
    await grow(b, n);
    await measureAll(b, n, n === largest, (c) => !stopsHere(c));
    save();
  }
}

/** A measurement that may fail without losing the others: its error is kept in the results. */
async function phase(res: ContenderResult, what: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    const msg = `${what}: ${(err as Error).message}`;
    (res.errors ??= []).push(msg);
    say(`  ${res.contender}: ${msg}`);
  }
}

async function measureServicePaths(b: Bench, r: ContenderResult): Promise<void> {
  const { svc, pod } = b;
  say(`  ${r.contender} at ${b.have} Services: pod -> ClusterIP and pod -> pod IP, latency and iperf3`);
  const [pc, pp] = await measurePaths(
    b.lab,
    [
      { echo: svc, iperf: { ...svc, port: IPERF_PORT } },
      { echo: pod, iperf: { ...pod, port: IPERF_PORT } },
    ],
    settings,
  );
  r.clusterIpPath = { services: b.have, ...pc };
  r.podIpPath = { services: b.have, ...pp };
  say(
    `    ClusterIP ${pc.throughput1.gbps.median.toFixed(2)} / ${pc.throughput4.gbps.median.toFixed(2)} Gbit/s (1/4 streams), ${pc.throughput1.cpuSecondsPerGB.median.toFixed(2)} CPU s/GB; pod IP ${pp.throughput1.gbps.median.toFixed(2)} / ${pp.throughput4.gbps.median.toFixed(2)} Gbit/s`,
  );
}

async function measureNodePort(b: Bench, r: ContenderResult): Promise<void> {
  const { lab } = b;
  const np = nodePortPaths(lab.ns('ext'), b.serverIp);
  const modes = r.contender === 'sluice' ? ['Tunnel', 'DSR'] : [r.contender.replace('kube-proxy-', 'kube-proxy ')];
  try {
    for (const mode of modes) {
      if (mode === 'Tunnel' || mode === 'DSR') await lab.setExternalMode(mode);
      await waitFor(lab, np.nodePort.echo, 'ok', 60);
      say(`  ${r.contender}: NodePort from the external client through node1 (${mode}), and straight to the pod`);
      const [n, d] = await measurePaths(lab, [np.nodePort, np.direct], settings);
      // the server's data back to the client: with DSR it leaves node2 straight, without node1
      const [nr, dr] = await measureThroughput(
        lab,
        [
          { ...np.nodePort.iperf, reverse: true },
          { ...np.direct.iperf, reverse: true },
        ],
        1,
        settings,
      );
      r.nodePort.push({ mode, services: b.have, ...n, reverse1: nr });
      r.extDirect ??= { services: b.have, ...d, reverse1: dr };
      say(
        `    NodePort p50 ${fmtUs(n.latency.p50.median)} p99 ${fmtUs(n.latency.p99.median)}, ${n.throughput1.gbps.median.toFixed(2)} Gbit/s, ${nr.gbps.median.toFixed(2)} back (-R); direct p50 ${fmtUs(d.latency.p50.median)}, ${d.throughput1.gbps.median.toFixed(2)} Gbit/s, ${dr.gbps.median.toFixed(2)} back`,
      );
    }
  } finally {
    // the next start of Sluice in this lab runs the default mode again
    if (r.contender === 'sluice') await lab.setExternalMode('Tunnel');
  }
}

/** The commit measured, and the files that differed from it (the datapath and agent as run). */
function gitState(): { head: string; dirty: string[] } | undefined {
  try {
    const git = (args: string[]): string => execFileSync('git', args, { cwd: packageRoot, encoding: 'utf8' }).trim();
    const dirty = git(['status', '--porcelain', '--', 'src', 'bpf', 'bin'])
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3));
    return { head: git(['rev-parse', '--short', 'HEAD']), dirty };
  } catch {
    return undefined;
  }
}

function readResult(): ServicesBenchResult | undefined {
  try {
    return JSON.parse(fs.readFileSync(resultFile, 'utf8')) as ServicesBenchResult;
  } catch {
    return undefined;
  }
}

let current: BenchLab | undefined;
/** Set by SIGINT/SIGTERM: the run's results and report are left as they were. */
let interrupted = false;
async function onSignal(sig: string): Promise<void> {
  interrupted = true;
  // taken now: the run's own error path, woken by the children's end, forgets it meanwhile
  const lab = current;
  say(`${sig}: removing lab ${lab?.name ?? '(none)'}`);
  stopChildren();
  await new Promise((r) => setTimeout(r, 3000));
  await lab?.down();
  process.exit(130);
}

async function main(): Promise<void> {
  if (process.argv.includes('--report-only')) {
    const r = readResult();
    if (!r) throw new Error(`no results in ${resultFile}`);
    for (const f of writeReport(r, reportDir)) console.log(`wrote ${path.relative(process.cwd(), f)}`);
    return;
  }
  process.once('SIGINT', (s) => void onSignal(s));
  process.once('SIGTERM', (s) => void onSignal(s));
  const cpus = os.cpus();
  const lab = new BenchLab(LAB_NAME, say);
  const result: ServicesBenchResult = {
    date: new Date().toISOString(),
    quick,
    method: 'one-lab',
    measuredAfterControlPlane: true,
    machine: {
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? '?',
      memoryGB: Math.round(os.totalmem() / 2 ** 30),
      kernel: os.release(),
      node: process.version,
    },
    sizes: SIZES,
    endpointsPerService: ENDPOINTS,
    controlPlaneServices: controlServices,
    changes,
    settings: { ...settings },
    contenders: contenders.map((c) => ({
      contender: c,
      lab: lab.name,
      loadAverageAtStart: [],
      scale: [],
      nodePort: [],
    })),
    durationSeconds: 0,
    notes: [],
    git: gitState(),
  };
  const save = (): void => {
    result.durationSeconds = (Date.now() - t0) / 1000;
    fs.mkdirSync(path.dirname(resultFile), { recursive: true });
    fs.writeFileSync(resultFile, JSON.stringify(result, null, 2) + '\n');
  };
  say(
    `sluice bench:services (${quick ? 'quick' : 'full'}) on ${os.release()}, ${cpus.length} CPUs; one lab, contenders ${contenders.join(', ')}; sizes ${SIZES.join(', ')}; load average ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}`,
  );
  current = lab;
  try {
    await lab.down(); // a lab of that name left by an interrupted run
    say(`lab ${lab.name} up`);
    await lab.up();
    for (const r of result.contenders) {
      r.loadAverageAtStart = os.loadavg();
      r.upRetries = lab.upRetries || undefined;
    }
    const client = lab.pod('bench-client');
    const direct = lab.pod('bench-direct');
    const server = lab.pod('bench-server');
    for (const ns of [client.netns, direct.netns, lab.ns('ext')]) await lab.tuneClient(ns);
    await lab.routeExtToPods();
    const b: Bench = {
      lab,
      result,
      svc: { host: await lab.clusterIP('bench-target'), port: 80, netns: client.netns },
      pod: { host: server.ip, port: ECHO_PORT, netns: direct.netns },
      serverIp: server.ip,
      sentinel: new Sentinel(lab, client.netns, server.ip),
      have: 0,
    };
    await waitFor(lab, b.pod, 'ok', 60);
    const largest = Math.max(...SIZES, controlServices);
    if (proxies.includes('sluice') && largest * ENDPOINTS > FIELDS.bpfMapSizeNATBackend.default / 2) {
      // As an operator of Calico's eBPF mode would for a cluster this size: the default backend map
      // (262,144 entries) cannot hold 30,000 Services x 10 endpoints. Set before the agents start.
      const size = 2 ** Math.ceil(Math.log2(largest * ENDPOINTS * 2));
      say(
        `  sluice: bpfMapSizeNATBackend ${size.toLocaleString('en-US')} for ${largest.toLocaleString('en-US')} Services`,
      );
      await lab.patchFelix({ bpfMapSizeNATBackend: size });
      res(b, 'sluice').natBackendMapSize = size;
    }
    await runAll(b, save);
  } catch (err) {
    const msg = (err as Error).message;
    say(`FAILED: ${msg}`);
    for (const r of result.contenders) r.error ??= msg;
  } finally {
    say(`lab ${lab.name} down`);
    if (!interrupted) await lab.down();
    current = undefined;
  }
  if (interrupted) return;
  save();
  say(`results: ${path.relative(process.cwd(), resultFile)}`);
  for (const f of writeReport(result, reportDir)) say(`report: ${path.relative(process.cwd(), f)}`);
  if (result.contenders.some((c) => c.error || c.errors?.length)) process.exitCode = 1;
}

await main();
