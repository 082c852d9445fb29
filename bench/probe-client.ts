// The traffic client of the Service benchmarks, run inside a lab namespace (a pod's, or the
// external client's) as `nsenter --net=/run/netns/NS node dist/bench/probe-client.js MODE ...`:
// a socket's namespace is fixed when it is created, so the client must be a process started
// there. It prints one JSON line on stdout.
//
// Modes (the server is `sluice echo server --tcp`, which answers every line with one line):
//   latency HOST PORT COUNT          COUNT sequential fresh connections: connect, send a line,
//                                    read the reply; each timed with hrtime (microseconds)
//   connrate HOST PORT SECONDS LOOPS LOOPS concurrent loops of fresh connections for SECONDS
//   rr HOST PORT SECONDS CONNS       CONNS kept-alive connections, one request in flight each
//   until HOST PORT ok|fail SECONDS  repeat short attempts until the target answers (or stops
//                                    answering); prints the time that took and the wall clock
//                                    (ms since the epoch) when it did
//
// Fresh connections end with a reset (resetAndDestroy): no TIME_WAIT on the client, so tens of
// thousands of connections to one address do not run out of source ports.
import net from 'node:net';

interface Answer {
  ok: boolean;
  us: number;
  error?: string;
}

/** One fresh connection: connect, one request line, one reply line; microseconds. */
export function once(host: string, port: number, timeoutMs: number): Promise<Answer> {
  const t0 = process.hrtime.bigint();
  return new Promise<Answer>((resolve) => {
    let done = false;
    const sock = net.connect({ host, port, noDelay: true });
    const finish = (ok: boolean, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (ok) sock.resetAndDestroy();
      else sock.destroy();
      resolve({ ok, us, error });
    };
    const timer = setTimeout(() => finish(false, 'ETIMEDOUT'), timeoutMs);
    sock.on('connect', () => sock.write('x\n'));
    sock.on('data', (b: Buffer) => {
      if (b.includes(10)) finish(true);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(false, e.code ?? e.message));
    sock.on('close', () => finish(false, 'ECLOSED'));
  });
}

async function latency(host: string, port: number, count: number): Promise<object> {
  // A few connections first: the first ones pay for ARP, route and JIT warm-up.
  for (let i = 0; i < 20; i++) await once(host, port, 2000);
  const us: number[] = [];
  let errors = 0;
  let lastError: string | undefined;
  for (let i = 0; i < count; i++) {
    const a = await once(host, port, 2000);
    if (a.ok) us.push(a.us);
    else {
      errors++;
      lastError = a.error;
    }
  }
  return { us, errors, lastError };
}

async function connrate(host: string, port: number, seconds: number, loops: number): Promise<object> {
  const end = performance.now() + seconds * 1000;
  let done = 0;
  let errors = 0;
  let lastError: string | undefined;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (performance.now() < end) {
        const a = await once(host, port, 2000);
        if (a.ok) done++;
        else {
          errors++;
          lastError = a.error;
        }
      }
    }),
  );
  const s = (performance.now() - t0) / 1000;
  return { perSec: done / s, done, errors, lastError, seconds: s };
}

/** Request/response on kept-alive connections: one line out, one line back, again. */
async function rr(host: string, port: number, seconds: number, conns: number): Promise<object> {
  // connections that do not open within 3 s are counted as failed rather than waited for
  const opened = await Promise.all(
    Array.from(
      { length: conns },
      () =>
        new Promise<net.Socket | undefined>((resolve) => {
          const s = net.connect({ host, port, noDelay: true });
          const timer = setTimeout(() => {
            s.destroy();
            resolve(undefined);
          }, 3000);
          s.once('connect', () => {
            clearTimeout(timer);
            resolve(s);
          });
          s.once('error', () => {
            clearTimeout(timer);
            resolve(undefined);
          });
        }),
    ),
  );
  const socks = opened.filter((s): s is net.Socket => s !== undefined);
  let done = 0;
  let stalled = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    socks.map(
      (s) =>
        new Promise<void>((resolve) => {
          // a connection whose reply never comes ends with the run (plus 2 s), counted as stalled
          const watchdog = setTimeout(
            () => {
              stalled++;
              resolve();
            },
            seconds * 1000 + 2000,
          );
          const finish = (): void => {
            clearTimeout(watchdog);
            resolve();
          };
          s.on('error', finish);
          s.on('data', (b: Buffer) => {
            // one reply line per request line; replies are short, so a chunk holds whole lines
            for (const c of b) if (c === 10) done++;
            if (performance.now() < end) s.write('x\n');
            else finish();
          });
          s.write('x\n');
        }),
    ),
  );
  const sec = (performance.now() - t0) / 1000;
  for (const s of socks) s.destroy();
  return { perSec: done / sec, done, seconds: sec, errors: conns - socks.length + stalled };
}

async function until(host: string, port: number, want: 'ok' | 'fail', seconds: number): Promise<object> {
  const t0 = performance.now();
  let attempts = 0;
  while (performance.now() - t0 < seconds * 1000) {
    attempts++;
    const a = await once(host, port, 150);
    if (a.ok === (want === 'ok'))
      return { reached: true, seconds: (performance.now() - t0) / 1000, attempts, at: Date.now() };
    if (!a.ok && a.error !== 'ETIMEDOUT') await new Promise((r) => setTimeout(r, 100));
  }
  return { reached: false, seconds: (performance.now() - t0) / 1000, attempts };
}

async function main(argv: string[]): Promise<void> {
  const [mode, host, portS, a, b] = argv;
  const port = Number(portS);
  let out: object;
  if (mode === 'latency') out = await latency(host, port, Number(a));
  else if (mode === 'connrate') out = await connrate(host, port, Number(a), Number(b));
  else if (mode === 'rr') out = await rr(host, port, Number(a), Number(b));
  else if (mode === 'until') out = await until(host, port, a === 'fail' ? 'fail' : 'ok', Number(b));
  else throw new Error(`probe-client: unknown mode ${mode}`);
  process.stdout.write(JSON.stringify(out) + '\n');
}

if (process.argv[1]?.endsWith('probe-client.js')) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`probe-client: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
