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
