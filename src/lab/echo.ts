// `sluice echo`: the lab's built-in workload. One process serves any subset of
//   TCP   every received line is answered with `NAME <clientip>:<clientport>\n`
//   UDP   every datagram is answered with the datagram `NAME <clientip>:<clientport>`
//   HTTP  every request is answered with JSON {"name": NAME, "client": "<clientip>:<clientport>"}
// so a client can check which backend answered and which source address it saw (source-IP
// preservation through NAT). The clients here report the reply together with the client's own
// local address, and always end within their timeout.
//
// Clients run in-process in the current network namespace (askTcp/askUdp/askHttp), or in another
// namespace (tcpAsk/udpAsk/httpAsk with a namespace name) by running
// `node echo-main.js client ...` there through nsenter: a socket's namespace is fixed when it is
// created, and Node creates sockets asynchronously, so switching this process's namespace around
// the call would not work.
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { execIn } from './exec.js';

export type EchoProto = 'tcp' | 'udp' | 'http';

export interface EchoServerOptions {
  name: string;
  /** Ports to serve; 0 picks a free one; omitted protocols are not served. */
  tcp?: number;
  udp?: number;
  http?: number;
  /** Address to listen on (default 0.0.0.0). */
  host?: string;
}

export interface EchoServer {
  name: string;
  /** The bound ports (useful with port 0). */
  ports: { tcp?: number; udp?: number; http?: number };
  close(): Promise<void>;
}

/** `a.b.c.d:port`, with IPv4-mapped IPv6 addresses unwrapped. */
export function hostPort(ip: string | undefined, port: number | undefined): string {
  return `${(ip ?? '?').replace(/^::ffff:/, '')}:${port ?? '?'}`;
}

/** Starts the servers; resolves once all of them listen. */
export async function startEchoServer(opts: EchoServerOptions): Promise<EchoServer> {
  if (!/^[^\s]+$/.test(opts.name)) throw new Error('echo server name must be non-empty and contain no whitespace');
  const host = opts.host ?? '0.0.0.0';
  const closers: Array<() => Promise<void>> = [];
  const ports: EchoServer['ports'] = {};
  const close = async (): Promise<void> => {
    await Promise.all(closers.map((c) => c()));
  };
  try {
    if (opts.tcp !== undefined) {
      const sockets = new Set<net.Socket>();
      const server = net.createServer((sock) => {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => undefined);
        const who = `${opts.name} ${hostPort(sock.remoteAddress, sock.remotePort)}\n`;
        let pending = '';
        sock.setEncoding('utf8');
        sock.on('data', (chunk: string) => {
          pending += chunk;
          let nl: number;
          while ((nl = pending.indexOf('\n')) >= 0) {
            pending = pending.slice(nl + 1);
            sock.write(who);
          }
          if (pending.length > 64 * 1024) sock.destroy(); // no line end in sight
        });
      });
      ports.tcp = await listen(server, opts.tcp, host);
      closers.push(() => closeServer(server, sockets));
    }
    if (opts.udp !== undefined) {
      const sock = dgram.createSocket('udp4');
      sock.on('message', (_msg, rinfo) => {
        sock.send(`${opts.name} ${hostPort(rinfo.address, rinfo.port)}`, rinfo.port, rinfo.address);
      });
      sock.on('error', () => undefined);
      ports.udp = await new Promise<number>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(opts.udp, host, () => {
          sock.off('error', reject);
          resolve(sock.address().port);
        });
      });
      closers.push(() => new Promise<void>((resolve) => sock.close(() => resolve())));
    }
    if (opts.http !== undefined) {
      const sockets = new Set<net.Socket>();
      const server = http.createServer((req, res) => {
        const body = JSON.stringify({
          name: opts.name,
          client: hostPort(req.socket.remoteAddress, req.socket.remotePort),
        });
        req.resume();
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body) + 1,
          connection: 'close',
        });
        res.end(body + '\n');
      });
      server.on('connection', (sock) => {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
      });
      ports.http = await listen(server, opts.http, host);
      closers.push(() => closeServer(server, sockets));
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { name: opts.name, ports, close };
}

function listen(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

function closeServer(server: net.Server, sockets: Set<net.Socket>): Promise<void> {
  return new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
}

// ---------------------------------------------------------------------------------------------
// Clients

export interface EchoAskOptions {
  /** Give up after this long (default 3000 ms). */
  timeoutMs?: number;
  /** Bind the client socket to this address and/or port. */
  localAddress?: string;
  localPort?: number;
}

export interface EchoResult {
  ok: boolean;
  proto: EchoProto;
  /** `host:port` asked. */
  server: string;
  /** The answering server's name. */
  name?: string;
  /** The client address the server saw. */
  client?: string;
  /** The client socket's own address. */
  local?: string;
  /** An errno-style code (ETIMEDOUT, ECONNREFUSED, ...) when ok is false. */
  error?: string;
  ms: number;
}

function parseLine(line: string): { name: string; client: string } | undefined {
  const m = /^(\S+) (\S+:\d+)$/.exec(line.trim());
  return m ? { name: m[1], client: m[2] } : undefined;
}

function errCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? (e instanceof Error ? e.message : String(err));
}

