// `sluice demo`: the foundation demo. Two network namespaces joined by a veth pair, the counting
// programs attached (tc ingress + egress on the server side, XDP on the client side), real ICMP,
// TCP and UDP traffic between them, the counters it produced, and a verdict on whether they
// match what was sent. Everything lives in the two namespaces and one pin directory; nothing
// touches the root network namespace, and everything is removed again (also on error and on
// SIGINT/SIGTERM) unless --keep is given.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureBpffs, ensurePinDir, isBpffs, removePinDir } from '../bpf/bpffs.js';
import { Collection } from '../bpf/collection.js';
import { probeTcx } from '../bpf/features.js';
import { attachTcx, attachXdp, type Link } from '../bpf/link.js';
import { ifindexIn, withNetns } from '../bpf/netns.js';
import { loadObjectFile, type ObjectSpec } from '../bpf/spec.js';
import { attachTcLegacy, type TcFilter } from '../bpf/tc-legacy.js';
import { COUNTERS_MAP, Hook, readCounters, type CounterRow } from '../datapath/counters.js';
import { bpfObjectPath } from '../paths.js';
import { CliError, formatTable, stdio, type Cell, type Printer } from './output.js';

export const DEMO_CLIENT_NS = 'sl-demo-client';
export const DEMO_SERVER_NS = 'sl-demo-server';
export const DEMO_PIN_DIR = '/sys/fs/bpf/sluice-demo';
/** Held while a demo runs, so two runs do not tear down each other's namespaces. */
export const DEMO_LOCK = '/run/sluice-demo.lock';

const CLIENT_DEV = 'sl-cli0';
const SERVER_DEV = 'sl-srv0';
const CLIENT_ADDR = '10.250.0.1';
const SERVER_ADDR = '10.250.0.2';
const PREFIX = 24;
const TCP_PORT = 8080;
const UDP_PORT = 8081;
const PINGS = 5;
const TCP_MESSAGES = 3;
const UDP_DATAGRAMS = 4;

export interface DemoOptions {
  keep?: boolean;
  legacyTc?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Processes

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a command without a shell, with a timeout; never throws for exit codes. */
function run(
  file: string,
  args: string[],
  children: Set<ChildProcess>,
  timeoutMs = 10_000,
  env?: NodeJS.ProcessEnv,
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 16 * 1024 * 1024, env },
      (err, stdout, stderr) => {
        children.delete(child);
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
    children.add(child);
    child.stdin?.end();
  });
}

function failure(what: string, r: RunResult): CliError {
  const how = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
  const detail = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join('; ');
  return new CliError(`${what}: ${how}${detail ? `: ${detail}` : ''}`);
}

const nsPath = (ns: string): string => `/run/netns/${ns}`;
const nsExists = (ns: string): boolean => fs.existsSync(nsPath(ns));

/** `nsenter --net` only (not `ip netns exec`, which remounts /sys and hides bpffs). */
function inNs(ns: string, cmd: string, args: string[]): [string, string[]] {
  return ['nsenter', [`--net=${nsPath(ns)}`, '--', cmd, ...args]];
}

// ---------------------------------------------------------------------------------------------
// Traffic generators: small Node programs run inside the namespaces. They take their settings
// from the environment and exit on their own (timeout, or stdin closing when the demo dies).

const SERVER_JS = `
const net = require('node:net'), dgram = require('node:dgram');
const host = process.env.SL_HOST, tcpPort = Number(process.env.SL_TCP), udpPort = Number(process.env.SL_UDP);
let pending = 2;
const ready = () => { if (--pending === 0) process.stdout.write('ready\\n'); };
const tcp = net.createServer((s) => {
  s.on('data', (d) => s.write(d));
  s.on('end', () => s.end());
  s.on('error', () => {});
});
tcp.listen(tcpPort, host, ready);
const udp = dgram.createSocket('udp4');
udp.on('message', (m, r) => udp.send(m, r.port, r.address));
udp.bind(udpPort, host, ready);
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(2), 30000);
`;

