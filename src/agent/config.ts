// The agent's configuration: FelixConfiguration fields from their sources, in Felix's order of
// precedence (lowest first):
//
//   built-in defaults < FelixConfiguration `default` < FelixConfiguration `node.<nodename>` < FELIX_* env
//
// Objects may be projectcalico.org/v3 or crd.projectcalico.org/v1 (the CRD behind it; same spec).
// Other names are ignored. Every update takes the full current set of FelixConfigurations.
//
// A value that does not parse is reported (source, field path, reason) and the field keeps the value
// it had: an invalid setting never changes what the node runs, and the rest of the update applies.
// (Felix itself would fall back to the built-in default; keeping the last good value is stricter.)
//
// Rules that go beyond "the highest source that sets a field wins":
// - An empty string, or null, is "not set" (Felix ignores empty values; the API omits empty fields).
// - bpfConntrackTimeouts is one field: the highest source that sets it supplies every timeout, and
//   timeouts it does not name take Calico's defaults (as in Felix, not merged across sources).
// - bpfConnectTimeLoadBalancingEnabled (deprecated) counts only where bpfConnectTimeLoadBalancing is
//   not set in the same source: false means Disabled, true means Enabled (what the boolean meant
//   before the TCP mode existed). The highest source setting either of the two decides.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { NodeDatapathConfig } from '../datapath/node.js';
import { CT_MAP, NAT_AFF_MAP, NAT_BE_MAP, NAT_FE_MAP, ROUTES_MAP } from '../datapath/index.js';
import {
  CONNTRACK_AUTO_FALLBACK,
  CONNTRACK_AUTO_SYSCTL,
  CONNTRACK_TIMEOUT_NAMES,
  FIELD_NAMES,
  FIELDS,
  InvalidValue,
  defaultConfig,
  isLive,
  show,
  type ApplyMode,
  type Config,
  type ConnectTimeLoadBalancing,
  type ConntrackTimeoutName,
  type FieldName,
} from './config-fields.js';

export * from './config-fields.js';

export const API_VERSIONS = ['projectcalico.org/v3', 'crd.projectcalico.org/v1'] as const;
export const KIND = 'FelixConfiguration';
export const GLOBAL_NAME = 'default';
export const ENV_SOURCE = 'environment';
export const DEFAULT_SOURCE = 'built-in default';

export interface ConfigError {
  /** "FelixConfiguration default", "FelixConfiguration node.<name>" or "environment". */
  source: string;
  /** Where in the source: "spec.bpfExternalServiceMode", "spec.bpfConntrackTimeouts.tcpEstablished",
   * "FELIX_BPFEXTERNALSERVICEMODE", "apiVersion". */
  field: string;
  /** The configuration field whose value was kept, when the error is about one. */
  name?: FieldName;
  value: unknown;
  reason: string;
  /** `${source}: ${field}: ${reason}` */
  message: string;
}

export interface FieldChange<K extends FieldName = FieldName> {
  name: K;
  old: Config[K];
  new: Config[K];
  /** True when the change can be applied without restarting the dataplane. */
  live: boolean;
  apply: ApplyMode;
  /** What applying it involves. */
  how: string;
  /** Where the new value comes from. */
  source: string;
}

export interface ConfigUpdate {
  config: Config;
  changed: FieldChange[];
  errors: ConfigError[];
}

type Setting = { ok: true; value: unknown; raw: unknown } | { ok: false; error: ConfigError };

interface Source {
  name: string;
  settings: Map<FieldName, Setting>;
}

