// Real kube-proxy in a lab made with `sluice lab up --kubernetes --proxy kube-proxy-iptables|
// kube-proxy-nftables`: a `kube-system/kube-proxy` DaemonSet, as kubeadm installs one, that the
// REAL DaemonSet controller turns into one Pod per node and the lab kubelet runs with
// hostNetwork in the node's namespace. The container's command is the kube-proxy built by
// `npm run build:kubernetes` (the lab runs commands, not images; the image field is there for
// the API's validation and names the release the binary was built from).
//
// So the seed's steps act on a real object: `kubectl patch ds -n kube-system kube-proxy -p
// '{"spec":{"template":{"spec":{"nodeSelector":{"non-calico": "true"}}}}}'` makes the DaemonSet
// controller delete the pods, and the lab kubelet stops them (their rules stay in the node's
// tables, as with a real kubelet, until Sluice's clean-up removes them).
//
// Flags, and why:
//   --proxy-mode                       iptables or nftables (the contender)
//   --hostname-override=$(NODE_NAME)   the lab node's name (every node shares the machine's hostname)
//   --cluster-cidr                     the pod network: traffic from outside it is masqueraded
//   --conntrack-max-per-core=0 and the --conntrack-tcp-timeout-* = 0
//                                      leave the machine-wide conntrack settings alone
//   --healthz-bind-address             :10256 on the node (the readiness probe), as kubeadm's
//   --metrics-bind-address             127.0.0.1:10249 in the node's namespace
import fs from 'node:fs';
import path from 'node:path';
import { CliError } from '../../cli/output.js';
import type { KubernetesBinaries } from './binaries.js';
import { kubectl, kubernetesDir } from './control-plane.js';

export const PROXY_MODES = ['sluice', 'kube-proxy-iptables', 'kube-proxy-nftables'] as const;
export type ProxyMode = (typeof PROXY_MODES)[number];

export function parseProxyMode(s: string): ProxyMode {
  if ((PROXY_MODES as readonly string[]).includes(s)) return s as ProxyMode;
  throw new Error(`--proxy ${s}: expected one of ${PROXY_MODES.join(', ')}`);
}

export const KUBE_PROXY_HEALTHZ_PORT = 10256;
export const KUBE_PROXY_METRICS_PORT = 10249;
export const KUBE_PROXY_DS_PATH = '/apis/apps/v1/namespaces/kube-system/daemonsets';

interface KubeProxyOptions {
  binaries: KubernetesBinaries;
  mode: 'iptables' | 'nftables';
  /** The kubeconfig kube-proxy uses (a file on this machine; the pod's processes see it). */
  kubeconfig: string;
  clusterCidr: string;
}

/** Who serves Services in a Kubernetes lab, as `up` was told (kept for the next `up` and status). */
export interface ProxySetup {
  proxy: ProxyMode;
  /** Sluice's agents run (beside kube-proxy: in the standard dataplane until bpfEnabled). */
  sluice: boolean;
}

function proxySetupPath(lab: string): string {
  return path.join(kubernetesDir(lab), 'proxy.json');
}

export function readProxySetup(lab: string): ProxySetup | undefined {
  try {
    return JSON.parse(fs.readFileSync(proxySetupPath(lab), 'utf8')) as ProxySetup;
  } catch {
    return undefined;
  }
}

export function writeProxySetup(lab: string, s: ProxySetup): void {
  fs.writeFileSync(proxySetupPath(lab), JSON.stringify(s) + '\n', { mode: 0o600 });
}

/**
 * Installs the kube-proxy DaemonSet, once: the first time, Sluice's `default` FelixConfiguration
 * is set to the state of a Calico node before the seed's steps (bpfEnabled: false, so the agents
 * run the standard dataplane and leave Services to kube-proxy; the iptables clean-up at its
 * default, true, for when eBPF mode is enabled). An existing DaemonSet means the lab was made
 * before: nothing is changed, so that a second `up` does not undo an operator's steps.
 * Through the lab's kubectl, which runs in the control-plane namespace: the API server's address
 * exists only inside the lab (from the root namespace it would leave the machine).
 */
export async function installKubeProxy(lab: string, o: KubeProxyOptions): Promise<void> {
  const found = await kubectl(lab, [
    'get',
    'daemonset',
    '-n',
    'kube-system',
    'kube-proxy',
    '--ignore-not-found',
    '-o',
    'name',
  ]);
  if (found.code !== 0) throw new CliError(`kubectl get daemonset kube-proxy: ${found.stderr.trim()}`);
  if (found.stdout.trim() !== '') return;
  const patch = await kubectl(lab, [
    'patch',
    'felixconfigurations.crd.projectcalico.org',
    'default',
    '--type=merge',
    '-p',
    JSON.stringify({ spec: { bpfEnabled: false, bpfKubeProxyIptablesCleanupEnabled: true } }),
  ]);
  if (patch.code !== 0) throw new CliError(`kubectl patch felixconfiguration default: ${patch.stderr.trim()}`);
  const apply = await kubectl(lab, ['create', '-f', '-'], { input: JSON.stringify(kubeProxyDaemonSet(o)) });
  if (apply.code !== 0) throw new CliError(`kubectl create daemonset kube-proxy: ${apply.stderr.trim()}`);
}

/** The kube-system/kube-proxy DaemonSet the lab installs. */
export function kubeProxyDaemonSet(o: KubeProxyOptions): Record<string, unknown> {
  const labels = { 'k8s-app': 'kube-proxy' };
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: {
      name: 'kube-proxy',
      namespace: 'kube-system',
      labels,
      annotations: { 'lab.sluice.dev/binary': o.binaries.kubeProxy },
    },
    spec: {
      selector: { matchLabels: labels },
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: { labels },
        spec: {
          hostNetwork: true,
          priorityClassName: 'system-node-critical',
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          tolerations: [{ operator: 'Exists' }],
          containers: [
            {
              name: 'kube-proxy',
              image: `registry.k8s.io/kube-proxy:${o.binaries.version}`,
              command: [
                o.binaries.kubeProxy,
                `--kubeconfig=${o.kubeconfig}`,
                `--proxy-mode=${o.mode}`,
                '--hostname-override=$(NODE_NAME)',
                `--cluster-cidr=${o.clusterCidr}`,
                '--conntrack-max-per-core=0',
                '--conntrack-tcp-timeout-established=0',
                '--conntrack-tcp-timeout-close-wait=0',
                `--healthz-bind-address=0.0.0.0:${KUBE_PROXY_HEALTHZ_PORT}`,
                `--metrics-bind-address=127.0.0.1:${KUBE_PROXY_METRICS_PORT}`,
                '--v=2',
              ],
              env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
              securityContext: { privileged: true },
              readinessProbe: {
                httpGet: { path: '/healthz', port: KUBE_PROXY_HEALTHZ_PORT },
                periodSeconds: 1,
              },
            },
          ],
        },
      },
    },
  };
}
