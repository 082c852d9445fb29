// `sluice check`: can this node run Sluice's eBPF dataplane? The seed's prerequisites, checked
// rather than assumed: kernel, architecture, BPF filesystem, BTF, the program types, maps and
// helpers the datapath uses (probed), a direct path to the API server, and host interfaces for
// bpfDataIfacePattern.
//
// The kernel rule: eBPF mode runs when every feature the datapath uses is supported. Probes are
// the authority because distributions backport BPF features (Red Hat 8.2's 4.18.0-193 is the
// seed's example); on mainline kernels the newest feature used (bpf_loop, which walks policy
// rule tables) makes that 5.17 or later, so a mainline version below 5.17 is refused even before
// probing, and a Red Hat style 4.18.0-N.el8 kernel (N >= 193, the seed's minimum) is judged by its
// probes alone (in practice Red Hat 8.7 and later, whose kernels carry bpf_loop).
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { isBpffs } from '../bpf/bpffs.js';
import { kernelVersion, probeAll, versionAtLeast, type ProbeResult } from '../bpf/features.js';
import { existsSync } from 'node:fs';
import { compileGoRegexp, DEFAULT_DATA_IFACE_PATTERN } from '../agent/config-fields.js';
import { judgeFeatures, REQUIRED_FEATURES } from '../datapath/requirements.js';
import { formatJson, formatTable, stdio, type OutputFormat, type Printer } from './output.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckItem {
  name: string;
  status: CheckStatus;
  detail: string;
  advice?: string;
}

export interface CheckOptions {
  output: OutputFormat;
  /** For tests and what-if questions: judge this kernel release instead of the running one. */
  kernelRelease?: string;
  /** Where the BPF filesystem must be mounted (default /sys/fs/bpf). */
  bpffs?: string;
  dataIfacePattern?: string;
  /** Try a TCP connection to the API server (from KUBERNETES_SERVICE_HOST/PORT). */
  apiServer?: boolean;
}

const MIN_MAINLINE: [number, number, number] = [5, 17, 0];

/** The kernel part of the rule above; probes decide the rest. */
export function kernelVerdict(release: string): CheckItem {
  const v = kernelVersion(release);
  const rhel = /^4\.18\.0-(\d+)\..*el8/.exec(release);
  if (rhel) {
    const ok = Number(rhel[1]) >= 193;
    return {
      name: 'kernel',
      status: ok ? 'ok' : 'fail',
      detail: `${release}: Red Hat 8 kernel${ok ? ' with the BPF backports (4.18.0-193 or later); judged by the feature probes' : ' older than 4.18.0-193 (no BPF backports)'}`,
      advice: ok ? undefined : 'upgrade to Red Hat 8.2 or later',
    };
  }
  const ok = versionAtLeast(v, MIN_MAINLINE);
  return {
    name: 'kernel',
    status: ok ? 'ok' : 'fail',
    detail: `${release}${ok ? '' : `: older than ${MIN_MAINLINE.join('.')}, the first mainline kernel with every helper the datapath uses`}`,
    advice: ok
      ? undefined
      : 'upgrade the kernel to 5.17 or later (or a distribution kernel with those features backported)',
  };
}

export function bpffsCheck(mount: string): CheckItem {
  if (isBpffs(mount)) return { name: 'BPF filesystem', status: 'ok', detail: `mounted at ${mount}` };
  // systemd names a mount unit after its path: /sys/fs/bpf -> sys-fs-bpf.mount.
  const unit = `${mount
    .replace(/^\/+|\/+$/g, '')
    .replace(/-/g, '\\x2d')
    .replace(/\//g, '-')}.mount`;
  return {
    name: 'BPF filesystem',
    status: 'fail',
    detail: `not mounted at ${mount}: pinned maps and programs would not survive an agent restart`,
    advice:
      `mount it now: mount -t bpf bpf ${mount}\n` +
      `and at every boot, with a systemd unit /etc/systemd/system/${unit}:\n` +
      `  [Unit]\n  Description=BPF filesystem\n  DefaultDependencies=no\n  Before=local-fs.target umount.target\n` +
      `  [Mount]\n  What=bpffs\n  Where=${mount}\n  Type=bpf\n  Options=rw,nosuid,nodev,noexec,relatime,mode=700\n` +
      `  [Install]\n  WantedBy=multi-user.target\n` +
      `then: systemctl daemon-reload && systemctl enable --now ${unit}`,
  };
}