/** Asks a TCP echo server once, from this process's namespace. */
export function askTcp(host: string, port: number, opts: EchoAskOptions = {}): Promise<EchoResult> {
  const t0 = performance.now();
  const server = `${host}:${port}`;
  return new Promise<EchoResult>((resolve) => {
    let local: string | undefined;
    let buf = '';
    let done = false;
    const sock = net.connect({ host, port, localAddress: opts.localAddress, localPort: opts.localPort });
    const finish = (r: Omit<EchoResult, 'proto' | 'server' | 'ms' | 'local'>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ proto: 'tcp', server, ...r, local, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT' }), opts.timeoutMs ?? 3000);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      local = hostPort(sock.localAddress, sock.localPort);
      sock.write('hello\n');
    });
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const p = parseLine(buf.slice(0, nl));
      finish(p ? { ok: true, ...p } : { ok: false, error: `EBADREPLY: ${buf.slice(0, nl)}` });
    });
    sock.on('error', (err) => finish({ ok: false, error: errCode(err) }));
    sock.on('close', () => finish({ ok: false, error: 'ECONNRESET' }));
  });
}

/** Asks a UDP echo server from this process's namespace, resending every 500 ms until the timeout. */
export function askUdp(host: string, port: number, opts: EchoAskOptions = {}): Promise<EchoResult> {
  const t0 = performance.now();
  const server = `${host}:${port}`;
  return new Promise<EchoResult>((resolve) => {
    let local: string | undefined;
    let done = false;
    let resend: NodeJS.Timeout | undefined;
    // A connected socket: it learns its source address, and accepts replies only from the
    // address it asked, so a reply with an untranslated source counts as no reply.
    const sock = dgram.createSocket('udp4');
    const finish = (r: Omit<EchoResult, 'proto' | 'server' | 'ms' | 'local'>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(resend);
      try {
        sock.close();
      } catch {
        // already closed
      }
      resolve({ proto: 'udp', server, ...r, local, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT' }), opts.timeoutMs ?? 3000);
    sock.on('error', (err) => finish({ ok: false, error: errCode(err) }));
    sock.on('message', (msg) => {
      const p = parseLine(msg.toString('utf8'));
      finish(p ? { ok: true, ...p } : { ok: false, error: `EBADREPLY: ${msg.toString('utf8')}` });
    });
    const send = (): void => {
      if (!done) sock.send('hello');
    };
    sock.bind({ address: opts.localAddress, port: opts.localPort ?? 0 }, () => {
      sock.connect(port, host, (err?: Error) => {
        if (err) return finish({ ok: false, error: errCode(err) });
        const a = sock.address();
        local = hostPort(a.address, a.port);
        send();
        resend = setInterval(send, 500);
      });
    });
  });
}

/** Asks an HTTP echo server (GET /) from this process's namespace. */
export function askHttp(host: string, port: number, opts: EchoAskOptions = {}): Promise<EchoResult> {
  const t0 = performance.now();
  const server = `${host}:${port}`;
  return new Promise<EchoResult>((resolve) => {
    let local: string | undefined;
    let done = false;
    const finish = (r: Omit<EchoResult, 'proto' | 'server' | 'ms' | 'local'>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ proto: 'http', server, ...r, local, ms: performance.now() - t0 });
    };
    const req = http.get({
      host,
      port,
      path: '/',
      agent: false,
      localAddress: opts.localAddress,
      localPort: opts.localPort,
    });
    const timer = setTimeout(() => finish({ ok: false, error: 'ETIMEDOUT' }), opts.timeoutMs ?? 3000);
    req.on('socket', (sock) => {
      sock.on('connect', () => {
        local = hostPort(sock.localAddress, sock.localPort);
      });
    });
    req.on('error', (err) => finish({ ok: false, error: errCode(err) }));
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('error', (err) => finish({ ok: false, error: errCode(err) }));
      res.on('end', () => {
        try {
          const j = JSON.parse(body) as { name?: unknown; client?: unknown };
          if (res.statusCode === 200 && typeof j.name === 'string' && typeof j.client === 'string')
            finish({ ok: true, name: j.name, client: j.client });
          else finish({ ok: false, error: `EBADREPLY: ${res.statusCode} ${body.trim()}` });
        } catch {
          finish({ ok: false, error: `EBADREPLY: ${res.statusCode} ${body.trim()}` });
        }
      });
    });
  });
}

export function askEcho(proto: EchoProto, host: string, port: number, opts: EchoAskOptions = {}): Promise<EchoResult> {
  if (proto === 'tcp') return askTcp(host, port, opts);
  if (proto === 'udp') return askUdp(host, port, opts);
  return askHttp(host, port, opts);
}

// ---------------------------------------------------------------------------------------------
// Running the workload in namespaces

/** The compiled entry point (`node <this> server|client ...`). */
export const ECHO_MAIN = fileURLToPath(new URL('./echo-main.js', import.meta.url));

