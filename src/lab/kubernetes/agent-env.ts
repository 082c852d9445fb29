// How the agents of a lab with a real API server are started: as deploy/sluice.yaml's container
// would be by a kubelet, not with the lab's admin kubeconfig. So what the seed asks of an operator
// has its effect in the lab:
//   - in-cluster credentials: a token of the DaemonSet's ServiceAccount (kube-system/sluice-node, as
//     deploy/sluice.yaml names it; minted through the TokenRequest API as a kubelet does for a
//     projected volume), the cluster CA and the namespace, in a directory the agent is pointed at (`--service-account-dir`: a
//     process outside a container cannot have them at /var/run/secrets/...). The agent can do
//     what the ClusterRole of deploy/sluice.yaml grants, and nothing else.
//   - the environment a kubelet gives a container: the `kubernetes` Service's variables (its
//     ClusterIP), then the container's `envFrom`: the optional kubernetes-services-endpoint
//     ConfigMap, read when the agent starts (a kubelet reads it at container start too), whose
//     KUBERNETES_SERVICE_HOST/PORT replace the ClusterIP. Without the ConfigMap an agent starts
//     on the ClusterIP, and says so.
import fs from 'node:fs';
import path from 'node:path';
import { CliError } from '../../cli/output.js';
import { Topology } from '../topology.js';
import { AGENT_MANIFEST, agentRbacManifests, SERVICES_ENDPOINT_CONFIGMAP } from './bootstrap.js';
import { kubectl, kubernetesDir } from './control-plane.js';
import { pkiFiles } from './pki.js';

export interface AgentPodEnvironment {
  /** The service account directory (token, ca.crt, namespace). */
  serviceAccountDir: string;
  /** The variables a kubelet would set, the ConfigMap's last. */
  env: Record<string, string>;
}

async function kubectlOut(name: string, args: string[], what: string): Promise<string> {
  const r = await kubectl(name, args);
  if (r.code !== 0) throw new CliError(`lab ${name}: ${what}: ${r.stderr.trim() || `kubectl exited ${r.code}`}`);
  return r.stdout;
}

/** The variables a kubelet derives from a Service (its "service links"), for `kubernetes`. */
function serviceLinkEnv(ip: string, port: number): Record<string, string> {
  const url = `tcp://${ip}:${port}`;
  return {
    KUBERNETES_SERVICE_HOST: ip,
    KUBERNETES_SERVICE_PORT: String(port),
    KUBERNETES_SERVICE_PORT_HTTPS: String(port),
    KUBERNETES_PORT: url,
    [`KUBERNETES_PORT_${port}_TCP`]: url,
    [`KUBERNETES_PORT_${port}_TCP_PROTO`]: 'tcp',
    [`KUBERNETES_PORT_${port}_TCP_PORT`]: String(port),
    [`KUBERNETES_PORT_${port}_TCP_ADDR`]: ip,
  };
}

/** Mints the token and reads the ConfigMap and the `kubernetes` Service, for the agents about to start. */
export async function agentPodEnvironment(name: string): Promise<AgentPodEnvironment> {
  // the DaemonSet's own ServiceAccount, as deploy/sluice.yaml names it
  const sa = agentRbacManifests().find((o) => o.kind === 'ServiceAccount')?.metadata;
  if (!sa?.name) throw new CliError(`no ServiceAccount in ${AGENT_MANIFEST}`);
  const account = sa.name;
  const namespace = sa.namespace ?? 'default';
  const token = (
    await kubectlOut(
      name,
      ['create', 'token', account, '-n', namespace, '--duration=48h'],
      `a token for ServiceAccount ${namespace}/${account}`,
    )
  ).trim();
  const svc = JSON.parse(
    await kubectlOut(name, ['get', 'service', 'kubernetes', '-n', 'default', '-o', 'json'], 'the kubernetes Service'),
  ) as {
    spec?: { clusterIP?: string; ports?: Array<{ port?: number }> };
  };
  const clusterIp = svc.spec?.clusterIP;
  const port = svc.spec?.ports?.[0]?.port;
  if (!clusterIp || !port) throw new CliError(`lab ${name}: the kubernetes Service has no ClusterIP and port`);
  const cm = (
    await kubectlOut(
      name,
      ['get', 'configmap', SERVICES_ENDPOINT_CONFIGMAP, '-n', 'kube-system', '-o', 'json', '--ignore-not-found'],
      `ConfigMap kube-system/${SERVICES_ENDPOINT_CONFIGMAP}`,
    )
  ).trim();
  const data = cm ? ((JSON.parse(cm) as { data?: Record<string, string> }).data ?? {}) : {};

  const dir = path.join(Topology.stateDir(name), 'agents', 'serviceaccount');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // replaced whole, as a projected volume's files are
  for (const [file, text] of [
    ['token', token],
    ['ca.crt', fs.readFileSync(pkiFiles(path.join(kubernetesDir(name), 'pki')).ca, 'utf8')],
    ['namespace', namespace],
  ] as const) {
    fs.writeFileSync(path.join(dir, `${file}.tmp`), text, { mode: 0o600 });
    fs.renameSync(path.join(dir, `${file}.tmp`), path.join(dir, file));
  }
  // envFrom: every key that is a valid variable name, as a kubelet takes them
  const fromConfigMap = Object.fromEntries(Object.entries(data).filter(([k]) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k)));
  return {
    serviceAccountDir: dir,
    env: { ...serviceLinkEnv(clusterIp, port), ...fromConfigMap },
  };
}

/** The lab's own environment for an agent: without anything that would pick another API server. */
export function agentBaseEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (k !== 'KUBECONFIG' && !k.startsWith('KUBERNETES_')) out[k] = v;
  return out;
}
