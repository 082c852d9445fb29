// The kernel path for connections the eBPF dataplane did not open. When eBPF mode is enabled on a
// live node, connections that kube-proxy's rules NATed (or that simply predate the programs) have
// no entry in Sluice's conntrack. The tc programs hand their TCP segments (no SYN, no entry) to
// the kernel untouched, with SL_MARK_KERNEL_PATH set, and the kernel's own conntrack carries them
// on, with kube-proxy's translations, even after kube-proxy's rules are gone. This table, in the
// node's network namespace while eBPF mode is on:
//   - drops forwarded marked packets the kernel's conntrack does not know (so a stray segment
//     cannot use the hand-off to slip past a pod's policy);
//   - exempts the packets the eBPF dataplane serves (SL_MARK_SEEN) from the kernel's conntrack:
//     it would see only part of their flows (replies are redirected past it) and call the rest
//     INVALID, which kube-proxy's forward chain drops (Calico's bpfHostConntrackBypass);
//   - clears each mark once read (a tunnel device would pass it on to the packet it unwraps);
//   - holds empty nat chains: they keep the kernel's NAT hooks registered in the namespace, so the
//     translations of old connections go on when kube-proxy's tables are deleted (nftables mode).
import { execFile } from 'node:child_process';
import { nft, NftTable } from '../policy/nftables.js';

/** bpf/include/config.h SL_MARK_KERNEL_PATH. */
export const KERNEL_PATH_MARK = 0x01000000;
/** bpf/include/config.h SL_MARK_SEEN. */
export const SEEN_MARK = 0x02000000;
export const GUARD_TABLE = 'sluice-kernel-path';

export function guardRuleset(): string {
  const hex = (v: number): string => `0x${v.toString(16).padStart(8, '0')}`;
  const m = hex(KERNEL_PATH_MARK);
  const seen = hex(SEEN_MARK);
  return [
    `table ip ${GUARD_TABLE} {`,
    '  chain bypass {',
    '    type filter hook prerouting priority raw; policy accept;',
    `    meta mark & ${seen} == ${seen} notrack`,
    // Used, so cleared: a tunnel device keeps the mark when it decapsulates within the namespace,
    // and the inner packet must not inherit the outer one's path.
    `    meta mark set meta mark & ${hex(~SEEN_MARK >>> 0)}`,
    '  }',
    // Forwarded traffic only (to and from pods): the node's own connections (the agent's watch of
    // the API server, opened before the programs attached, perhaps while nothing made the kernel
    // track connections) are the host's business, and are not cut.
    '  chain guard {',
    '    type filter hook forward priority filter - 10; policy accept;',
    `    meta mark & ${m} == ${m} ct state new,invalid,untracked counter drop`,
    `    meta mark set meta mark & ${hex(~KERNEL_PATH_MARK >>> 0)}`,
    '  }',
    '  chain nat-prerouting { type nat hook prerouting priority 100; policy accept; }',
    '  chain nat-input { type nat hook input priority 100; policy accept; }',
    '  chain nat-output { type nat hook output priority -100; policy accept; }',
    '  chain nat-postrouting { type nat hook postrouting priority 100; policy accept; }',
    '}',
    '',
  ].join('\n');
}

/**
 * Whether kube-proxy has served this node (its iptables chains or its nftables table are here):
 * only then can connections be on the kernel's path with NAT that must go on. A node where
 * nothing else served Services gets no guard table (its raw-table exemption disturbed the lab's
 * own traffic in a way not yet understood: see the closing note of 2026-11-28).
 */
export async function kubeProxyServedHere(): Promise<boolean> {
  const tables = await nft(['list', 'tables']).catch(() => '');
  if (/table ip kube-proxy\b/.test(tables)) return true;
  const save = await new Promise<string>((resolve) =>
    execFile('iptables-save', ['-t', 'nat'], { encoding: 'utf8' }, (_err, out) => resolve(out ?? '')),
  );
  return /^:KUBE-SERVICES /m.test(save);
}

export class KernelPathGuard {
  private readonly table = new NftTable('ip', GUARD_TABLE);

  exists(): Promise<boolean> {
    return this.table.exists();
  }

  /** Installs (or replaces) the table in one transaction. */
  install(): Promise<void> {
    return this.table.replace(guardRuleset());
  }

  remove(): Promise<void> {
    return this.table.remove();
  }
}
