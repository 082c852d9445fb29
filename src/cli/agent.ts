// `sluice agent`: the node agent. In a cluster it runs as a DaemonSet pod (host network) against
// the Kubernetes API; in the lab, one process per node inside the node's network namespace,
// watching the lab's store.
import { execFileSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import type { Datastore } from '../agent/datastore/types.js';
import { FileStore } from '../lab/store.js';
import { storeDir } from '../lab/controller.js';
import { CliError } from './output.js';

export interface AgentCommandOptions {
  nodeName?: string;
  nodeIp?: string;
  lab?: string;
  kubeconfig?: string;
  serviceAccountDir?: string;
  pinRoot?: string;
  cgroup?: string;
  logLevel?: string;
  hostNetns?: boolean;
  statusFile?: string;
}

/**
 * Whether this process looks like it is in the machine's own network namespace: PID 1's (when
 * readable), or any namespace with a default route, which lab and test namespaces never have.
 */
function inHostNetns(): boolean {
  try {
    if (readlinkSync('/proc/self/ns/net') === readlinkSync('/proc/1/ns/net')) return true;
  } catch {
    // PID 1's namespace is not readable in some sandboxes: fall through to the route check.
  }
  try {
    return execFileSync('ip', ['-4', 'route', 'show', 'default'], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return true;
  }
}

async function kubernetesDatastore(opts: AgentCommandOptions, log: pino.Logger): Promise<Datastore> {
  const { resolveApiServer } = await import('../agent/datastore/endpoint.js');
  const { KubernetesDatastore } = await import('../agent/datastore/kubernetes.js');
  const endpoint = resolveApiServer({
    kubeconfig: opts.kubeconfig,
    env: process.env,
    serviceAccountDir: opts.serviceAccountDir,
  });
  // The datastore logs which API server it uses and why, with any warning (the seed's
  // kubernetes-services-endpoint override, or the ClusterIP default that needs kube-proxy).
  return new KubernetesDatastore({ endpoint, logger: log });
}

export async function agentCommand(opts: AgentCommandOptions): Promise<void> {
  const nodeName = opts.nodeName ?? process.env.NODENAME ?? process.env.KUBERNETES_NODE_NAME;
  if (!nodeName) throw new CliError('the node name is needed: --node-name, or NODENAME in the environment');
  // Attaching to the machine's own interfaces is what a real node wants, and never what a lab or
  // a test wants: it must be asked for.
  if (!opts.hostNetns && inHostNetns()) {
    throw new CliError(
      'refusing to run in the host network namespace without --host-netns (labs run agents inside node namespaces)',
    );
  }
  const log = pino({ level: opts.logLevel ?? process.env.SLUICE_LOG_LEVEL ?? 'info', base: { node: nodeName } });
  const datastore = opts.lab
    ? await FileStore.open(storeDir(opts.lab), { create: false }).catch(() => {
        throw new CliError(`no lab store for lab "${opts.lab}" (is the lab up?)`);
      })
    : await kubernetesDatastore(opts, log);
  const agent = new Agent({
    nodeName,
    nodeIp: opts.nodeIp,
    datastore,
    logger: log,
    pinRoot: opts.pinRoot,
    cgroup: opts.cgroup,
    statusFile: opts.statusFile,
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping; the datapath keeps running from its pins');
    agent.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await agent.start();
  log.info('agent running');
}
