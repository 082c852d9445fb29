// The FelixConfiguration fields Sluice reads: Calico's names (projectcalico.org/v3 spec keys, which
// are also the FELIX_* environment names, case-insensitively), Calico's defaults, a parser for each
// source's representation (a typed spec value, or an environment string), and how a change to the
// field reaches a running node.
//
// Parsers throw InvalidValue with a reason that names the value ("\"Direct\" is not one of Tunnel,
// DSR"); config.ts adds the source and the field path.

/** How a change to a field reaches a running node. */
export type ApplyMode =
  /** Userspace only (servers, scanners, interface matching, kube-proxy cleanup): nothing is disturbed. */
  | 'live'
  /** New `.rodata` constants: the programs are reloaded against the same pinned maps and swapped in
   * atomically on every attachment (link update / filter replace). No connection is disturbed. */
  | 'reload'
  /** The maps must be recreated at a new size: the eBPF dataplane is restarted. */
  | 'restart'
  /** bpfEnabled: switches the node between the eBPF dataplane and the standard one. */
  | 'switch';

/** A change applies live (without restarting the dataplane) for these modes. */
export function isLive(mode: ApplyMode): boolean {
  return mode === 'live' || mode === 'reload';
}

export type ExternalServiceMode = 'Tunnel' | 'DSR';
export type ConnectTimeLoadBalancing = 'TCP' | 'Enabled' | 'Disabled';
export type BpfLogLevel = 'Off' | 'Info' | 'Debug';
export type EnforceRpf = 'Disabled' | 'Strict' | 'Loose';
export type LogSeverity = 'Trace' | 'Debug' | 'Info' | 'Warning' | 'Error' | 'Fatal';

export const CONNTRACK_TIMEOUT_NAMES = [
  'creationGracePeriod',
  'tcpSynSent',
  'tcpEstablished',
  'tcpFinsSeen',
  'tcpResetSeen',
  'udpTimeout',
  'genericTimeout',
  'icmpTimeout',
] as const;
export type ConntrackTimeoutName = (typeof CONNTRACK_TIMEOUT_NAMES)[number];
/** Seconds, or 'Auto' (take the kernel's nf_conntrack sysctl where Calico documents one). */
export type ConntrackTimeout = number | 'Auto';
export type ConntrackTimeouts = Readonly<Record<ConntrackTimeoutName, ConntrackTimeout>>;

/** The effective configuration: parsed values under the FelixConfiguration names. */
export interface Config {
  bpfEnabled: boolean;
  bpfDataIfacePattern: RegExp;
  bpfKubeProxyIptablesCleanupEnabled: boolean;
  bpfExternalServiceMode: ExternalServiceMode;
  /** Effective mode: the newer field, or the deprecated boolean mapped onto it (see config.ts). */
  bpfConnectTimeLoadBalancing: ConnectTimeLoadBalancing;
  /** Deprecated boolean as configured; null when no source sets it. */
  bpfConnectTimeLoadBalancingEnabled: boolean | null;
  bpfLogLevel: BpfLogLevel;
  bpfMapSizeNATFrontend: number;
  bpfMapSizeNATBackend: number;
  bpfMapSizeNATAffinity: number;
  bpfMapSizeConntrack: number;
  bpfMapSizeRoute: number;
  bpfConntrackTimeouts: ConntrackTimeouts;
  bpfKubeProxyHealthzPort: number;
  bpfEnforceRPF: EnforceRpf;
  /** Traffic to and from host endpoints that policy can never block (Calico's failsafes). */
  failsafeInboundHostPorts: ProtoPort[];
  failsafeOutboundHostPorts: ProtoPort[];
  /** null: decided by the IP pools (Calico's "unset"). */
  vxlanEnabled: boolean | null;
  /** 0: automatic (host MTU minus the 50-byte VXLAN overhead; 1450 when the host MTU is unknown). */
  vxlanMTU: number;
  vxlanPort: number;
  vxlanVNI: number;
  healthEnabled: boolean;
  healthPort: number;
  prometheusMetricsEnabled: boolean;
  prometheusMetricsPort: number;
  logSeverityScreen: LogSeverity;
}

export type FieldName = keyof Config;

export interface ProtoPort {
  protocol: 'TCP' | 'UDP';
  port: number;
}

