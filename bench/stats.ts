// Small statistics for benchmarks: repeated runs, median and spread.
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function spread(xs: number[]): { min: number; max: number } {
  return { min: Math.min(...xs), max: Math.max(...xs) };
}

export function repeat(n: number, fn: () => number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(fn());
  return out;
}

/** Seconds since `start` (from process.hrtime.bigint()). */
export function since(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** The q-quantile (0..1) of the values, nearest rank (no interpolation: p99 is a measured value). */
export function percentile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil(q * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}

/** Repeated measurements: every run, their median and their spread. */
export interface Dist {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export function dist(runs: number[]): Dist {
  if (runs.length === 0) return { median: NaN, min: NaN, max: NaN, runs };
  return { median: median(runs), ...spread(runs), runs };
}
