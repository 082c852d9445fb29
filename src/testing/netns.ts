// Test fixture: throwaway network namespaces (`sl-t-<tag>-<pid>-<n>`) with veth pairs, commands
// run inside them, and a cleanup that removes everything the fixture made. Kernel tests and
// the lab attach programs only inside such namespaces, never in the root one.
//
// Commands run with `nsenter --net=/run/netns/NAME`, not `ip netns exec`: the latter also
// enters a new mount namespace and remounts /sys, which hides the bpffs at /sys/fs/bpf.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { errnoName } from '../bpf/errors.js';
import { bpfRaw, Cmd, newAttr } from '../bpf/syscall.js';

export const NETNS_PREFIX = 'sl-t-';
const ENOENT = 2;

export interface ExecResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface ExecOptions {
  /** Kill the command (SIGKILL) after this long. Default 10 s. */
  timeoutMs?: number;
  input?: string;
}

export interface VethOptions {
  /** Namespace and name of the first end. */
  ns: string;
  name: string;
  /** Namespace and name of the peer; the peer namespace defaults to `ns`. */
  peerNs?: string;
  peerName: string;
  /** Addresses in CIDR form, e.g. 10.200.0.1/24. */
  addr?: string;
  peerAddr?: string;
  /** Leave checksum offloads on (default: turned off on both ends). */
  keepOffloads?: boolean;
}

let counter = 0;
const liveFixtures = new Set<NetnsFixture>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when a test process ends without running its `after` hooks.
  process.on('exit', () => {
    for (const f of liveFixtures) f.cleanupSync();
  });
}

function sanitizeTag(tag: string): string {
  const clean = tag.toLowerCase().replace(/[^a-z0-9]/g, '');
  return clean.slice(0, 12) || 'x';
}

function run(file: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> & { child: ChildProcess } {
  let child!: ChildProcess;
  const p = new Promise<ExecResult>((resolve) => {
    child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 10_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        const e = err as
          | (NodeJS.ErrnoException & {
              killed?: boolean;
              signal?: NodeJS.Signals;
            })
          | null;
        let code: number | null = 0;
        if (e) code = typeof e.code === 'number' ? e.code : e.signal ? null : 127;
        const spawnFailed = e && typeof e.code === 'string';
        resolve({
          code,
          signal: e?.signal ?? null,
          stdout: String(stdout ?? ''),
          stderr: spawnFailed ? `${String(stderr ?? '')}${e.message}` : String(stderr ?? ''),
          timedOut: Boolean(e?.killed && e.signal === 'SIGKILL'),
        });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
  return Object.assign(p, { child });
}

function describeFailure(what: string, r: ExecResult): Error {
  const how = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
  return new Error(`${what}: ${how}: ${r.stderr.trim() || r.stdout.trim()}`);
}

/** Namespaces, veths and processes for one test file; `cleanup()` removes all of them. */
export class NetnsFixture {
  readonly tag: string;
  private readonly namespaces: string[] = [];
  private readonly procs = new Set<ChildProcess>();

  constructor(tag: string) {
    this.tag = sanitizeTag(tag);
    liveFixtures.add(this);
    installExitHook();
  }

  /** The namespaces this fixture made and has not deleted yet. */
  get names(): readonly string[] {
    return this.namespaces;
  }

  static nsPath(ns: string): string {
    return `/run/netns/${ns}`;
  }

  private async ip(args: string[]): Promise<ExecResult> {
    return this.track(run('ip', args));
  }

  private async mustIp(args: string[]): Promise<void> {
    const r = await this.ip(args);
    if (r.code !== 0) throw describeFailure(`ip ${args.join(' ')}`, r);
  }

  private track(p: Promise<ExecResult> & { child: ChildProcess }): Promise<ExecResult> {
    this.procs.add(p.child);
    return p.finally(() => this.procs.delete(p.child));
  }

  /** Creates a namespace with a unique name and its loopback up; returns the name. */
  async addNetns(): Promise<string> {
    const name = `${NETNS_PREFIX}${this.tag}-${process.pid}-${++counter}`;
    this.namespaces.push(name); // before creating, so a half-made one is still cleaned up
    await this.mustIp(['netns', 'add', name]);
    await this.mustIp(['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  private owns(ns: string): void {
    if (!this.namespaces.includes(ns)) throw new Error(`namespace ${ns} does not belong to this fixture`);
  }

  /**
   * Creates a veth pair directly inside the namespaces (never in the root namespace), sets
   * the addresses, turns checksum offloads off and brings both ends up.
   */
  async addVeth(o: VethOptions): Promise<void> {
    const peerNs = o.peerNs ?? o.ns;
    this.owns(o.ns);
    this.owns(peerNs);
    await this.mustIp(['-n', o.ns, 'link', 'add', o.name, 'type', 'veth', 'peer', 'name', o.peerName, 'netns', peerNs]);
    const ends: Array<[string, string, string | undefined]> = [
      [o.ns, o.name, o.addr],
      [peerNs, o.peerName, o.peerAddr],
    ];
    for (const [ns, dev, addr] of ends) {
      if (addr) await this.mustIp(['-n', ns, 'addr', 'add', addr, 'dev', dev]);
      if (!o.keepOffloads) await this.mustExec(ns, 'ethtool', ['-K', dev, 'tx', 'off', 'rx', 'off']);
      await this.mustIp(['-n', ns, 'link', 'set', dev, 'up']);
    }
  }

  /** Runs `cmd args` inside `ns` (network namespace only) with a timeout. Never throws for exit codes. */
  exec(ns: string, cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    this.owns(ns);
    return this.track(run('nsenter', [`--net=${NetnsFixture.nsPath(ns)}`, '--', cmd, ...args], opts));
  }

  /** Like exec, but throws when the command fails; returns its stdout. */
  async mustExec(ns: string, cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(ns, cmd, args, opts);
    if (r.code !== 0) throw describeFailure(`${cmd} ${args.join(' ')} in ${ns}`, r);
    return r.stdout;
  }

  /** Starts a long-running process inside `ns`; cleanup() kills it if it is still running. */
  spawn(ns: string, cmd: string, args: string[] = []): ChildProcess {
    this.owns(ns);
    const child = spawn('nsenter', [`--net=${NetnsFixture.nsPath(ns)}`, '--', cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.procs.add(child);
    child.once('exit', () => this.procs.delete(child));
    child.once('error', () => this.procs.delete(child));
    return child;
  }

  /** Kills the fixture's processes and deletes its namespaces (and so their veths). Idempotent. */
  async cleanup(): Promise<void> {
    const errors: string[] = [];
    const waits: Promise<void>[] = [];
    for (const child of this.procs) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      waits.push(
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 5000);
          child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
        }),
      );
      child.kill('SIGKILL');
    }
    await Promise.all(waits);
    this.procs.clear();
    while (this.namespaces.length > 0) {
      const ns = this.namespaces[this.namespaces.length - 1];
      if (fs.existsSync(NetnsFixture.nsPath(ns))) {
        const r = await run('ip', ['netns', 'del', ns]);
        if (r.code !== 0 && fs.existsSync(NetnsFixture.nsPath(ns)))
          errors.push(`ip netns del ${ns}: ${r.stderr.trim()}`);
      }
      this.namespaces.pop();
    }
    liveFixtures.delete(this);
    if (errors.length > 0) throw new Error(`netns fixture cleanup: ${errors.join('; ')}`);
  }

  /** Synchronous cleanup for the process 'exit' hook. */
  cleanupSync(): void {
    for (const child of this.procs) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    this.procs.clear();
    for (const ns of this.namespaces.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', ns], {
          stdio: 'ignore',
          timeout: 5000,
        });
      } catch {
        // best effort at exit
      }
    }
    liveFixtures.delete(this);
  }
}

