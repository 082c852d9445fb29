// The measurements of the Service benchmarks, each against a lab made by lab-cluster.ts. Every
// repetition measures the contender's path and the pod-IP path of the same lab one after the
// other, so that a burst of load on the shared machine hits both.
import { dist, percentile, type Dist } from './stats.js';
import { machineCpuSeconds } from './proc-stats.js';
import { BenchLab, ECHO_PORT, IPERF_PORT, NODE_IPS, NODEPORT_ECHO, NODEPORT_IPERF, sleep } from './lab-cluster.js';

export interface Sizes {
  /** Sequential fresh connections per latency repetition. */
  latencyConns: number;
  reps: number;
  /** Seconds per connection-rate and request/response repetition. */
  rateSeconds: number;
  iperfSeconds: number;
  iperfRounds: number;
}

export interface Latency {
  p50: Dist;
  p90: Dist;
  p99: Dist;
  /** Connections that failed, over all repetitions. */
  errors: number;
}

export interface Target {
  host: string;
  port: number;
  /** The client's namespace. */
  netns: string;
  /** iperf3 -R: the server sends, the client receives (the return path, where DSR differs). */
  reverse?: boolean;
}

/** A rate over repetitions, with the connections that failed over all of them. */
export type Rate = Dist & { errors: number };

interface LatencyAnswer {
  us: number[];
  errors: number;
  lastError?: string;
}

/** Latency of fresh connections (connect + one request/reply), in microseconds, per target. */
export async function measureLatency(lab: BenchLab, targets: Target[], s: Sizes): Promise<Latency[]> {
  const per = targets.map(() => ({ p50: [] as number[], p90: [] as number[], p99: [] as number[], errors: 0 }));
  for (let r = 0; r < s.reps; r++) {
    for (const [i, t] of targets.entries()) {
      const a = await lab.probe<LatencyAnswer>(t.netns, ['latency', t.host, t.port, s.latencyConns]);
      if (a.us.length === 0) throw new Error(`no connection to ${t.host}:${t.port} succeeded (${a.lastError})`);
      per[i].p50.push(percentile(a.us, 0.5));
      per[i].p90.push(percentile(a.us, 0.9));
      per[i].p99.push(percentile(a.us, 0.99));
      per[i].errors += a.errors;
    }
  }
  return per.map((p) => ({ p50: dist(p.p50), p90: dist(p.p90), p99: dist(p.p99), errors: p.errors }));
}

interface RateAnswer {
  perSec: number;
  errors?: number;
}

/** New connections per second: `procs` client processes of 4 loops each, per target. */
export function measureConnRate(lab: BenchLab, targets: Target[], s: Sizes, procs = 2): Promise<Rate[]> {
  return measureRate(lab, targets, s, procs, 'connrate');
}

/** Requests per second on kept-alive connections (`procs` processes x 4 connections), per target. */
export function measureRR(lab: BenchLab, targets: Target[], s: Sizes, procs = 2): Promise<Rate[]> {
  return measureRate(lab, targets, s, procs, 'rr');
}

async function measureRate(
  lab: BenchLab,
  targets: Target[],
  s: Sizes,
  procs: number,
  mode: 'connrate' | 'rr',
): Promise<Rate[]> {
  const per = targets.map(() => ({ rates: [] as number[], errors: 0 }));
  for (let r = 0; r < s.reps; r++) {
    for (const [i, t] of targets.entries()) {
      const a = await lab.probeParallel<RateAnswer>(t.netns, procs, [mode, t.host, t.port, s.rateSeconds, 4]);
      per[i].rates.push(a.reduce((x, y) => x + y.perSec, 0));
      per[i].errors += a.reduce((x, y) => x + (y.errors ?? 0), 0);
    }
  }
  return per.map((p) => ({ ...dist(p.rates), errors: p.errors }));
}

export interface Throughput {
  gbps: Dist;
  /** Busy CPU seconds of the whole machine per GB received (/proc/stat over the run). */
  cpuSecondsPerGB: Dist;
}

/** iperf3, `streams` parallel streams, per target; rounds alternate between the targets. */
export async function measureThroughput(
  lab: BenchLab,
  targets: Target[],
  streams: number,
  s: Sizes,
): Promise<Throughput[]> {
  const per = targets.map(() => ({ gbps: [] as number[], cpu: [] as number[] }));
  for (let r = 0; r < s.iperfRounds; r++) {
    for (const [i, t] of targets.entries()) {
      const c0 = machineCpuSeconds();
      const a = await lab.iperf(t.netns, t.host, t.port, s.iperfSeconds, streams, t.reverse);
      const cpu = machineCpuSeconds() - c0;
      per[i].gbps.push(a.gbps);
      per[i].cpu.push(cpu / (a.bytes / 1e9));
    }
  }
  return per.map((p) => ({ gbps: dist(p.gbps), cpuSecondsPerGB: dist(p.cpu) }));
}

export interface PathResult {
  latency: Latency;
  throughput1: Throughput;
  throughput4: Throughput;
}

/** Latency and throughput of a list of paths at once (interleaved), keyed by the caller's names. */
export async function measurePaths(
  lab: BenchLab,
  paths: Array<{ echo: Target; iperf: Target }>,
  s: Sizes,
): Promise<PathResult[]> {
  const lat = await measureLatency(
    lab,
    paths.map((p) => p.echo),
    s,
  );
  const t1 = await measureThroughput(
    lab,
    paths.map((p) => p.iperf),
    1,
    s,
  );
  const t4 = await measureThroughput(
    lab,
    paths.map((p) => p.iperf),
    4,
    s,
  );
  return paths.map((_, i) => ({ latency: lat[i], throughput1: t1[i], throughput4: t4[i] }));
}

/**
 * The NodePort paths from the external client: through node1 (no local backend), and straight to
 * the pod through node2 (from the client's second address: see BenchLab.routeExtToPods).
 */
export function nodePortPaths(
  extNs: string,
  serverIp: string,
): { nodePort: { echo: Target; iperf: Target }; direct: { echo: Target; iperf: Target } } {
  return {
    nodePort: {
      echo: { host: NODE_IPS.node1, port: NODEPORT_ECHO, netns: extNs },
      iperf: { host: NODE_IPS.node1, port: NODEPORT_IPERF, netns: extNs },
    },
    direct: {
      echo: { host: serverIp, port: ECHO_PORT, netns: extNs },
      iperf: { host: serverIp, port: IPERF_PORT, netns: extNs },
    },
  };
}

interface UntilAnswer {
  reached: boolean;
  seconds: number;
  /** ms since the epoch when it was reached */
  at: number;
}

/** Waits until a target answers (or stops answering) from a namespace; when it did (ms since the epoch). */
export async function waitFor(lab: BenchLab, t: Target, want: 'ok' | 'fail', timeoutS: number): Promise<number> {
  const a = await lab.probe<UntilAnswer>(t.netns, ['until', t.host, t.port, want, timeoutS], (timeoutS + 30) * 1000);
  if (!a.reached)
    throw new Error(`${t.host}:${t.port} did not ${want === 'ok' ? 'answer' : 'stop answering'} within ${timeoutS} s`);
  return a.at;
}

export { sleep };
