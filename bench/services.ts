// `npm run bench:services [-- --quick]`: Sluice against kube-proxy (iptables and nftables) and a
// no-Service baseline, in real Kubernetes labs on this machine (issue 7). One lab per contender,
// one after the other, the same shape and the same traffic: 2 nodes, an echo + iperf3 server pod
// on node2, a client pod on node1, the target Service among N bulk Services.
//
//   --quick                 small sizes (100 and 1,000 Services), fewer repetitions
//   --sizes 100,1000,...    the numbers of Services to measure at
//   --sizes-for C=100,...   other sizes for contender C (the API server of this machine takes
//                           about 50-80 writes/s, so 30,000 Services cost a lab 15 minutes)
//   --control-services N    the control-plane test's size (default 10,000; 1,000 with --quick)
//   --contenders a,b        a subset of baseline,sluice,kube-proxy-iptables,kube-proxy-nftables
//   --report-only           rewrite the report from the results JSON, measure nothing
//
// Every figure is quoted against the baseline lab of the same run (the machine is shared and
// noisy); each lab also measures its own pod-IP path beside the Service path, interleaved.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FIELDS } from '../src/agent/config-fields.js';
import { packageRoot } from '../src/paths.js';
import { BenchLab, ECHO_PORT, IPERF_PORT, stopChildren, type Contender } from './lab-cluster.js';
import { machineCpuSeconds } from './proc-stats.js';
import { writeReport } from './report.js';
import type { ContenderResult, ProgramCost, ServicesBenchResult } from './services-result.js';
import {
  measureConnRate,
  measureLatency,
  measurePaths,
  measureRR,
  measureThroughput,
  nodePortPaths,
  waitFor,
  type Sizes,
  type Target,
} from './services-measure.js';

const ALL: Contender[] = ['baseline', 'sluice', 'kube-proxy-iptables', 'kube-proxy-nftables'];
const LAB_NAMES: Record<Contender, string> = {
  baseline: 'bk1',
  sluice: 'bk2',
  'kube-proxy-iptables': 'bk3',
  'kube-proxy-nftables': 'bk1',
};
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
const SIZES = (arg('--sizes') ?? (quick ? '100,1000' : '100,1000,10000,30000')).split(',').map(Number);
/** `--sizes-for CONTENDER=100,1000,...` (repeatable): other sizes for one contender. */
const sizesFor = new Map<string, number[]>(
  process.argv.flatMap((a, i) => {
    if (a !== '--sizes-for') return [];
    const [c, list] = (process.argv[i + 1] ?? '').split('=');
    return [[c, list.split(',').map(Number)] as [string, number[]]];
  }),
);
/** The control-plane test: this many Services x 10 endpoints from nothing, then single-endpoint changes. */
const controlServices = Number(arg('--control-services') ?? (quick ? 1000 : 10_000));
const changes = quick ? 200 : 1000;
const settings: Sizes = quick
  ? { latencyConns: 500, reps: 3, rateSeconds: 2, iperfSeconds: 3, iperfRounds: 2 }
  : { latencyConns: 2000, reps: 5, rateSeconds: 2, iperfSeconds: 4, iperfRounds: 3 };