function makeError(source: string, field: string, value: unknown, reason: string, name?: FieldName): ConfigError {
  return { source, field, name, value, reason, message: `${source}: ${field}: ${reason}` };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isUnset(v: unknown): boolean {
  return v === undefined || v === null || v === '';
}

const LOWER_NAMES = new Map(FIELD_NAMES.map((n) => [n.toLowerCase(), n]));

/** Reads FELIX_<FIELDNAME> variables (prefix and name in any case). Empty values are not set;
 * unknown FELIX_* names are not ours (Felix has many more) and are ignored. If two spellings of one
 * name are set, the last in sorted order counts. */
function envSource(env: Record<string, string | undefined>): Source {
  const settings = new Map<FieldName, Setting>();
  for (const key of Object.keys(env).sort()) {
    if (!/^felix_/i.test(key)) continue;
    const name = LOWER_NAMES.get(key.slice(6).toLowerCase());
    const raw = env[key];
    if (name === undefined || raw === undefined || raw.trim() === '') continue;
    try {
      settings.set(name, { ok: true, value: FIELDS[name].fromEnv(raw), raw });
    } catch (err) {
      settings.set(name, { ok: false, error: toError(err, ENV_SOURCE, key, raw, name, true) });
    }
  }
  return { name: ENV_SOURCE, settings };
}

function toError(
  err: unknown,
  source: string,
  field: string,
  value: unknown,
  name: FieldName,
  env: boolean,
): ConfigError {
  if (!(err instanceof InvalidValue)) throw err;
  // A sub-key goes into the path for a spec ("spec.bpfConntrackTimeouts.udpTimeout"), into the reason
  // for an environment variable, whose name is the whole path.
  if (err.path && !env) return makeError(source, `${field}.${err.path}`, value, err.reason, name);
  return makeError(source, field, value, err.message, name);
}

/** Parses one FelixConfiguration's spec. */
function specSource(sourceName: string, spec: Record<string, unknown>, errors: ConfigError[]): Source {
  const settings = new Map<FieldName, Setting>();
  for (const [key, raw] of Object.entries(spec)) {
    const name = key as FieldName;
    if (!(key in FIELDS)) {
      // Kubernetes field names are case-sensitive: a near miss would be silently ignored.
      const meant = LOWER_NAMES.get(key.toLowerCase());
      if (meant !== undefined && !isUnset(raw)) {
        errors.push(makeError(sourceName, `spec.${key}`, raw, `unknown field; did you mean ${meant}?`));
      }
      continue;
    }
    if (isUnset(raw)) continue;
    try {
      settings.set(name, { ok: true, value: FIELDS[name].fromSpec(raw), raw });
    } catch (err) {
      settings.set(name, { ok: false, error: toError(err, sourceName, `spec.${key}`, raw, name, false) });
    }
  }
  return { name: sourceName, settings };
}

function legacyCtlb(setting: Setting): Setting {
  if (!setting.ok) return setting;
  const mode: ConnectTimeLoadBalancing = setting.value ? 'Enabled' : 'Disabled';
  return { ok: true, value: mode, raw: setting.raw };
}

export class ConfigStore {
  private readonly env: Source;
  private config: Config;
  private sources = new Map<FieldName, string>();
  private lastErrors: ConfigError[] = [];

  /**
   * @param nodeName this node's name: its FelixConfiguration is `node.<nodeName>`.
   * @param env the process environment (FELIX_* variables are read once, here).
   */
  constructor(
    readonly nodeName: string,
    env: Record<string, string | undefined> = {},
  ) {
    this.env = envSource(env);
    this.config = defaultConfig();
    for (const name of FIELD_NAMES) this.sources.set(name, DEFAULT_SOURCE);
    // Until the datastore answers, the node runs on defaults and the environment.
    this.resolve([], []);
  }

  /** The effective configuration (frozen). */
  current(): Config {
    return this.config;
  }

  /** Where each field's current value comes from. */
  sourceOf(name: FieldName): string {
    return this.sources.get(name) ?? DEFAULT_SOURCE;
  }

  /** The errors of the last evaluation (construction or update). */
  errors(): ConfigError[] {
    return [...this.lastErrors];
  }

  /**
   * Applies the current set of FelixConfiguration objects (all of them; names other than `default`
   * and `node.<nodeName>` are ignored). Returns the new configuration, what changed and how each
   * change applies, and every invalid value found (in any source, including the environment).
   */
  update(felixConfigs: readonly object[]): ConfigUpdate {
    const errors: ConfigError[] = [];
    const byName = new Map<string, { apiVersion: string; spec: Record<string, unknown> }>();
    const nodeObject = `node.${this.nodeName}`;
    for (const obj of felixConfigs) {
      if (!isObject(obj)) continue;
      const o = obj;
      const meta = isObject(o.metadata) ? o.metadata : {};
      const name = typeof meta.name === 'string' ? meta.name : undefined;
      const source = `FelixConfiguration ${name ?? '(unnamed)'}`;
      if (name !== GLOBAL_NAME && name !== nodeObject) continue;
      if (o.kind !== undefined && o.kind !== KIND) {
        errors.push(makeError(source, 'kind', o.kind, `${show(o.kind)} is not ${KIND}; object ignored`));
        continue;
      }
      const apiVersion = o.apiVersion === undefined ? API_VERSIONS[0] : o.apiVersion;
      if (typeof apiVersion !== 'string' || !(API_VERSIONS as readonly string[]).includes(apiVersion)) {
        const reason = `${show(apiVersion)} is not one of ${API_VERSIONS.join(', ')}; object ignored`;
        errors.push(makeError(source, 'apiVersion', apiVersion, reason));
        continue;
      }
      const spec = o.spec === undefined || o.spec === null ? {} : o.spec;
      if (!isObject(spec)) {
        errors.push(makeError(source, 'spec', spec, 'expected an object; object ignored'));
        continue;
      }
      // The same object read through both APIs: the projectcalico.org/v3 view wins.
      const prev = byName.get(name);
      if (prev && prev.apiVersion === API_VERSIONS[0] && apiVersion !== API_VERSIONS[0]) continue;
      byName.set(name, { apiVersion, spec });
    }
    const sources: Source[] = [];
    for (const name of [GLOBAL_NAME, nodeObject]) {
      const entry = byName.get(name);
      if (entry) sources.push(specSource(`FelixConfiguration ${name}`, entry.spec, errors));
    }
    return this.resolve(sources, errors);
  }

  private *envErrors(): Iterable<ConfigError> {
    for (const s of this.env.settings.values()) if (!s.ok) yield s.error;
  }

  /** `specSources` lowest precedence first; the environment goes on top. */
  private resolve(specSources: Source[], errors: ConfigError[]): ConfigUpdate {
    const sources = [...specSources, this.env];
    // Errors in precedence order (lowest first), then field order.
    for (const s of specSources) {
      for (const name of FIELD_NAMES) {
        const setting = s.settings.get(name);
        if (setting && !setting.ok) errors.push(setting.error);
      }
    }
    // The environment does not change, but its errors are part of every evaluation.
    for (const e of this.envErrors()) errors.push(e);

    const old = this.config;
    const next = { ...old } as Record<FieldName, unknown>;
    const changed: FieldChange[] = [];
    for (const name of FIELD_NAMES) {
      let winner: { source: string; setting: Setting } | undefined;
      for (let i = sources.length - 1; i >= 0 && winner === undefined; i--) {
        const s = sources[i];
        let setting = s.settings.get(name);
        if (setting === undefined && name === 'bpfConnectTimeLoadBalancing') {
          const legacy = s.settings.get('bpfConnectTimeLoadBalancingEnabled');
          if (legacy) setting = legacyCtlb(legacy);
        }
        if (setting) winner = { source: s.name, setting };
      }
      let value: unknown;
      let source: string;
      if (winner === undefined) {
        value = FIELDS[name].default;
        source = DEFAULT_SOURCE;
      } else if (winner.setting.ok) {
        value = winner.setting.value;
        source = winner.source;
      } else {
        // Invalid where it would count: keep what the node runs now.
        value = old[name];
        source = this.sourceOf(name);
      }
      next[name] = value;
      this.sources.set(name, source);
      const def = FIELDS[name] as { equal(a: unknown, b: unknown): boolean; apply: ApplyMode; how: string };
      if (!def.equal(old[name], value)) {
        changed.push({
          name,
          old: old[name],
          new: value,
          live: isLive(def.apply),
          apply: def.apply,
          how: def.how,
          source,
        } as FieldChange);
      }
    }
    this.config = Object.freeze(next) as unknown as Config;
    this.lastErrors = errors;
    return { config: this.config, changed, errors: [...errors] };
  }
}

// ---------------------------------------------------------------------------------------------
// Using the configuration

/** True when any change needs the dataplane restarted (new maps) or switched (bpfEnabled). */
export function needsRestart(changes: readonly FieldChange[]): boolean {
  return changes.some((c) => !c.live);
}

/** VXLAN adds 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8). */
export const VXLAN_OVERHEAD = 50;
/** The datapath's tunnel MTU when neither vxlanMTU nor the host MTU is known. */
export const DEFAULT_TUNNEL_MTU = 1450;

/** The tunnel MTU: vxlanMTU, or automatic (host MTU minus the VXLAN overhead). */
export function tunnelMtu(config: Config, hostMtu?: number): number {
  if (config.vxlanMTU !== 0) return config.vxlanMTU;
  return hostMtu !== undefined && hostMtu > VXLAN_OVERHEAD ? hostMtu - VXLAN_OVERHEAD : DEFAULT_TUNNEL_MTU;
}

/** The map sizes, keyed by the datapath's map names (NodeDatapathConfig.maxEntries). */
export function mapSizes(config: Config): Record<string, number> {
  return {
    [NAT_FE_MAP]: config.bpfMapSizeNATFrontend,
    [NAT_BE_MAP]: config.bpfMapSizeNATBackend,
    [NAT_AFF_MAP]: config.bpfMapSizeNATAffinity,
    [CT_MAP]: config.bpfMapSizeConntrack,
    [ROUTES_MAP]: config.bpfMapSizeRoute,
  };
}

/** What the configuration sets of a node's datapath (the rest, pin root and host IP, is the node's).
 * vxlanVNI is the pod overlay's and does not appear: the NodePort tunnel has its own VNI. */
export function datapathSettings(
  config: Config,
  hostMtu?: number,
): Pick<NodeDatapathConfig, 'vxlanPort' | 'tunnelMtu' | 'dsr' | 'maxEntries'> {
  return {
    vxlanPort: config.vxlanPort,
    tunnelMtu: tunnelMtu(config, hostMtu),
    dsr: config.bpfExternalServiceMode === 'DSR',
    maxEntries: mapSizes(config),
  };
}

/** Reads a netfilter sysctl in seconds, or undefined (no such file, no nf_conntrack module). */
export function readNetfilterSysctl(name: string, root = '/proc/sys/net/netfilter'): number | undefined {
  try {
    const n = Number(readFileSync(path.join(root, name), 'utf8').trim());
    return Number.isFinite(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The conntrack timeouts in seconds with 'Auto' resolved: the sysctl Calico documents for that
 * timeout, else Calico's built-in value. */
export function resolveConntrackTimeouts(
  config: Config,
  readSysctl: (name: string) => number | undefined = readNetfilterSysctl,
): Record<ConntrackTimeoutName, number> {
  const out = {} as Record<ConntrackTimeoutName, number>;
  for (const k of CONNTRACK_TIMEOUT_NAMES) {
    const v = config.bpfConntrackTimeouts[k];
    if (v !== 'Auto') {
      out[k] = v;
      continue;
    }
    const sysctl = CONNTRACK_AUTO_SYSCTL[k];
    out[k] = (sysctl !== undefined ? readSysctl(sysctl) : undefined) ?? CONNTRACK_AUTO_FALLBACK[k];
  }
  return out;
}