/** Command and arguments that run an echo server (for Topology.spawn or spawnIn). */
export function echoServerCommand(opts: EchoServerOptions): { cmd: string; args: string[] } {
  const args = [ECHO_MAIN, 'server', '--name', opts.name];
  for (const proto of ['tcp', 'udp', 'http'] as const) {
    const port = opts[proto];
    if (port !== undefined) args.push(`--${proto}`, String(port));
  }
  if (opts.host !== undefined) args.push('--host', opts.host);
  return { cmd: process.execPath, args };
}

/** The line a server prints on stdout once it listens. */
export interface EchoReady {
  event: 'ready';
  name: string;
  pid: number;
  tcp?: number;
  udp?: number;
  http?: number;
}

/** Something that starts a process in an exec target, e.g. a Topology. */
export interface Spawner {
  spawn(target: string, cmd: string, args: readonly string[]): ChildProcess;
}

export interface RunningEcho {
  child: ChildProcess;
  ports: { tcp?: number; udp?: number; http?: number };
  /** Stops the server (SIGTERM, then SIGKILL after 2 s) and waits for it to exit. */
  stop(): Promise<void>;
}

/** Waits for a spawned echo server's ready line; kills it and throws if it does not come. */
export function waitEchoReady(child: ChildProcess, timeoutMs = 10_000): Promise<EchoReady> {
  return new Promise<EchoReady>((resolve, reject) => {
    let out = '';
    let err = '';
    const fail = (why: string): void => {
      cleanup();
      child.kill('SIGKILL');
      reject(new Error(`echo server did not start: ${why}${err.trim() ? `: ${err.trim()}` : ''}`));
    };
    const onOut = (c: Buffer): void => {
      out += c.toString('utf8');
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      try {
        const r = JSON.parse(out.slice(0, nl)) as EchoReady;
        if (r.event !== 'ready') return fail(`unexpected output ${out.slice(0, nl)}`);
        cleanup();
        resolve(r);
      } catch {
        fail(`unexpected output ${out.slice(0, nl)}`);
      }
    };
    const onErr = (c: Buffer): void => {
      err += c.toString('utf8');
    };
    const onExit = (code: number | null, sig: string | null): void => fail(`exited (${code ?? sig})`);
    const onError = (e: Error): void => fail(e.message);
    const timer = setTimeout(() => fail('timed out'), timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onOut);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    child.stdout?.on('data', onOut);
    child.stderr?.on('data', onErr);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const hard = setTimeout(() => child.kill('SIGKILL'), 2000);
    child.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Starts an echo server in `target` through `spawner` and waits until it listens. */
export async function startEcho(spawner: Spawner, target: string, opts: EchoServerOptions): Promise<RunningEcho> {
  const { cmd, args } = echoServerCommand(opts);
  const child = spawner.spawn(target, cmd, args);
  const ready = await waitEchoReady(child);
  // keep draining output so a chatty server never blocks on a full pipe
  child.stdout?.resume();
  child.stderr?.resume();
  const ports: RunningEcho['ports'] = {};
  if (ready.tcp !== undefined) ports.tcp = ready.tcp;
  if (ready.udp !== undefined) ports.udp = ready.udp;
  if (ready.http !== undefined) ports.http = ready.http;
  return { child, ports, stop: () => stopChild(child) };
}

/**
 * Asks an echo server from network namespace `ns` (a name under /run/netns), or from this
 * process's namespace when `ns` is undefined. Never throws for network failures: see `ok`.
 */
export async function askEchoIn(
  ns: string | undefined,
  proto: EchoProto,
  host: string,
  port: number,
  opts: EchoAskOptions = {},
): Promise<EchoResult> {
  if (ns === undefined) return askEcho(proto, host, port, opts);
  const timeoutMs = opts.timeoutMs ?? 3000;
  const args = [ECHO_MAIN, 'client', `--${proto}`, `${host}:${port}`, '--timeout', String(timeoutMs)];
  if (opts.localAddress !== undefined) args.push('--local-address', opts.localAddress);
  if (opts.localPort !== undefined) args.push('--local-port', String(opts.localPort));
  const r = await execIn(ns, process.execPath, args, { timeoutMs: timeoutMs + 10_000 });
  const line = r.stdout.trim().split('\n')[0] ?? '';
  try {
    const res = JSON.parse(line) as EchoResult;
    if (typeof res.ok === 'boolean') return res;
  } catch {
    // below
  }
  const why = r.timedOut ? 'client timed out' : `client exit ${r.code ?? r.signal}: ${r.stderr.trim() || line}`;
  return { ok: false, proto, server: `${host}:${port}`, error: `ECLIENT: ${why}`, ms: 0 };
}

export function tcpAsk(ns: string | undefined, host: string, port: number, opts?: EchoAskOptions): Promise<EchoResult> {
  return askEchoIn(ns, 'tcp', host, port, opts);
}

export function udpAsk(ns: string | undefined, host: string, port: number, opts?: EchoAskOptions): Promise<EchoResult> {
  return askEchoIn(ns, 'udp', host, port, opts);
}

export function httpAsk(
  ns: string | undefined,
  host: string,
  port: number,
  opts?: EchoAskOptions,
): Promise<EchoResult> {
  return askEchoIn(ns, 'http', host, port, opts);
}
