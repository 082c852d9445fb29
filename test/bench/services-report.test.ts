// The pure pieces of the Service benchmarks: percentiles, kernel accounting parsers, the SVG
// charts and the judging of issue 7's targets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dist, percentile } from '../../bench/stats.js';
import { busyFromStatLine, cpuFromPidStat } from '../../bench/proc-stats.js';
import { barChart, lineChart, niceTicks } from '../../bench/svg.js';
import { judgeTargets, renderMarkdown } from '../../bench/report.js';
import type { ContenderResult, ScalePoint, ServicesBenchResult } from '../../bench/services-result.js';
import type { Latency, Throughput } from '../../bench/services-measure.js';

test('percentile is nearest-rank: p50 of 1..100 is 50, p99 is 99, p100 the maximum', () => {
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(percentile(xs, 0.5), 50);
  assert.equal(percentile(xs, 0.99), 99);
  assert.equal(percentile(xs, 1), 100);
  assert.equal(percentile([7], 0.99), 7);
  assert.ok(Number.isNaN(percentile([], 0.5)));
});

test('dist gives the median and the range of the repetitions', () => {
  assert.deepEqual(dist([3, 1, 2, 10]), { median: 2.5, min: 1, max: 10, runs: [3, 1, 2, 10] });
});

test('kernel accounting: /proc/stat busy time excludes idle, iowait and steal; /proc/PID/stat sums own and children', () => {
  // user nice system idle iowait irq softirq steal
  assert.equal(busyFromStatLine('cpu  100 20 30 5000 70 4 6 900 0 0'), 1.6);
  const stat = '4242 (kube proxy) S 1 2 3 0 -1 4194560 10 0 0 0 250 50 7 3 20 0 12 0 100 0 0';
  assert.equal(cpuFromPidStat(stat), 3.1);
});

test('niceTicks are round steps covering the whole range', () => {
  assert.deepEqual(niceTicks(0, 1.1), [0, 0.5, 1, 1.5]);
  assert.deepEqual(niceTicks(0, 9000), [0, 2000, 4000, 6000, 8000, 10000]);
  assert.deepEqual(niceTicks(0, 8000), [0, 2000, 4000, 6000, 8000]);
});

test('lineChart draws one polyline per series, on a log axis, with the reference line dashed', () => {
  const svg = lineChart({
    title: 'a < b',
    xLabel: 'x',
    yLabel: 'y',
    logX: true,
    series: [
      {
        name: 'one',
        points: [
          [100, 1],
          [1000, 2],
          [10000, 3],
        ],
      },
      {
        name: 'two',
        points: [
          [100, 2],
          [10000, 1],
        ],
      },
    ],
    refs: [{ name: 'base', y: 0.5 }],
  });
  assert.match(svg, /^<svg /);
  assert.equal(svg.match(/<polyline /g)?.length, 2);
  assert.match(svg, /a &lt; b/);
  assert.match(svg, /stroke-dasharray/);
  // on a log axis 1,000 sits halfway between 100 and 10,000
  const xs = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].slice(0, 3).map((m) => Number(m[1]));
  assert.ok(Math.abs(xs[1] - (xs[0] + xs[2]) / 2) < 0.2, `${xs}`);
});

test('barChart skips missing values', () => {
  const svg = barChart({
    title: 't',
    yLabel: 'y',
    groups: ['g1', 'g2'],
    series: [
      { name: 'a', values: [1, undefined] },
      { name: 'b', values: [2, 3] },
    ],
  });
  assert.equal(svg.match(/<title>/g)?.length, 3); // one per bar
  assert.doesNotMatch(svg, /a, g2/);
});

const d = (m: number) => dist([m * 0.9, m, m * 1.1]);
const lat = (p50: number, p99: number): Latency => ({ p50: d(p50), p90: d((p50 + p99) / 2), p99: d(p99), errors: 0 });
const tp = (gbps: number, cpu: number): Throughput => ({ gbps: d(gbps), cpuSecondsPerGB: d(cpu) });
const rate = (r: number) => ({ ...d(r), errors: 0 });
function point(services: number, p50: number, p99: number, conn: number): ScalePoint {
  return {
    services,
    clusterIp: lat(p50, p99),
    podIp: lat(400, 900),
    connRate: { clusterIp: rate(conn), podIp: rate(2000) },
    rr: { clusterIp: rate(9000), podIp: rate(9500) },
    proxyRssMB: { node1: 100, node2: 90 },
  };
}
function proxy(c: ContenderResult['contender'], scale: ScalePoint[], gbps: number, cpu: number): ContenderResult {
  const path = { services: 30_000, latency: lat(500, 1000), throughput1: tp(gbps, cpu), throughput4: tp(gbps, cpu) };
  return { contender: c, lab: 'x', loadAverageAtStart: [], scale, nodePort: [], clusterIpPath: path, podIpPath: path };
}
function run(sluiceAt30k: number): ServicesBenchResult {
  return {
    date: '2026-11-28T15:00:00.000Z',
    quick: false,
    machine: { cpus: 2, cpuModel: 'test', memoryGB: 24, kernel: '6.x', node: 'v20' },
    sizes: [100, 10_000, 30_000],
    endpointsPerService: 10,
    controlPlaneServices: 10_000,
    changes: 1000,
    settings: { latencyConns: 1, reps: 3, rateSeconds: 1, iperfSeconds: 1, iperfRounds: 1 },
    durationSeconds: 60,
    notes: [],
    contenders: [
      {
        contender: 'baseline',
        lab: 'b',
        loadAverageAtStart: [],
        scale: [],
        nodePort: [],
        baseline: {
          latency: lat(500, 1000),
          connRate: rate(2000),
          rr: rate(10_000),
          throughput1: tp(2, 10),
          throughput4: tp(2, 10),
          extDirect: {
            latency: lat(500, 1000),
            throughput1: tp(2, 10),
            throughput4: tp(2, 10),
            reverse1: tp(2, 10),
          },
        },
      },
      proxy(
        'sluice',
        [point(100, 500, 1000, 1900), point(10_000, 510, 1020, 1900), point(30_000, sluiceAt30k, 1050, 1900)],
        1.96,
        9,
      ),
      proxy('kube-proxy-iptables', [point(100, 520, 1000, 1800), point(10_000, 900, 3000, 1000)], 1.8, 11),
      proxy('kube-proxy-nftables', [point(100, 510, 1000, 1950), point(10_000, 520, 1000, 1850)], 1.9, 10),
    ],
  };
}

