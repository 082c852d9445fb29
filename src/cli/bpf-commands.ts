// `sluice bpf ...`: what this kernel supports, and the datapath's pinned counters.
import { judgeFeatures, REQUIRED_FEATURES } from '../datapath/requirements.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { BpfError } from '../bpf/errors.js';
import { formatReport, probeAll } from '../bpf/features.js';
import { BpfMap } from '../bpf/map.js';
import { MapType, mapTypeNames } from '../bpf/syscall.js';
import {
  COUNTERS_MAP,
  countersKey,
  countersValue,
  counterNames,
  readCounters,
  type CounterRow,
} from '../datapath/counters.js';
import { DEFAULT_BPFFS_ROOT } from '../paths.js';
import { CliError, formatJson, formatTable, stdio, type Cell, type OutputFormat, type Printer } from './output.js';

/** Probes the datapath cannot work without (names as probeAll() reports them). */
export function featuresCommand(opts: { output: OutputFormat }, io: Printer = stdio): void {
  const report = probeAll();
  const verdict = judgeFeatures(report);
  if (opts.output === 'json') {
    const required = new Set(REQUIRED_FEATURES);
    io.out(
      formatJson({
        kernel: report.kernel,
        arch: report.arch,
        ok: verdict.unsupported.length === 0 && verdict.inconclusive.length === 0,
        probes: report.probes.map((p) => ({ ...p, required: required.has(p.name) })),
      }),
    );
  } else {
    io.out(formatReport(report));
    if (verdict.unsupported.length === 0 && verdict.inconclusive.length === 0) {
      io.out('');
      io.out(`all ${REQUIRED_FEATURES.length} features the datapath requires are supported`);
    }
  }
  if (verdict.unsupported.length > 0) {
    throw new CliError(
      `this kernel lacks features the datapath requires: ${verdict.unsupported.map((p) => p.name).join(', ')}`,
    );
  }
  if (verdict.inconclusive.length > 0) {
    const root = process.getuid?.() === 0 ? '' : ' (run as root: probing loads programs and creates maps)';
    throw new CliError(
      `could not probe features the datapath requires: ${verdict.inconclusive.map((p) => p.name).join(', ')}${root}`,
    );
  }
}

/** Opens the pinned counters map, with errors that say which path and what to do. */
export function openCountersMap(pinRoot: string): BpfMap {
  const pin = path.join(pinRoot, COUNTERS_MAP);
  if (!existsSync(pin)) {
    const why = existsSync(pinRoot) ? `${pinRoot} exists but has no ${COUNTERS_MAP}` : `${pinRoot} does not exist`;
    throw new CliError(
      `no counters map pinned at ${pin} (${why}); is the datapath loaded? ` +
        `(\`sluice demo --keep\` pins one under /sys/fs/bpf/sluice-demo)`,
    );
  }
  let map: BpfMap;
  try {
    map = BpfMap.openPinned(pin);
  } catch (err) {
    if (err instanceof BpfError) {
      const hint =
        err.code === 'EPERM' || err.code === 'EACCES'
          ? 'permission denied (reading BPF maps needs root)'
          : err.code === 'EINVAL'
            ? 'not a pinned BPF object (is the directory on a BPF filesystem?)'
            : err.message;
      throw new CliError(`cannot open ${pin}: ${hint}`);
    }
    throw err;
  }
  const d = map.def;
  if (d.type !== MapType.PERCPU_HASH || d.keySize !== countersKey.size || d.valueSize !== countersValue.size) {
    map.close();
    throw new CliError(
      `${pin} is not a ${COUNTERS_MAP} map: it is ${mapTypeNames[d.type] ?? `type ${d.type}`} ` +
        `key ${d.keySize} value ${d.valueSize}, expected percpu_hash key ${countersKey.size} value ${countersValue.size}`,
    );
  }
  return map;
}

/** Counter names that are non-zero in at least one row, in schema order. */
export function nonZeroCounters(rows: CounterRow[]): string[] {
  return counterNames.filter((n) => rows.some((r) => r.counters[n] !== 0));
}

export function formatCounters(rows: CounterRow[]): string {
  const names = nonZeroCounters(rows);
  const cells: Cell[][] = rows.map((r) => [
    r.ifindex,
    r.hook,
    ...names.map((n) => r.counters[n as keyof typeof r.counters]),
  ]);
  return formatTable(['ifindex', { header: 'hook', right: false }, ...names], cells);
}

export function countersCommand(opts: { pinRoot?: string; output: OutputFormat }, io: Printer = stdio): void {
  const pinRoot = path.resolve(opts.pinRoot ?? DEFAULT_BPFFS_ROOT);
  const map = openCountersMap(pinRoot);
  let rows: CounterRow[];
  try {
    rows = readCounters(map);
  } finally {
    map.close();
  }
  if (opts.output === 'json') {
    io.out(formatJson({ map: path.join(pinRoot, COUNTERS_MAP), rows }));
    return;
  }
  if (rows.length === 0) {
    io.out(`no counters yet in ${path.join(pinRoot, COUNTERS_MAP)} (no packet has passed a Sluice hook)`);
    return;
  }
  io.out(formatCounters(rows));
  io.out('');
  io.out('ifindex is the interface index inside the network namespace the hook is attached in');
}
