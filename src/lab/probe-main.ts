// A long-lived connectivity prober for one namespace (started with nsenter --net): reads one
// JSON request per line on stdin, runs its probes concurrently against echo servers, and writes
// one JSON line of results. Policy tests ask hundreds of questions per case; one process per pod
// answering many batches keeps them fast.
//
//   request:  {"id": 1, "timeoutMs": 500, "probes": [{"proto": "tcp", "host": "10.65.1.2", "port": 80}]}
//   response: {"id": 1, "ok": [true], "errors": [null]}
import readline from 'node:readline';
import { askTcp, askUdp } from './echo.js';

interface Request {
  id: number;
  timeoutMs?: number;
  probes: { proto: 'tcp' | 'udp'; host: string; port: number }[];
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    process.stdout.write(JSON.stringify({ id: -1, error: `bad request: ${line.slice(0, 80)}` }) + '\n');
    return;
  }
  const opts = { timeoutMs: req.timeoutMs ?? 1000 };
  void Promise.all(req.probes.map((p) => (p.proto === 'tcp' ? askTcp : askUdp)(p.host, p.port, opts))).then((rs) => {
    process.stdout.write(
      JSON.stringify({
        id: req.id,
        ok: rs.map((r) => r.ok),
        errors: rs.map((r) => (r.ok ? null : (r.error ?? 'failed'))),
      }) + '\n',
    );
  });
});
rl.on('close', () => process.exit(0));
process.stdout.write(JSON.stringify({ id: 0, ready: true }) + '\n');
