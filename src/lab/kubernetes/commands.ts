// What the `sluice lab` commands do differently for a lab with a real Kubernetes control plane
// (`lab up --kubernetes`): files are applied with the lab's kubectl, `up` waits for the pods as
// the API server reports them, `lab kubectl` runs kubectl against the lab, and `lab exec` finds
// the pods the lab kubelet runs.
import { spawn } from 'node:child_process';
import os from 'node:os';
import { CliError, type Printer } from '../../cli/output.js';
import { ProcessRecorder } from '../exec.js';
import { Topology } from '../topology.js';
import { controlPlaneState, kubectl, kubectlArgv } from './control-plane.js';
import { readKubePods, type KubePodRecord } from './kubelet.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * `kubectl apply -f` (or `delete -f`) of files, printing kubectl's lines. A Pod in a namespace
 * made by the same apply can be refused for a moment (its default ServiceAccount does not exist
 * yet): such an apply is retried for up to 20 s, as kubectl apply is idempotent.
 */
export async function kubectlFiles(
  name: string,
  verb: 'apply' | 'delete',
  files: string[],
  out: Printer,
  extra: string[] = [],
): Promise<number> {
  const args = [verb, ...files.flatMap((f) => ['-f', f]), ...extra];
  const deadline = Date.now() + 20_000;
  for (;;) {
    const r = await kubectl(name, args, { timeoutMs: 120_000 });
    // A namespace made by the same apply can still be refusing pods (its creation, then its
    // default ServiceAccount, trail the request): apply is idempotent, so it is applied again.
    const retryable =
      verb === 'apply' && /serviceaccount "?default"? not found|namespaces "[^"]+" not found/i.test(r.stderr);
    if (r.code === 0 || !retryable || Date.now() > deadline) {
      for (const l of r.stdout.trimEnd().split('\n')) if (l) out.out(l);
      for (const l of r.stderr.trimEnd().split('\n')) if (l) out.err(l);
      return r.code === 0 ? 0 : 1;
    }
    await sleep(250);
  }
}

interface KubeItem {
  kind?: string;
  metadata?: { name?: string; namespace?: string; generation?: number; deletionTimestamp?: string };
  spec?: { replicas?: number; nodeName?: string };
  status?: {
    phase?: string;
    observedGeneration?: number;
    readyReplicas?: number;
    updatedReplicas?: number;
    replicas?: number;
    conditions?: Array<{ type: string; status: string }>;
  };
}

/** Waits until every Deployment has its replicas ready and every other Pod is ready or done. */
export async function waitKubePodsReady(name: string, timeoutMs: number, say: (l: string) => void): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const r = await kubectl(name, ['get', 'deployments,pods', '--all-namespaces', '-o', 'json']);
    const pending: string[] = [];
    let line = '';
    if (r.code !== 0) pending.push(`kubectl: ${r.stderr.trim()}`);
    else {
      const items = (JSON.parse(r.stdout) as { items: KubeItem[] }).items;
      const pods = items.filter((i) => i.kind === 'Pod' && !i.metadata?.deletionTimestamp);
      for (const d of items.filter((i) => i.kind === 'Deployment')) {
        const want = d.spec?.replicas ?? 1;
        const s = d.status ?? {};
        if (
          (s.observedGeneration ?? 0) < (d.metadata?.generation ?? 1) ||
          (s.readyReplicas ?? 0) !== want ||
          (s.updatedReplicas ?? 0) !== want ||
          (s.replicas ?? 0) !== want
        )
          pending.push(`deployment ${d.metadata?.namespace}/${d.metadata?.name} ${s.readyReplicas ?? 0}/${want}`);
      }
      const ready = (p: KubeItem): boolean =>
        (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
      const notReady = pods.filter((p) => !ready(p) && p.status?.phase !== 'Succeeded');
      for (const p of notReady)
        pending.push(
          `pod ${p.metadata?.namespace}/${p.metadata?.name}: ${p.status?.phase ?? 'Pending'}${p.spec?.nodeName ? '' : ', not scheduled'}`,
        );
      line = `pods: ${pods.length - notReady.length}/${pods.length} ready`;
    }
    if (line && line !== last) {
      say(line);
      last = line;
    }
    if (pending.length === 0) return true;
    if (Date.now() > deadline) {
      say(`not ready after ${Math.round(timeoutMs / 1000)} s:`);
      for (const p of pending) say(`  ${p}`);
      return false;
    }
    await sleep(300);
  }
}

/** `sluice lab kubectl -- ARGS...`: kubectl against the lab's API server; returns its exit code. */
export async function labKubectl(name: string, args: string[]): Promise<number> {
  const argv = kubectlArgv(name, args);
  const child = spawn(argv[0], argv.slice(1), { stdio: 'inherit' });
  new ProcessRecorder(Topology.procsDir(name)).track(child, [argv, argv.slice(2)], `sl-${name}-cp`);
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  process.on('SIGTERM', forward);
  process.on('SIGINT', forward);
  try {
    return await new Promise<number>((resolve) => {
      child.once('error', (err) => {
        process.stderr.write(`sluice: ${err.message}\n`);
        resolve(127);
      });
      child.once('exit', (code, signal) => {
        if (code !== null) resolve(code);
        else resolve(128 + (signal ? (os.constants.signals[signal] ?? 0) : 0));
      });
    });
  } finally {
    process.off('SIGTERM', forward);
    process.off('SIGINT', forward);
  }
}

/** The lines `up` prints about the API server. */
export function kubeconfigHint(name: string): string[] {
  const st = controlPlaneState(name);
  if (!st) return [];
  return [
    `  KUBECONFIG=${st.kubeconfig}`,
    `    (the API server ${st.server} is inside the lab: \`sluice lab kubectl${name === 'lab' ? '' : ` --name ${name}`} -- get nodes\`,` +
      ` or kubectl in a lab namespace: nsenter --net=/run/netns/sl-${name}-cp kubectl --kubeconfig ...)`,
  ];
}

/** A pod the lab kubelet runs, by `[namespace/]name` (default namespace first, else unique). */
export function findKubePod(name: string, target: string): KubePodRecord | undefined {
  const pods = readKubePods(name);
  const slash = target.indexOf('/');
  if (slash >= 0) {
    const ns = target.slice(0, slash);
    const n = target.slice(slash + 1);
    return pods.find((p) => p.namespace === ns && p.name === n);
  }
  const all = pods.filter((p) => p.name === target);
  const d = all.find((p) => p.namespace === 'default');
  if (d) return d;
  if (all.length > 1)
    throw new CliError(
      `pod ${target} is in several namespaces (${all.map((p) => p.namespace).join(', ')}): say NAMESPACE/${target}`,
    );
  return all[0];
}
