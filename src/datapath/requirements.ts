// What the datapath needs from the kernel: the probes that must say "supported" before the
// agent loads it (and that `sluice check` and `sluice bpf features` judge).
import type { FeatureReport, ProbeResult } from '../bpf/features.js';

export const REQUIRED_FEATURES: readonly string[] = [
  'program type sched_cls',
  'map type hash',
  'map type array',
  'map type lpm_trie',
  'map type lru_hash',
  'map type prog_array',
  'helper bpf_fib_lookup',
  'helper bpf_redirect',
  'helper bpf_l3_csum_replace',
  'helper bpf_l4_csum_replace',
  'helper bpf_tail_call',
  'helper bpf_redirect_neigh',
  'helper bpf_skb_adjust_room',
  'helper bpf_csum_diff',
  'helper bpf_ktime_get_coarse_ns',
  'helper bpf_loop',
  'map type ringbuf',
  'helper bpf_ringbuf_reserve',
  'program type cgroup_sock_addr (connect4)',
];

export interface FeatureVerdict {
  /** Required probes the kernel said no to. */
  unsupported: ProbeResult[];
  /** Required probes that could not be decided (usually: not root). */
  inconclusive: ProbeResult[];
}

export function judgeFeatures(report: FeatureReport): FeatureVerdict {
  const byName = new Map(report.probes.map((p) => [p.name, p]));
  const unsupported: ProbeResult[] = [];
  const inconclusive: ProbeResult[] = [];
  for (const name of REQUIRED_FEATURES) {
    const p = byName.get(name) ?? { name, status: 'inconclusive' as const, detail: 'not probed' };
    if (p.status === 'unsupported') unsupported.push(p);
    else if (p.status === 'inconclusive') inconclusive.push(p);
  }
  return { unsupported, inconclusive };
}
