// What a lab's fresh API server gets before the agents start (all idempotent, for `up` again):
//   - the Calico CRDs Sluice reads (deploy/crds/, crd.projectcalico.org/v1), waited for until
//     Established, and a `default` FelixConfiguration with bpfEnabled (created only if absent:
//     a user's change survives `up`);
//   - kube-system/kubernetes-services-endpoint with KUBERNETES_SERVICE_HOST/PORT = the API
//     server's own address, as the eBPF dataplane's seed expects (an agent in a pod must not
//     depend on the ClusterIP it is about to program);
//   - one Node per lab node: InternalIP = its underlay IP, spec.podCIDR = its pod CIDR, the
//     labels and Calico annotations of the lab's file store, then a Ready status;
//   - the agent's ServiceAccount, ClusterRole and ClusterRoleBinding from deploy/sluice.yaml: the
//     lab's agents run in-cluster with that account's token, so the RBAC there is what they have;
//   - and it waits for the `default` ServiceAccount (the ServiceAccount admission plugin refuses
//     pods before the controller-manager has made it).
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { packageRoot } from '../../paths.js';
import { nodeObjects } from '../controller.js';
import type { Topology } from '../topology.js';
import { isStatus, KubeApiError, type KubeApi } from './api.js';
import { API_PORT } from './control-plane.js';

export const CRD_DIR = path.join(packageRoot, 'deploy', 'crds');
export const AGENT_MANIFEST = path.join(packageRoot, 'deploy', 'sluice.yaml');
export const SERVICES_ENDPOINT_CONFIGMAP = 'kubernetes-services-endpoint';

interface Meta {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Obj {
  apiVersion?: string;
  kind?: string;
  metadata?: Meta;
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Retries `fn` while it fails (the API server may still be settling), until `ms` passed. */
async function retry<T>(what: string, ms: number, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      await sleep(200);
    }
  }
}

/** The CRD manifests of deploy/crds/. */
export function crdManifests(dir = CRD_DIR): Obj[] {
  const out: Obj[] = [];
  for (const f of fs
    .readdirSync(dir)
    .filter((x) => /\.ya?ml$/.test(x))
    .sort()) {
    for (const doc of parseAllDocuments(fs.readFileSync(path.join(dir, f), 'utf8'))) {
      const v = doc.toJS() as Obj | null;
      if (v?.kind === 'CustomResourceDefinition') out.push(v);
    }
  }
  return out;
}

const CRDS = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

export async function installCrds(api: KubeApi, log: (m: string) => void): Promise<void> {
  const crds = crdManifests();
  await Promise.all(crds.map((c) => api.createOrReplace(CRDS, c)));
  const deadline = Date.now() + 30_000;
  for (const c of crds) {
    for (;;) {
      const cur = await api.get<{ status?: { conditions?: Array<{ type: string; status: string }> } }>(
        `${CRDS}/${c.metadata?.name}`,
      );
      if (cur.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True')) break;
      if (Date.now() > deadline) throw new Error(`CRD ${c.metadata?.name} is not Established after 30 s`);
      await sleep(50);
    }
  }
  log(`CRDs installed: ${crds.map((c) => c.metadata?.name).join(', ')}`);
}

/** Where each kind of deploy/sluice.yaml's RBAC objects is created. */
const RBAC_COLLECTIONS: Record<string, (o: Obj) => string> = {
  ServiceAccount: (o) => `/api/v1/namespaces/${o.metadata?.namespace ?? 'default'}/serviceaccounts`,
  ClusterRole: () => '/apis/rbac.authorization.k8s.io/v1/clusterroles',
  ClusterRoleBinding: () => '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
};

/** The agent's ServiceAccount, ClusterRole and ClusterRoleBinding as deploy/sluice.yaml has them. */
export function agentRbacManifests(file = AGENT_MANIFEST): Obj[] {
  return parseAllDocuments(fs.readFileSync(file, 'utf8'))
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null && RBAC_COLLECTIONS[o.kind ?? ''] !== undefined);
}