/** Calico's defaults: SSH, DHCP, BGP, etcd, Typha, the API server, and DNS out. */
export const DEFAULT_FAILSAFE_INBOUND: ProtoPort[] = [
  { protocol: 'TCP', port: 22 },
  { protocol: 'UDP', port: 68 },
  { protocol: 'TCP', port: 179 },
  { protocol: 'TCP', port: 2379 },
  { protocol: 'TCP', port: 2380 },
  { protocol: 'TCP', port: 5473 },
  { protocol: 'TCP', port: 6443 },
  { protocol: 'TCP', port: 6666 },
  { protocol: 'TCP', port: 6667 },
];
export const DEFAULT_FAILSAFE_OUTBOUND: ProtoPort[] = [
  { protocol: 'UDP', port: 53 },
  { protocol: 'UDP', port: 67 },
  { protocol: 'TCP', port: 179 },
  { protocol: 'TCP', port: 2379 },
  { protocol: 'TCP', port: 2380 },
  { protocol: 'TCP', port: 5473 },
  { protocol: 'TCP', port: 6443 },
  { protocol: 'TCP', port: 6666 },
  { protocol: 'TCP', port: 6667 },
];

function protoPort(v: unknown): ProtoPort {
  const o =
    typeof v === 'string'
      ? Object.fromEntries([
          ['protocol', v.split(':')[0]],
          ['port', v.split(':')[1]],
        ])
      : v;
  if (o === null || typeof o !== 'object') throw new InvalidValue(`expected {protocol, port}, got ${typeof v}`);
  const { protocol, port } = o as { protocol?: unknown; port?: unknown };
  const proto = String(protocol ?? 'TCP').toUpperCase();
  if (proto !== 'TCP' && proto !== 'UDP') throw new InvalidValue(`protocol ${String(protocol)} is not TCP or UDP`);
  const n = Number(port);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InvalidValue(`port ${String(port)} is not in 1-65535`);
  return { protocol: proto, port: n };
}

const protoPorts = (name: FieldName, def: ProtoPort[]): FieldDef<ProtoPort[]> => ({
  name,
  default: def,
  fromSpec(value) {
    if (!Array.isArray(value)) throw new InvalidValue('expected a list of {protocol, port}');
    return value.map(protoPort);
  },
  // FELIX_FAILSAFEINBOUNDHOSTPORTS=tcp:22,udp:68 ("none" for an empty list), as Felix reads it.
  fromEnv: (s) =>
    s.trim().toLowerCase() === 'none' || s.trim() === '' ? [] : s.split(',').map((x) => protoPort(x.trim())),
  equal: (a, b) => a.length === b.length && a.every((x, i) => x.protocol === b[i]!.protocol && x.port === b[i]!.port),
  format: (v) => (v.length ? v.map((x) => `${x.protocol.toLowerCase()}:${x.port}`).join(',') : 'none'),
  apply: 'live',
  how: 'host endpoint tables are rebuilt with the new failsafe rules',
});

/** A value a source gave that cannot be used; `path` extends the field path (a sub-key). */
export class InvalidValue extends Error {
  constructor(
    readonly reason: string,
    readonly path?: string,
  ) {
    super(path ? `${path}: ${reason}` : reason);
    this.name = 'InvalidValue';
  }
}

export interface FieldDef<T> {
  name: FieldName;
  default: T;
  /** A value from a FelixConfiguration spec (JSON types). */
  fromSpec(value: unknown): T;
  /** A value from a FELIX_* environment variable. */
  fromEnv(value: string): T;
  equal(a: T, b: T): boolean;
  format(value: T): string;
  apply: ApplyMode;
  /** What the agent does with a change, for logs and docs. */
  how: string;
}

export type FieldDefs = { [K in FieldName]: FieldDef<Config[K]> };

// ---------------------------------------------------------------------------------------------
// Value helpers

