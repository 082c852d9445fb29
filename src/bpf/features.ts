// Feature probes: what this kernel can do for the datapath, decided by asking the kernel
// (loading tiny programs, creating tiny maps, reading its BTF), not by guessing from versions.
// Each probe has three outcomes; the kernel version that introduced a feature is recorded so
// a report can say what an upgrade would bring.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { Btf } from './btf.js';
import { BpfError } from './errors.js';
import { BpfMap } from './map.js';
import { loadProgramFd } from './program.js';
import { AttachType, MapFlags, MapType, ProgType, closeFd } from './syscall.js';
import { isBpffs } from './bpffs.js';

export type ProbeStatus = 'supported' | 'unsupported' | 'inconclusive';

export interface ProbeResult {
  name: string;
  status: ProbeStatus;
  /** Kernel release that introduced it upstream. */
  since?: string;
  detail?: string;
}

export function kernelVersion(release = os.release()): [number, number, number] {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release);
  if (!m) return [0, 0, 0];
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

export function versionAtLeast(v: [number, number, number], want: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== want[i]) return v[i] > want[i];
  return true;
}

const EXIT0 = Buffer.from('b700000000000000' + '9500000000000000', 'hex');
const EXIT1 = Buffer.from('b700000001000000' + '9500000000000000', 'hex');

function asProbe(name: string, since: string | undefined, fn: () => void): ProbeResult {
  try {
    fn();
    return { name, status: 'supported', since };
  } catch (err) {
    if (err instanceof BpfError && ['EINVAL', 'ENOTSUPP', 'EOPNOTSUPP', 'E2BIG'].includes(err.code)) {
      return { name, status: 'unsupported', since, detail: err.message };
    }
    return { name, status: 'inconclusive', since, detail: err instanceof Error ? err.message : String(err) };
  }
}

export function probeProgramType(name: string, type: number, since: string, attach = 0): ProbeResult {
  return asProbe(`program type ${name}`, since, () => {
    const insns = type === ProgType.CGROUP_SOCK_ADDR || type === ProgType.CGROUP_SKB ? EXIT1 : EXIT0;
    closeFd(loadProgramFd({ name: 'sl_probe', type, insns, expectedAttachType: attach }));
  });
}

export function probeMapType(name: string, type: number, since: string): ProbeResult {
  return asProbe(`map type ${name}`, since, () => {
    const def =
      type === MapType.LPM_TRIE
        ? { keySize: 8, valueSize: 4, maxEntries: 1, flags: MapFlags.NO_PREALLOC }
        : type === MapType.RINGBUF
          ? { keySize: 0, valueSize: 0, maxEntries: 4096 }
          : { keySize: 4, valueSize: 4, maxEntries: 1 };
    BpfMap.create({ name: 'sl_probe', type, ...def }).close();
  });
}

/**
 * A helper is available to a program type when a program calling it is refused for anything
 * but the helper itself (arguments are left unset on purpose).
 */
export function probeHelper(
  name: string,
  id: number,
  since: string,
  progType: number = ProgType.SCHED_CLS,
  attach = 0,
): ProbeResult {
  const insns = Buffer.alloc(24);
  insns.writeUInt8(0x85, 0); // call
  insns.writeInt32LE(id, 4);
  (progType === ProgType.CGROUP_SOCK_ADDR ? EXIT1 : EXIT0).copy(insns, 8);
  try {
    closeFd(loadProgramFd({ name: 'sl_probe', type: progType, insns, expectedAttachType: attach }));
    return { name: `helper ${name}`, status: 'supported', since };
  } catch (err) {
    if (!(err instanceof BpfError)) throw err;
    const log = err.log ?? '';
    const refusal = /invalid func|unknown func|cannot call|not allowed|program of this type cannot use helper/;
    const reason = log.split('\n').find((l) => refusal.test(l));
    if (reason) return { name: `helper ${name}`, status: 'unsupported', since, detail: reason.trim() };
    if (log) return { name: `helper ${name}`, status: 'supported', since };
    return { name: `helper ${name}`, status: 'inconclusive', since, detail: err.message };
  }
}

let vmlinux: Btf | null | undefined;
/** The running kernel's own BTF, or null when it has none. */
export function kernelBtf(): Btf | null {
  if (vmlinux === undefined) {
    const p = '/sys/kernel/btf/vmlinux';
    vmlinux = existsSync(p) ? new Btf(readFileSync(p)) : null;
  }
  return vmlinux;
}