const contenders = (arg('--contenders')?.split(',') as Contender[] | undefined) ?? ALL;
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

  /** Makes the sentinel not answer (creating it if needed) and waits until the dataplane agrees. */
  async disarm(): Promise<void> {
    if (!this.ip) this.ip = (await this.lab.bulk({ op: 'sentinel', ip: this.serverIp, port: DEAD_PORT })).clusterIP;
    else await this.lab.bulk({ op: 'sentinel-port', port: DEAD_PORT });
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

async function runBaseline(lab: BenchLab, res: ContenderResult): Promise<void> {
  const client = lab.pod('bench-client');
  const server = lab.pod('bench-server');
  await lab.tuneClient(client.netns);
  await lab.tuneClient(lab.ns('ext'));
  const pod: Target = { host: server.ip, port: ECHO_PORT, netns: client.netns };
  const podIperf: Target = { host: server.ip, port: IPERF_PORT, netns: client.netns };
  await waitFor(lab, pod, 'ok', 60);
  say('  baseline: pod -> pod IP latency, connection rate, request/response');
  const [latency] = await measureLatency(lab, [pod], settings);
  const [connRate] = await measureConnRate(lab, [pod], settings);
  const [rr] = await measureRR(lab, [pod], settings);
  say(
    `    p50 ${fmtUs(latency.p50.median)} p99 ${fmtUs(latency.p99.median)}; ${connRate.median.toFixed(0)} conn/s; ${rr.median.toFixed(0)} req/s`,
  );
  say('  baseline: pod -> pod IP throughput (iperf3, 1 and 4 streams)');
  const [paths] = await measurePaths(lab, [{ echo: pod, iperf: podIperf }], settings);
  say(
    `    ${paths.throughput1.gbps.median.toFixed(2)} / ${paths.throughput4.gbps.median.toFixed(2)} Gbit/s; ${paths.throughput1.cpuSecondsPerGB.median.toFixed(2)} CPU s/GB`,
  );
  say('  baseline: external client -> pod IP through node2');
  await lab.routeExtToPods();
  const { direct } = nodePortPaths(lab.ns('ext'), server.ip);
  const [ext] = await measurePaths(lab, [direct], settings);
  const [extReverse] = await measureThroughput(lab, [{ ...direct.iperf, reverse: true }], 1, settings);
  say(
    `    p50 ${fmtUs(ext.latency.p50.median)}; ${ext.throughput1.gbps.median.toFixed(2)} Gbit/s, ${extReverse.gbps.median.toFixed(2)} Gbit/s back (-R)`,
  );
  res.baseline = {
    latency,
    connRate,
    rr,
    throughput1: paths.throughput1,
    throughput4: paths.throughput4,
    extDirect: { ...ext, reverse1: extReverse },
  };
}

async function runProxy(lab: BenchLab, res: ContenderResult): Promise<void> {
  const sizes = sizesFor.get(res.contender) ?? SIZES;
  const client = lab.pod('bench-client');
  const direct = lab.pod('bench-direct');
  const server = lab.pod('bench-server');
  for (const ns of [client.netns, direct.netns, lab.ns('ext')]) await lab.tuneClient(ns);
  const vip = await lab.clusterIP('bench-target');
  const svc: Target = { host: vip, port: 80, netns: client.netns };
  // the pod-IP path from another client pod: see appYaml
  const pod: Target = { host: server.ip, port: ECHO_PORT, netns: direct.netns };
  await waitFor(lab, svc, 'ok', 180);
  await waitFor(lab, pod, 'ok', 60);
  const sentinel = new Sentinel(lab, client.netns, server.ip);
  const largestSize = Math.max(...sizes, controlServices);
  if (res.contender === 'sluice' && largestSize * ENDPOINTS > FIELDS.bpfMapSizeNATBackend.default / 2) {
    // As an operator of Calico's eBPF mode would for a cluster this size: the default backend map
    // (262,144 entries) cannot hold 30,000 Services x 10 endpoints. Set while the maps are empty.
    const size = 2 ** Math.ceil(Math.log2(largestSize * ENDPOINTS * 2));
    say(
      `  sluice: bpfMapSizeNATBackend ${size.toLocaleString('en-US')} for ${largestSize.toLocaleString('en-US')} Services`,
    );
    await lab.patchFelix({ bpfMapSizeNATBackend: size });
    res.natBackendMapSize = size;
  }
  let have = 0;
  const growth: ProgramCost[] = [];
  const grow = async (n: number): Promise<void> => {
    if (n <= have) return;
    const from = have;
    growth.push(
      await timed(lab, sentinel, `${from} -> ${n} Services`, {
        op: 'create',
        from,
        to: n,
        endpoints: ENDPOINTS,
        concurrency: CONCURRENCY,
      }),
    );
    have = n;
  };
  const measureAt = async (n: number): Promise<void> => {
    say(`  ${res.contender} at ${n} Services: first-packet latency (ClusterIP and pod IP, interleaved)`);
    const [lc, lp] = await measureLatency(lab, [svc, pod], settings);
    say(
      `    ClusterIP p50 ${fmtUs(lc.p50.median)} p90 ${fmtUs(lc.p90.median)} p99 ${fmtUs(lc.p99.median)}; pod IP p50 ${fmtUs(lp.p50.median)} p99 ${fmtUs(lp.p99.median)}`,
    );
    say(`  ${res.contender} at ${n} Services: connection rate and request/response rate`);
    const [cc, cp] = await measureConnRate(lab, [svc, pod], settings);
    const [rc, rp] = await measureRR(lab, [svc, pod], settings);
    say(
      `    ClusterIP ${cc.median.toFixed(0)} conn/s, ${rc.median.toFixed(0)} req/s; pod IP ${cp.median.toFixed(0)} conn/s, ${rp.median.toFixed(0)} req/s`,
    );
    res.scale.push({
      services: n,
      clusterIp: lc,
      podIp: lp,
      connRate: { clusterIp: cc, podIp: cp },
      rr: { clusterIp: rc, podIp: rp },
      proxyRssMB: lab.proxyRssMB(),
    });
  };

  for (const n of sizes.filter((x) => x < controlServices)) {
    await grow(n);
    await phase(res, `at ${n} Services`, () => measureAt(n));
  }
  let removal: ProgramCost | undefined;
  if (have > 0) {
    const n = have;
    removal = await timed(lab, sentinel, `delete ${n} Services`, {
      op: 'delete',
      from: 0,
      to: n,
      concurrency: CONCURRENCY,
    });
    growth.push(removal);
    have = 0;
  }
  say(`  ${res.contender}: control plane, ${controlServices} Services x ${ENDPOINTS} endpoints from nothing`);
  const create = await timed(lab, sentinel, `0 -> ${controlServices} Services`, {
    op: 'create',
    from: 0,
    to: controlServices,
    endpoints: ENDPOINTS,
    concurrency: CONCURRENCY,
  });
  have = controlServices;
  say(`  ${res.contender}: control plane, ${changes} single-endpoint changes`);
  const changeCost = await timed(lab, sentinel, `${changes} endpoint changes`, {
    op: 'change',
    count: changes,
    services: controlServices,
    endpoints: ENDPOINTS,
    concurrency: CONCURRENCY,
  });
  res.controlPlane = { create, changes: changeCost, rssMB: lab.proxyRssMB() };
  res.growth = growth;
  if (sizes.includes(controlServices))
    await phase(res, `at ${controlServices} Services`, () => measureAt(controlServices));
  for (const n of sizes.filter((x) => x > controlServices)) {
    await grow(n);
    await phase(res, `at ${n} Services`, () => measureAt(n));
  }

  await phase(res, 'paths', () => measureServicePaths(lab, res, have, svc, pod));
  await phase(res, 'NodePort', () => measureNodePort(lab, res, have, server.ip));
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

async function measureServicePaths(
  lab: BenchLab,
  res: ContenderResult,
  largest: number,
  svc: Target,
  pod: Target,
): Promise<void> {
  say(`  ${res.contender} at ${largest} Services: pod -> ClusterIP and pod -> pod IP, latency and iperf3`);
  const [pc, pp] = await measurePaths(
    lab,
    [
      { echo: svc, iperf: { ...svc, port: IPERF_PORT } },
      { echo: pod, iperf: { ...pod, port: IPERF_PORT } },
    ],
    settings,
  );
  res.clusterIpPath = { services: largest, ...pc };
  res.podIpPath = { services: largest, ...pp };
  say(
    `    ClusterIP ${pc.throughput1.gbps.median.toFixed(2)} / ${pc.throughput4.gbps.median.toFixed(2)} Gbit/s (1/4 streams), ${pc.throughput1.cpuSecondsPerGB.median.toFixed(2)} CPU s/GB; pod IP ${pp.throughput1.gbps.median.toFixed(2)} / ${pp.throughput4.gbps.median.toFixed(2)} Gbit/s`,
  );
}

async function measureNodePort(lab: BenchLab, res: ContenderResult, largest: number, serverIp: string): Promise<void> {
  await lab.routeExtToPods();
  const np = nodePortPaths(lab.ns('ext'), serverIp);
  const modes = res.contender === 'sluice' ? ['Tunnel', 'DSR'] : [res.contender.replace('kube-proxy-', 'kube-proxy ')];
  for (const mode of modes) {
    if (mode === 'Tunnel' || mode === 'DSR') await lab.setExternalMode(mode);
    await waitFor(lab, np.nodePort.echo, 'ok', 60);
    say(`  ${res.contender}: NodePort from the external client through node1 (${mode}), and straight to the pod`);
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
    res.nodePort.push({ mode, services: largest, ...n, reverse1: nr });
    res.extDirect ??= { services: largest, ...d, reverse1: dr };
    say(
      `    NodePort p50 ${fmtUs(n.latency.p50.median)} p99 ${fmtUs(n.latency.p99.median)}, ${n.throughput1.gbps.median.toFixed(2)} Gbit/s, ${nr.gbps.median.toFixed(2)} back (-R); direct p50 ${fmtUs(d.latency.p50.median)}, ${d.throughput1.gbps.median.toFixed(2)} Gbit/s, ${dr.gbps.median.toFixed(2)} back`,
    );
  }
}

/**
 * A partial run whose contender failed keeps that contender's earlier figures (a failed rerun
 * measured nothing that replaces them) and says so, instead of the note of a second run.
 */
function keepEarlier(
  result: ServicesBenchResult,
  earlier: ServicesBenchResult | undefined,
  c: Contender,
  error: string,
): void {
  const before = earlier?.contenders.find((e) => e.contender === c);
  if (!earlier || !before) return;
  result.contenders = result.contenders.map((e) => (e.contender === c ? before : e));
  result.sizesFor = { ...result.sizesFor };
  if (earlier.sizesFor?.[c]) result.sizesFor[c] = earlier.sizesFor[c];
  else delete result.sizesFor[c];
  const second = `${c} was measured in a second run`;
  result.notes = [
    ...result.notes.filter((n) => !n.startsWith(second)),
    ...earlier.notes.filter((n) => n.startsWith(second)),
    `A rerun of ${c} failed (${error.split('\n')[0]}); its figures are those of the earlier run.`,
  ];
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
  say(`${sig}: removing lab ${current?.name ?? '(none)'}`);
  stopChildren();
  await new Promise((r) => setTimeout(r, 3000));
  await current?.down();
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
  const result: ServicesBenchResult = {
    date: new Date().toISOString(),
    quick,
    machine: {
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? '?',
      memoryGB: Math.round(os.totalmem() / 2 ** 30),
      kernel: os.release(),
      node: process.version,
    },
    sizes: SIZES,
    sizesFor: Object.fromEntries(sizesFor),
    endpointsPerService: ENDPOINTS,
    controlPlaneServices: controlServices,
    changes,
    settings: { ...settings },
    contenders: [],
    durationSeconds: 0,
    notes: [],
    git: gitState(),
  };
  // --contenders: a partial run replaces those contenders in the results of an earlier run (same mode)
  const earlier = process.argv.includes('--contenders') ? readResult() : undefined;
  if (earlier) {
    // the earlier run's settings stay the run's; this run's contenders say how they differ
    const kept = earlier.contenders.filter((c) => !contenders.includes(c.contender));
    // an earlier partial run's note about a contender measured again now no longer holds
    const notes = earlier.notes.filter(
      (n) =>
        !contenders.some(
          (c) => n.startsWith(`${c} was measured in a second run`) || n.startsWith(`A rerun of ${c} failed`),
        ),
    );
    Object.assign(result, { ...earlier, contenders: kept, notes });
    result.sizesFor = { ...earlier.sizesFor };
    const head = gitState()?.head;
    for (const c of contenders) {
      result.sizesFor[c] = sizesFor.get(c) ?? SIZES;
      result.notes.push(
        `${c} was measured in a second run started ${new Date().toISOString().slice(11, 16)} UTC` +
          `${head ? ` at commit ${head}` : ''} ` +
          `(sizes ${(sizesFor.get(c) ?? SIZES).join(', ')}; control-plane test at ${controlServices.toLocaleString('en-US')} Services).`,
      );
    }
  }
  const earlierSeconds = earlier?.durationSeconds ?? 0;
  say(
    `sluice bench:services (${quick ? 'quick' : 'full'}) on ${os.release()}, ${cpus.length} CPUs; contenders ${contenders.join(', ')}; sizes ${SIZES.join(', ')}` +
      [...sizesFor].map(([c, l]) => `; ${c}: ${l.join(', ')}`).join(''),
  );
  for (const c of contenders) {
    const lab = new BenchLab(LAB_NAMES[c], c, say);
    current = lab;
    const res: ContenderResult = {
      contender: c,
      lab: lab.name,
      loadAverageAtStart: os.loadavg(),
      scale: [],
      nodePort: [],
    };
    result.contenders.push(res);
    result.contenders.sort((a, b) => ALL.indexOf(a.contender) - ALL.indexOf(b.contender));
    say(`${c}: lab ${lab.name} up (load average ${res.loadAverageAtStart.map((x) => x.toFixed(1)).join(' ')})`);
    try {
      await lab.down(); // a lab of that name left by an interrupted run
      await lab.up();
      res.upRetries = lab.upRetries;
      if (c === 'baseline') await runBaseline(lab, res);
      else await runProxy(lab, res);
    } catch (err) {
      res.error = (err as Error).message;
      say(`${c}: FAILED: ${res.error}`);
      keepEarlier(result, earlier, c, res.error);
    } finally {
      say(`${c}: lab ${lab.name} down`);
      await lab.down();
      current = undefined;
    }
    if (interrupted) return;
    // written after every contender: an interrupted run keeps what it measured
    result.durationSeconds = earlierSeconds + (Date.now() - t0) / 1000;
    fs.mkdirSync(path.dirname(resultFile), { recursive: true });
    fs.writeFileSync(resultFile, JSON.stringify(result, null, 2) + '\n');
  }
  say(`results: ${path.relative(process.cwd(), resultFile)}`);
  for (const f of writeReport(result, reportDir)) say(`report: ${path.relative(process.cwd(), f)}`);
  if (result.contenders.some((c) => c.error)) process.exitCode = 1;
}

await main();
