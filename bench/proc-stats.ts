// CPU and memory from the kernel's accounting. Every lab namespace shares the machine's CPUs, so
// /proc/stat is the whole cost of moving traffic (clients, servers, softirq, the dataplane);
// /proc/PID/stat is one process's (with its waited-for children: iptables-restore, nft).
import fs from 'node:fs';

const HZ = 100; // USER_HZ: the unit of /proc/stat and /proc/PID/stat on Linux

/** Busy CPU seconds of the whole machine since boot (everything but idle and iowait). */
export function machineCpuSeconds(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
  return busyFromStatLine(line);
}

/** `cpu  user nice system idle iowait irq softirq steal ...` -> busy seconds (steal excluded: it is not ours). */
export function busyFromStatLine(line: string): number {
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq] = f;
  return (user + nice + system + irq + softirq) / HZ;
}

/** utime + stime + cutime + cstime of a process, in seconds (undefined if it is gone). */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    return cpuFromPidStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

export function cpuFromPidStat(stat: string): number {
  // the command name is in parentheses and may contain spaces: fields start after the last ')'
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); utime is field 14 -> f[11]
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / HZ;
}

export function processRssMB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The network namespace of a process, as `net:[inode]`. */
function netnsOf(pid: number | string): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** Processes in a named network namespace whose command line matches `re`. */
export function findProcesses(netnsName: string, re: RegExp): number[] {
  let want: string;
  try {
    want = `net:[${fs.statSync(`/run/netns/${netnsName}`).ino}]`;
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || netnsOf(d) !== want) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (re.test(cmd)) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