/** A value as it appears in messages: strings quoted, others as JSON. */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${show(value)}`;
}

const TRUE_WORDS = new Set(['true', '1', 'yes', 'y', 't']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'n', 'f']);

/** Environment booleans as Felix reads them: true/false, 1/0, yes/no, y/n, t/f (any case). */
export function parseEnvBool(s: string): boolean {
  const w = s.trim().toLowerCase();
  if (TRUE_WORDS.has(w)) return true;
  if (FALSE_WORDS.has(w)) return false;
  throw new InvalidValue(`${show(s)} is not a boolean (true or false)`);
}

function specBool(value: unknown): boolean {
  if (typeof value !== 'boolean') throw new InvalidValue(`expected a boolean, got ${typeOf(value)}`);
  return value;
}

/** Environment integers: decimal, or hexadecimal with 0x (Felix also accepts hex). */
export function parseEnvInt(s: string): number {
  const t = s.trim();
  let n: number;
  if (/^[+-]?\d+$/.test(t)) n = Number(t);
  else if (/^0x[0-9a-f]+$/i.test(t)) n = parseInt(t.slice(2), 16);
  else throw new InvalidValue(`${show(s)} is not an integer`);
  if (!Number.isSafeInteger(n)) throw new InvalidValue(`${show(s)} is not an integer`);
  return n;
}

function specInt(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new InvalidValue(`expected an integer, got ${typeOf(value)}`);
  }
  return value;
}

function inRange(n: number, min: number, max: number, what: string, extra?: (n: number) => void): number {
  if (n < min || n > max) throw new InvalidValue(`${n} is out of range: ${what} must be ${min} to ${max}`);
  extra?.(n);
  return n;
}

/** Matches Calico's enums, which accept any case; returns the canonical spelling. */
function oneOf<T extends string>(options: readonly T[], value: string): T {
  const found = options.find((o) => o.toLowerCase() === value.trim().toLowerCase());
  if (found === undefined) throw new InvalidValue(`${show(value)} is not one of ${options.join(', ')}`);
  return found;
}

function specString(value: unknown): string {
  if (typeof value !== 'string') throw new InvalidValue(`expected a string, got ${typeOf(value)}`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Durations (Go's time.ParseDuration syntax, which Calico uses: "10s", "1h30m", "1.5s", "500ms")

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-9,
  us: 1e-6,
  µs: 1e-6, // U+00B5 micro sign
  μs: 1e-6, // U+03BC Greek mu
  ms: 1e-3,
  s: 1,
  m: 60,
  h: 3600,
};
const DURATION_PART = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;

/** Parses a Go duration into seconds. Throws InvalidValue on anything else. */
export function parseDuration(s: string): number {
  const bad = () => new InvalidValue(`${show(s)} is not a duration (e.g. "30s", "1h30m", "500ms")`);
  let rest = s.trim();
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest[0] === '-') sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') throw bad();
  let total = 0;
  while (rest !== '') {
    const m = DURATION_PART.exec(rest);
    if (!m) throw bad();
    total += Number(m[1]) * DURATION_UNITS[m[2]];
    rest = rest.slice(m[0].length);
  }
  // Round away binary noise from the unit factors (1e-9 s is the finest unit).
  return sign * (Math.round(total * 1e9) / 1e9);
}

/** Seconds back into Go's duration syntax ("1h", "10m", "1m30s", "500ms"). */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return '0s';
  if (seconds < 0) return `-${formatDuration(-seconds)}`;
  if (seconds < 1) {
    const ms = Math.round(seconds * 1e6) / 1e3;
    return Number.isInteger(ms) ? `${ms}ms` : `${Math.round(seconds * 1e9) / 1e3}us`;
  }
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds - h * 3600) / 60);
  const s = Math.round((seconds - h * 3600 - m * 60) * 1e9) / 1e9;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Regular expressions: Calico compiles bpfDataIfacePattern with Go's regexp (RE2). The pattern is
// translated to a JavaScript RegExp where the two mean the same thing, and refused where they would
// not (so a pattern never silently matches differently here than it would under Calico).

const POSIX_CLASSES: Record<string, string> = {
  alnum: '0-9A-Za-z',
  alpha: 'A-Za-z',
  ascii: '\\x00-\\x7F',
  blank: '\\t ',
  cntrl: '\\x00-\\x1F\\x7F',
  digit: '0-9',
  graph: '!-~',
  lower: 'a-z',
  print: ' -~',
  punct: '!-\\/:-@\\[-`{-~',
  space: '\\t\\n\\v\\f\\r ',
  upper: 'A-Z',
  word: '0-9A-Za-z_',
  xdigit: '0-9A-Fa-f',
};