const CLIENT_JS = `
const net = require('node:net'), dgram = require('node:dgram');
const host = process.env.SL_HOST, tcpPort = Number(process.env.SL_TCP), udpPort = Number(process.env.SL_UDP);
const nTcp = Number(process.env.SL_NTCP), nUdp = Number(process.env.SL_NUDP);
setTimeout(() => { process.stderr.write('client timed out\\n'); process.exit(2); }, 8000);
function tcpExchange() {
  return new Promise((resolve, reject) => {
    const s = net.connect(tcpPort, host);
    let i = 0, buf = '', echoed = 0, bytes = 0;
    const send = () => { const m = 'sluice demo tcp message ' + (i++) + '\\n'; bytes += m.length; s.write(m); };
    s.setEncoding('utf8');
    s.on('connect', send);
    s.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\\n')) >= 0) {
        buf = buf.slice(nl + 1);
        echoed++;
        if (i < nTcp) send(); else if (echoed === nTcp) s.end();
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve({ sent: i, echoed, bytes }));
  });
}
function udpExchange() {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    let i = 0, echoed = 0, timer;
    const send = () => {
      const m = Buffer.from('sluice demo udp datagram ' + (i++));
      s.send(m, udpPort, host);
      timer = setTimeout(() => { s.close(); reject(new Error('no UDP echo within 1s')); }, 1000);
    };
    s.on('message', () => {
      clearTimeout(timer);
      echoed++;
      if (i < nUdp) send(); else { s.close(); resolve({ sent: i, echoed }); }
    });
    s.on('error', reject);
    s.bind(0, () => send());
  });
}
(async () => {
  const tcp = await tcpExchange();
  const udp = await udpExchange();
  process.stdout.write(JSON.stringify({ tcp, udp }) + '\\n');
  process.exit(0);
})().catch((e) => { process.stderr.write(String(e && e.message || e) + '\\n'); process.exit(1); });
`;