function interfaces(): string[] {
  try {
    const links = JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[];
    return links.map((l) => l.ifname);
  } catch {
    return [];
  }
}

async function apiServerCheck(): Promise<CheckItem> {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = Number(process.env.KUBERNETES_SERVICE_PORT ?? 443);
  if (!host) {
    return {
      name: 'API server',
      status: 'warn',
      detail: 'KUBERNETES_SERVICE_HOST is not set: cannot check the direct path',
      advice:
        'in a cluster, create the kubernetes-services-endpoint ConfigMap with the API server address kube-proxy does not need',
    };
  }
  const ok = await new Promise<boolean>((resolve) => {
    const s = net.connect({ host, port, timeout: 2000 }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
    s.on('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
  return {
    name: 'API server',
    status: ok ? 'ok' : 'fail',
    detail: `${host}:${port} ${ok ? 'reachable' : 'not reachable'}`,
    advice: ok
      ? undefined
      : 'give the agent an address that works without kube-proxy (kubernetes-services-endpoint ConfigMap)',
  };
}

export async function runCheck(opts: CheckOptions): Promise<{ ok: boolean; items: CheckItem[] }> {
  const release = opts.kernelRelease ?? (await import('node:os')).release();
  const items: CheckItem[] = [];
  items.push(kernelVerdict(release));
  items.push(
    process.arch === 'x64'
      ? { name: 'architecture', status: 'ok', detail: 'x86-64' }
      : {
          name: 'architecture',
          status: 'fail',
          detail: `${process.arch}: only x86-64 is built and tested`,
          advice: 'run eBPF mode on x86-64 nodes',
        },
  );
  items.push(bpffsCheck(opts.bpffs ?? '/sys/fs/bpf'));
  items.push(
    existsSync('/sys/kernel/btf/vmlinux')
      ? { name: 'kernel BTF', status: 'ok', detail: '/sys/kernel/btf/vmlinux' }
      : {
          name: 'kernel BTF',
          status: 'warn',
          detail: 'no /sys/kernel/btf/vmlinux: tcx detection falls back to the kernel version',
        },
  );
  const report = probeAll();
  const verdict = judgeFeatures(report);
  const bad: ProbeResult[] = [...verdict.unsupported, ...verdict.inconclusive];
  items.push({
    name: 'datapath features',
    status: bad.length ? 'fail' : 'ok',
    detail: bad.length
      ? `missing: ${bad.map((p) => `${p.name} (${p.status}${p.since ? `, since ${p.since}` : ''})`).join(', ')}`
      : `all ${REQUIRED_FEATURES.length} required features probed as supported`,
    advice: bad.length ? 'see `sluice bpf features` for every probe' : undefined,
  });
  const pattern = compileGoRegexp(opts.dataIfacePattern ?? DEFAULT_DATA_IFACE_PATTERN);
  const data = interfaces().filter((i) => pattern.test(i));
  items.push(
    data.length
      ? { name: 'data interfaces', status: 'ok', detail: `${data.join(', ')} match bpfDataIfacePattern` }
      : {
          name: 'data interfaces',
          status: 'warn',
          detail: 'no interface matches bpfDataIfacePattern',
          advice: 'set bpfDataIfacePattern in the default FelixConfiguration',
        },
  );
  if (opts.apiServer !== false) items.push(await apiServerCheck());
  return { ok: items.every((i) => i.status !== 'fail'), items };
}

export async function checkCommand(opts: CheckOptions, io: Printer = stdio): Promise<number> {
  const r = await runCheck(opts);
  if (opts.output === 'json') io.out(formatJson(r));
  else {
    io.out(
      formatTable(
        ['check', 'result', { header: 'detail', right: false }],
        r.items.map((i) => [i.name, i.status, i.detail]),
      ),
    );
    for (const i of r.items) if (i.advice && i.status !== 'ok') io.out(`\n${i.name}: ${i.advice}`);
    io.out(
      `\n${r.ok ? 'eBPF mode can run on this node' : 'eBPF mode cannot run on this node: the agent will warn and keep the standard dataplane'}`,
    );
  }
  return r.ok ? 0 : 1;
}
