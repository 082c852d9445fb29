// Running commands inside the lab's network namespaces, and remembering the processes the lab
// started so that a later sweep can kill them even when the process that started them is gone.
//
// Commands enter only the network namespace (`nsenter --net=/run/netns/NS`), not the mount
// namespace `ip netns exec` would create: that one remounts /sys and hides the bpffs at
// /sys/fs/bpf. nsenter execs the command in place, so the PID we get is the command's own.
//
// Every process started through `execIn`/`spawnIn` with a recorder gets a small file
// `<dir>/<pid>.json` with its start time and command line; it is removed when the process ends.
// `killRecorded(dir)` kills only PIDs recorded there, and only while /proc/PID still shows the
// recorded start time and one of the recorded command lines (so a reused PID is left alone).
import { execFile, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecOptions, ExecResult } from '../testing/netns.js';

export type { ExecResult };

export interface LabExecOptions extends ExecOptions {
  /** Environment of the command (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

export interface LabSpawnOptions {
  env?: NodeJS.ProcessEnv;
  /** Default: stdin ignored, stdout and stderr piped. */
  stdio?: StdioOptions;
}

/** The nsfs mount `ip netns add NAME` makes. */
export function nsPath(ns: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(ns)) throw new Error(`not a namespace name: ${JSON.stringify(ns)}`);
  return `/run/netns/${ns}`;
}

/** argv for running `cmd args` in `ns` (the current namespace when ns is undefined). */
export function nsArgv(ns: string | undefined, cmd: string, args: readonly string[]): string[] {
  if (ns === undefined) return [cmd, ...args];
  return ['nsenter', `--net=${nsPath(ns)}`, '--', cmd, ...args];
}

// ---------------------------------------------------------------------------------------------
// Process records

interface ProcRecord {
  pid: number;
  /** Field 22 of /proc/PID/stat: clock ticks since boot when the process started. */
  starttime: string;
  /** Command lines the process may show: nsenter's before it execs, the command's after. */
  cmdlines: string[][];
  /** What it runs in, for people reading the directory. */
  target: string;
}

function procStarttime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses; the fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); starttime is field 22.
    return rest[19];
  } catch {
    return undefined;
  }
}

function procState(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

function procCmdline(pid: number): string[] | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (raw === '') return [];
    return raw.replace(/\0$/, '').split('\0');
  } catch {
    return undefined;
  }
}