export async function installAgentRbac(api: KubeApi, log: (m: string) => void): Promise<void> {
  const objs = agentRbacManifests();
  // kube-system is made by the API server itself, a moment after /readyz
  await retry('the agent RBAC of deploy/sluice.yaml', 30_000, () =>
    Promise.all(objs.map((o) => api.createOrReplace(RBAC_COLLECTIONS[o.kind!]!(o), o))),
  );
  log(`agent RBAC installed from deploy/sluice.yaml: ${objs.map((o) => `${o.kind} ${o.metadata?.name}`).join(', ')}`);
}

export async function ensureFelixConfiguration(api: KubeApi, log: (m: string) => void): Promise<void> {
  const path_ = '/apis/crd.projectcalico.org/v1/felixconfigurations';
  try {
    await api.post(path_, {
      apiVersion: 'crd.projectcalico.org/v1',
      kind: 'FelixConfiguration',
      metadata: { name: 'default' },
      // As the file-store lab's default: the eBPF dataplane, Tunnel mode, and no iptables clean-up
      // (lab nodes run no kube-proxy).
      spec: { bpfEnabled: true, bpfExternalServiceMode: 'Tunnel', bpfKubeProxyIptablesCleanupEnabled: false },
    });
    log('FelixConfiguration default created (bpfEnabled: true)');
  } catch (err) {
    if (!isStatus(err, 409)) throw err;
  }
}

export async function ensureServicesEndpoint(api: KubeApi, cpIp: string): Promise<void> {
  await retry('ConfigMap kube-system/kubernetes-services-endpoint', 30_000, () =>
    api.createOrReplace('/api/v1/namespaces/kube-system/configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: SERVICES_ENDPOINT_CONFIGMAP, namespace: 'kube-system' },
      data: { KUBERNETES_SERVICE_HOST: cpIp, KUBERNETES_SERVICE_PORT: String(API_PORT) },
    }),
  );
}

/** Creates (or updates the labels and annotations of) the lab's Nodes, then sets them Ready. */
export async function registerNodes(api: KubeApi, topo: Topology): Promise<void> {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  await Promise.all(
    nodeObjects(topo).map(async (n) => {
      const name = n.metadata?.name ?? '';
      const body = { apiVersion: 'v1', kind: 'Node', metadata: n.metadata, spec: n.spec };
      try {
        await api.post('/api/v1/nodes', body);
      } catch (err) {
        if (!(err instanceof KubeApiError) || err.status !== 409) throw err;
        // spec.podCIDR cannot change once set: only labels and annotations are brought up to date
        await api.patch(`/api/v1/nodes/${name}`, {
          metadata: { labels: n.metadata?.labels, annotations: n.metadata?.annotations },
        });
      }
      const status = {
        ...n.status,
        conditions: [
          {
            type: 'Ready',
            status: 'True',
            reason: 'KubeletReady',
            message: 'sluice lab node',
            lastHeartbeatTime: now,
            lastTransitionTime: now,
          },
        ],
      };
      await api.patch(`/api/v1/nodes/${name}/status`, { status });
    }),
  );
}

/** Waits for default/default: pods are refused until the controller-manager has made it. */
export async function waitDefaultServiceAccount(api: KubeApi, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await api.find('/api/v1/namespaces/default/serviceaccounts/default')) return;
    if (Date.now() > deadline)
      throw new Error(`no default ServiceAccount after ${timeoutMs / 1000} s (is kube-controller-manager running?)`);
    await sleep(100);
  }
}

/** Waits until the API server's /readyz answers ok. */
export async function waitReadyz(api: KubeApi, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    try {
      const r = await api.request('GET', '/readyz', undefined, { timeoutMs: 2000 });
      if (r.status === 200) return;
      last = `HTTP ${r.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`the API server is not ready after ${timeoutMs / 1000} s: ${last}`);
    await sleep(100);
  }
}
