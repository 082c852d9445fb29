// `sluice bpf nat|conntrack|routes dump`: the Service datapath's pinned maps as readable tables.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { BpfMap } from '../bpf/map.js';
import { BpfError } from '../bpf/errors.js';
import { mapTypeNames } from '../bpf/syscall.js';
import { DEFAULT_BPFFS_ROOT } from '../paths.js';
import {
  NAT_BE_MAP,
  NAT_FE_MAP,
  FE_PREFIX_FIXED,
  feKey,
  feValue,
  beKey,
  beValue,
  frontendFlagNames,
  protoNames,
} from '../datapath/nat.js';
import { CT_MAP, ctKey, ctValue, ctTypeNames, ctFlagNames, TcpSeen } from '../datapath/conntrack.js';
import { ROUTES_MAP, routeKey, routeValue, routeFlagNames } from '../datapath/routes.js';
import { TypedMap } from '../bpf/typed-map.js';
import type { Codec } from '../bpf/codec.js';
import { CliError, formatJson, formatTable, stdio, type OutputFormat, type Printer } from './output.js';

/** Opens a pinned map and checks its shape against the codecs, with errors that name the path. */
export function openPinnedMap<K, V>(
  pinRoot: string,
  name: string,
  key: Codec<K>,
  value: Codec<V>,
  type: number,
): TypedMap<K, V> {
  const pin = path.join(pinRoot, name);
  if (!existsSync(pin)) {
    const why = existsSync(pinRoot) ? `${pinRoot} exists but has no ${name}` : `${pinRoot} does not exist`;
    throw new CliError(`no map pinned at ${pin} (${why}); is the datapath loaded?`);
  }
  let map: BpfMap;
  try {
    map = BpfMap.openPinned(pin);
  } catch (err) {
    if (err instanceof BpfError) {
      const hint =
        err.code === 'EPERM' || err.code === 'EACCES' ? 'permission denied (reading BPF maps needs root)' : err.message;
      throw new CliError(`cannot open ${pin}: ${hint}`);
    }
    throw err;
  }
  const d = map.def;
  if (d.type !== type || d.keySize !== key.size || d.valueSize !== value.size) {
    map.close();
    throw new CliError(
      `${pin} is not a ${name} map: it is ${mapTypeNames[d.type] ?? `type ${d.type}`} key ${d.keySize} value ${d.valueSize}, ` +
        `expected ${mapTypeNames[type]} key ${key.size} value ${value.size}`,
    );
  }
  return new TypedMap(map, key, value);
}

function withMap<K, V, R>(m: TypedMap<K, V>, fn: (m: TypedMap<K, V>) => R): R {
  try {
    return fn(m);
  } finally {
    m.map.close();
  }
}

const proto = (p: number) => protoNames[p] ?? String(p);

export function natDump(opts: { pinRoot?: string; output: OutputFormat }, io: Printer = stdio): void {
  const root = path.resolve(opts.pinRoot ?? DEFAULT_BPFFS_ROOT);
  const frontends = withMap(openPinnedMap(root, NAT_FE_MAP, feKey, feValue, 11), (m) => [...m.entries()]);
  const backends = withMap(openPinnedMap(root, NAT_BE_MAP, beKey, beValue, 1), (m) => [...m.entries()]);
  const fe = frontends
    .map(([k, v]) => ({
      frontend: `${k.addr === '0.0.0.0' ? '*' : k.addr}:${k.port}/${proto(k.proto)}`,
      source: `${k.src}/${k.prefixlen - FE_PREFIX_FIXED}`,
      svcId: v.svcId,
      backends: v.count,
      local: v.localCount,
      affinitySeconds: v.affinityTimeout,
      flags: frontendFlagNames(v.flags),
    }))
    .sort((a, b) => a.svcId - b.svcId || a.frontend.localeCompare(b.frontend));
  const be = backends
    .map(([k, v]) => ({ svcId: k.svcId, ordinal: k.ordinal, backend: `${v.addr}:${v.port}` }))
    .sort((a, b) => a.svcId - b.svcId || a.ordinal - b.ordinal);
  if (opts.output === 'json') {
    io.out(formatJson({ frontends: fe, backends: be }));
    return;
  }
  io.out(
    formatTable(
      ['frontend', 'source', 'svc', 'backends', 'local', 'affinity(s)', { header: 'flags', right: false }],
      fe.map((f) => [f.frontend, f.source, f.svcId, f.backends, f.local, f.affinitySeconds, f.flags.join(',') || '-']),
    ),
  );
  io.out('');
  io.out(
    formatTable(
      ['svc', 'ordinal', { header: 'backend', right: false }],
      be.map((b) => [b.svcId, b.ordinal, b.backend]),
    ),
  );
}

