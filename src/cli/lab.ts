// `sluice lab ...` and `sluice echo ...`. The command-line contract of the lab (scripts outside
// this repository depend on it; keep it stable):
//   sluice lab up [--nodes N] [--name NAME] [-f FILE]... [--demo] [--kubernetes [--proxy WHO] [--no-sluice]]
//   sluice lab status [-o json]
//   sluice lab exec TARGET -- CMD ARGS...     TARGET: [namespace/]POD, node/NAME, external
//                                             (with --kubernetes also control-plane)
//   sluice lab logs TARGET                    TARGET: [namespace/]POD, node/NAME (agent), controller
//                                             (with --kubernetes also control-plane/COMPONENT)
//   sluice lab apply -f FILE|DIR...           sluice lab delete -f FILE|DIR...
//   sluice lab down [--name NAME]
//   sluice lab kubectl [--name NAME] -- ARGS...   (a lab made with --kubernetes)
// With a single lab, no command but `up` (to make another) needs --name. Exit codes: 0 success,
// 1 failure (an object refused, pods not ready), the command's own code for exec.
import { Command, Option } from 'commander';
import { echoMain } from '../lab/echo-main.js';
import {
  formatStatus,
  labApply,
  labDelete,
  labDown,
  labExec,
  labLogs,
  labStatus,
  labUp,
  resolveLab,
} from '../lab/lab.js';
import { runController } from '../lab/controller.js';
import { labKubectl } from '../lab/kubernetes/commands.js';
import { runKubeKubelet } from '../lab/kubernetes/kubelet.js';
import { PROXY_MODES, type ProxyMode } from '../lab/kubernetes/kube-proxy.js';
import { CliError, formatJson, outputFormats, stdio, type OutputFormat } from './output.js';

/** Ends the process with `code` once stdout and stderr are flushed (0: let the caller return). */
async function exitWith(code: number): Promise<void> {
  if (code === 0) return;
  await Promise.all(
    [process.stdout, process.stderr].map((s) => new Promise<void>((resolve) => s.write('', () => resolve()))),
  );
  process.exit(code);
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function positiveInt(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 100)
    throw new CliError(`--nodes must be a number from 1 to 100, not ${v}`);
  return Number(v);
}

function seconds(v: string): number {
  if (!/^\d+$/.test(v)) throw new CliError(`--timeout needs seconds, not ${v}`);
  return Number(v);
}

const nameOption = (): Option => new Option('--name <name>', 'the lab (default: the only one)');

