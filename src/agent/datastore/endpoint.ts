// Where the agent finds the API server, and why.
//
// Order: an explicit kubeconfig (the --kubeconfig flag, then KUBECONFIG), else the in-cluster
// configuration: the pod's service account (token and CA under
// /var/run/secrets/kubernetes.io/serviceaccount) with the address from KUBERNETES_SERVICE_HOST
// and KUBERNETES_SERVICE_PORT.
//
// In a pod the kubelet sets KUBERNETES_SERVICE_HOST/PORT to the ClusterIP of the `kubernetes`
// Service. With kube-proxy gone that address only works once Sluice itself has programmed it,
// and Sluice cannot program anything before it has talked to the API server. So the DaemonSet
// loads the optional `kubernetes-services-endpoint` ConfigMap with `envFrom`, whose
// KUBERNETES_SERVICE_HOST/PORT (a direct address of the API server) replace the kubelet's
// values. The kubelet also sets the Docker-link variables (KUBERNETES_PORT=tcp://IP:PORT,
// KUBERNETES_PORT_<port>_TCP_ADDR/_PORT) that the ConfigMap does not touch: when they differ from
// KUBERNETES_SERVICE_HOST/PORT the override is in effect; when they agree, the agent is about
// to use the ClusterIP, and says so.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { KubeConfig, type Cluster, type Context, type User } from '@kubernetes/client-node';
import { DatastoreError } from './types.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export type ApiServerSource =
  /** --kubeconfig */
  | 'kubeconfig-flag'
  /** the KUBECONFIG environment variable */
  | 'kubeconfig-env'
  /** in-cluster, KUBERNETES_SERVICE_HOST/PORT replaced (kubernetes-services-endpoint ConfigMap) */
  | 'in-cluster-override'
  /** in-cluster, KUBERNETES_SERVICE_HOST/PORT as the kubelet set them (or of unknown origin) */
  | 'in-cluster';

export interface ApiServerEndpoint {
  kubeConfig: KubeConfig;
  /** The API server URL, e.g. `https://10.0.0.5:6443`. */
  server: string;
  source: ApiServerSource;
  /**
   * True when the address is the kubelet's default (the ClusterIP of the `kubernetes` Service),
   * false when it is known not to be, undefined when there is nothing to compare with.
   */
  clusterIp: boolean | undefined;
  /** One line for the log: which endpoint and why. */
  description: string;
  /** Things the operator should fix (e.g. reaching the API server through its ClusterIP). */
  warnings: string[];
}

export interface ResolveApiServerOptions {
  /** A kubeconfig path given on the command line (wins over everything else). */
  kubeconfig?: string;
  /** The environment to read (default process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Where the service account's token, ca.crt and namespace are (default SERVICE_ACCOUNT_DIR). */
  serviceAccountDir?: string;
}

const OP = 'find the API server';

export function resolveApiServer(opts: ResolveApiServerOptions = {}): ApiServerEndpoint {
  const env = opts.env ?? process.env;
  if (opts.kubeconfig) return fromKubeconfig([opts.kubeconfig], 'kubeconfig-flag', '--kubeconfig');
  const kubeconfigEnv = env.KUBECONFIG?.trim();
  if (kubeconfigEnv) {
    const files = kubeconfigEnv.split(path.delimiter).filter((f) => f !== '');
    return fromKubeconfig(files, 'kubeconfig-env', 'KUBECONFIG');
  }
  return fromCluster(env, opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR);
}

function fromKubeconfig(files: string[], source: ApiServerSource, via: string): ApiServerEndpoint {
  // Like kubectl: every file that exists is merged, the first definition of a name wins.
  const existing = files.filter((f) => fs.existsSync(f));
  if (existing.length === 0) {
    throw new DatastoreError('ECONFIG', {
      op: OP,
      message: `kubeconfig ${files.join(path.delimiter)} (${via}) not found`,
    });
  }
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(existing[0]);
    for (const f of existing.slice(1)) {
      const more = new KubeConfig();
      more.loadFromFile(f);
      mergeFirstWins(kc, more);
    }
  } catch (err) {
    throw new DatastoreError('ECONFIG', {
      op: OP,
      message: `read kubeconfig ${existing.join(path.delimiter)}: ${(err as Error).message}`,
      cause: err,
    });
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new DatastoreError('ECONFIG', {
      op: OP,
      message: `kubeconfig ${existing.join(path.delimiter)} has no current context with a cluster`,
    });
  }
  const where = existing.join(path.delimiter);
  return {
    kubeConfig: kc,
    server: cluster.server,
    source,
    clusterIp: undefined,
    description: `using API server ${cluster.server} from kubeconfig ${where} (${via}, context ${kc.getCurrentContext()})`,
    warnings: [],
  };
}