function tcpFlags(bits: number): string {
  return (
    Object.entries(TcpSeen)
      .filter(([, b]) => bits & b)
      .map(([n]) => n)
      .join('') || '-'
  );
}

export function conntrackDump(opts: { pinRoot?: string; output: OutputFormat }, io: Printer = stdio): void {
  const root = path.resolve(opts.pinRoot ?? DEFAULT_BPFFS_ROOT);
  const now = Number(process.hrtime.bigint()); // CLOCK_MONOTONIC, as bpf_ktime_get_ns
  const rows = withMap(openPinnedMap(root, CT_MAP, ctKey, ctValue, 9), (m) => [...m.entries()]).map(([k, v]) => {
    const a = `${k.addrA}:${k.portA}`;
    const b = `${k.addrB}:${k.portB}`;
    return {
      proto: proto(k.proto),
      from: v.openerIsB ? b : a,
      to: v.openerIsB ? a : b,
      type: ctTypeNames[v.type] ?? String(v.type),
      nat: v.type === 0 ? '' : `${v.natAddr}:${v.natPort}`,
      tunnel: v.tunIp === '0.0.0.0' ? '' : v.tunIp,
      flags: ctFlagNames(v.flags),
      tcpFromOpener: tcpFlags(v.openerIsB ? v.tcpB : v.tcpA),
      tcpFromPeer: tcpFlags(v.openerIsB ? v.tcpA : v.tcpB),
      ageSeconds: Math.max(0, (now - v.createdNs) / 1e9),
      idleSeconds: Math.max(0, (now - v.lastSeenNs) / 1e9),
    };
  });
  if (opts.output === 'json') {
    io.out(formatJson({ entries: rows }));
    return;
  }
  io.out(
    formatTable(
      ['proto', 'from', 'to', 'type', 'nat', 'tunnel', 'flags', 'tcp>', 'tcp<', 'age(s)', 'idle(s)'],
      rows.map((r) => [
        r.proto,
        r.from,
        r.to,
        r.type,
        r.nat || '-',
        r.tunnel || '-',
        r.flags.join(',') || '-',
        r.tcpFromOpener,
        r.tcpFromPeer,
        r.ageSeconds.toFixed(1),
        r.idleSeconds.toFixed(1),
      ]),
    ),
  );
}

export function routesDump(opts: { pinRoot?: string; output: OutputFormat }, io: Printer = stdio): void {
  const root = path.resolve(opts.pinRoot ?? DEFAULT_BPFFS_ROOT);
  const rows = withMap(openPinnedMap(root, ROUTES_MAP, routeKey, routeValue, 11), (m) => [...m.entries()])
    .map(([k, v]) => ({
      cidr: `${k.addr}/${k.prefixlen}`,
      flags: routeFlagNames(v.flags),
      ifindex: v.ifindex,
      nextHop: v.nextHop,
    }))
    .sort((a, b) => a.cidr.localeCompare(b.cidr, 'en', { numeric: true }));
  if (opts.output === 'json') {
    io.out(formatJson({ routes: rows }));
    return;
  }
  io.out(
    formatTable(
      ['cidr', 'flags', 'ifindex', 'next hop'],
      rows.map((r) => [r.cidr, r.flags.join(',') || '-', r.ifindex || '-', r.nextHop === '0.0.0.0' ? '-' : r.nextHop]),
    ),
  );
}
