// Schema of sl_counters_v1 (bpf/include/counters.h): per-interface, per-hook packet counters.
import { array, struct, u32, u64n } from '../bpf/codec.js';
import { TypedMap } from '../bpf/typed-map.js';
import type { BpfMap } from '../bpf/map.js';

export const COUNTERS_MAP = 'sl_counters_v1';

export const Hook = { TC_INGRESS: 0, TC_EGRESS: 1, XDP: 2 } as const;
export const hookNames = ['tc-ingress', 'tc-egress', 'xdp'] as const;

/** Indices into sl_counters.c, in the order of enum sl_counter. */
export const counterNames = [
  'packets',
  'bytes',
  'ipv4',
  'tcp',
  'udp',
  'icmp',
  'other',
  'accepted',
  'nat',
  'drop_malformed',
  'drop_policy',
  'drop_no_backend',
  'drop_other',
  'drop_rpf',
  'kernel_path',
] as const;
export type CounterName = (typeof counterNames)[number];

export const countersKey = struct('sl_counters_key', { ifindex: u32, hook: u32 });
export const countersValue = struct('sl_counters', { c: array(u64n, 16) });

export interface CounterRow {
  ifindex: number;
  hook: (typeof hookNames)[number];
  counters: Record<CounterName, number>;
}

export function countersMap(map: BpfMap) {
  return new TypedMap(map, countersKey, countersValue);
}

/** Reads all counters, summed over CPUs. */
export function readCounters(map: BpfMap): CounterRow[] {
  const rows: CounterRow[] = [];
  for (const [k, perCpu] of countersMap(map).entriesPerCpu()) {
    const totals = perCpu.reduce((acc, v) => acc.map((x, i) => x + v.c[i]), new Array<number>(16).fill(0));
    const counters = Object.fromEntries(counterNames.map((n, i) => [n, totals[i]])) as Record<CounterName, number>;
    rows.push({ ifindex: k.ifindex, hook: hookNames[k.hook] ?? (`hook${k.hook}` as never), counters });
  }
  return rows.sort((a, b) => a.ifindex - b.ifindex || a.hook.localeCompare(b.hook));
}
