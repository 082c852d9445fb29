// The upstream Kubernetes binaries the lab runs (etcd, kube-apiserver, kube-controller-manager,
// kubectl), built by scripts/build-kubernetes.sh (`npm run build:kubernetes`) into a cache outside
// the repository. The script is the one place that knows the cache layout and the pinned
// versions: `--print-bin-dir` prints the bin directory when the cache is complete and exits 1
// otherwise, building nothing.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CliError } from '../../cli/output.js';
import { packageRoot } from '../../paths.js';

export const BUILD_SCRIPT = path.join(packageRoot, 'scripts', 'build-kubernetes.sh');
export const BUILD_COMMAND = 'npm run build:kubernetes';

export interface KubernetesBinaries {
  dir: string;
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeProxy: string;
  kubectl: string;
  /** The Kubernetes release they were built from (`v1.37.2`), read from the cache directory's name. */
  version: string;
}

/** The bin directory if the binaries are built, else undefined (never builds). */
export function kubernetesBinDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  let out: string;
  try {
    out = execFileSync('bash', [BUILD_SCRIPT, '--print-bin-dir'], {
      encoding: 'utf8',
      env,
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 30_000,
    });
  } catch {
    return undefined; // exit 1: the cache is not complete
  }
  const dir = out.trim().split('\n').pop() ?? '';
  return dir !== '' && fs.existsSync(dir) ? dir : undefined;
}

/** Why the binaries cannot be used, as one sentence that says what to run. */
export function missingBinariesMessage(): string {
  return (
    'the Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl) are not built: ' +
    `run \`${BUILD_COMMAND}\` first (about 25 minutes on 2 cores the first time; ` +
    'it needs the Go toolchain and builds into ~/.cache/sluice/kubernetes)'
  );
}

/** The binaries, or a CliError that says to run `npm run build:kubernetes`. */
export function findKubernetesBinaries(env: NodeJS.ProcessEnv = process.env): KubernetesBinaries {
  const dir = kubernetesBinDir(env);
  if (!dir) throw new CliError(missingBinariesMessage());
  const bins: KubernetesBinaries = {
    dir,
    etcd: path.join(dir, 'etcd'),
    kubeApiserver: path.join(dir, 'kube-apiserver'),
    kubeControllerManager: path.join(dir, 'kube-controller-manager'),
    kubeProxy: path.join(dir, 'kube-proxy'),
    kubectl: path.join(dir, 'kubectl'),
    version: /^(v\d+\.\d+\.\d+)/.exec(path.basename(path.dirname(dir)))?.[1] ?? 'unknown',
  };
  for (const f of [bins.etcd, bins.kubeApiserver, bins.kubeControllerManager, bins.kubeProxy, bins.kubectl]) {
    try {
      fs.accessSync(f, fs.constants.X_OK);
    } catch {
      throw new CliError(`${f} is missing or not executable: ${missingBinariesMessage()}`);
    }
  }
  return bins;
}
