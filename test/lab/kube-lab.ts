// What the tests of Kubernetes labs share: running the `sluice` command and other tools, the
// lab's kubectl (inside the lab: the API server's address exists only there), and the rule for
// skipping: kernel tests need root and the built Kubernetes binaries, and fail instead of skipping
// with SLUICE_REQUIRE_KUBERNETES=1 (or, for privileges, under CI=true).
import type { TestContext } from 'node:test';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { kubernetesBinDir } from '../../src/lab/kubernetes/binaries.js';
import { packageRoot } from '../../src/paths.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';

export const BIN = path.join(packageRoot, 'bin', 'sluice.js');
export const BIN_DIR = kubernetesBinDir();
const REQUIRE = process.env.SLUICE_REQUIRE_KUBERNETES === '1';

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end; never throws for its exit code. */
export function run(
  file: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 180_000,
        killSignal: 'SIGKILL',
        encoding: 'utf8',
        cwd: packageRoot,
        maxBuffer: 32 << 20,
        env: opts.env,
      },
      (err, stdout, stderr) => {
        const e = err as { code?: unknown } | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout, stderr });
      },
    );
    // a command that does not read its input may exit before it is written
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}

export function sluice(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  const env = { ...process.env, ...opts.env };
  delete env.SLUICE_DEBUG;
  return run(process.execPath, [BIN, ...args], { timeoutMs: opts.timeoutMs, env });
}

/** The built kubectl in lab `lab`'s control-plane namespace, as `sluice lab kubectl` runs it; throws on failure. */
export async function labKubectl(lab: string, args: string[], input?: string): Promise<string> {
  const r = await run(
    'nsenter',
    [
      `--net=/run/netns/sl-${lab}-cp`,
      path.join(BIN_DIR ?? '', 'kubectl'),
      `--kubeconfig=/run/sluice/lab-${lab}/kubernetes/admin.kubeconfig`,
      ...args,
    ],
    { input, timeoutMs: 60_000 },
  );
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** Kernel tests need root and the built binaries (or fail with SLUICE_REQUIRE_KUBERNETES=1). */
export function kubeLabReady(t: TestContext, tools: string[]): boolean {
  if (!requirePrivileges(t, tools)) return false;
  if (BIN_DIR) return true;
  const msg = 'the Kubernetes binaries are not built: run `npm run build:kubernetes` (scripts/build-kubernetes.sh)';
  if (REQUIRE) throw new Error(`SLUICE_REQUIRE_KUBERNETES=1 and ${msg}`);
  t.skip(msg);
  return false;
}

/** Whether the lab can be made at all (for before/after hooks, which cannot skip). */
export const kubeLabPossible = (tools: string[]): boolean => !privilegeProblem(tools) && BIN_DIR !== undefined;

/** The seed's kubernetes-services-endpoint ConfigMap, verbatim, with the lab's API server address. */
export const SERVICES_ENDPOINT = `kind: ConfigMap
apiVersion: v1
metadata:
  name: kubernetes-services-endpoint
  namespace: kube-system
data:
  KUBERNETES_SERVICE_HOST: "192.168.77.250"
  KUBERNETES_SERVICE_PORT: "6443"
`;