export function registerLabCommands(program: Command): void {
  const lab = program
    .command('lab')
    .description('a multi-node Kubernetes-like cluster in network namespaces on this machine');

  lab
    .command('up')
    .description('create the lab (or repair it; idempotent), apply files and wait until the pods are ready')
    .option('--nodes <n>', 'number of nodes (default 3)', positiveInt)
    .option('--name <name>', 'lab name, 1-8 characters [a-z0-9] (default: lab)')
    .addOption(
      new Option('--overlay <kind>', 'how pod traffic crosses nodes (default vxlan)').choices(['vxlan', 'direct']),
    )
    .option('-f, --filename <file>', 'Kubernetes YAML to apply (file or directory; repeatable)', collect)
    .option('--demo', 'apply the bundled demo (deploy/lab/demo.yaml) and run a live check')
    .option('--timeout <seconds>', 'how long to wait for pods to become ready', seconds, 120)
    .option(
      '--kubernetes',
      'run a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager; `npm run build:kubernetes`) in the lab: the agents use its API server, -f files go to it',
    )
    .addOption(
      new Option(
        '--proxy <who>',
        "with --kubernetes, who serves Services: sluice (default), or a real kube-proxy DaemonSet in iptables or nftables mode, with Sluice beside it in the standard dataplane (bpfEnabled: false), as before the seed's steps",
      ).choices([...PROXY_MODES]),
    )
    .option('--no-sluice', "with a kube-proxy mode: do not start Sluice's agents (kube-proxy alone, for comparisons)")
    .action(
      async (opts: {
        nodes?: number;
        name?: string;
        overlay?: 'vxlan' | 'direct';
        filename?: string[];
        demo?: boolean;
        timeout: number;
        kubernetes?: boolean;
        proxy?: ProxyMode;
        sluice: boolean;
      }) => {
        const code = await labUp({
          name: opts.name,
          nodes: opts.nodes,
          overlay: opts.overlay,
          files: opts.filename,
          demo: opts.demo,
          waitMs: opts.timeout * 1000,
          kubernetes: opts.kubernetes,
          proxy: opts.proxy,
          sluice: opts.sluice ? undefined : false,
          out: stdio,
        });
        await exitWith(code);
      },
    );

  lab
    .command('status')
    .description('nodes, pods, services and agents of the lab')
    .addOption(nameOption())
    .addOption(new Option('-o, --output <format>', 'output format').choices(outputFormats as string[]).default('table'))
    .action(async (opts: { name?: string; output: OutputFormat }) => {
      const s = await labStatus(opts.name);
      stdio.out(opts.output === 'json' ? formatJson(s) : formatStatus(s));
    });

  lab
    .command('exec')
    .description('run a command in a pod ([namespace/]NAME), a node (node/NAME) or the external client (external)')
    .addOption(nameOption())
    .argument('<target>', '[namespace/]POD, node/NAME or external')
    .argument('<command...>', 'the command (after --) and its arguments')
    .action(async (target: string, command: string[], opts: { name?: string }) => {
      await exitWith(await labExec(opts.name, target, command));
    });

  lab
    .command('logs')
    .description(
      "a pod's output ([namespace/]POD), a node's agent log (node/NAME), or the lab controller's (controller)",
    )
    .addOption(nameOption())
    .argument('<target>', '[namespace/]POD, node/NAME or controller')
    .option('-c, --container <name>', 'only this container of the pod')
    .option('-f, --follow', 'keep printing new output until interrupted')
    .action(async (target: string, opts: { name?: string; container?: string; follow?: boolean }) => {
      await exitWith(await labLogs(opts.name, target, stdio, { container: opts.container, follow: opts.follow }));
    });

  lab
    .command('apply')
    .description(
      'create or update objects from Kubernetes YAML (Namespace, Pod, Deployment, Service, NetworkPolicy, FelixConfiguration)',
    )
    .addOption(nameOption())
    .requiredOption('-f, --filename <file>', 'file or directory (repeatable)', collect)
    .option('--wait', 'wait until the pods are ready')
    .action(async (opts: { name?: string; filename: string[]; wait?: boolean }) => {
      await exitWith(await labApply(opts.name, opts.filename, stdio, { wait: opts.wait }));
    });

  lab
    .command('delete')
    .description('delete the objects named in Kubernetes YAML (waits until their pods are gone)')
    .addOption(nameOption())
    .requiredOption('-f, --filename <file>', 'file or directory (repeatable)', collect)
    .option('--ignore-not-found', 'do not fail for objects that do not exist')
    .option('--no-wait', 'do not wait for pods to terminate')
    .action(async (opts: { name?: string; filename: string[]; ignoreNotFound?: boolean; wait: boolean }) => {
      await exitWith(
        await labDelete(opts.name, opts.filename, stdio, { ignoreNotFound: opts.ignoreNotFound, wait: opts.wait }),
      );
    });

  lab
    .command('down')
    .description('remove everything the lab made (also after a crash half-way through up)')
    .addOption(nameOption())
    .action(async (opts: { name?: string }) => {
      await labDown(opts.name, stdio);
    });

  lab
    .command('kubectl')
    .description("run kubectl against the lab's API server (a lab made with `up --kubernetes`)")
    .addOption(nameOption())
    .argument('<args...>', "kubectl's arguments (after --)")
    .action(async (args: string[], opts: { name?: string }) => {
      await exitWith(await labKubectl(resolveLab(opts.name), args));
    });

  lab
    .command('kubelet', { hidden: true })
    .description("run the lab's kubelet against its API server (started by `sluice lab up --kubernetes`)")
    .requiredOption('--name <name>', 'the lab')
    .action(async (opts: { name: string }) => {
      const code = await runKubeKubelet(opts.name);
      await exitWith(code);
      process.exit(0);
    });

  lab
    .command('controller', { hidden: true })
    .description('run the lab controller (started by `sluice lab up`)')
    .requiredOption('--name <name>', 'the lab')
    .action(async (opts: { name: string }) => {
      const code = await runController(opts.name);
      await exitWith(code);
      process.exit(0); // nothing of the controller may linger (timers, watches)
    });
}

export function registerEchoCommand(program: Command): void {
  program
    .command('echo')
    .description(
      'the lab workload: `echo server --name NAME [--tcp P] [--udp P] [--http P]`, `echo client --tcp|--udp|--http HOST:PORT`',
    )
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[args...]')
    .action(async (args: string[]) => {
      await exitWith(await echoMain(args));
    });
}
