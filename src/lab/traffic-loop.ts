// Continuous traffic against echo servers, for disruption tests: one long-lived TCP stream that
// must never break, plus a new TCP connection and a UDP query every interval. Prints one JSON
// line with the counts when done. Run inside a pod's namespace:
//   node dist/src/lab/traffic-loop.js --tcp HOST:PORT --udp HOST:PORT --seconds N [--interval-ms M]
import dgram from 'node:dgram';
import net from 'node:net';

interface Totals {
  newConnections: number;
  newFailures: number;
  streamMessages: number;
  streamBroken: boolean;
  streamError?: string;
  udpQueries: number;
  udpFailures: number;
  errors: string[];
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function hostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), Number(s.slice(i + 1))];
}

function oneConnection(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error('ETIMEDOUT'));
    }, timeoutMs);
    sock.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    sock.once('data', () => {
      clearTimeout(t);
      sock.end();
      resolve();
    });
    sock.write('hello\n');
  });
}

function oneQuery(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error('ETIMEDOUT'));
    }, timeoutMs);
    s.once('message', () => {
      clearTimeout(t);
      s.close();
      resolve();
    });
    s.send('q\n', port, host);
  });
}

async function main(): Promise<void> {
  const [tHost, tPort] = hostPort(arg('tcp') ?? '');
  const udp = arg('udp');
  const seconds = Number(arg('seconds') ?? '10');
  const interval = Number(arg('interval-ms') ?? '50');
  const totals: Totals = {
    newConnections: 0,
    newFailures: 0,
    streamMessages: 0,
    streamBroken: false,
    udpQueries: 0,
    udpFailures: 0,
    errors: [],
  };
  const note = (e: unknown): void => {
    if (totals.errors.length < 20) totals.errors.push(String((e as Error).message ?? e));
  };

  // The long-lived stream: a line each interval, each must come back within a second.
  const stream = net.connect({ host: tHost, port: tPort });
  let waiting = 0;
  let lastAnswer = Date.now();
  stream.on('data', (d) => {
    const lines = String(d).split('\n').filter(Boolean).length;
    totals.streamMessages += lines;
    waiting = Math.max(0, waiting - lines);
    lastAnswer = Date.now();
  });
  stream.on('error', (e) => {
    totals.streamBroken = true;
    totals.streamError = e.message;
  });
  stream.on('close', () => {
    if (Date.now() < end) totals.streamBroken = true;
  });
  await new Promise<void>((r) => stream.once('connect', () => r()));

  const end = Date.now() + seconds * 1000;
  const pending: Promise<void>[] = [];
  while (Date.now() < end) {
    if (!totals.streamBroken) {
      stream.write('tick\n');
      waiting++;
      if (waiting > 0 && Date.now() - lastAnswer > 1500) {
        totals.streamBroken = true;
        totals.streamError = 'no answer for 1.5 s';
      }
    }
    totals.newConnections++;
    pending.push(
      oneConnection(tHost, tPort, 2000).catch((e: unknown) => {
        totals.newFailures++;
        note(e);
      }),
    );
    if (udp) {
      const [uHost, uPort] = hostPort(udp);
      totals.udpQueries++;
      pending.push(
        oneQuery(uHost, uPort, 2000).catch((e: unknown) => {
          totals.udpFailures++;
          note(e);
        }),
      );
    }
    await new Promise((r) => setTimeout(r, interval));
  }
  await Promise.all(pending);
  stream.end();
  process.stdout.write(JSON.stringify(totals) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`traffic-loop: ${String(e)}\n`);
  process.exit(1);
});
