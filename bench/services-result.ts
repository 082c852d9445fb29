// The shape of bench/results/services-{quick,full}.json: what services.ts measures and report.ts
// turns into docs/benchmarks/.
import type { Contender } from './lab-cluster.js';
import type { Latency, Rate, Throughput } from './services-measure.js';

export interface ScalePoint {
  services: number;
  /** Latency (microseconds) through the target's ClusterIP, and to the pod IP in the same lab. */
  clusterIp: Latency;
  podIp: Latency;
  connRate: { clusterIp: Rate; podIp: Rate };
  rr: { clusterIp: Rate; podIp: Rate };
  /** Memory of each node's proxy process (MB RSS) at this size. */
  proxyRssMB: Record<string, number>;
}

export interface ProgramCost {
  what: string;
  /** Wall time from the first write to the sentinel answering (s): writeSeconds + lagSeconds. */
  seconds: number;
  /** Of which the API writes took (s). */
  writeSeconds: number;
  /** Time from the last write to the dataplane having it (s). */
  lagSeconds: number;
  /** CPU seconds of each node's proxy process (with children) over the whole window. */
  proxyCpuSeconds: Record<string, number>;
  /** Busy CPU seconds of the whole machine (API server, etcd, proxies, ...) over the window. */
  machineCpuSeconds: number;
  writes: number;
}

export interface PathsAt {
  services: number;
  latency: Latency;
  throughput1: Throughput;
  throughput4: Throughput;
  /** iperf3 -R, 1 stream: the server sends back over the return path (NodePort paths only). */
  reverse1?: Throughput;
}

/** A proxy made the lab's with `services` bulk Services already in the API (its processes new). */
export interface Takeover {
  services: number;
  /** From the switch (DaemonSet patch, or bpfEnabled and the agents' start) to the target answering. */
  seconds: number;
  /** CPU seconds of each node's proxy from its start until then. */
  proxyCpuSeconds: Record<string, number>;
  rssMB: Record<string, number>;
}

/** The baseline (no proxy at all) measured at one size, between the proxies' measurements. */
export interface BaselinePoint {
  services: number;
  latency: Latency;
  connRate: Rate;
  rr: Rate;
}

export interface ContenderResult {
  contender: Contender;
  lab: string;
  loadAverageAtStart: number[];
  /** The Service dataplane's paths; absent for the baseline. */
  scale: ScalePoint[];
  /** Pod -> ClusterIP across nodes (and pod -> pod IP in the same lab), at the largest size. */
  clusterIpPath?: PathsAt;
  podIpPath?: PathsAt;
  /** External client -> NodePort on node1 (backend on node2), per mode; and ext -> pod straight. */
  nodePort: Array<{ mode: string } & PathsAt>;
  extDirect?: PathsAt;
  controlPlane?: { create: ProgramCost; changes: ProgramCost; rssMB: Record<string, number> };
  /** Every batch of writes on the way through the sizes (creations and the removal before the control-plane test). */
  growth?: ProgramCost[];
  /** Each switch to this proxy during the run. */
  takeover?: Takeover[];
  /** Baseline only, one-lab runs: the no-proxy figures at each size. */
  baselineScale?: BaselinePoint[];
  /** Baseline only: the no-Service figures the path ratios are quoted against (at the largest size in one-lab runs). */
  baseline?: {
    /** One-lab runs: the size it was measured at. */
    services?: number;
    latency: Latency;
    connRate: Rate;
    rr: Rate;
    throughput1: Throughput;
    throughput4: Throughput;
    extDirect: { latency: Latency; throughput1: Throughput; throughput4: Throughput; reverse1?: Throughput };
  };
  /** The run of this contender stopped here. */
  error?: string;
  /** Measurements that failed while the others went on. */
  errors?: string[];
  /** `lab up` had to start over this many times. */
  upRetries?: number;
  /** Sluice: the bpfMapSizeNATBackend the run set (the default when absent). */
  natBackendMapSize?: number;
}

export interface ServicesBenchResult {
  date: string;
  quick: boolean;
  /**
   * one-lab: every contender in one lab, the proxy switched between measurements (services.ts).
   * Absent: an older run, one lab per contender, one after the other.
   */
  method?: 'one-lab';
  /**
   * Each proxy measured at the control-plane size right after its own control-plane test, and
   * kube-proxy iptables not beyond it (absent: the size was measured after all the tests, each
   * proxy restarted on the Services).
   */
  measuredAfterControlPlane?: boolean;
  machine: { cpus: number; cpuModel: string; memoryGB: number; kernel: string; node: string };
  sizes: number[];
  /** Contenders measured at other sizes than `sizes` (--sizes-for). */
  sizesFor?: Record<string, number[]>;
  endpointsPerService: number;
  controlPlaneServices: number;
  changes: number;
  settings: {
    latencyConns: number;
    reps: number;
    rateSeconds: number;
    iperfSeconds: number;
    iperfRounds: number;
  };
  contenders: ContenderResult[];
  durationSeconds: number;
  notes: string[];
  /** The commit measured and the source files that differed from it (src, bpf, bin). */
  git?: { head: string; dirty: string[] };
}