function sameArgv(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Writes and removes the per-process record files in one directory. */
export class ProcessRecorder {
  constructor(readonly dir: string) {}

  /** Records a started process. Synchronous, so it is on disk before anything else runs. */
  record(pid: number, cmdlines: string[][], target: string): void {
    const starttime = procStarttime(pid);
    if (starttime === undefined) return; // already gone
    const rec: ProcRecord = { pid, starttime, cmdlines, target };
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const file = path.join(this.dir, `${pid}.json`);
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(rec) + '\n', { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  forget(pid: number): void {
    try {
      fs.unlinkSync(path.join(this.dir, `${pid}.json`));
    } catch {
      // already removed (e.g. by a sweep)
    }
  }

  /** Records `child` now and forgets it when it ends. */
  track(child: ChildProcess, cmdlines: string[][], target: string): void {
    const pid = child.pid;
    if (pid === undefined) return;
    this.record(pid, cmdlines, target);
    const done = (): void => this.forget(pid);
    child.once('exit', done);
    child.once('error', done);
  }
}

function readRecords(dir: string): ProcRecord[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const out: ProcRecord[] = [];
  for (const name of names) {
    if (!/^\d+\.json$/.test(name)) continue;
    try {
      const rec = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as ProcRecord;
      if (Number.isInteger(rec.pid) && rec.pid > 1 && Array.isArray(rec.cmdlines)) out.push(rec);
    } catch {
      // half-written record: its process was recorded again under .tmp or never started
    }
  }
  return out;
}

/** True when PID still is the process the record describes. */
function stillRecorded(rec: ProcRecord): boolean {
  if (procStarttime(rec.pid) !== rec.starttime) return false;
  const argv = procCmdline(rec.pid);
  if (argv === undefined) return false;
  return rec.cmdlines.some((c) => sameArgv(c, argv));
}

function goneOrZombie(pid: number): boolean {
  const st = procState(pid);
  return st === undefined || st === 'Z' || st === 'X';
}

/**
 * Kills (SIGKILL) the processes recorded in `dir` that still match their records, waits until
 * they are gone (or zombies of a parent that has not reaped them yet), and removes the records.
 * With `target`, only processes recorded as running in that namespace. Returns the PIDs killed.
 */
export async function killRecorded(dir: string, waitMs = 5000, target?: string): Promise<number[]> {
  const killed: number[] = [];
  for (const rec of readRecords(dir)) {
    if (rec.pid === process.pid) continue;
    if (target !== undefined && rec.target !== target) continue;
    if (stillRecorded(rec)) {
      try {
        process.kill(rec.pid, 'SIGKILL');
        killed.push(rec.pid);
      } catch {
        // exited meanwhile
      }
    }
    try {
      fs.unlinkSync(path.join(dir, `${rec.pid}.json`));
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + waitMs;
  while (killed.some((pid) => !goneOrZombie(pid)) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  return killed;
}

/**
 * Kills (SIGKILL) every process whose network namespace is one of `namespaces` (names under
 * /run/netns) and waits until they are gone. The namespaces belong to the lab, so whatever runs
 * in them was started by it, directly or by a child that outlived the records (a command an
 * agent was running when it was killed, a daemon a pod forked into its own process group).
 * Returns the PIDs with their command names, so that a leftover can be told apart.
 */
export async function killInNamespaces(
  namespaces: readonly string[],
  waitMs = 5000,
): Promise<Array<{ pid: number; comm: string }>> {
  const inodes = new Set<number>();
  for (const ns of namespaces) {
    try {
      inodes.add(fs.statSync(`/run/netns/${ns}`).ino);
    } catch {
      // not mounted
    }
  }
  const killed: Array<{ pid: number; comm: string }> = [];
  if (inodes.size === 0) return killed;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const ino = Number(/\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${pid}/ns/net`))?.[1]);
      if (!inodes.has(ino) || goneOrZombie(pid)) continue;
      const comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      process.kill(pid, 'SIGKILL');
      killed.push({ pid, comm });
    } catch {
      // gone meanwhile
    }
  }
  const deadline = Date.now() + waitMs;
  while (killed.some((k) => !goneOrZombie(k.pid)) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  return killed;
}

// ---------------------------------------------------------------------------------------------
// Running

/** Runs `file args` without a shell; never throws for exit codes, signals or a missing file. */
export function run(
  file: string,
  args: readonly string[],
  opts: LabExecOptions = {},
  onChild?: (child: ChildProcess) => void,
): Promise<ExecResult> {
  return new Promise<ExecResult>((resolve) => {
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 10_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
        env: opts.env,
      },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { killed?: boolean; signal?: NodeJS.Signals }) | null;
        const spawnFailed = e !== null && typeof e.code === 'string';
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : e.signal ? null : 127) : 0,
          signal: e?.signal ?? null,
          stdout: String(stdout ?? ''),
          stderr: spawnFailed ? `${String(stderr ?? '')}${e.message}` : String(stderr ?? ''),
          timedOut: Boolean(e?.killed && e.signal === 'SIGKILL'),
        });
      },
    );
    child.stdin?.on('error', () => undefined); // a command that exits without reading its input
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
    onChild?.(child);
  });
}

/** Runs `cmd args` in namespace `ns` (or here when undefined); passes the exit code through. */
export function execIn(
  ns: string | undefined,
  cmd: string,
  args: readonly string[] = [],
  opts: LabExecOptions = {},
  recorder?: ProcessRecorder,
): Promise<ExecResult> {
  const argv = nsArgv(ns, cmd, args);
  return run(argv[0], argv.slice(1), opts, (child) =>
    recorder?.track(child, [argv, [cmd, ...args]], ns ?? 'current namespace'),
  );
}

/** Starts a long-running `cmd args` in namespace `ns` (or here when undefined). */
export function spawnIn(
  ns: string | undefined,
  cmd: string,
  args: readonly string[] = [],
  opts: LabSpawnOptions = {},
  recorder?: ProcessRecorder,
): ChildProcess {
  const argv = nsArgv(ns, cmd, args);
  const child = spawn(argv[0], argv.slice(1), { stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'], env: opts.env });
  recorder?.track(child, [argv, [cmd, ...args]], ns ?? 'current namespace');
  return child;
}

export function describeFailure(what: string, r: ExecResult): Error {
  const how = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
  return new Error(`${what}: ${how}: ${r.stderr.trim() || r.stdout.trim()}`);
}

/** Runs `ip` (or `bridge`) with -batch on `lines` inside `ns` (`-n`, no nsenter); throws on failure. */
export async function batch(
  tool: 'ip' | 'bridge',
  ns: string | undefined,
  lines: readonly string[],
  opts: { force?: boolean; timeoutMs?: number } = {},
): Promise<ExecResult> {
  if (lines.length === 0) return { code: 0, signal: null, stdout: '', stderr: '', timedOut: false };
  const args = [...(ns !== undefined ? ['-n', ns] : []), ...(opts.force ? ['-force'] : []), '-batch', '-'];
  const r = await run(tool, args, { input: lines.join('\n') + '\n', timeoutMs: opts.timeoutMs ?? 20_000 });
  if (r.code !== 0 && !opts.force) {
    throw describeFailure(`${tool} ${ns !== undefined ? `-n ${ns} ` : ''}-batch:\n  ${lines.join('\n  ')}\n`, r);
  }
  return r;
}