/** Compiles a Go (RE2) regular expression as a JavaScript RegExp, or throws InvalidValue. */
export function compileGoRegexp(pattern: string): RegExp {
  const bad = (why: string) => new InvalidValue(`${show(pattern)} is not a valid regular expression: ${why}`);
  let p = pattern;
  let flags = '';
  const lead = /^\(\?([a-zA-Z]+)\)/.exec(p);
  if (lead) {
    for (const f of lead[1]) {
      if (f === 'i' || f === 'm' || f === 's') {
        if (!flags.includes(f)) flags += f;
      } else throw bad(`flag ${f} is not supported`);
    }
    p = p.slice(lead[0].length);
  }
  let out = '';
  let inClass = false;
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '\\') {
      const n = p[i + 1];
      if (n === undefined) throw bad('trailing backslash');
      if (n === 'p' || n === 'P') throw bad('Unicode classes (\\p) are not supported');
      if (n === 'Q') throw bad('\\Q...\\E quoting is not supported');
      if (!inClass) {
        if (/[1-9]/.test(n) || (n === 'k' && p[i + 2] === '<')) {
          throw bad('backreferences are not supported (Go regular expressions have none)');
        }
        if (n === 'z') {
          out += '$';
          i++;
          continue;
        }
        if (n === 'A') {
          out += '^';
          i++;
          continue;
        }
      }
      out += c + n;
      i++;
      continue;
    }
    if (inClass) {
      if (c === '[' && p[i + 1] === ':') {
        const end = p.indexOf(':]', i + 2);
        const name = end < 0 ? undefined : p.slice(i + 2, end);
        if (name === undefined || !(name in POSIX_CLASSES)) throw bad(`unknown character class ${p.slice(i)}`);
        out += POSIX_CLASSES[name];
        i = end + 1;
        continue;
      }
      if (c === ']') inClass = false;
      out += c;
      continue;
    }
    if (c === '[') {
      inClass = true;
      out += c;
      // In Go a ']' first in a class is a literal; in JavaScript "[]" is an empty class.
      if (p[i + 1] === '^') {
        out += '^';
        i++;
      }
      if (p[i + 1] === ']') {
        out += '\\]';
        i++;
      }
      continue;
    }
    if (c === '(' && p[i + 1] === '?') {
      const rest = p.slice(i + 2);
      if (rest.startsWith('P<')) {
        out += '(?<';
        i += 3;
        continue;
      }
      if (/^(=|!|<=|<!)/.test(rest))
        throw bad('lookaround assertions are not supported (Go regular expressions have none)');
      if (/^[a-zA-Z-]+[):]/.test(rest)) throw bad('inline flags are only supported at the start of the pattern');
    }
    out += c;
  }
  try {
    return new RegExp(out, flags);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw bad(msg.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, ''));
  }
}

// ---------------------------------------------------------------------------------------------
// Field kinds

function bool(name: FieldName, def: boolean, apply: ApplyMode, how: string): FieldDef<boolean> {
  return {
    name,
    default: def,
    fromSpec: specBool,
    fromEnv: parseEnvBool,
    equal: (a, b) => a === b,
    format: String,
    apply,
    how,
  };
}

function optionalBool(name: FieldName, apply: ApplyMode, how: string): FieldDef<boolean | null> {
  return {
    name,
    default: null,
    fromSpec: specBool,
    fromEnv: parseEnvBool,
    equal: (a, b) => a === b,
    format: (v) => (v === null ? 'unset' : String(v)),
    apply,
    how,
  };
}

function int(
  name: FieldName,
  def: number,
  min: number,
  max: number,
  what: string,
  apply: ApplyMode,
  how: string,
  extra?: (n: number) => void,
): FieldDef<number> {
  return {
    name,
    default: def,
    fromSpec: (v) => inRange(specInt(v), min, max, what, extra),
    fromEnv: (s) => inRange(parseEnvInt(s), min, max, what, extra),
    equal: (a, b) => a === b,
    format: String,
    apply,
    how,
  };
}

function enumOf<T extends string>(
  name: FieldName,
  options: readonly T[],
  def: T,
  apply: ApplyMode,
  how: string,
): FieldDef<T> {
  return {
    name,
    default: def,
    fromSpec: (v) => oneOf(options, specString(v)),
    fromEnv: (s) => oneOf(options, s),
    equal: (a, b) => a === b,
    format: String,
    apply,
    how,
  };
}

