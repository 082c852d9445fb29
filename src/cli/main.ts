// The `sluice` command (bin/sluice.js imports this module, which runs the command line).
// Errors reach the user as `sluice: <message>` and exit code 1; SLUICE_DEBUG=1 adds the stack.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { BpfError } from '../bpf/errors.js';
import { DEFAULT_BPFFS_ROOT, packageRoot } from '../paths.js';
import { countersCommand, featuresCommand } from './bpf-commands.js';
import { conntrackDump, natDump, routesDump } from './datapath-dump.js';
import { policyDump } from './policy-dump.js';
import { agentCommand, type AgentCommandOptions } from './agent.js';
import { checkCommand } from './check.js';
import { demoDown, runDemo } from './demo.js';
import { registerEchoCommand, registerLabCommands } from './lab.js';
import { CliError, outputFormats, stdio, type OutputFormat } from './output.js';

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const outputOption = (): Option =>
  new Option('-o, --output <format>', 'output format').choices(outputFormats as string[]).default('table');

export function buildProgram(): Command {
  const version = packageVersion();
  const program = new Command('sluice')
    .description('Sluice: an eBPF dataplane for Kubernetes')
    .version(version, '-V, --version', 'print the version')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      outputError: (str, write) => write(`sluice: ${str.replace(/^error: /, '')}`),
    });

  program
    .command('demo')
    .description(
      'count real ICMP, TCP and UDP traffic between two network namespaces with the tc and XDP counting programs',
    )
    .option('--keep', 'leave the namespaces and programs attached afterwards (remove with --down)')
    .option('--legacy-tc', 'attach tc programs with a clsact qdisc and bpf filters instead of tcx links')
    .option('--down', 'remove what `sluice demo --keep` left behind')
    .action(async (opts: { keep?: boolean; legacyTc?: boolean; down?: boolean }) => {
      if (opts.down) {
        if (opts.keep || opts.legacyTc) throw new CliError('--down takes no other options');
        await demoDown();
        return;
      }
      await runDemo({ keep: opts.keep, legacyTc: opts.legacyTc });
    });

  const bpf = program.command('bpf').description('inspect the kernel side: features and maps');
  bpf
    .command('features')
    .description('probe the BPF features the datapath uses; exit code 1 if a required one is missing')
    .addOption(outputOption())
    .action((opts: { output: OutputFormat }) => featuresCommand(opts));
  bpf
    .command('counters')
    .description('print the per-interface, per-hook packet counters from the pinned sl_counters_v1 map')
    .option('--pin-root <dir>', 'bpffs directory the datapath pins its maps in', DEFAULT_BPFFS_ROOT)
    .addOption(outputOption())
    .action((opts: { pinRoot: string; output: OutputFormat }) => countersCommand(opts));

  const dumps: [string, string, typeof natDump][] = [
    ['nat', 'Service frontends and backends (sl_nat_fe_v1, sl_nat_be_v1)', natDump],
    ['conntrack', 'tracked flows with their NAT and tunnel state (sl_ct_v1)', conntrackDump],
    ['routes', 'what each address is to this node (sl_routes_v1)', routesDump],
  ];
  for (const [name, what, fn] of dumps) {
    bpf
      .command(name)
      .description(`${name} maps`)
      .command('dump')
      .description(`print ${what}`)
      .option('--pin-root <dir>', 'bpffs directory the datapath pins its maps in', DEFAULT_BPFFS_ROOT)
      .addOption(outputOption())
      .action((opts: { pinRoot: string; output: OutputFormat }) => fn(opts));
  }

  bpf
    .command('policy')
    .description('policy maps')
    .command('dump')
    .argument('<iface>', 'an interface name in this network namespace, or an ifindex')
    .description('print what policy the datapath enforces on an interface: its rule tables and IP sets')
    .option('--pin-root <dir>', 'bpffs directory the datapath pins its maps in', DEFAULT_BPFFS_ROOT)
    .addOption(outputOption())
    .action((iface: string, opts: { pinRoot: string; output: OutputFormat }) => policyDump(iface, opts));

  registerLabCommands(program);
  registerEchoCommand(program);

  program
    .command('check')
    .description(
      'check that this node can run the eBPF dataplane (kernel, bpffs, BTF, probed features, API server, interfaces); exit 1 if not',
    )
    .addOption(outputOption())
    .addOption(
      new Option('--kernel-release <release>', 'judge this kernel release instead of the running one').hideHelp(),
    )
    .addOption(new Option('--bpffs <dir>', 'where the BPF filesystem must be mounted').default('/sys/fs/bpf'))
    .option('--data-iface-pattern <regex>', 'bpfDataIfacePattern to check interfaces against')
    .action(
      async (opts: { output: OutputFormat; kernelRelease?: string; bpffs: string; dataIfacePattern?: string }) => {
        process.exitCode = await checkCommand(opts);
      },
    );

  program
    .command('agent')
    .description("run the node agent: program this node's datapath from the cluster (or a lab) and keep it in step")
    .option('--node-name <name>', 'this node (default: $NODENAME)')
    .option('--node-ip <ip>', "this node's IP (default: its Node object's InternalIP)")
    .option('--lab <name>', "watch a lab's local store instead of the Kubernetes API")
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG, else in-cluster)')
    .option(
      '--service-account-dir <dir>',
      "in-cluster: where the pod's service account token, ca.crt and namespace are (for an agent outside a container, as in the lab)",
    )
    .option('--pin-root <dir>', 'bpffs directory for maps and links', DEFAULT_BPFFS_ROOT)
    .option('--cgroup <dir>', 'a sub-cgroup whose processes get connect-time load balancing')
    .option('--log-level <level>', 'debug, info, warn, error')
    .option('--host-netns', "allow running in the machine's own network namespace (a real node; the DaemonSet sets it)")
    .option('--status-file <file>', 'rewrite this file with the agent state after every sync (the lab reads it)')
    .action((opts: AgentCommandOptions) => agentCommand(opts));

  program
    .command('version')
    .description('print the version')
    .action(() => {
      stdio.out(
        `sluice ${version} (node ${process.version}, kernel ${os.release()}, ${process.platform}/${process.arch})`,
      );
    });

  return program;
}

function report(err: unknown): void {
  const debug = process.env.SLUICE_DEBUG === '1';
  let message: string;
  if (err instanceof CliError || err instanceof BpfError) message = err.message;
  else if (err instanceof Error) message = err.message;
  else message = String(err);
  stdio.err(`sluice: ${message}`);
  if (err instanceof BpfError && err.log && debug) stdio.err(err.log);
  if (debug && err instanceof Error && err.stack) stdio.err(err.stack);
}

export async function main(argv: string[] = process.argv): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    // A command that set its own exit code (such as `check`) keeps it.
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    report(err);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

process.exitCode = await main();