// ---------------------------------------------------------------------------------------------
// The lock

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockHolder(): number | undefined {
  try {
    const pid = Number(fs.readFileSync(DEMO_LOCK, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function tryLock(): boolean {
  try {
    fs.writeFileSync(DEMO_LOCK, `${process.pid}\n`, { flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    if (lockHolder() !== undefined) return false;
    fs.rmSync(DEMO_LOCK, { force: true }); // left by a run that no longer exists
    return false;
  }
}

async function acquireLock(io: Printer, waitMs = 60_000): Promise<void> {
  const deadline = Date.now() + waitMs;
  let told = false;
  while (!tryLock()) {
    const holder = lockHolder();
    if (holder !== undefined && !told) {
      io.out(`waiting for the demo run by pid ${holder} to finish`);
      told = true;
    }
    if (Date.now() > deadline) {
      throw new CliError(`another sluice demo (pid ${holder ?? '?'}) is still running; lock ${DEMO_LOCK}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function releaseLock(): void {
  try {
    if (fs.readFileSync(DEMO_LOCK, 'utf8').trim() === String(process.pid)) fs.rmSync(DEMO_LOCK, { force: true });
  } catch {
    // not ours or already gone
  }
}

// ---------------------------------------------------------------------------------------------
// Teardown shared by the demo's cleanup, --down and leftovers of a crashed run

/** Removes the demo's namespaces and pin directory if they exist; returns what was removed. */
function removeDemoState(): { removed: string[]; errors: string[] } {
  const removed: string[] = [];
  const errors: string[] = [];
  for (const ns of [DEMO_CLIENT_NS, DEMO_SERVER_NS]) {
    if (!nsExists(ns)) continue;
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe', timeout: 10_000 });
      removed.push(`network namespace ${ns}`);
    } catch (err) {
      if (nsExists(ns)) errors.push(`ip netns del ${ns}: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`);
    }
  }
  if (fs.existsSync(DEMO_PIN_DIR)) {
    try {
      if (!isBpffs(DEMO_PIN_DIR)) throw new Error('not on a BPF filesystem; left alone');
      removePinDir(DEMO_PIN_DIR);
      removed.push(`pin directory ${DEMO_PIN_DIR}`);
    } catch (err) {
      errors.push(`remove ${DEMO_PIN_DIR}: ${(err as Error).message}`);
    }
  }
  return { removed, errors };
}

/** `sluice demo --down`: removes what `sluice demo --keep` left running. */
export async function demoDown(io: Printer = stdio): Promise<void> {
  if (process.getuid?.() !== 0) throw new CliError('removing the demo needs root');
  await acquireLock(io, 10_000);
  try {
    const { removed, errors } = removeDemoState();
    if (removed.length === 0 && errors.length === 0) io.out('nothing to remove: no demo is set up');
    for (const r of removed) io.out(`removed ${r}`);
    if (errors.length > 0) throw new CliError(`could not remove everything: ${errors.join('; ')}`);
  } finally {
    releaseLock();
  }
}

// ---------------------------------------------------------------------------------------------
// The demo

/** Everything the running demo has made, so any exit path can undo it. */
class DemoResources {
  readonly children = new Set<ChildProcess>();
  links: Link[] = [];
  filters: TcFilter[] = [];
  collections: Collection[] = [];
  /** Set once the namespaces or the pin directory may exist. */
  touched = false;
  private done = false;

  /** Kills processes, detaches and closes everything, deletes namespaces and pins. Idempotent. */
  cleanupSync(): string[] {
    if (this.done) return [];
    this.done = true;
    const errors: string[] = [];
    const attempt = (what: string, fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        errors.push(`${what}: ${(err as Error).message}`);
      }
    };
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) attempt('kill', () => c.kill('SIGKILL'));
    }
    this.children.clear();
    for (const l of this.links.splice(0)) attempt('close link', () => l.close());
    for (const f of this.filters.splice(0)) {
      if (nsExists(DEMO_SERVER_NS)) attempt('detach tc filter', () => void f.detach());
    }
    for (const c of this.collections.splice(0)) attempt('close objects', () => c.close());
    if (this.touched) errors.push(...removeDemoState().errors);
    releaseLock();
    return errors;
  }

  /** Lets go of fds without detaching: pinned links and tc filters keep running (--keep). */
  releaseKept(): void {
    this.done = true;
    for (const l of this.links.splice(0)) l.close();
    this.filters.splice(0);
    for (const c of this.collections.splice(0)) c.close();
    releaseLock();
  }
}

function step(io: Printer, title: string): void {
  io.out('');
  io.out(`==> ${title}`);
}

export interface DemoCounters {
  ingress?: CounterRow['counters'];
  egress?: CounterRow['counters'];
  xdp?: CounterRow['counters'];
}

export interface DemoTraffic {
  pings: { sent: number; received: number };
  tcp: { sent: number; echoed: number };
  udp: { sent: number; echoed: number };
}

/**
 * Checks the counters against the traffic: ICMP and UDP exactly (one packet per ping and per
 * datagram each way), TCP at least the segments that must exist, and the XDP hook on the client
 * seeing exactly what left the server's egress hook (a veth loses nothing).
 */
export function judge(c: DemoCounters, t: DemoTraffic): { ok: boolean; problems: string[] } {
  const problems: string[] = [];
  const get = (row: DemoCounters[keyof DemoCounters], n: 'tcp' | 'udp' | 'icmp'): number => row?.[n] ?? 0;
  const expectEq = (what: string, got: number, want: number): void => {
    if (got !== want) problems.push(`${what} is ${got}, expected ${want}`);
  };
  const expectAtLeast = (what: string, got: number, want: number): void => {
    if (got < want) problems.push(`${what} is ${got}, expected at least ${want}`);
  };
  expectEq('tc-ingress icmp', get(c.ingress, 'icmp'), t.pings.sent);
  expectEq('tc-egress icmp', get(c.egress, 'icmp'), t.pings.received);
  expectEq('xdp icmp', get(c.xdp, 'icmp'), t.pings.received);
  expectEq('tc-ingress udp', get(c.ingress, 'udp'), t.udp.sent);
  expectEq('tc-egress udp', get(c.egress, 'udp'), t.udp.echoed);
  expectEq('xdp udp', get(c.xdp, 'udp'), t.udp.echoed);
  // Client to server: SYN, one segment per message, FIN. Server to client: SYN-ACK, echoes, FIN.
  expectAtLeast('tc-ingress tcp', get(c.ingress, 'tcp'), t.tcp.sent + 2);
  expectAtLeast('tc-egress tcp', get(c.egress, 'tcp'), t.tcp.echoed + 2);
  expectEq('xdp tcp (what tc-egress sent)', get(c.xdp, 'tcp'), get(c.egress, 'tcp'));
  for (const [hook, row] of Object.entries(c)) {
    if (row && row.accepted !== row.packets) problems.push(`${hook}: accepted ${row.accepted} of ${row.packets}`);
  }
  if (t.pings.received !== t.pings.sent) problems.push(`ping: ${t.pings.received} of ${t.pings.sent} answered`);
  return { ok: problems.length === 0, problems };
}

export async function runDemo(opts: DemoOptions = {}, io: Printer = stdio): Promise<void> {
  const res = new DemoResources();
  const onSignal = (sig: NodeJS.Signals): void => {
    io.err(`\nsluice demo: ${sig}: cleaning up`);
    const errors = res.cleanupSync();
    for (const e of errors) io.err(`sluice demo: cleanup: ${e}`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  const onExit = (): void => void res.cleanupSync();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  const started = Date.now();
  let failed = true;
  try {
    await demo(opts, io, res);
    failed = false;
  } finally {
    process.off('exit', onExit);
    if (failed || !opts.keep) {
      const touched = res.touched;
      if (touched) step(io, 'cleanup');
      const errors = res.cleanupSync();
      if (errors.length > 0) {
        for (const e of errors) io.err(`sluice demo: cleanup: ${e}`);
      } else if (touched) {
        io.out(`    removed namespaces ${DEMO_CLIENT_NS}, ${DEMO_SERVER_NS} (and the veth pair) and ${DEMO_PIN_DIR}`);
      }
    } else {
      res.releaseKept();
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  io.out('');
  io.out(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

async function demo(opts: DemoOptions, io: Printer, res: DemoResources): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new CliError('the demo needs root: it creates network namespaces and loads BPF programs');
  }
  const tcxProbe = probeTcx();
  const useTcx = !opts.legacyTc && tcxProbe.status === 'supported';
  const tcMode = useTcx ? 'tcx links' : 'legacy clsact qdisc + bpf filters';
  io.out('sluice demo: count real traffic between two network namespaces with tc_count and xdp_count');
  io.out(
    `    tc attach mode: ${tcMode}` +
      (opts.legacyTc ? ' (--legacy-tc)' : useTcx ? '' : ` (tcx ${tcxProbe.status}: ${tcxProbe.detail ?? ''})`),
  );

  await acquireLock(io);
  res.touched = true;
  const leftovers = removeDemoState();
  if (leftovers.errors.length > 0) throw new CliError(`cannot remove an earlier demo: ${leftovers.errors.join('; ')}`);
  if (leftovers.removed.length > 0) io.out(`    removed leftovers of an earlier run: ${leftovers.removed.join(', ')}`);

  const ip = async (...args: string[]): Promise<void> => {
    const r = await run('ip', args, res.children);
    if (r.code !== 0) throw failure(`ip ${args.join(' ')}`, r);
  };

  // 1. Network
  step(io, 'network: two namespaces joined by a veth pair (nothing in the root namespace)');
  for (const ns of [DEMO_CLIENT_NS, DEMO_SERVER_NS]) {
    await ip('netns', 'add', ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    // No IPv6 autoconfiguration chatter: the only packets are the ones the demo sends.
    withNetns(ns, () => {
      for (const scope of ['all', 'default']) {
        try {
          fs.writeFileSync(`/proc/sys/net/ipv6/conf/${scope}/disable_ipv6`, '1');
        } catch {
          // no IPv6 in this kernel
        }
      }
    });
    io.out(`    created network namespace ${ns}`);
  }
  await ip(
    '-n',
    DEMO_CLIENT_NS,
    'link',
    'add',
    CLIENT_DEV,
    'type',
    'veth',
    'peer',
    'name',
    SERVER_DEV,
    'netns',
    DEMO_SERVER_NS,
  );
  const ends: Array<[string, string, string]> = [
    [DEMO_CLIENT_NS, CLIENT_DEV, CLIENT_ADDR],
    [DEMO_SERVER_NS, SERVER_DEV, SERVER_ADDR],
  ];
  for (const [ns, dev, addr] of ends) {
    await ip('-n', ns, 'addr', 'add', `${addr}/${PREFIX}`, 'dev', dev);
    await ip('-n', ns, 'link', 'set', dev, 'up');
  }
  const clientIf = ifindexIn(DEMO_CLIENT_NS, CLIENT_DEV);
  const serverIf = ifindexIn(DEMO_SERVER_NS, SERVER_DEV);
  io.out(
    `    created veth ${CLIENT_DEV} ${CLIENT_ADDR}/${PREFIX} (${DEMO_CLIENT_NS}, ifindex ${clientIf})` +
      ` <-> ${SERVER_DEV} ${SERVER_ADDR}/${PREFIX} (${DEMO_SERVER_NS}, ifindex ${serverIf})`,
  );

  // 2. Programs
  step(io, `load: BPF objects, maps pinned under ${DEMO_PIN_DIR}`);
  ensureBpffs();
  ensurePinDir(DEMO_PIN_DIR);
  const tcSpec = readObject('tc_count');
  const xdpSpec = readObject('xdp_count');
  const load = (spec: ObjectSpec, constants?: Record<string, number>): Collection => {
    const c = Collection.load(spec, { pinRoot: DEMO_PIN_DIR, constants });
    res.collections.push(c);
    return c;
  };
  const tcIn = load(tcSpec, { sl_hook: Hook.TC_INGRESS });
  const tcOut = load(tcSpec, { sl_hook: Hook.TC_EGRESS });
  const xdp = load(xdpSpec);
  const progIn = tcIn.program('sl_tc_count');
  const progOut = tcOut.program('sl_tc_count');
  const progXdp = xdp.program('sl_xdp_count');
  const objName = (p: string): string => path.basename(p);
  io.out(
    `    loaded ${objName(tcSpec.source)} with .rodata sl_hook=${Hook.TC_INGRESS} (tc-ingress): program id ${progIn.id()}`,
  );
  io.out(
    `    loaded ${objName(tcSpec.source)} with .rodata sl_hook=${Hook.TC_EGRESS} (tc-egress):  program id ${progOut.id()}`,
  );
  io.out(`    loaded ${objName(xdpSpec.source)} (xdp): program id ${progXdp.id()}`);
  const counters = tcIn.map(COUNTERS_MAP);
  io.out(
    `    map ${COUNTERS_MAP} (id ${counters.id()}) pinned at ${path.join(DEMO_PIN_DIR, COUNTERS_MAP)}, shared by all three`,
  );

  // 3. Attach
  step(io, 'attach: XDP on the client side, tc ingress + egress on the server side');
  const xdpLink = withNetns(DEMO_CLIENT_NS, () => attachXdp(progXdp, clientIf));
  res.links.push(xdpLink);
  const xi = xdpLink.info();
  io.out(`    xdp on ${CLIENT_DEV} (${DEMO_CLIENT_NS}): link id ${xi.id}, program id ${xi.progId}`);
  const tcAttached: Array<[string, Link | TcFilter]> = [];
  for (const [direction, prog] of [
    ['ingress', progIn],
    ['egress', progOut],
  ] as const) {
    if (useTcx) {
      const link = withNetns(DEMO_SERVER_NS, () => attachTcx(prog, serverIf, direction));
      res.links.push(link);
      tcAttached.push([direction, link]);
      const li = link.info();
      io.out(`    tcx ${direction} on ${SERVER_DEV} (${DEMO_SERVER_NS}): link id ${li.id}, program id ${li.progId}`);
    } else {
      const filter = attachTcLegacy({
        ifindex: serverIf,
        ifname: SERVER_DEV,
        netns: DEMO_SERVER_NS,
        direction,
        progFd: prog.fd,
        name: 'sl_tc_count',
      });
      res.filters.push(filter);
      tcAttached.push([direction, filter]);
      const fi = filter.info();
      io.out(
        `    clsact ${direction} bpf filter on ${SERVER_DEV} (${DEMO_SERVER_NS}): ` +
          `pref ${filter.priority} handle ${filter.handle}, program id ${fi?.progId ?? prog.id()}`,
      );
    }
  }

  // 4. Traffic
  step(io, `traffic: ${DEMO_CLIENT_NS} (${CLIENT_ADDR}) -> ${DEMO_SERVER_NS} (${SERVER_ADDR})`);
  const traffic = await generateTraffic(io, res);

  // 5. Counters
  step(io, `counters: ${path.join(DEMO_PIN_DIR, COUNTERS_MAP)}`);
  const rows = readCounters(counters);
  const find = (ifindex: number, hook: CounterRow['hook']): CounterRow['counters'] | undefined =>
    rows.find((r) => r.ifindex === ifindex && r.hook === hook)?.counters;
  const seen: DemoCounters = {
    ingress: find(serverIf, 'tc-ingress'),
    egress: find(serverIf, 'tc-egress'),
    xdp: find(clientIf, 'xdp'),
  };
  const table: Cell[][] = [];
  const shown: Array<[string, number, CounterRow['hook'], CounterRow['counters'] | undefined, string]> = [
    [`${DEMO_SERVER_NS}/${SERVER_DEV}`, serverIf, 'tc-ingress', seen.ingress, 'client -> server'],
    [`${DEMO_SERVER_NS}/${SERVER_DEV}`, serverIf, 'tc-egress', seen.egress, 'server -> client'],
    [`${DEMO_CLIENT_NS}/${CLIENT_DEV}`, clientIf, 'xdp', seen.xdp, 'server -> client'],
  ];
  for (const [iface, ifindex, hook, c, dir] of shown) {
    table.push([
      iface,
      ifindex,
      hook,
      c?.packets ?? 0,
      c?.bytes ?? 0,
      c?.tcp ?? 0,
      c?.udp ?? 0,
      c?.icmp ?? 0,
      c?.accepted ?? 0,
      dir,
    ]);
  }
  io.out(
    formatTable(
      ['interface', 'ifindex', 'hook', 'packets', 'bytes', 'tcp', 'udp', 'icmp', 'accepted', 'direction'],
      table,
      '    ',
    ),
  );
  const verdict = judge(seen, traffic);
  io.out('');
  if (verdict.ok) {
    io.out(
      `verdict: OK: ${traffic.pings.sent} pings, ${traffic.tcp.sent} TCP messages and ${traffic.udp.sent} UDP datagrams ` +
        `were sent and echoed; every hook counted each ICMP and UDP packet exactly once, ` +
        `and XDP saw every TCP segment tc-egress sent (${seen.egress?.tcp ?? 0})`,
    );
  } else {
    io.out(`verdict: MISMATCH: ${verdict.problems.join('; ')}`);
    throw new CliError('the counters do not match the traffic that was sent (see the verdict above)');
  }

  if (opts.keep) {
    step(io, 'keep: the demo stays attached');
    for (const [direction, a] of tcAttached) {
      if ('pin' in a) {
        const p = path.join(DEMO_PIN_DIR, `link_tcx_${direction}_${SERVER_DEV}`);
        a.pin(p);
        io.out(`    pinned tcx ${direction} link at ${p}`);
      } else {
        io.out(`    clsact ${direction} filter stays on ${SERVER_DEV} (tc filters need no pin)`);
      }
    }
    const xp = path.join(DEMO_PIN_DIR, `link_xdp_${CLIENT_DEV}`);
    xdpLink.pin(xp);
    io.out(`    pinned xdp link at ${xp}`);
    io.out(`    try:     nsenter --net=${nsPath(DEMO_CLIENT_NS)} ping -c 3 ${SERVER_ADDR}`);
    io.out(`    then:    sluice bpf counters --pin-root ${DEMO_PIN_DIR}`);
    io.out(`    remove:  sluice demo --down`);
  }
}

function readObject(name: string): ObjectSpec {
  const file = bpfObjectPath(name);
  if (!fs.existsSync(file)) {
    throw new CliError(`BPF object ${file} is missing; build the objects with \`npm run build:bpf\``);
  }
  return loadObjectFile(file);
}

async function generateTraffic(io: Printer, res: DemoResources): Promise<DemoTraffic> {
  // ICMP
  const [pf, pa] = inNs(DEMO_CLIENT_NS, 'ping', ['-c', String(PINGS), '-i', '0.05', '-W', '1', '-q', SERVER_ADDR]);
  const pr = await run(pf, pa, res.children, 10_000);
  const m = /(\d+) packets transmitted, (\d+) received/.exec(pr.stdout);
  if (!m) throw failure(`ping ${SERVER_ADDR} in ${DEMO_CLIENT_NS}`, pr);
  const pings = { sent: Number(m[1]), received: Number(m[2]) };
  io.out(
    `    icmp: ping -c ${PINGS} ${SERVER_ADDR}: ${pings.sent} echo requests sent, ${pings.received} replies received`,
  );

  // TCP and UDP: an echo server in the server namespace, a client in the client namespace.
  const env = {
    ...process.env,
    SL_HOST: SERVER_ADDR,
    SL_TCP: String(TCP_PORT),
    SL_UDP: String(UDP_PORT),
    SL_NTCP: String(TCP_MESSAGES),
    SL_NUDP: String(UDP_DATAGRAMS),
  };
  const [sf, sa] = inNs(DEMO_SERVER_NS, process.execPath, ['-e', SERVER_JS]);
  const server = spawn(sf, sa, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  res.children.add(server);
  try {
    await waitForReady(server, 5000);
    io.out(
      `    started echo servers in ${DEMO_SERVER_NS} (pid ${server.pid}): tcp ${SERVER_ADDR}:${TCP_PORT}, udp ${SERVER_ADDR}:${UDP_PORT}`,
    );
    const [cf, ca] = inNs(DEMO_CLIENT_NS, process.execPath, ['-e', CLIENT_JS]);
    const client = await run(cf, ca, res.children, 10_000, env);
    if (client.code !== 0) throw failure(`tcp/udp client in ${DEMO_CLIENT_NS}`, client);
    const r = JSON.parse(client.stdout.trim()) as {
      tcp: { sent: number; echoed: number; bytes: number };
      udp: { sent: number; echoed: number };
    };
    io.out(
      `    tcp:  ${r.tcp.sent} messages (${r.tcp.bytes} bytes) sent to ${SERVER_ADDR}:${TCP_PORT} on one connection, ${r.tcp.echoed} echoed, connection closed`,
    );
    io.out(`    udp:  ${r.udp.sent} datagrams sent to ${SERVER_ADDR}:${UDP_PORT}, ${r.udp.echoed} echoed`);
    return { pings, tcp: r.tcp, udp: r.udp };
  } finally {
    await stopChild(server);
    res.children.delete(server);
  }
}

function waitForReady(child: ChildProcess, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => done(new CliError(`echo server did not start within ${timeoutMs} ms: ${err.trim()}`)),
      timeoutMs,
    );
    const done = (e?: Error): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onOut);
      child.off('exit', onExit);
      if (e) reject(e);
      else resolve();
    };
    const onOut = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('ready\n')) done();
    };
    const onExit = (code: number | null): void =>
      done(new CliError(`echo server exited (code ${code}): ${err.trim()}`));
    child.stdout?.on('data', onOut);
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', onExit);
    child.once('error', (e) => done(new CliError(`cannot start the echo server: ${e.message}`)));
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, 2000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.stdin?.end(); // the server exits when its stdin closes
  });
}
