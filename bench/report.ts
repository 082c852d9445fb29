// The Markdown report and SVG charts of the Service benchmarks (docs/benchmarks/), from the
// results JSON alone, so a report can be rewritten without measuring again. The targets of
// issue 7 are judged here, by pure functions the unit test checks.
import fs from 'node:fs';
import path from 'node:path';
import type { Dist } from './stats.js';
import type { BaselinePoint, ContenderResult, ScalePoint, ServicesBenchResult } from './services-result.js';
import { barChart, lineChart, type Series } from './svg.js';

const NAMES: Record<string, string> = {
  baseline: 'no Service (baseline)',
  sluice: 'Sluice (eBPF)',
  'kube-proxy-iptables': 'kube-proxy iptables',
  'kube-proxy-nftables': 'kube-proxy nftables',
};

export interface TargetVerdict {
  target: string;
  /** undefined: could not be judged from this run (a contender or size is missing). */
  met: boolean | undefined;
  detail: string;
}

const ms = (us: number): string => (us / 1000).toFixed(3);
const x = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}x` : 'n/a');
const pct = (r: number): string =>
  Number.isFinite(r) ? `${r * 100 - 100 >= 0 ? '+' : ''}${(r * 100 - 100).toFixed(1)}%` : 'n/a';
const ratio = (a: number, b: number | undefined): string => (b === undefined ? 'n/a' : x(a / b));
/** A negative lag means the sentinel answered before the batch's last write: the figure is void. */
const lag = (c: { lagSeconds: number }): string =>
  c.lagSeconds < 0 ? 'void (the sentinel answered before the last write)' : c.lagSeconds.toFixed(1);
const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const spreadMs = (d: Dist): string => `${ms(d.median)} (${ms(d.min)}–${ms(d.max)})`;
const spreadInt = (d: Dist): string => `${int(d.median)} (${int(d.min)}–${int(d.max)})`;
const spread2 = (d: Dist): string => `${d.median.toFixed(2)} (${d.min.toFixed(2)}–${d.max.toFixed(2)})`;

export function contender(r: ServicesBenchResult, name: string): ContenderResult | undefined {
  return r.contenders.find((c) => c.contender === name && !c.error) ?? r.contenders.find((c) => c.contender === name);
}

function at(c: ContenderResult | undefined, n: number): ScalePoint | undefined {
  return c?.scale.find((s) => s.services === n);
}

/** The no-proxy figures to quote a size's figures against: measured at that size when the run did (one lab). */
export function baseAt(
  r: ServicesBenchResult,
  n: number,
): Pick<BaselinePoint, 'latency' | 'connRate' | 'rr'> | undefined {
  const b = contender(r, 'baseline');
  return b?.baselineScale?.find((p) => p.services === n) ?? b?.baseline;
}

/** Issue 7's targets, judged on one run's figures. */
export function judgeTargets(r: ServicesBenchResult): TargetVerdict[] {
  const out: TargetVerdict[] = [];
  const s = contender(r, 'sluice');
  const base = contender(r, 'baseline')?.baseline;
  const ipt = contender(r, 'kube-proxy-iptables');
  const nft = contender(r, 'kube-proxy-nftables');
  const sizes = (s?.scale ?? []).map((p) => p.services).sort((a, b) => a - b);
  const small = sizes[0];
  const big = sizes[sizes.length - 1];
  const bigNote = big === 30_000 ? '' : ` (30,000 Services were not measured in this run; judged at ${int(big)})`;

  {
    const t = 'Sluice first-packet p50 and p99 at 30,000 Services within 10% of its own figure at 100 Services';
    const a = at(s, small);
    const b = at(s, big);
    if (!a || !b || small === big) out.push({ target: t, met: undefined, detail: 'not enough sizes measured' });
    else {
      const r50 = b.clusterIp.p50.median / a.clusterIp.p50.median;
      const r99 = b.clusterIp.p99.median / a.clusterIp.p99.median;
      out.push({
        target: t,
        met: big === 30_000 ? r50 <= 1.1 && r99 <= 1.1 : undefined,
        detail: `p50 ${pct(r50)}, p99 ${pct(r99)} from ${int(small)} to ${int(big)} Services${bigNote}`,
      });
    }
  }
  {
    const t = 'Sluice first-packet p50 and p99 at 30,000 Services within 15% of the no-Service baseline';
    const b = at(s, big);
    const base = baseAt(r, big);
    if (!b || !base) out.push({ target: t, met: undefined, detail: 'Sluice or the baseline is missing' });
    else {
      const r50 = b.clusterIp.p50.median / base.latency.p50.median;
      const r99 = b.clusterIp.p99.median / base.latency.p99.median;
      out.push({
        target: t,
        met: big === 30_000 ? r50 <= 1.15 && r99 <= 1.15 : undefined,
        detail:
          `p50 ${x(r50)}, p99 ${x(r99)} the baseline at ${int(big)} Services${bigNote}; against the pod IP ` +
          `measured interleaved with it: p50 ${x(b.clusterIp.p50.median / b.podIp.p50.median)}, ` +
          `p99 ${x(b.clusterIp.p99.median / b.podIp.p99.median)}`,
      });
    }
  }
  {
    const t = 'Sluice connection rate >= 1.3x kube-proxy iptables at 10,000 Services';
    const a = at(s, 10_000);
    const b = at(ipt, 10_000);
    if (!a || !b) out.push({ target: t, met: undefined, detail: '10,000 Services not measured for both' });
    else {
      const q = a.connRate.clusterIp.median / b.connRate.clusterIp.median;
      out.push({
        target: t,
        met: q >= 1.3,
        detail: `${x(q)} (${int(a.connRate.clusterIp.median)} against ${int(b.connRate.clusterIp.median)} connections/s)`,
      });
    }
  }
  {
    const t = 'Sluice connection rate not below kube-proxy nftables at any size';
    const pairs = sizes.map((n) => [n, at(s, n), at(nft, n)] as const).filter(([, a, b]) => a && b);
    if (pairs.length === 0) out.push({ target: t, met: undefined, detail: 'nftables not measured' });
    else {
      const qs = pairs.map(([n, a, b]) => [n, a!.connRate.clusterIp.median / b!.connRate.clusterIp.median] as const);
      out.push({
        target: t,
        met: qs.every(([, q]) => q >= 1),
        detail: qs.map(([n, q]) => `${int(n)}: ${x(q)}`).join(', '),
      });
    }
  }
  {
    const t = 'Throughput through a Service >= 95% of the baseline (1 and 4 streams)';
    const p = s?.clusterIpPath;
    if (!p || !base) out.push({ target: t, met: undefined, detail: 'Sluice or the baseline is missing' });
    else {
      const q1 = p.throughput1.gbps.median / base.throughput1.gbps.median;
      const q4 = p.throughput4.gbps.median / base.throughput4.gbps.median;
      out.push({
        target: t,
        met: q1 >= 0.95 && q4 >= 0.95,
        detail:
          `1 stream ${(q1 * 100).toFixed(1)}%, 4 streams ${(q4 * 100).toFixed(1)}% of the baseline` +
          (s?.podIpPath
            ? `; ${((p.throughput1.gbps.median / s.podIpPath.throughput1.gbps.median) * 100).toFixed(1)}% and ` +
              `${((p.throughput4.gbps.median / s.podIpPath.throughput4.gbps.median) * 100).toFixed(1)}% of the pod IP ` +
              'measured interleaved with it'
            : ''),
      });
    }
  }
  {
    const t = 'CPU per GB through a Service <= kube-proxy iptables';
    const p = s?.clusterIpPath;
    const q = ipt?.clusterIpPath;
    if (!p || !q) out.push({ target: t, met: undefined, detail: 'Sluice or kube-proxy iptables is missing' });
    else {
      const q1 = p.throughput1.cpuSecondsPerGB.median / q.throughput1.cpuSecondsPerGB.median;
      const q4 = p.throughput4.cpuSecondsPerGB.median / q.throughput4.cpuSecondsPerGB.median;
      out.push({
        target: t,
        met: q1 <= 1 && q4 <= 1,
        detail:
          `1 stream ${x(q1)}, 4 streams ${x(q4)} kube-proxy iptables' CPU seconds per GB` +
          (p.services !== q.services ? ` (Sluice at ${int(p.services)} Services, iptables at ${int(q.services)})` : ''),
      });
    }
  }
  return out;
}