function regexp(name: FieldName, def: string, apply: ApplyMode, how: string): FieldDef<RegExp> {
  return {
    name,
    default: compileGoRegexp(def),
    fromSpec: (v) => compileGoRegexp(specString(v)),
    fromEnv: compileGoRegexp,
    equal: (a, b) => a.source === b.source && a.flags === b.flags,
    format: (v) => v.source,
    apply,
    how,
  };
}

// ---------------------------------------------------------------------------------------------
// Conntrack timeouts (FelixConfiguration spec.bpfConntrackTimeouts, Calico's BPFConntrackTimeouts)

/** Calico's defaults ('Auto': the kernel's sysctl; see CONNTRACK_AUTO_SYSCTL). */
export const DEFAULT_CONNTRACK_TIMEOUTS: ConntrackTimeouts = Object.freeze({
  creationGracePeriod: 10,
  tcpSynSent: 20,
  tcpEstablished: 3600,
  tcpFinsSeen: 'Auto',
  tcpResetSeen: 40,
  udpTimeout: 60,
  genericTimeout: 600,
  icmpTimeout: 5,
});

/** Where Calico documents 'Auto' as reading a netfilter sysctl (under /proc/sys/net/netfilter). */
export const CONNTRACK_AUTO_SYSCTL: Partial<Record<ConntrackTimeoutName, string>> = {
  tcpSynSent: 'nf_conntrack_tcp_timeout_syn_sent',
  tcpEstablished: 'nf_conntrack_tcp_timeout_established',
  tcpFinsSeen: 'nf_conntrack_tcp_timeout_time_wait',
  genericTimeout: 'nf_conntrack_generic_timeout',
  icmpTimeout: 'nf_conntrack_icmp_timeout',
};

/** What 'Auto' falls back to when the sysctl cannot be read (and for keys without a sysctl):
 * Calico's built-in values (tcpFinsSeen: 30s, its value before 'Auto' became the default). */
export const CONNTRACK_AUTO_FALLBACK: Record<ConntrackTimeoutName, number> = {
  creationGracePeriod: 10,
  tcpSynSent: 20,
  tcpEstablished: 3600,
  tcpFinsSeen: 30,
  tcpResetSeen: 40,
  udpTimeout: 60,
  genericTimeout: 600,
  icmpTimeout: 5,
};

function conntrackTimeout(key: ConntrackTimeoutName, raw: unknown, path: string): ConntrackTimeout {
  if (typeof raw !== 'string') throw new InvalidValue(`expected a duration string, got ${typeOf(raw)}`, path);
  if (raw.trim().toLowerCase() === 'auto') return 'Auto';
  let seconds: number;
  try {
    seconds = parseDuration(raw);
  } catch {
    throw new InvalidValue(`${show(raw)} is not a duration (e.g. "30s", "1h", or "Auto")`, path);
  }
  if (seconds < 0) throw new InvalidValue(`${show(raw)} is negative`, path);
  if (seconds === 0 && key !== 'creationGracePeriod') throw new InvalidValue(`${show(raw)} is zero`, path);
  return seconds;
}

/** Spec keys are exact (Kubernetes field names are case-sensitive); environment keys are in any case
 * (Felix's own spelling is TCPEstablished, the API's tcpEstablished). */
function findTimeoutKey(k: string, anyCase: boolean): ConntrackTimeoutName | undefined {
  if (!anyCase) return CONNTRACK_TIMEOUT_NAMES.find((n) => n === k);
  return CONNTRACK_TIMEOUT_NAMES.find((n) => n.toLowerCase() === k.trim().toLowerCase());
}

/** Keys not given take Calico's defaults (the field is replaced as a whole by a higher source, as
 * in Felix, not merged key by key). */
function timeoutsFromEntries(entries: [string, unknown][], envStyle: boolean): ConntrackTimeouts {
  const out: Record<ConntrackTimeoutName, ConntrackTimeout> = { ...DEFAULT_CONNTRACK_TIMEOUTS };
  for (const [k, v] of entries) {
    const key = findTimeoutKey(k, envStyle);
    if (key === undefined) {
      throw new InvalidValue(`unknown timeout ${show(k)} (known: ${CONNTRACK_TIMEOUT_NAMES.join(', ')})`);
    }
    out[key] = conntrackTimeout(key, v, envStyle ? k.trim() : key);
  }
  return Object.freeze(out);
}

