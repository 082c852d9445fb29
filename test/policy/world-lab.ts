// The lab side of the policy conformance tests (the lab's store and a real API server alike):
// the world as Kubernetes YAML, and a prober process per pod that sends batches of TCP and UDP
// probes from inside the pod's namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { stringify } from 'yaml';
import { packageRoot } from '../../src/paths.js';
import { WORLD_NAMESPACES, WORLD_PODS, expected, explainProbe, probeKey, type Case, type Probe } from './cases.js';
import type { RefWorld } from './reference.js';

const PROBE_MAIN = path.join(packageRoot, 'dist', 'src', 'lab', 'probe-main.js');

/** One prober process inside a pod's namespace. */
export class Prober {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<number, (r: { ok: boolean[]; errors: (string | null)[] }) => void>();
  private next = 1;
  readonly ready: Promise<void>;

  constructor(ns: string) {
    this.child = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, PROBE_MAIN], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = readline.createInterface({ input: this.child.stdout! });
    this.ready = new Promise((resolve) => {
      lines.on('line', (l) => {
        const m = JSON.parse(l) as { id: number; ready?: boolean; ok: boolean[]; errors: (string | null)[] };
        if (m.ready) return resolve();
        this.waiting.get(m.id)?.(m);
        this.waiting.delete(m.id);
      });
    });
  }

  ask(probes: { proto: 'tcp' | 'udp'; host: string; port: number }[], timeoutMs: number) {
    const id = this.next++;
    return new Promise<{ ok: boolean[]; errors: (string | null)[] }>((resolve) => {
      this.waiting.set(id, resolve);
      this.child.stdin!.write(JSON.stringify({ id, timeoutMs, probes }) + '\n');
    });
  }

  close(): void {
    this.child.stdin?.end();
    this.child.kill();
  }
}

/** The world as Kubernetes YAML: its namespaces, and its pods spread over `nodes` lab nodes, each
 * serving TCP and UDP on 80 and 81 (and the named ports the cases use). */
export function worldFixture(tmp: string, nodes: number): string {
  const docs: object[] = [];
  for (const n of WORLD_NAMESPACES)
    docs.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n.name, labels: n.labels } });
  WORLD_PODS.forEach((p, i) => {
    const server = (port: number) => ({
      name: `echo${port}`,
      image: 'sluice/echo',
      command: ['sluice', 'echo', 'server', '--name', p.name, '--tcp', String(port), '--udp', String(port)],
    });
    docs.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
      spec: {
        nodeName: `node${(i % nodes) + 1}`,
        terminationGracePeriodSeconds: 1,
        containers: [
          {
            ...server(80),
            ports: p.ports.map((x) => ({
              ...(x.name ? { name: x.name } : {}),
              containerPort: x.port,
              protocol: x.protocol,
            })),
          },
          server(81),
        ],
      },
    });
  });
  const file = path.join(tmp, 'world.yaml');
  // YAML 1.1 as kubectl reads it: there an unquoted `y` (a label value here) is a boolean.
  writeFileSync(file, docs.map((d) => stringify(d, { version: '1.1' })).join('---\n'));
  return file;
}

/** Sends the probes from their source pods' probers at once; `ipOf` gives a pod's address by name. */
export async function probeWith(
  probers: Map<string, Prober>,
  ipOf: (pod: string) => string,
  probes: Probe[],
  timeoutMs: number,
): Promise<Map<string, boolean>> {
  const bySrc = new Map<string, Probe[]>();
  for (const p of probes) bySrc.set(p.src, [...(bySrc.get(p.src) ?? []), p]);
  const out = new Map<string, boolean>();
  await Promise.all(
    [...bySrc].map(async ([src, ps]) => {
      const r = await probers.get(src)!.ask(
        ps.map((p) => ({ proto: p.protocol === 'TCP' ? 'tcp' : 'udp', host: ipOf(p.dst), port: p.port })),
        timeoutMs,
      );
      ps.forEach((p, i) => out.set(probeKey(p), r.ok[i]!));
    }),
  );
  return out;
}

/** Applies each case, probes everything, compares with the reference; returns the failures. */
export async function runCasesWith(
  world: RefWorld,
  cases: Case[],
  applyCase: (c: Case) => Promise<void>,
  probeAll: (probes: Probe[], timeoutMs: number) => Promise<Map<string, boolean>>,
  each?: (c: Case) => Promise<void>,
): Promise<{ failures: string[]; probes: number; allowed: number }> {
  const failures: string[] = [];
  let probes = 0;
  let allowedCount = 0;
  for (const c of cases) {
    await applyCase(c);
    const want = expected(world, c);
    const got = await probeAll(want, 400);
    // A probe that should pass but timed out is asked again with time to spare: the machine is
    // shared. A probe that passed but should not have is a failure at once.
    const retry = want.filter((w) => w.allowed && !got.get(probeKey(w)));
    if (retry.length) for (const [k, v] of await probeAll(retry, 3000)) got.set(k, v);
    for (const w of want) {
      probes++;
      if (w.allowed) allowedCount++;
      if (got.get(probeKey(w)) !== w.allowed)
        failures.push(
          `${c.name}: ${probeKey(w)}: got ${got.get(probeKey(w)) ? 'allowed' : 'denied'}; ${explainProbe(world, c, w)}`,
        );
    }
    await each?.(c);
    if (failures.length > 20) break;
  }
  return { failures, probes, allowed: allowedCount };
}
