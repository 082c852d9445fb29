// Map update throughput from TypeScript: one bpf(2) call per element (the baseline) against
// BPF_MAP_UPDATE_BATCH, on a hash map shaped like the NAT backend map (16-byte values).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BpfMap } from '../src/bpf/map.js';
import { packageRoot } from '../src/paths.js';
import { MapType } from '../src/bpf/syscall.js';
import { TypedMap } from '../src/bpf/typed-map.js';
import { ipv4, struct, u16, u32, pad, be16 } from '../src/bpf/codec.js';
import { median, repeat, since, spread } from './stats.js';

const key = struct('bench_key', { id: u32, ordinal: u32 });
const value = struct('bench_value', { addr: ipv4, port: be16, flags: u16, zone: u32, _pad: pad(4) });

export interface MapUpdateResult {
  entries: number;
  runs: number;
  singlePerSec: { median: number; min: number; max: number };
  batchPerSec: { median: number; min: number; max: number };
  batchOverSingle: number;
  /** Counting the full map (ms): a GET_NEXT_KEY walk, the baseline, against BpfMap.count() (batched lookups). */
  countWalkMs: { median: number; min: number; max: number };
  countBatchMs: { median: number; min: number; max: number };
  /** The same updates from plain C in the same run (bench/baseline/map_update.c). */
  c?: { singlePerSec: number; batchPerSec: number };
  singleOverC?: number;
  batchOverC?: number;
}

/** Builds and runs the C baseline; undefined when no C compiler is installed. */
export function cBaseline(n: number, runs: number): { singlePerSec: number; batchPerSec: number } | undefined {
  const src = path.join(packageRoot, 'bench', 'baseline', 'map_update.c');
  const bin = path.join(os.tmpdir(), `sluice-bench-map-update-${process.pid}`);
  try {
    execFileSync('cc', ['-O2', '-o', bin, src], { stdio: 'pipe' });
    const out = execFileSync(bin, [String(n), String(runs)], { encoding: 'utf8' });
    const m = /single (\d+) batch (\d+)/.exec(out);
    return m ? { singlePerSec: Number(m[1]), batchPerSec: Number(m[2]) } : undefined;
  } catch {
    return undefined;
  } finally {
    rmSync(bin, { force: true });
  }
}

function entries(n: number, salt: number) {
  const out: [{ id: number; ordinal: number }, { addr: string; port: number; flags: number; zone: number }][] = [];
  for (let i = 0; i < n; i++) {
    out.push([
      { id: i >> 4, ordinal: i & 15 },
      { addr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 8080 + salt, flags: salt, zone: i },
    ]);
  }
  return out;
}

export function benchMapUpdates(n = 100_000, runs = 5): MapUpdateResult {
  const map = BpfMap.create({
    name: 'sl_bench',
    type: MapType.HASH,
    keySize: key.size,
    valueSize: value.size,
    maxEntries: n,
  });
  const typed = new TypedMap(map, key, value);
  try {
    const data = entries(n, 1);
    // Warm up both paths (JIT, allocation of hash elements) once.
    for (const [k, v] of data.slice(0, 10_000)) typed.set(k, v);
    typed.setMany(data.slice(0, 10_000));
    const single = repeat(runs, () => {
      const t = process.hrtime.bigint();
      for (let i = 0; i < data.length; i++) typed.set(data[i][0], data[i][1]);
      return n / since(t);
    });
    const batch = repeat(runs, () => {
      const t = process.hrtime.bigint();
      typed.setMany(data);
      return n / since(t);
    });
    const s = { median: median(single), ...spread(single) };
    const b = { median: median(batch), ...spread(batch) };
    // What the agent's map-entry metric cost at 10,000 Services (a walk) and what it costs now.
    const timeMs = (count: () => number): number[] =>
      repeat(runs, () => {
        const t = process.hrtime.bigint();
        if (count() !== n) throw new Error('the count does not match the entries written');
        return since(t) * 1000;
      });
    const walk = timeMs(() => {
      let k = 0;
      for (const _ of map.keys()) k++;
      return k;
    });
    const counted = timeMs(() => map.count());
    const c = cBaseline(n, runs);
    return {
      entries: n,
      runs,
      singlePerSec: s,
      batchPerSec: b,
      batchOverSingle: b.median / s.median,
      countWalkMs: { median: median(walk), ...spread(walk) },
      countBatchMs: { median: median(counted), ...spread(counted) },
      c,
      singleOverC: c ? s.median / c.singlePerSec : undefined,
      batchOverC: c ? b.median / c.batchPerSec : undefined,
    };
  } finally {
    map.close();
  }
}