/** Environment form, as Felix's: comma-separated Key=value, e.g.
 * FELIX_BPFCONNTRACKTIMEOUTS="TCPEstablished=2h,UDPTimeout=30s" (keys in any case). */
export function parseConntrackTimeoutsEnv(s: string): ConntrackTimeouts {
  const entries: [string, unknown][] = [];
  for (const part of s.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq < 0) throw new InvalidValue(`${show(part.trim())} is not Key=value`);
    entries.push([part.slice(0, eq), part.slice(eq + 1).trim()]);
  }
  return timeoutsFromEntries(entries, true);
}

export function formatConntrackTimeouts(t: ConntrackTimeouts): string {
  return CONNTRACK_TIMEOUT_NAMES.map((k) => {
    const v = t[k];
    return `${k}=${v === 'Auto' ? 'Auto' : formatDuration(v)}`;
  }).join(',');
}

const conntrackTimeoutsField: FieldDef<ConntrackTimeouts> = {
  name: 'bpfConntrackTimeouts',
  default: DEFAULT_CONNTRACK_TIMEOUTS,
  fromSpec(value) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new InvalidValue(`expected an object of timeouts, got ${typeOf(value)}`);
    }
    // A null sub-key is unset, as in the API's pointer fields.
    return timeoutsFromEntries(
      Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== null && v !== undefined),
      false,
    );
  },
  fromEnv: parseConntrackTimeoutsEnv,
  equal: (a, b) => CONNTRACK_TIMEOUT_NAMES.every((k) => a[k] === b[k]),
  format: formatConntrackTimeouts,
  apply: 'live',
  how: 'the conntrack scanner uses the new timeouts from its next pass',
};

// ---------------------------------------------------------------------------------------------
// The fields

/** Calico's current default (Felix's BPFDataIfacePattern): physical and bond interfaces. Calico's
 * older defaults also named its own tunnel devices (tunl0, vxlan.calico, wireguard.cali, ...); since
 * Felix attaches to its tunnel devices by their role, the current default no longer lists them, and
 * Sluice does the same with its overlay device (vxlan.sl). */
export const DEFAULT_DATA_IFACE_PATTERN = '^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan|bond).*)';

/** A BPF map's max_entries: at least 1; above 2^24 is a typo rather than a plan. */
export const MAX_MAP_SIZE = 1 << 24;

/** Sluice's own VXLAN tunnel for NodePort forwarding (bpf/include/vxlan.h); the pod overlay must not
 * use the same VNI on the same port. */
export const NODEPORT_TUNNEL_VNI = 0x5c1;

const mapSize = (name: FieldName, def: number, what: string) =>
  int(
    name,
    def,
    1,
    MAX_MAP_SIZE,
    'a map size',
    'restart',
    `the ${what} map is recreated at the new size: the dataplane restarts`,
  );

const port = (name: FieldName, def: number, apply: ApplyMode, how: string) =>
  int(name, def, 1, 65535, 'a port', apply, how);

