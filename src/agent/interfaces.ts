// What the node's network looks like from inside its namespace: interfaces, addresses and the
// /32 routes a CNI plugin writes for its pods. iproute2's JSON output is the source; the agent
// polls it (cheap: a few milliseconds) and attaches or detaches programs on the difference.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface NodeInterface {
  name: string;
  ifindex: number;
  up: boolean;
}

export interface NodeNetwork {
  interfaces: NodeInterface[];
  /** IPv4 addresses of the node (all interfaces except loopback). */
  addresses: { ifname: string; addr: string }[];
  /** Host routes to workloads: pod IP -> host-side interface. */
  workloadRoutes: { addr: string; ifname: string; ifindex: number }[];
}

async function ipJson<T>(args: string[]): Promise<T> {
  const { stdout } = await run('ip', ['-j', ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return (stdout.trim() ? JSON.parse(stdout) : []) as T;
}

export async function readNodeNetwork(workloadPrefixes: readonly string[]): Promise<NodeNetwork> {
  const links = await ipJson<{ ifindex: number; ifname: string; flags?: string[] }[]>(['link', 'show']);
  const addrs = await ipJson<{ ifname: string; addr_info?: { family: string; local: string }[] }[]>([
    '-4',
    'addr',
    'show',
  ]);
  const routes = await ipJson<{ dst: string; dev?: string }[]>(['-4', 'route', 'show']);
  const interfaces = links.map((l) => ({ name: l.ifname, ifindex: l.ifindex, up: (l.flags ?? []).includes('UP') }));
  const byName = new Map(interfaces.map((i) => [i.name, i]));
  const isWorkload = (n: string) => workloadPrefixes.some((p) => n.startsWith(p));
  const workloadRoutes: NodeNetwork['workloadRoutes'] = [];
  for (const r of routes) {
    if (!r.dev || !isWorkload(r.dev)) continue;
    const [addr, len] = r.dst.split('/');
    if (len !== undefined && len !== '32') continue;
    const i = byName.get(r.dev);
    if (i) workloadRoutes.push({ addr, ifname: r.dev, ifindex: i.ifindex });
  }
  const addresses = addrs
    .filter((a) => a.ifname !== 'lo')
    .flatMap((a) =>
      (a.addr_info ?? []).filter((x) => x.family === 'inet').map((x) => ({ ifname: a.ifname, addr: x.local })),
    );
  return { interfaces, addresses, workloadRoutes };
}