/**
 * Deletes `sl-t-*` namespaces left by test processes that no longer exist (a crashed or killed
 * run). Namespaces of live processes are left alone. Returns the names deleted.
 */
export function sweepStaleNetns(): string[] {
  let entries: string[];
  try {
    entries = fs.readdirSync('/run/netns');
  } catch {
    return [];
  }
  const deleted: string[] = [];
  for (const name of entries) {
    const m = /^sl-t-[a-z0-9]+-(\d+)-\d+$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // owner alive
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    try {
      execFileSync('ip', ['netns', 'del', name], {
        stdio: 'ignore',
        timeout: 5000,
      });
      deleted.push(name);
    } catch {
      // leave it
    }
  }
  return deleted;
}

function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    try {
      fs.accessSync(path.join(dir, tool), fs.constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

/**
 * Why kernel tests cannot run here (not root, bpf(2) unavailable, a tool missing), or
 * undefined when they can.
 */
export function privilegeProblem(tools: string[] = ['ip', 'nsenter', 'ethtool']): string | undefined {
  if (process.getuid?.() !== 0) return 'kernel tests need root';
  const attr = newAttr(); // BPF_PROG_GET_NEXT_ID from 0: ENOENT (no programs) also means bpf(2) works
  const r = bpfRaw(Cmd.PROG_GET_NEXT_ID, attr);
  if (r < 0 && r !== -ENOENT) return `bpf(2) is not usable: ${errnoName(-r)}`;
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length > 0) return `missing tools: ${missing.join(', ')}`;
  return undefined;
}

/**
 * For node:test kernel tests. Returns true when the test may go on. Otherwise the test fails
 * under CI (CI=true), where kernel tests must run, and is skipped with the reason elsewhere;
 * callers then return: `if (!requirePrivileges(t)) return;`.
 */
export function requirePrivileges(t: TestContext, tools?: string[]): boolean {
  const problem = privilegeProblem(tools);
  if (problem === undefined) return true;
  if (process.env.CI === 'true') throw new Error(`kernel test cannot run under CI: ${problem}`);
  t.skip(problem);
  return false;
}