function verdict(v: TargetVerdict): string {
  return v.met === undefined ? 'not judged' : v.met ? '**met**' : '**missed**';
}

function table(head: string[], rows: string[][]): string[] {
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
}

/** The charts, by file name. */
export function charts(r: ServicesBenchResult): Record<string, string> {
  const proxies = r.contenders.filter((c) => c.contender !== 'baseline' && c.scale.length > 0);
  const base = contender(r, 'baseline')?.baseline;
  const lat = (q: 'p50' | 'p99'): string =>
    lineChart({
      title: `First-packet latency ${q} through a ClusterIP`,
      xLabel: 'Services in the dataplane (log scale)',
      yLabel: `${q} connect + request/reply (ms)`,
      logX: true,
      series: proxies.map((c) => ({
        name: NAMES[c.contender],
        points: c.scale.map((p): [number, number] => [p.services, p.clusterIp[q].median / 1000]),
      })),
      refs: base ? [{ name: 'no Service (baseline)', y: base.latency[q].median / 1000 }] : [],
    });
  const rate: Series[] = proxies.map((c) => ({
    name: NAMES[c.contender],
    points: c.scale.map((p): [number, number] => [p.services, p.connRate.clusterIp.median]),
  }));
  const withPaths = r.contenders.filter((c) => c.clusterIpPath || c.baseline);
  const tput = (f: 'gbps' | 'cpuSecondsPerGB'): Array<{ name: string; values: Array<number | undefined> }> =>
    withPaths.map((c) => {
      const p = c.baseline ?? c.clusterIpPath!;
      return { name: NAMES[c.contender], values: [p.throughput1[f].median, p.throughput4[f].median] };
    });
  const np = r.contenders.flatMap((c) => c.nodePort.map((m) => ({ c, m })));
  const ext = contender(r, 'baseline')?.baseline?.extDirect;
  const npSeries = [
    ...(ext ? [{ name: 'ext -> pod IP (baseline)', lat: ext.latency, t: ext.throughput1 }] : []),
    ...np.map(({ c, m }) => ({
      name: c.contender === 'sluice' ? `Sluice ${m.mode}` : NAMES[c.contender],
      lat: m.latency,
      t: m.throughput1,
    })),
  ];
  return {
    'latency-p50.svg': lat('p50'),
    'latency-p99.svg': lat('p99'),
    'connection-rate.svg': lineChart({
      title: 'New TCP connections per second through a ClusterIP',
      xLabel: 'Services in the dataplane (log scale)',
      yLabel: 'connections/s (8 parallel loops)',
      logX: true,
      series: rate,
      refs: base ? [{ name: 'no Service (baseline)', y: base.connRate.median }] : [],
    }),
    'throughput.svg': barChart({
      title: 'iperf3 pod -> Service across nodes',
      yLabel: 'Gbit/s',
      groups: ['1 stream', '4 streams'],
      series: tput('gbps'),
    }),
    'cpu-per-gb.svg': barChart({
      title: 'Machine CPU seconds per GB moved (iperf3)',
      yLabel: 'CPU s / GB (lower is better)',
      groups: ['1 stream', '4 streams'],
      series: tput('cpuSecondsPerGB'),
    }),
    'nodeport.svg': barChart({
      title: 'NodePort from the external client (node without a local backend)',
      yLabel: 'p50 / p99 latency (ms)',
      groups: ['p50', 'p99'],
      series: npSeries.map((s) => ({ name: s.name, values: [s.lat.p50.median / 1000, s.lat.p99.median / 1000] })),
    }),
  };
}