export const FIELDS: FieldDefs = {
  bpfEnabled: bool(
    'bpfEnabled',
    false,
    'switch',
    'switches the node between the eBPF dataplane and the standard one (existing connections keep their path)',
  ),
  bpfDataIfacePattern: regexp(
    'bpfDataIfacePattern',
    DEFAULT_DATA_IFACE_PATTERN,
    'live',
    'host interfaces are matched again: programs attached to new matches, detached from old ones',
  ),
  bpfKubeProxyIptablesCleanupEnabled: bool(
    'bpfKubeProxyIptablesCleanupEnabled',
    true,
    'live',
    "starts or stops removing kube-proxy's iptables and nftables rules",
  ),
  bpfExternalServiceMode: enumOf(
    'bpfExternalServiceMode',
    ['Tunnel', 'DSR'] as const,
    'Tunnel',
    'reload',
    'programs reloaded with the new mode and swapped in atomically; existing flows keep the mode they started with',
  ),
  bpfConnectTimeLoadBalancing: enumOf(
    'bpfConnectTimeLoadBalancing',
    ['TCP', 'Enabled', 'Disabled'] as const,
    'TCP',
    'live',
    'connect-time load balancing attached to or detached from the cgroups',
  ),
  bpfConnectTimeLoadBalancingEnabled: optionalBool(
    'bpfConnectTimeLoadBalancingEnabled',
    'live',
    'deprecated: maps onto bpfConnectTimeLoadBalancing when that is not set',
  ),
  bpfLogLevel: enumOf(
    'bpfLogLevel',
    ['Off', 'Info', 'Debug'] as const,
    'Off',
    'reload',
    'programs reloaded with the new log level and swapped in atomically',
  ),
  bpfMapSizeNATFrontend: mapSize('bpfMapSizeNATFrontend', 65536, 'NAT frontend'),
  bpfMapSizeNATBackend: mapSize('bpfMapSizeNATBackend', 262144, 'NAT backend'),
  bpfMapSizeNATAffinity: mapSize('bpfMapSizeNATAffinity', 65536, 'NAT affinity'),
  bpfMapSizeConntrack: mapSize('bpfMapSizeConntrack', 512000, 'conntrack'),
  bpfMapSizeRoute: mapSize('bpfMapSizeRoute', 262144, 'routes'),
  bpfConntrackTimeouts: conntrackTimeoutsField,
  bpfKubeProxyHealthzPort: port(
    'bpfKubeProxyHealthzPort',
    10256,
    'live',
    'the kube-proxy style health server is rebound to the new port',
  ),
  bpfEnforceRPF: enumOf(
    'bpfEnforceRPF',
    ['Disabled', 'Strict', 'Loose'] as const,
    'Loose',
    'reload',
    'programs reloaded with the new RPF mode and swapped in atomically',
  ),
  failsafeInboundHostPorts: protoPorts('failsafeInboundHostPorts', DEFAULT_FAILSAFE_INBOUND),
  failsafeOutboundHostPorts: protoPorts('failsafeOutboundHostPorts', DEFAULT_FAILSAFE_OUTBOUND),
  vxlanEnabled: optionalBool('vxlanEnabled', 'live', 'the pod overlay device is created or removed'),
  vxlanMTU: int(
    'vxlanMTU',
    0,
    0,
    65535,
    'an MTU (0 for automatic)',
    'reload',
    'the overlay device MTU is set and the programs reloaded with the new tunnel MTU',
    (n) => {
      if (n !== 0 && n < 68)
        throw new InvalidValue(`${n} is out of range: an MTU must be 0 (automatic) or 68 to 65535`);
    },
  ),
  vxlanPort: port(
    'vxlanPort',
    4789,
    'reload',
    'the overlay device is recreated and the programs reloaded with the new tunnel port',
  ),
  vxlanVNI: int(
    'vxlanVNI',
    4096,
    1,
    0xffffff,
    'a VNI',
    'live',
    "the overlay device is recreated with the new VNI (Sluice's NodePort tunnel keeps its own VNI)",
    (n) => {
      if (n === NODEPORT_TUNNEL_VNI) {
        throw new InvalidValue(`${n} is reserved: it is the VNI of Sluice's NodePort tunnel`);
      }
    },
  ),
  healthEnabled: bool('healthEnabled', false, 'live', 'the health server is started or stopped'),
  healthPort: port('healthPort', 9099, 'live', 'the health server is rebound to the new port'),
  prometheusMetricsEnabled: bool('prometheusMetricsEnabled', false, 'live', 'the metrics server is started or stopped'),
  prometheusMetricsPort: port('prometheusMetricsPort', 9091, 'live', 'the metrics server is rebound to the new port'),
  logSeverityScreen: enumOf(
    'logSeverityScreen',
    ['Trace', 'Debug', 'Info', 'Warning', 'Error', 'Fatal'] as const,
    'Info',
    'live',
    'the log level changes at once',
  ),
};

export const FIELD_NAMES = Object.keys(FIELDS) as FieldName[];

/** Built-in defaults as a Config. */
export function defaultConfig(): Config {
  const out = {} as Record<FieldName, unknown>;
  for (const name of FIELD_NAMES) out[name] = FIELDS[name].default;
  return Object.freeze(out) as unknown as Config;
}

/** A field's value for logs ("DSR", "^eth.*", "creationGracePeriod=10s,..."). */
export function formatValue<K extends FieldName>(name: K, value: Config[K]): string {
  return FIELDS[name].format(value);
}
