// Continuous traffic for live changes (the seed's steps are meant to be done on a live cluster):
//   echo probe (--tcp|--udp) HOST:PORT [--interval MS] [--timeout MS] [--keep]
// Every interval one fresh request (a new TCP connection, or a new UDP socket: a new flow each
// time, so each one is load-balanced and NATed anew). With --keep (TCP), also one long-lived
// connection that carries a line every interval: it shows whether connections that existed
// before a change survive it. Prints a JSON line when it starts, one per failure as it happens
// (so a watcher can tell when), and a summary when stopped with SIGTERM/SIGINT.
import net from 'node:net';
import { askEcho, type EchoProto } from './echo.js';

export interface ProbeOptions {
  proto: Extract<EchoProto, 'tcp' | 'udp'>;
  host: string;
  port: number;
  intervalMs: number;
  timeoutMs: number;
  keep: boolean;
}

export interface ProbeSummary {
  event: 'summary';
  server: string;
  /** Fresh flows: sent, answered, failed. */
  sent: number;
  ok: number;
  failed: number;
  /** Answered, but only after a second or more (a retransmitted SYN or datagram). */
  slow: number;
  /** Answers per backend name, and the client addresses the backends saw (fresh flows). */
  backends: Record<string, number>;
  clients: string[];
  /** The long-lived connection (--keep): lines sent and answered, times it broke. */
  kept?: { sent: number; ok: number; broken: number; connections: number };
}

/** One long-lived TCP connection that sends a line when asked and expects one back. */
class KeptConnection {
  private sock: net.Socket | undefined;
  private waiting: ((ok: boolean, why?: string) => void) | undefined;
  private buf = '';
  connections = 0;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  /** Sends one line; resolves with an error string, or undefined when answered in time. */
  ask(timeoutMs: number): Promise<string | undefined> {
    return new Promise((resolve) => {
      const sock = this.sock ?? this.open();
      const timer = setTimeout(() => this.fail('ETIMEDOUT'), timeoutMs);
      this.waiting = (ok, why) => {
        clearTimeout(timer);
        this.waiting = undefined;
        resolve(ok ? undefined : why);
      };
      sock.write('ping\n');
    });
  }

  private open(): net.Socket {
    this.connections++;
    this.buf = '';
    const sock = net.connect({ host: this.host, port: this.port });
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => {
      this.buf += c;
      const nl = this.buf.indexOf('\n');
      if (nl < 0) return;
      this.buf = this.buf.slice(nl + 1);
      this.waiting?.(true);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => this.fail(e.code ?? e.message));
    sock.on('close', () => this.fail('ECONNRESET'));
    this.sock = sock;
    return sock;
  }

  /** The connection is given up: the next ask opens a new one (and that counts as a break). */
  private fail(why: string): void {
    this.sock?.destroy();
    this.sock = undefined;
    this.waiting?.(false, why);
  }

  close(): void {
    const s = this.sock;
    this.sock = undefined;
    s?.destroy();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs until `stop` resolves; `out` gets the JSON lines. Returns the summary (also printed). */
export async function runProbe(
  o: ProbeOptions,
  stop: Promise<void>,
  out: (line: string) => void,
): Promise<ProbeSummary> {
  const server = `${o.host}:${o.port}`;
  const s: ProbeSummary = {
    event: 'summary',
    server,
    sent: 0,
    ok: 0,
    failed: 0,
    slow: 0,
    backends: {},
    clients: [],
  };
  const clients = new Set<string>();
  const kept = o.keep ? new KeptConnection(o.host, o.port) : undefined;
  if (kept) s.kept = { sent: 0, ok: 0, broken: 0, connections: 0 };
  let stopped = false;
  void stop.then(() => (stopped = true));
  out(JSON.stringify({ event: 'started', server, proto: o.proto, intervalMs: o.intervalMs, keep: o.keep }));
  const t0 = Date.now();
  while (!stopped) {
    const tick = Date.now();
    const [fresh, keptErr] = await Promise.all([
      askEcho(o.proto, o.host, o.port, { timeoutMs: o.timeoutMs }),
      kept?.ask(o.timeoutMs),
    ]);
    s.sent++;
    if (fresh.ok) {
      s.ok++;
      if (fresh.ms >= 1000) {
        s.slow++;
        out(
          JSON.stringify({
            event: 'slow',
            flow: 'new',
            atMs: tick - t0,
            at: new Date(tick).toISOString(),
            ms: Math.round(fresh.ms),
          }),
        );
      }
      if (fresh.name) s.backends[fresh.name] = (s.backends[fresh.name] ?? 0) + 1;
      if (fresh.client) clients.add(fresh.client.split(':')[0]);
    } else {
      s.failed++;
      out(
        JSON.stringify({
          event: 'fail',
          flow: 'new',
          atMs: tick - t0,
          at: new Date(tick).toISOString(),
          error: fresh.error,
        }),
      );
    }
    if (kept && s.kept) {
      s.kept.sent++;
      if (keptErr === undefined) s.kept.ok++;
      else {
        s.kept.broken++;
        out(
          JSON.stringify({
            event: 'fail',
            flow: 'kept',
            atMs: tick - t0,
            at: new Date(tick).toISOString(),
            error: keptErr,
          }),
        );
      }
    }
    const rest = o.intervalMs - (Date.now() - tick);
    if (rest > 0) await Promise.race([sleep(rest), stop]);
  }
  kept?.close();
  if (kept && s.kept) s.kept.connections = kept.connections;
  s.clients = [...clients].sort();
  out(JSON.stringify(s));
  return s;
}