export function renderMarkdown(r: ServicesBenchResult, chartFiles: string[], opts: { analysis?: string } = {}): string {
  const L: string[] = [];
  const base = contender(r, 'baseline')?.baseline;
  const proxies = r.contenders.filter((c) => c.contender !== 'baseline');
  L.push(`# Service benchmarks: Sluice against kube-proxy${r.quick ? ' (quick run)' : ''}`, '');
  L.push(
    `Measured ${r.date.slice(0, 16).replace('T', ' ')} UTC on ${r.machine.cpus} × ${r.machine.cpuModel}, ` +
      `${r.machine.memoryGB} GB, Linux ${r.machine.kernel}, Node.js ${r.machine.node}; ` +
      `${Math.round(r.durationSeconds / 60)} minutes. Written by \`npm run bench:services${r.quick ? ' -- --quick' : ''}\` ` +
      `(bench/services.ts) from \`bench/results/services-${r.quick ? 'quick' : 'full'}.json\`; nothing here is typed by hand.` +
      (r.git
        ? ` Sources: commit ${r.git.head}${r.git.dirty.length ? ` with uncommitted changes to ${r.git.dirty.join(', ')}` : ''}.`
        : ''),
    '',
  );
  L.push('## How', '');
  const oneLab = r.method === 'one-lab';
  L.push(
    ...(oneLab
      ? [
          '- **One lab for every contender**, made once with `sluice lab up --kubernetes --nodes 2 --proxy kube-proxy-iptables` ' +
            "(a real kube-apiserver, etcd and kube-controller-manager v1.37.2, the real kube-proxy DaemonSet, and Sluice's agents). " +
            "The bulk Services are written once per size; the lab's Service proxy is then switched for each measurement, " +
            'with the seed\'s own steps: kube-proxy leaves through its DaemonSet\'s `nodeSelector` (`non-calico: "true"`) and ' +
            '`kube-proxy --cleanup` in each node, and comes back (in iptables or nftables mode) by removing it; Sluice comes with ' +
            '`bpfEnabled: true` and its agents started, and leaves with `bpfEnabled: false` (every program detached, every pin ' +
            'removed) and its agents stopped, so kube-proxy and the baseline run alone as on a node without Sluice. The ' +
            '**baseline** is the lab with no proxy at all (the ClusterIP is checked not to answer): the client talks straight ' +
            'to the pod IP.',
          '- At each size every contender is measured once, one after the other (the current proxy first, to save a switch), ' +
            'so the figures compared are minutes apart on the same lab and the same objects. After each switch the run waits ' +
            'for the target to answer (the **takeover**: a proxy starting with N Services already in the API), then for a ' +
            'sentinel write to be programmed.',
          ...(r.measuredAfterControlPlane
            ? [
                `- At the control-plane size (${int(r.controlPlaneServices)} Services) each proxy is measured right after its own ` +
                  'control-plane test, on the Services it has just programmed, and kube-proxy iptables is not measured beyond it: ' +
                  'restarting it on that many Services takes longer than a run can wait (see the takeovers), and growing the lab ' +
                  'under it doubles the time the API server takes to write the Services.',
              ]
            : []),
        ]
      : [
          '- One lab per contender, made one after the other with `sluice lab up --kubernetes --nodes 2` (a real kube-apiserver, etcd ' +
            'and kube-controller-manager v1.37.2): **Sluice** (its agents, eBPF mode), **kube-proxy iptables** and **kube-proxy nftables** ' +
            '(the real kube-proxy DaemonSet, `--no-sluice`), and the **baseline**: the same lab with kube-proxy removed ' +
            '(DaemonSet deleted, `kube-proxy --cleanup` in each node), where the client talks straight to the pod IP.',
        ]),
    '- The workload: an echo server (`sluice echo`) and `iperf3 -s` in a pod on node2, the client in a pod on ' +
      'node1 (so every Service connection crosses nodes over the VXLAN overlay), the target Service (ClusterIP + NodePort) among ' +
      `N bulk Services: selectorless ClusterIP Services, each with a hand-made EndpointSlice of ${r.endpointsPerService} endpoints ` +
      '(made-up addresses nothing sends to), written to the API server in bulk. After each batch a sentinel Service is pointed ' +
      'at the echo pod; once it answers through the dataplane, every earlier write is programmed (each proxy applies a watch in order).',
    `- First-packet latency: ${int(r.settings.latencyConns)} sequential fresh TCP connections per repetition (connect, one line ` +
      "out, one line back, reset), each timed with `process.hrtime` by a Node client in the client pod's namespace; " +
      `p50/p90/p99 per repetition, ${r.settings.reps} repetitions; tables give the median of the repetitions and their range.`,
    `- Connection rate: 2 client processes × 4 loops of fresh connections for ${r.settings.rateSeconds} s; request/response: ` +
      `2 processes × 4 kept-alive connections, one request in flight each.`,
    `- Throughput: iperf3 TCP, 1 and 4 streams, ${r.settings.iperfSeconds} s, ${r.settings.iperfRounds} rounds; CPU per GB is ` +
      'the busy time of the whole machine (/proc/stat: user, nice, system, irq, softirq) over the run divided by the bytes ' +
      "received: every namespace shares the machine's CPUs, so this is the full cost of moving the data.",
    oneLab
      ? "- Each proxy's measurement also measures the pod-IP path (from a second client pod) interleaved with the Service path " +
          '(same repetitions), so a burst of load from the shared machine hits both; ratios to the baseline use the baseline ' +
          'measured at the same size.'
      : '- Each lab measures its own pod-IP path interleaved with the Service path (same repetitions), so a burst of load from the ' +
          'shared machine hits both; ratios are quoted against the baseline lab of the same run.',
    '',
  );

  L.push('## Targets (issue 7)', '');
  const verdicts = judgeTargets(r);
  L.push(
    ...table(
      ['target', 'verdict', 'measured'],
      verdicts.map((v) => [v.target, verdict(v), v.detail]),
    ),
    '',
  );
  if (opts.analysis)
    L.push(
      `Why a target was missed, and what would close it: [${opts.analysis}](${opts.analysis}) (written after the run).`,
      '',
    );

  const baseScale = contender(r, 'baseline')?.baselineScale ?? [];
  if (base) {
    L.push('## Baseline (no Service, pod -> pod IP across nodes)', '');
    if (baseScale.length)
      L.push(
        'At each size, measured between the proxies (no proxy in the lab):',
        '',
        ...table(
          ['Services', 'p50 ms', 'p90 ms', 'p99 ms', 'new connections/s', 'requests/s, kept-alive'],
          baseScale.map((p) => [
            int(p.services),
            spreadMs(p.latency.p50),
            spreadMs(p.latency.p90),
            spreadMs(p.latency.p99),
            spreadInt(p.connRate),
            spreadInt(p.rr),
          ]),
        ),
        '',
        `The paths, at ${int(base.services ?? NaN)} Services:`,
        '',
      );
    L.push(
      ...table(
        ['measure', 'median (range over repetitions)'],
        [
          ['latency p50 (ms)', spreadMs(base.latency.p50)],
          ['latency p90 (ms)', spreadMs(base.latency.p90)],
          ['latency p99 (ms)', spreadMs(base.latency.p99)],
          ['new connections/s', spreadInt(base.connRate)],
          ['requests/s, kept-alive', spreadInt(base.rr)],
          ['iperf3 1 stream (Gbit/s)', spread2(base.throughput1.gbps)],
          ['iperf3 4 streams (Gbit/s)', spread2(base.throughput4.gbps)],
          ['CPU s/GB, 1 stream', spread2(base.throughput1.cpuSecondsPerGB)],
          ['CPU s/GB, 4 streams', spread2(base.throughput4.cpuSecondsPerGB)],
          [
            'external client -> pod IP, latency p50 / p99 (ms)',
            `${ms(base.extDirect.latency.p50.median)} / ${ms(base.extDirect.latency.p99.median)}`,
          ],
          ['external client -> pod IP, 1 stream (Gbit/s)', spread2(base.extDirect.throughput1.gbps)],
        ],
      ),
      '',
    );
  }

  L.push('## First-packet latency through a ClusterIP', '');
  L.push('![p50](latency-p50.svg)', '', '![p99](latency-p99.svg)', '');
  const latRows: string[][] = [];
  for (const c of proxies)
    for (const p of c.scale)
      latRows.push([
        NAMES[c.contender],
        int(p.services),
        spreadMs(p.clusterIp.p50),
        spreadMs(p.clusterIp.p90),
        spreadMs(p.clusterIp.p99),
        ratio(p.clusterIp.p50.median, baseAt(r, p.services)?.latency.p50.median),
        ratio(p.clusterIp.p99.median, baseAt(r, p.services)?.latency.p99.median),
        `${ms(p.podIp.p50.median)} / ${ms(p.podIp.p99.median)}`,
        String(p.clusterIp.errors),
      ]);
  L.push(
    ...table(
      [
        'contender',
        'Services',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'p50 / baseline',
        'p99 / baseline',
        'pod IP p50 / p99 ms, interleaved',
        'failed',
      ],
      latRows,
    ),
    '',
  );
  L.push(
    'Published anchor (Kubernetes nftables blog, KEP-3866): kube-proxy iptables p99 grows from ~0.15 ms at 5,000 Services to ' +
      '~0.72 ms at 30,000 while nftables stays ~0.04 ms. The figures here include a Node client and a Node server on a ' +
      'shared 2-core machine, so their floor is far above 0.04 ms; the growth with N is what compares.',
    '',
  );

  L.push('## Connection rate and request/response rate', '');
  L.push('![connection rate](connection-rate.svg)', '');
  const rateRows: string[][] = [];
  for (const c of proxies)
    for (const p of c.scale)
      rateRows.push([
        NAMES[c.contender],
        int(p.services),
        spreadInt(p.connRate.clusterIp),
        ratio(p.connRate.clusterIp.median, baseAt(r, p.services)?.connRate.median),
        x(p.connRate.clusterIp.median / p.connRate.podIp.median),
        spreadInt(p.rr.clusterIp),
        ratio(p.rr.clusterIp.median, baseAt(r, p.services)?.rr.median),
        `${p.connRate.clusterIp.errors ?? 0} / ${p.connRate.podIp.errors ?? 0}`,
      ]);
  L.push(
    ...table(
      [
        'contender',
        'Services',
        'connections/s',
        '/ baseline',
        '/ pod IP, interleaved',
        'requests/s (kept-alive)',
        '/ baseline',
        'failed connections, ClusterIP / pod IP',
      ],
      rateRows,
    ),
    '',
  );

  L.push('## Throughput and CPU per GB (pod -> ClusterIP across nodes, iperf3)', '');
  L.push('![throughput](throughput.svg)', '', '![CPU per GB](cpu-per-gb.svg)', '');
  const tRows: string[][] = [];
  for (const c of proxies) {
    const p = c.clusterIpPath;
    if (!p) continue;
    for (const [k, t] of [
      ['1', p.throughput1],
      ['4', p.throughput4],
    ] as const) {
      const b = base ? (k === '1' ? base.throughput1 : base.throughput4) : undefined;
      tRows.push([
        NAMES[c.contender],
        int(p.services),
        k,
        spread2(t.gbps),
        b ? `${((t.gbps.median / b.gbps.median) * 100).toFixed(1)}%` : 'n/a',
        spread2(t.cpuSecondsPerGB),
        b ? x(t.cpuSecondsPerGB.median / b.cpuSecondsPerGB.median) : 'n/a',
      ]);
    }
  }
  L.push(
    ...table(['contender', 'Services', 'streams', 'Gbit/s', 'of baseline', 'CPU s/GB', 'CPU / baseline'], tRows),
    '',
  );

  L.push('## NodePort from the external client through a node without a local backend', '');
  L.push('![NodePort](nodeport.svg)', '');
  const nRows: string[][] = [];
  const ext = base?.extDirect;
  for (const c of proxies)
    for (const m of c.nodePort)
      nRows.push([
        c.contender === 'sluice' ? `Sluice ${m.mode}` : NAMES[c.contender],
        `${ms(m.latency.p50.median)} / ${ms(m.latency.p99.median)}`,
        ext
          ? `${x(m.latency.p50.median / ext.latency.p50.median)} / ${x(m.latency.p99.median / ext.latency.p99.median)}`
          : 'n/a',
        spread2(m.throughput1.gbps),
        spread2(m.throughput4.gbps),
        ext ? `${((m.throughput1.gbps.median / ext.throughput1.gbps.median) * 100).toFixed(1)}%` : 'n/a',
        m.reverse1 ? spread2(m.reverse1.gbps) : 'n/a',
        m.reverse1 && ext?.reverse1
          ? `${((m.reverse1.gbps.median / ext.reverse1.gbps.median) * 100).toFixed(1)}%`
          : 'n/a',
        spread2(m.throughput1.cpuSecondsPerGB),
      ]);
  L.push(
    ...table(
      [
        'path',
        'p50 / p99 ms',
        '/ baseline',
        'Gbit/s 1 stream',
        'Gbit/s 4 streams',
        '1 stream of baseline',
        'Gbit/s back (-R)',
        'back of baseline',
        'CPU s/GB',
      ],
      nRows,
    ),
    '',
  );
  L.push(
    'Baseline for NodePort: the external client straight to the pod IP through node2 (a route in the external namespace), ' +
      'with no proxy in the lab: one forwarding hop fewer than any NodePort path. ' +
      '"Back (-R)" is iperf3 -R, one stream: the server sends to the external client, the direction in which ' +
      "DSR's replies leave the backend's node straight instead of returning through node1.",
    '',
  );

  L.push('## Control plane', '');
  const cRows: string[][] = [];
  for (const c of proxies) {
    const cp = c.controlPlane;
    if (!cp) continue;
    for (const k of [cp.create, cp.changes])
      cRows.push([
        NAMES[c.contender],
        k.what,
        k.seconds.toFixed(1),
        k.writeSeconds.toFixed(1),
        lag(k),
        Object.entries(k.proxyCpuSeconds)
          .map(([n, s]) => `${n} ${s.toFixed(1)}`)
          .join(', '),
        k.machineCpuSeconds.toFixed(0),
      ]);
    cRows.push([
      NAMES[c.contender],
      'RSS after (MB)',
      '',
      '',
      '',
      Object.entries(cp.rssMB)
        .map(([n, s]) => `${n} ${s.toFixed(0)}`)
        .join(', '),
      '',
    ]);
  }
  L.push(
    ...table(
      [
        'contender',
        'batch',
        'to programmed (s)',
        'API writes (s)',
        'lag after last write (s)',
        'proxy CPU s per node',
        'machine CPU s',
      ],
      cRows,
    ),
    '',
  );
  L.push(
    (r.method === 'one-lab'
      ? "From nothing: each proxy in turn is made the lab's with no bulk Service in the API (the previous proxy's are " +
        `deleted under it), then ${int(r.controlPlaneServices)} Services × `
      : `From nothing: the bulk Services of the smaller sizes are deleted first, then ${int(r.controlPlaneServices)} Services × `) +
      `${r.endpointsPerService} endpoints are written (${r.changes.toLocaleString('en-US')} single-endpoint changes after that, ` +
      'each a PATCH of one EndpointSlice moving one endpoint). The API server on this machine takes writes at a limited rate, ' +
      'so "to programmed" is bounded by it for every contender; the lag after the last write and the proxy\'s own CPU seconds ' +
      '(from /proc/PID/stat, with waited-for children such as iptables-restore and nft) are what tell the proxies apart.',
    '',
  );
  const takeovers = proxies.flatMap((c) =>
    [...(c.takeover ?? [])].sort((a, b) => a.services - b.services).map((t) => [NAMES[c.contender], t] as const),
  );
  if (takeovers.length) {
    L.push(
      'Takeover: the proxy started with the bulk Services already in the API (its DaemonSet back on the nodes, or ' +
        '`bpfEnabled: true` and the agents started), until the target Service answers through it; the CPU and memory ' +
        'of its processes until then:',
      '',
      ...table(
        ['contender', 'Services', 'to the first answer (s)', 'proxy CPU s per node', 'RSS MB per node'],
        takeovers.map(([n, t]) => [
          n,
          int(t.services),
          t.seconds.toFixed(1),
          Object.entries(t.proxyCpuSeconds)
            .map(([k, v]) => `${k} ${v.toFixed(1)}`)
            .join(', '),
          Object.entries(t.rssMB)
            .map(([k, v]) => `${k} ${v.toFixed(0)}`)
            .join(', '),
        ]),
      ),
      '',
    );
  }
  const growth = proxies.flatMap((c) => (c.growth ?? []).map((g) => [NAMES[c.contender], g] as const));
  if (growth.length) {
    L.push('Every batch of the run:', '');
    L.push(
      ...table(
        ['contender', 'batch', 'to programmed (s)', 'lag (s)', 'proxy CPU s per node'],
        growth.map(([n, g]) => [
          n,
          g.what,
          g.seconds.toFixed(1),
          lag(g),
          Object.entries(g.proxyCpuSeconds)
            .map(([k, s]) => `${k} ${s.toFixed(1)}`)
            .join(', '),
        ]),
      ),
      '',
    );
  }
  const rss = proxies.flatMap((c) =>
    c.scale.map((p) => [
      NAMES[c.contender],
      int(p.services),
      Object.entries(p.proxyRssMB)
        .map(([n, s]) => `${n} ${s.toFixed(0)}`)
        .join(', '),
    ]),
  );
  if (rss.length)
    L.push('Proxy memory (RSS, MB) at each size:', '', ...table(['contender', 'Services', 'RSS MB per node'], rss), '');

  const problems = r.contenders.filter((c) => c.error || c.errors?.length || c.upRetries);
  if (problems.length || r.notes.length) {
    L.push('## Problems and notes', '');
    for (const c of problems) {
      if (c.error) L.push(`- ${NAMES[c.contender]}: the run stopped: ${c.error}`);
      for (const e of c.errors ?? [])
        L.push(`- ${NAMES[c.contender]}: a measurement failed (the others went on): ${e}`);
      if (c.upRetries) L.push(`- ${NAMES[c.contender]}: \`lab up\` failed ${c.upRetries} time(s) and was started over`);
    }
    for (const n of r.notes) L.push(`- ${n}`);
    L.push('');
  }
  L.push('Charts: ' + chartFiles.map((f) => `[${f}](${f})`).join(', '), '');
  return L.join('\n');
}

/** Writes the report and its charts into `dir`; returns the files written. */
export function writeReport(r: ServicesBenchResult, dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const c = charts(r);
  const files: string[] = [];
  for (const [name, svg] of Object.entries(c)) {
    const f = path.join(dir, name);
    fs.writeFileSync(f, svg);
    files.push(f);
  }
  const md = path.join(dir, 'README.md');
  // analysis.md beside the report is written by hand after a run; the report links to it
  const analysis = fs.existsSync(path.join(dir, 'analysis.md')) ? 'analysis.md' : undefined;
  fs.writeFileSync(md, renderMarkdown(r, Object.keys(c), { analysis }));
  files.unshift(md);
  return files;
}