/** tcx: whether the kernel's attach type enum knows BPF_TCX_INGRESS (added in 6.6). */
export function probeTcx(): ProbeResult {
  const btf = kernelBtf();
  if (btf) {
    const v = btf.enumValue('bpf_attach_type', 'BPF_TCX_INGRESS');
    return v === BigInt(AttachType.TCX_INGRESS)
      ? { name: 'tcx links', status: 'supported', since: '6.6' }
      : { name: 'tcx links', status: 'unsupported', since: '6.6', detail: 'kernel BTF has no BPF_TCX_INGRESS' };
  }
  const ok = versionAtLeast(kernelVersion(), [6, 6, 0]);
  return {
    name: 'tcx links',
    status: ok ? 'supported' : 'unsupported',
    since: '6.6',
    detail: 'from the kernel version (no BTF)',
  };
}

export interface FeatureReport {
  kernel: string;
  arch: string;
  probes: ProbeResult[];
}

/** The features Sluice's datapath uses, probed on this kernel. */
export function probeAll(): FeatureReport {
  const probes: ProbeResult[] = [
    {
      name: 'kernel BTF (/sys/kernel/btf/vmlinux)',
      status: existsSync('/sys/kernel/btf/vmlinux') ? 'supported' : 'unsupported',
      since: '5.4',
    },
    { name: 'bpffs mounted at /sys/fs/bpf', status: isBpffs('/sys/fs/bpf') ? 'supported' : 'unsupported' },
    probeProgramType('sched_cls', ProgType.SCHED_CLS, '4.1'),
    probeProgramType('xdp', ProgType.XDP, '4.8'),
    probeProgramType('cgroup_sock_addr (connect4)', ProgType.CGROUP_SOCK_ADDR, '4.17', AttachType.CGROUP_INET4_CONNECT),
    probeProgramType('cgroup_sock_addr (sendmsg4)', ProgType.CGROUP_SOCK_ADDR, '4.18', AttachType.CGROUP_UDP4_SENDMSG),
    probeProgramType('cgroup_sock_addr (recvmsg4)', ProgType.CGROUP_SOCK_ADDR, '5.2', AttachType.CGROUP_UDP4_RECVMSG),
    probeMapType('hash', MapType.HASH, '3.19'),
    probeMapType('array', MapType.ARRAY, '3.19'),
    probeMapType('prog_array', MapType.PROG_ARRAY, '4.2'),
    probeMapType('percpu_hash', MapType.PERCPU_HASH, '4.6'),
    probeMapType('percpu_array', MapType.PERCPU_ARRAY, '4.6'),
    probeMapType('lru_hash', MapType.LRU_HASH, '4.10'),
    probeMapType('lpm_trie', MapType.LPM_TRIE, '4.11'),
    probeMapType('ringbuf', MapType.RINGBUF, '5.8'),
    probeHelper('bpf_fib_lookup', 69, '4.18'),
    probeHelper('bpf_redirect', 23, '4.4'),
    probeHelper('bpf_redirect_neigh', 152, '5.10'),
    probeHelper('bpf_redirect_peer', 155, '5.10'),
    probeHelper('bpf_skb_adjust_room', 50, '4.13'),
    probeHelper('bpf_l3_csum_replace', 10, '4.1'),
    probeHelper('bpf_l4_csum_replace', 11, '4.1'),
    probeHelper('bpf_csum_diff', 28, '4.6'),
    probeHelper('bpf_tail_call', 12, '4.2'),
    probeHelper('bpf_ringbuf_output', 130, '5.8'),
    probeHelper('bpf_ringbuf_reserve', 131, '5.8'),
    probeHelper('bpf_loop', 181, '5.17'),
    probeHelper('bpf_ktime_get_ns', 5, '4.1'),
    probeHelper('bpf_ktime_get_coarse_ns', 160, '5.11'),
    probeHelper(
      'bpf_get_socket_cookie (connect4)',
      46,
      '4.12',
      ProgType.CGROUP_SOCK_ADDR,
      AttachType.CGROUP_INET4_CONNECT,
    ),
    probeHelper('bpf_get_prandom_u32', 7, '4.1'),
    probeTcx(),
  ];
  return { kernel: os.release(), arch: process.arch, probes };
}

export function formatReport(r: FeatureReport): string {
  const width = Math.max(...r.probes.map((p) => p.name.length));
  const lines = [`kernel ${r.kernel} (${r.arch})`];
  for (const p of r.probes) {
    const mark = p.status === 'supported' ? 'yes' : p.status === 'unsupported' ? 'NO ' : '?  ';
    lines.push(
      `  ${mark}  ${p.name.padEnd(width)}${p.since ? `  (since ${p.since})` : ''}${p.status !== 'supported' && p.detail ? `  ${p.detail}` : ''}`,
    );
  }
  return lines.join('\n');
}