function mergeFirstWins(into: KubeConfig, from: KubeConfig): void {
  const has = (list: Array<{ name: string }>, name: string): boolean => list.some((x) => x.name === name);
  for (const c of from.getClusters()) if (!has(into.getClusters(), c.name)) into.addCluster(c);
  for (const u of from.getUsers()) if (!has(into.getUsers(), u.name)) into.addUser(u);
  for (const x of from.getContexts()) if (!has(into.getContexts(), x.name)) into.addContext(x);
  if (!into.getCurrentContext() && from.getCurrentContext()) into.setCurrentContext(from.getCurrentContext());
}

/** The kubelet's address of the `kubernetes` Service, from the Docker-link variables. */
function kubeletServiceAddress(
  env: Readonly<Record<string, string | undefined>>,
): { host: string; port: string } | undefined {
  const link = env.KUBERNETES_PORT?.trim();
  const m = link ? /^tcp:\/\/(.+):(\d+)$/.exec(link) : null;
  if (m) return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: m[2] };
  for (const [k, v] of Object.entries(env)) {
    const p = /^KUBERNETES_PORT_(\d+)_TCP_ADDR$/.exec(k);
    if (p && v) return { host: v.trim(), port: env[`KUBERNETES_PORT_${p[1]}_TCP_PORT`]?.trim() ?? p[1] };
  }
  return undefined;
}

function fromCluster(env: Readonly<Record<string, string | undefined>>, saDir: string): ApiServerEndpoint {
  const host = env.KUBERNETES_SERVICE_HOST?.trim();
  const port = env.KUBERNETES_SERVICE_PORT?.trim();
  const tokenFile = path.join(saDir, 'token');
  const caFile = path.join(saDir, 'ca.crt');
  const inPod = fs.existsSync(tokenFile);
  if (!host || !port) {
    throw new DatastoreError('ECONFIG', {
      op: OP,
      message: inPod
        ? 'in a pod (service account token present) but KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set'
        : `no kubeconfig (--kubeconfig or KUBECONFIG) and not in a pod (no service account token at ${tokenFile})`,
      hint: inPod ? 'set them, e.g. with the kubernetes-services-endpoint ConfigMap' : undefined,
    });
  }
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw new DatastoreError('ECONFIG', {
      op: OP,
      message: `KUBERNETES_SERVICE_PORT=${JSON.stringify(port)} is not a port`,
    });
  }
  if (/[\s/]/.test(host)) {
    throw new DatastoreError('ECONFIG', {
      op: OP,
      message: `KUBERNETES_SERVICE_HOST=${JSON.stringify(host)} is not a host`,
    });
  }
  for (const [file, what] of [
    [tokenFile, 'service account token'],
    [caFile, 'service account CA certificate'],
  ] as const) {
    if (!fs.existsSync(file)) {
      throw new DatastoreError('ECONFIG', {
        op: OP,
        message: `in-cluster configuration needs the ${what} at ${file}, which does not exist`,
        hint: 'is automountServiceAccountToken disabled for the agent?',
      });
    }
  }
  const server = `https://${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
  const cluster: Cluster = { name: 'in-cluster', server, caFile, skipTLSVerify: false };
  // client-node's file authenticator re-reads the token every minute (bound tokens rotate).
  const user: User = { name: 'in-cluster', authProvider: { name: 'tokenFile', config: { tokenFile } } };
  const nsFile = path.join(saDir, 'namespace');
  const context: Context = {
    name: 'in-cluster',
    cluster: cluster.name,
    user: user.name,
    namespace: fs.existsSync(nsFile) ? fs.readFileSync(nsFile, 'utf8').trim() : undefined,
  };
  const kc = new KubeConfig();
  kc.loadFromOptions({ clusters: [cluster], users: [user], contexts: [context], currentContext: context.name });

  const kubelet = kubeletServiceAddress(env);
  const warnings: string[] = [];
  let source: ApiServerSource;
  let clusterIp: boolean | undefined;
  let why: string;
  if (kubelet && (kubelet.host !== host || kubelet.port !== port)) {
    source = 'in-cluster-override';
    clusterIp = false;
    why =
      `KUBERNETES_SERVICE_HOST/PORT (kubernetes-services-endpoint override; ` +
      `the kubelet's default was the ClusterIP ${kubelet.host}:${kubelet.port})`;
  } else if (kubelet) {
    source = 'in-cluster';
    clusterIp = true;
    why = "KUBERNETES_SERVICE_HOST/PORT (the kubelet's default: the ClusterIP of the kubernetes Service)";
    warnings.push(
      'the API server is reached through its ClusterIP, which works only while something load-balances ' +
        'Services (kube-proxy, or Sluice once it has programmed it); create the kubernetes-services-endpoint ' +
        "ConfigMap in the agent's namespace with KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT set to " +
        'a direct address of the API server',
    );
  } else {
    source = 'in-cluster';
    clusterIp = undefined;
    why = 'KUBERNETES_SERVICE_HOST/PORT (origin unknown: no KUBERNETES_PORT from the kubelet to compare with)';
  }
  return {
    kubeConfig: kc,
    server,
    source,
    clusterIp,
    description: `using API server ${server} from ${why}`,
    warnings,
  };
}
