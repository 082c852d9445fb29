// Entry point of the echo workload:
//   node echo-main.js server --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--host ADDR]
//     prints one JSON line {"event":"ready",...} once listening; stops on SIGTERM/SIGINT
//   node echo-main.js client (--tcp|--udp|--http) HOST:PORT [...] [--timeout MS]
//                            [--local-address ADDR] [--local-port PORT]
//     prints one JSON line (EchoResult) per request; exit code 0 when all were answered, else 1
//   node echo-main.js probe (--tcp|--udp) HOST:PORT [--interval MS] [--timeout MS] [--keep]
//     continuous traffic until SIGTERM/SIGINT (echo-probe.ts); prints failures and a summary
// `sluice echo` runs the same code through echoMain().
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { askEcho, startEchoServer, type EchoProto, type EchoServerOptions } from './echo.js';
import { runProbe, type ProbeOptions } from './echo-probe.js';

export const ECHO_USAGE = `usage:
  echo server --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--host ADDR]
  echo client (--tcp|--udp|--http) HOST:PORT [...] [--timeout MS] [--local-address ADDR] [--local-port PORT]
  echo probe (--tcp|--udp) HOST:PORT [--interval MS] [--timeout MS] [--keep]`;

export class UsageError extends Error {}

function port(flag: string, v: string | undefined): number {
  if (v === undefined || !/^\d+$/.test(v) || Number(v) > 65535) throw new UsageError(`${flag} needs a port number`);
  return Number(v);
}

function value(flag: string, v: string | undefined): string {
  if (v === undefined || v.startsWith('--')) throw new UsageError(`${flag} needs a value`);
  return v;
}

export function parseServerArgs(argv: readonly string[]): EchoServerOptions {
  const o: Partial<EchoServerOptions> = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const v = argv[i + 1];
    switch (flag) {
      case '--name':
        o.name = value(flag, v);
        break;
      case '--tcp':
      case '--udp':
      case '--http':
        o[flag.slice(2) as EchoProto] = port(flag, v);
        break;
      case '--host':
        o.host = value(flag, v);
        break;
      default:
        throw new UsageError(`unknown option ${flag}`);
    }
    i++;
  }
  if (!o.name) throw new UsageError('server needs --name');
  if (o.tcp === undefined && o.udp === undefined && o.http === undefined)
    throw new UsageError('server needs at least one of --tcp, --udp, --http');
  return o as EchoServerOptions;
}

export interface ClientArgs {
  requests: Array<{ proto: EchoProto; host: string; port: number }>;
  timeoutMs: number;
  localAddress?: string;
  localPort?: number;
}

export function parseClientArgs(argv: readonly string[]): ClientArgs {
  const c: ClientArgs = { requests: [], timeoutMs: 3000 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const v = argv[i + 1];
    switch (flag) {
      case '--tcp':
      case '--udp':
      case '--http': {
        const m = /^(.+):(\d+)$/.exec(value(flag, v));
        if (!m) throw new UsageError(`${flag} needs HOST:PORT`);
        c.requests.push({ proto: flag.slice(2) as EchoProto, host: m[1], port: port(flag, m[2]) });
        break;
      }
      case '--timeout':
        if (!/^\d+$/.test(value(flag, v))) throw new UsageError('--timeout needs milliseconds');
        c.timeoutMs = Number(v);
        break;
      case '--local-address':
        c.localAddress = value(flag, v);
        break;
      case '--local-port':
        c.localPort = port(flag, v);
        break;
      default:
        throw new UsageError(`unknown option ${flag}`);
    }
    i++;
  }
  if (c.requests.length === 0) throw new UsageError('client needs at least one of --tcp, --udp, --http HOST:PORT');
  return c;
}

export function parseProbeArgs(argv: readonly string[]): ProbeOptions {
  let target: { proto: 'tcp' | 'udp'; host: string; port: number } | undefined;
  const o = { intervalMs: 100, timeoutMs: 1000, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const v = argv[i + 1];
    switch (flag) {
      case '--tcp':
      case '--udp': {
        const m = /^(.+):(\d+)$/.exec(value(flag, v));
        if (!m) throw new UsageError(`${flag} needs HOST:PORT`);
        if (target) throw new UsageError('probe takes one of --tcp, --udp');
        target = { proto: flag === '--tcp' ? 'tcp' : 'udp', host: m[1], port: port(flag, m[2]) };
        break;
      }
      case '--interval':
      case '--timeout':
        if (!/^\d+$/.test(value(flag, v)) || Number(v) === 0) throw new UsageError(`${flag} needs milliseconds`);
        o[flag === '--interval' ? 'intervalMs' : 'timeoutMs'] = Number(v);
        break;
      case '--keep':
        o.keep = true;
        continue;
      default:
        throw new UsageError(`unknown option ${flag}`);
    }
    i++;
  }
  if (!target) throw new UsageError('probe needs --tcp or --udp HOST:PORT');
  if (o.keep && target.proto !== 'tcp') throw new UsageError('--keep needs --tcp');
  return { ...target, ...o };
}

export interface EchoIo {
  out(line: string): void;
  err(line: string): void;
}

const stdio: EchoIo = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
};

/**
 * Runs `server ...` or `client ...`. The client resolves with its exit code; the server resolves
 * with 0 after SIGTERM/SIGINT (or when `stop` resolves, for callers that embed it).
 */
export async function echoMain(argv: readonly string[], io: EchoIo = stdio, stop?: Promise<void>): Promise<number> {
  const [mode, ...rest] = argv;
  try {
    if (mode === 'server') {
      const opts = parseServerArgs(rest);
      const server = await startEchoServer(opts);
      io.out(JSON.stringify({ event: 'ready', name: opts.name, pid: process.pid, ...server.ports }));
      await (stop ??
        new Promise<void>((resolve) => {
          process.once('SIGTERM', () => resolve());
          process.once('SIGINT', () => resolve());
        }));
      await server.close();
      return 0;
    }
    if (mode === 'client') {
      const c = parseClientArgs(rest);
      let failed = 0;
      for (const r of c.requests) {
        const res = await askEcho(r.proto, r.host, r.port, {
          timeoutMs: c.timeoutMs,
          localAddress: c.localAddress,
          localPort: c.localPort,
        });
        if (!res.ok) failed++;
        io.out(JSON.stringify({ ...res, ms: Math.round(res.ms * 10) / 10 }));
      }
      return failed === 0 ? 0 : 1;
    }
    if (mode === 'probe') {
      const o = parseProbeArgs(rest);
      await runProbe(
        o,
        stop ??
          new Promise<void>((resolve) => {
            process.once('SIGTERM', () => resolve());
            process.once('SIGINT', () => resolve());
          }),
        (l) => io.out(l),
      );
      return 0;
    }
    throw new UsageError(mode === undefined ? 'missing mode' : `unknown mode ${mode}`);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`echo: ${err.message}\n${ECHO_USAGE}`);
      return 2;
    }
    io.err(`echo: ${(err as Error).message}`);
    return 1;
  }
}

function runDirectly(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (runDirectly()) {
  process.exitCode = await echoMain(process.argv.slice(2));
}