test('targets: judged from the figures, met and missed', () => {
  const good = judgeTargets(run(540));
  assert.deepEqual(
    good.map((v) => v.met),
    [true, true, true, false, true, true],
  );
  // the nftables target names the size where Sluice is slower (100: 1,900 against 1,950)
  assert.match(good[3].detail, /100: 0\.97x/);
  const bad = judgeTargets(run(600));
  assert.equal(bad[0].met, false); // p50 +20% from 100 to 30,000
  assert.equal(bad[1].met, false); // 1.2x the baseline
  assert.match(bad[0].detail, /p50 \+20\.0%/);
});

test('targets at 30,000 are not judged when the run stopped short of 30,000 Services', () => {
  const r = run(540);
  for (const c of r.contenders) c.scale = c.scale.filter((p) => p.services <= 10_000);
  const v = judgeTargets(r);
  assert.equal(v[0].met, undefined);
  assert.match(v[0].detail, /not measured in this run; judged at 10,000/);
});

test('the report names the machine and quotes ratios against the baseline', () => {
  const md = renderMarkdown(run(540), ['latency-p50.svg']);
  assert.match(md, /2 × test, 24 GB, Linux 6\.x/);
  assert.match(md, /\| Sluice \(eBPF\) \| 30,000 \| 0\.540 /);
  assert.match(md, /\| \*\*missed\*\* \|/);
});

test('NodePort rows quote the return direction (iperf3 -R) against the baseline', () => {
  const r = run(540);
  const sluice = r.contenders.find((c) => c.contender === 'sluice')!;
  const np = { services: 30_000, latency: lat(600, 1200), throughput1: tp(1.5, 12), throughput4: tp(1.6, 12) };
  sluice.nodePort = [
    { mode: 'Tunnel', ...np, reverse1: tp(1, 14) },
    { mode: 'DSR', ...np, reverse1: tp(1.9, 10) },
  ];
  const md = renderMarkdown(r, []);
  assert.match(md, /\| Sluice Tunnel \|[^\n]*\| 50\.0% \|[^\n]*\n/);
  assert.match(md, /\| Sluice DSR \|[^\n]*\| 95\.0% \|/);
});

test('one-lab runs: each size is quoted against the baseline measured at that size, and takeovers are listed', () => {
  const r = run(540);
  r.method = 'one-lab';
  const base = r.contenders.find((c) => c.contender === 'baseline')!;
  // the baseline at 30,000 is slower than the one kept for the paths: the 30,000 target uses it
  base.baselineScale = [
    { services: 100, latency: lat(500, 1000), connRate: rate(2000), rr: rate(10_000) },
    { services: 30_000, latency: lat(600, 1000), connRate: rate(2000), rr: rate(10_000) },
  ];
  const v = judgeTargets(r);
  assert.match(v[1].detail, /p50 0\.90x/);
  assert.equal(v[1].met, true);
  const sluice = r.contenders.find((c) => c.contender === 'sluice')!;
  sluice.takeover = [
    { services: 30_000, seconds: 9.5, proxyCpuSeconds: { node1: 20 }, rssMB: { node1: 500 } },
    { services: 100, seconds: 6.1, proxyCpuSeconds: { node1: 2.5 }, rssMB: { node1: 180 } },
  ];
  const md = renderMarkdown(r, []);
  assert.match(md, /One lab for every contender/);
  // the latency table's ratio at 30,000 uses the baseline at 30,000 (540 / 600), at 100 the one at 100
  assert.match(md, /\| Sluice \(eBPF\) \| 30,000 \| 0\.540 [^\n]*\| 0\.90x \|/);
  assert.match(md, /\| Sluice \(eBPF\) \| 100 \| 0\.500 [^\n]*\| 1\.00x \|/);
  // takeovers in the order of their sizes
  assert.match(md, /\| Sluice \(eBPF\) \| 100 \| 6\.1 \|[^\n]*\n\| Sluice \(eBPF\) \| 30,000 \| 9\.5 \|/);
});

test('a batch the sentinel answered before its last write is shown as void, not as a negative lag', () => {
  const r = run(540);
  const ipt = r.contenders.find((c) => c.contender === 'kube-proxy-iptables')!;
  const cost = { what: 'delete 10000 Services', seconds: -2.3, writeSeconds: 706.5, lagSeconds: -708.8 };
  ipt.growth = [{ ...cost, proxyCpuSeconds: { node1: 347 }, machineCpuSeconds: 900, writes: 20_000 }];
  const md = renderMarkdown(r, []);
  assert.match(
    md,
    /\| kube-proxy iptables \| delete 10000 Services \| [^|]+ \| void \(the sentinel answered before the last write\) \|/,
  );
  assert.doesNotMatch(md, /-708\.8/);
});
