// TCP throughput through a ClusterIP against pod-to-pod with no Service, in one lab and one run:
// iperf3 from a pod on node1 to a pod on node2 over the VXLAN overlay, Sluice attached on every
// node. Runs alternate between the two targets so machine noise hits both alike.
import { Topology } from '../src/lab/topology.js';
import { LabDatapath } from '../src/testing/lab-datapath.js';
import { Proto } from '../src/datapath/nat.js';
import { median } from './stats.js';

export interface ThroughputResult {
  seconds: number;
  rounds: number;
  streams: number;
  podToPodGbps: number[];
  clusterIpGbps: number[];
  clusterIpOverBaseline: number;
}

const VIP = '10.96.0.50';

async function iperf(topo: Topology, target: string, seconds: number, streams: number): Promise<number> {
  const r = await topo.exec('client', 'iperf3', ['-c', target, '-t', String(seconds), '-P', String(streams), '-J'], {
    timeoutMs: (seconds + 20) * 1000,
  });
  if (r.code !== 0) throw new Error(`iperf3 to ${target} failed: ${r.stderr || r.stdout.slice(0, 300)}`);
  const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

export async function benchThroughput(
  opts: { seconds?: number; rounds?: number; streams?: number; progress?: (s: string) => void } = {},
): Promise<ThroughputResult> {
  const seconds = opts.seconds ?? 5;
  const rounds = opts.rounds ?? 3;
  const streams = opts.streams ?? 1;
  const topo = new Topology({
    name: 'bthru',
    nodes: 2,
    pods: [
      { node: 1, name: 'client' },
      { node: 2, name: 'server' },
    ],
  });
  await Topology.sweep('bthru');
  await topo.up();
  const server = topo.spawn('server', 'iperf3', ['-s']);
  let dp: LabDatapath | undefined;
  try {
    dp = new LabDatapath(topo, { tag: 'bench-thru' });
    dp.service({ svcId: 1, addr: VIP, port: 5201, proto: Proto.TCP, backends: [{ pod: 'server', port: 5201 }] });
    await new Promise((r) => setTimeout(r, 500));
    const podIp = topo.pod('server').ip;
    const base: number[] = [];
    const svc: number[] = [];
    for (let i = 0; i < rounds; i++) {
      opts.progress?.(`  round ${i + 1}/${rounds}: pod-to-pod`);
      base.push(await iperf(topo, podIp, seconds, streams));
      opts.progress?.(`  round ${i + 1}/${rounds}: through the ClusterIP`);
      svc.push(await iperf(topo, VIP, seconds, streams));
    }
    return {
      seconds,
      rounds,
      streams,
      podToPodGbps: base,
      clusterIpGbps: svc,
      clusterIpOverBaseline: median(svc) / median(base),
    };
  } finally {
    server.kill('SIGTERM');
    dp?.close();
    await topo.down();
  }
}
