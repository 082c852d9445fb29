// bpfKubeProxyIptablesCleanupEnabled: with kube-proxy replaced, its rules would still catch
// Service traffic first (and keep costing per packet), so the agent removes them: every KUBE-*
// chain and the rules jumping to them (iptables, nf_tables and legacy backends alike), and the
// nftables `kube-proxy` tables. Run in the node's network namespace. If they keep coming back,
// kube-proxy is still running: the agent says so and stops cleaning instead of fighting it.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CleanupResult {
  /** What was removed, e.g. `iptables nat: 12 KUBE-* chains, 3 jumps`, `nft table ip kube-proxy`. */
  removed: string[];
}

async function have(cmd: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

/** A table's iptables-save text without kube-proxy's chains and the rules that use them. */
export function withoutKubeProxy(save: string): { text: string; chains: number; rules: number } {
  let chains = 0;
  let rules = 0;
  const kept = save.split('\n').filter((line) => {
    if (/^:KUBE-/.test(line)) {
      chains++;
      return false;
    }
    if (/^-A KUBE-/.test(line) || /\s-[jg] KUBE-/.test(line)) {
      rules++;
      return false;
    }
    return true;
  });
  return { text: kept.join('\n'), chains, rules };
}

async function cleanIptables(save: string, restore: string, label: string, out: string[]): Promise<void> {
  for (const table of ['nat', 'filter', 'mangle']) {
    let text: string;
    try {
      text = (await run(save, ['-t', table], { encoding: 'utf8' })).stdout;
    } catch {
      continue; // table or backend not in use
    }
    const r = withoutKubeProxy(text);
    if (r.chains === 0 && r.rules === 0) continue;
    // Restoring the whole table replaces it in one transaction: no moment with half the rules.
    await new Promise<void>((resolve, reject) => {
      const child = execFile(restore, ['-w', '5'], (err) => (err ? reject(err) : resolve()));
      child.stdin?.end(r.text.endsWith('\n') ? r.text : r.text + '\n');
    });
    out.push(`${label} ${table}: ${r.chains} KUBE-* chains, ${r.rules} rules`);
  }
}

export async function removeKubeProxyRules(): Promise<CleanupResult> {
  const removed: string[] = [];
  if ((await have('iptables-save')) && (await have('iptables-restore')))
    await cleanIptables('iptables-save', 'iptables-restore', 'iptables', removed);
  if ((await have('iptables-legacy-save')) && (await have('iptables-legacy-restore'))) {
    await cleanIptables('iptables-legacy-save', 'iptables-legacy-restore', 'iptables-legacy', removed);
  }
  if (await have('nft')) {
    const { stdout } = await run('nft', ['list', 'tables'], { encoding: 'utf8' }).catch(() => ({ stdout: '' }));
    for (const line of stdout.split('\n')) {
      const m = /^table (ip|ip6|inet) kube-proxy$/.exec(line.trim());
      if (!m) continue;
      await run('nft', ['delete', 'table', m[1], 'kube-proxy']);
      removed.push(`nft table ${m[1]} kube-proxy`);
    }
  }
  return { removed };
}

/** Cleans now and then periodically; after rules came back `maxReturns` times, gives up. */
export class KubeProxyCleaner {
  private returns = 0;
  private gaveUp = false;
  private cleanedOnce = false;

  constructor(
    private readonly log: { info(o: object, m: string): void; warn(o: object, m: string): void },
    private readonly maxReturns = 3,
  ) {}

  async tick(): Promise<void> {
    if (this.gaveUp) return;
    const r = await removeKubeProxyRules();
    if (r.removed.length === 0) return;
    if (this.cleanedOnce) this.returns++;
    this.cleanedOnce = true;
    this.log.info({ removed: r.removed }, "removed kube-proxy's rules (bpfKubeProxyIptablesCleanupEnabled)");
    if (this.returns >= this.maxReturns) {
      this.gaveUp = true;
      this.log.warn(
        { returns: this.returns },
        "kube-proxy's rules keep coming back: kube-proxy is still running on this node. Stop it (the seed's step: patch the kube-proxy DaemonSet's nodeSelector), or set bpfKubeProxyIptablesCleanupEnabled: false to run both; not cleaning any more",
      );
    }
  }
}
