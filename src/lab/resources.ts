// Kubernetes objects for the lab: reading YAML manifests, validating them like the API server
// does (the checks that matter for what the lab and the agent do with them), filling in the
// defaults the API server fills in, and admitting them into the store: ClusterIPs, NodePorts,
// health-check node ports and LoadBalancer addresses are allocated here, and updates keep what
// was allocated, as with `kubectl apply`.
//
// An invalid object is refused with an error naming the object, the field and the reason, e.g.
//   Service default/web: spec.ports[0].port: 70000 is not a valid port (1-65535)
// and nothing is written for it; the other objects of the same file are applied.
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Topology } from './topology.js';
import {
  API_VERSIONS,
  describeObject,
  isKind,
  storedKind,
  isNamespaced,
  timestamp,
  type Deployment,
  type FelixConfiguration,
  type Kind,
  type KubeObject,
  type Namespace,
  type NetworkPolicy,
  type Pod,
  type PutResult,
  type Service,
  type StoreTx,
} from './store.js';

// ---------------------------------------------------------------------------------------------
// Errors

export interface Issue {
  /** Field path, e.g. `spec.ports[0].port`. */
  field: string;
  reason: string;
}

/** An object the lab refuses: `Kind namespace/name: field: reason[; field: reason]`. */
export class ObjectError extends Error {
  constructor(
    /** `Kind namespace/name` (or `Kind name` for cluster-scoped kinds). */
    readonly object: string,
    readonly issues: Issue[],
    /** Where it came from (`file.yaml, document 2`), if from a file. */
    readonly source?: string,
  ) {
    super(`${object}: ${issues.map((i) => (i.field ? `${i.field}: ${i.reason}` : i.reason)).join('; ')}`);
    this.name = 'ObjectError';
  }
}

class Checker {
  readonly issues: Issue[] = [];
  add(field: string, reason: string): void {
    this.issues.push({ field, reason });
  }
}

const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v)));

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// ---------------------------------------------------------------------------------------------
// Names, labels, addresses

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

function dnsLabel(c: Checker, field: string, v: unknown, rfc1035 = false): v is string {
  if (typeof v !== 'string' || v === '') {
    c.add(field, 'required (a non-empty string)');
    return false;
  }
  const ok = v.length <= 63 && (rfc1035 ? DNS_1035 : DNS_LABEL).test(v);
  if (!ok)
    c.add(
      field,
      `${show(v)} is not a valid name: at most 63 characters, lower case letters, digits and '-', ${
        rfc1035 ? 'starting with a letter' : 'starting with a letter or digit'
      } and ending with a letter or digit`,
    );
  return ok;
}

function dnsSubdomain(c: Checker, field: string, v: unknown): v is string {
  if (typeof v !== 'string' || v === '') {
    c.add(field, 'required (a non-empty string)');
    return false;
  }
  const ok = v.length <= 253 && DNS_SUBDOMAIN.test(v);
  if (!ok)
    c.add(
      field,
      `${show(v)} is not a valid name: at most 253 characters, lower case letters, digits, '-' and '.', starting and ending with a letter or digit`,
    );
  return ok;
}

/** IANA_SVC_NAME: a port name (at most 15 characters, a-z0-9 and '-', with a letter, no '--'). */
export function isPortName(v: string): boolean {
  return v.length <= 15 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(v) && /[a-z]/.test(v) && !v.includes('--');
}

function labelKeyProblem(k: string): string | undefined {
  const slash = k.indexOf('/');
  const prefix = slash >= 0 ? k.slice(0, slash) : undefined;
  const name = slash >= 0 ? k.slice(slash + 1) : k;
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)))
    return `key ${show(k)}: the prefix must be a DNS subdomain`;
  if (name.length > 63 || !LABEL_NAME.test(name))
    return `key ${show(k)}: the name must be at most 63 characters, alphanumerics, '-', '_' or '.', starting and ending alphanumeric`;
  return undefined;
}

function labelMap(c: Checker, field: string, v: unknown, values: 'label' | 'any' = 'label'): void {
  if (v === undefined || v === null) return;
  if (!isObj(v)) {
    c.add(field, 'must be a map of strings');
    return;
  }
  for (const [k, val] of Object.entries(v)) {
    const kp = labelKeyProblem(k);
    if (values === 'label' && kp) c.add(field, kp);
    if (typeof val !== 'string') {
      c.add(`${field}[${show(k)}]`, `must be a string, not ${show(val)} (quote it in YAML)`);
      continue;
    }
    if (values === 'label' && val !== '' && (val.length > 63 || !LABEL_NAME.test(val)))
      c.add(
        `${field}[${show(k)}]`,
        `${show(val)} is not a valid label value: at most 63 characters, alphanumerics, '-', '_' or '.', starting and ending alphanumeric`,
      );
  }
}

export function parseIpv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const p = m.slice(1).map(Number);
  if (p.some((x) => x > 255)) return undefined;
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(s: string): { base: number; prefix: number; size: number } | undefined {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
  if (!m) return undefined;
  const ip = parseIpv4(m[1]);
  const prefix = Number(m[2]);
  if (ip === undefined || prefix > 32) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (ip & mask) >>> 0, prefix, size: 2 ** (32 - prefix) };
}

function inCidr(ip: number, cidr: { base: number; size: number }): boolean {
  return ip >= cidr.base && ip < cidr.base + cidr.size;
}

function intIn(c: Checker, field: string, v: unknown, min: number, max: number, what = 'value'): v is number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    c.add(field, `${show(v)} is not a valid ${what} (${min}-${max})`);
    return false;
  }
  return true;
}

function oneOf<T extends string>(c: Checker, field: string, v: unknown, allowed: readonly T[]): v is T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    c.add(field, `${show(v)} is not supported: one of ${allowed.map((a) => show(a)).join(', ')}`);
    return false;
  }
  return true;
}

function stringArray(c: Checker, field: string, v: unknown): v is string[] {
  if (v === undefined) return false;
  if (!Array.isArray(v)) {
    c.add(field, 'must be a list of strings');
    return false;
  }
  let ok = true;
  v.forEach((x, i) => {
    if (typeof x !== 'string') {
      c.add(`${field}[${i}]`, `must be a string, not ${show(x)} (quote it in YAML)`);
      ok = false;
    }
  });
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Label selectors

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
}

/** True when `labels` match a LabelSelector (an empty selector matches everything). */
export function matchesSelector(labels: Record<string, string> | undefined, sel: LabelSelector | undefined): boolean {
  if (!sel) return false;
  const l = labels ?? {};
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (l[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    switch (e.operator) {
      case 'In':
        if (!has || !(e.values ?? []).includes(l[e.key])) return false;
        break;
      case 'NotIn':
        if (has && (e.values ?? []).includes(l[e.key])) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/** A Service's selector (a plain map): matches when every pair is in `labels`. */
export function matchesMap(labels: Record<string, string> | undefined, sel: Record<string, string>): boolean {
  const l = labels ?? {};
  return Object.entries(sel).every(([k, v]) => l[k] === v);
}

function labelSelector(c: Checker, field: string, v: unknown, required: boolean): void {
  if (v === undefined || v === null) {
    if (required) c.add(field, 'required');
    return;
  }
  if (!isObj(v)) {
    c.add(field, 'must be a label selector (matchLabels, matchExpressions)');
    return;
  }
  labelMap(c, `${field}.matchLabels`, v.matchLabels);
  if (v.matchExpressions === undefined) return;
  if (!Array.isArray(v.matchExpressions)) {
    c.add(`${field}.matchExpressions`, 'must be a list');
    return;
  }
  v.matchExpressions.forEach((e: unknown, i) => {
    const f = `${field}.matchExpressions[${i}]`;
    if (!isObj(e)) return c.add(f, 'must be an object with key, operator and values');
    if (typeof e.key !== 'string' || labelKeyProblem(e.key))
      c.add(`${f}.key`, `${show(e.key)} is not a valid label key`);
    if (!oneOf(c, `${f}.operator`, e.operator, ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const)) return;
    const vals = e.values;
    if (e.operator === 'In' || e.operator === 'NotIn') {
      if (!Array.isArray(vals) || vals.length === 0)
        c.add(`${f}.values`, `must be non-empty for operator ${e.operator}`);
      else stringArray(c, `${f}.values`, vals);
    } else if (vals !== undefined && (!Array.isArray(vals) || vals.length > 0)) {
      c.add(`${f}.values`, `must be empty for operator ${e.operator}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Reading manifests

export interface Manifest {
  /** `file.yaml, document 2` */
  source: string;
  value: unknown;
}

export interface ManifestError {
  source: string;
  message: string;
}

/** Splits YAML (or JSON) text into documents; `kind: List` is expanded into its items. */
export function parseManifests(text: string, file = '<input>'): { manifests: Manifest[]; errors: ManifestError[] } {
  const manifests: Manifest[] = [];
  const errors: ManifestError[] = [];
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    const source = `${file}, document ${i + 1}`;
    if (doc.errors.length > 0) {
      errors.push({ source, message: `YAML: ${doc.errors[0].message.split('\n')[0]}` });
      return;
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return; // an empty document (e.g. after a trailing ---)
    if (isObj(value) && value.kind === 'List' && Array.isArray(value.items)) {
      value.items.forEach((item, j) => manifests.push({ source: `${source}, item ${j}`, value: item }));
      return;
    }
    manifests.push({ source, value });
  });
  return { manifests, errors };
}

/** Reads FILEs and the .yaml/.yml/.json files of DIRs (sorted, not recursive), in the given order. */
export function readManifests(paths: readonly string[]): { manifests: Manifest[]; errors: ManifestError[] } {
  const manifests: Manifest[] = [];
  const errors: ManifestError[] = [];
  for (const p of paths) {
    let files: string[];
    try {
      files = fs.statSync(p).isDirectory()
        ? fs
            .readdirSync(p)
            .filter((f) => /\.(ya?ml|json)$/.test(f))
            .sort()
            .map((f) => path.join(p, f))
        : [p];
    } catch (err) {
      errors.push({
        source: p,
        message:
          (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (err as Error).message,
      });
      continue;
    }
    if (files.length === 0) errors.push({ source: p, message: 'no .yaml, .yml or .json files in this directory' });
    for (const f of files) {
      const r = parseManifests(fs.readFileSync(f, 'utf8'), f);
      manifests.push(...r.manifests);
      errors.push(...r.errors);
    }
  }
  return { manifests, errors };
}

// ---------------------------------------------------------------------------------------------
// Unknown fields, checked against client-node's models (as `kubectl apply --validate=strict`)

interface Attr {
  baseName: string;
  type: string;
}
type Schemas = Map<string, Attr[]>;
let schemas: Schemas | undefined | null;

const ROOT_MODELS: Partial<Record<Kind, string>> = {
  Namespace: 'V1Namespace',
  Pod: 'V1Pod',
  Deployment: 'V1Deployment',
  Service: 'V1Service',
  NetworkPolicy: 'V1NetworkPolicy',
};

function innerType(t: string): string | undefined {
  const arr = /^Array<(.+)>$/.exec(t);
  if (arr) return innerType(arr[1]) ?? arr[1];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(t);
  if (map) return innerType(map[1]) ?? map[1];
  return undefined;
}

const isModel = (t: string): boolean => /^[A-Z][A-Za-z0-9]*$/.test(t) && t !== 'Date' && t !== 'IntOrString';

/**
 * Loads the field lists of the models the lab validates (about 150 small modules of
 * client-node's generated code, ~0.2 s). Without them, unknown fields are not reported.
 */
export async function loadSchemas(): Promise<boolean> {
  if (schemas !== undefined) return schemas !== null;
  try {
    const base = new URL('./gen/models/', import.meta.resolve('@kubernetes/client-node'));
    const map: Schemas = new Map();
    let level = Object.values(ROOT_MODELS);
    while (level.length > 0) {
      const mods = await Promise.all(
        level.map(async (t) => {
          const m = (await import(new URL(`${t}.js`, base).href)) as Record<string, { getAttributeTypeMap(): Attr[] }>;
          return [t, m[t].getAttributeTypeMap()] as const;
        }),
      );
      const next = new Set<string>();
      for (const [t, attrs] of mods) {
        map.set(t, attrs);
        for (const a of attrs) {
          const inner = innerType(a.type) ?? a.type;
          if (isModel(inner) && !map.has(inner) && !level.includes(inner)) next.add(inner);
        }
      }
      level = [...next];
    }
    schemas = map;
    return true;
  } catch {
    schemas = null;
    return false;
  }
}

function unknownFields(c: Checker, value: unknown, type: string, field: string): void {
  if (!schemas || value === null || value === undefined) return;
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(c, v, arr[1], `${field}[${i}]`));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (isObj(value)) for (const [k, v] of Object.entries(value)) unknownFields(c, v, map[1], `${field}[${show(k)}]`);
    return;
  }
  const attrs = schemas.get(type);
  if (!attrs || !isObj(value)) return;
  for (const [k, v] of Object.entries(value)) {
    const a = attrs.find((x) => x.baseName === k);
    const f = field ? `${field}.${k}` : k;
    if (!a) c.add(f, 'unknown field');
    else unknownFields(c, v, a.type, f);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation and defaults, per kind

export interface ValidateOptions {
  /** Node names a Pod's spec.nodeName may name (not checked when absent). */
  nodes?: readonly string[];
}

function metaCheck(c: Checker, kind: Kind, meta: Record<string, unknown>): void {
  if (kind === 'Namespace' || kind === 'Service') dnsLabel(c, 'metadata.name', meta.name, kind === 'Service');
  else dnsSubdomain(c, 'metadata.name', meta.name);
  if (isNamespaced(kind)) {
    if (meta.namespace !== undefined) dnsLabel(c, 'metadata.namespace', meta.namespace);
  } // a namespace on a cluster-scoped object is ignored, as the API server does
  labelMap(c, 'metadata.labels', meta.labels);
  labelMap(c, 'metadata.annotations', meta.annotations, 'any');
}

/**
 * Checks an object read from a manifest and returns it with the API server's defaults filled in
 * (apiVersion normalised, namespace `default`, ...). Throws ObjectError.
 */
export function validateObject(raw: unknown, opts: ValidateOptions = {}, source?: string): KubeObject {
  if (!isObj(raw))
    throw new ObjectError(
      '(not an object)',
      [{ field: '', reason: `expected a Kubernetes object, got ${show(raw)}` }],
      source,
    );
  const kind = storedKind(raw.apiVersion, raw.kind);
  const meta = isObj(raw.metadata) ? raw.metadata : {};
  const name = typeof meta.name === 'string' ? meta.name : undefined;
  const ns = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : undefined;
  const what = describeObject(typeof kind === 'string' ? kind : '(no kind)', ns, name);
  const c = new Checker();
  if (typeof kind !== 'string' || kind === '') {
    c.add('kind', 'required');
    throw new ObjectError(what, c.issues, source);
  }
  if (!isKind(kind) || kind === 'Node' || kind === 'EndpointSlice') {
    const why =
      kind === 'Node' || kind === 'EndpointSlice'
        ? `the lab manages ${kind}s itself`
        : `kind ${kind} is not supported by the lab (Namespace, Pod, Deployment, Service, NetworkPolicy, FelixConfiguration, and Calico's Tier, NetworkPolicy, GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet, HostEndpoint)`;
    c.add('kind', why);
    throw new ObjectError(what, c.issues, source);
  }
  const apiVersion = raw.apiVersion;
  const accepted =
    API_VERSIONS[kind] === 'projectcalico.org/v3'
      ? ['projectcalico.org/v3', 'crd.projectcalico.org/v1']
      : [API_VERSIONS[kind]];
  if (!accepted.includes(apiVersion as string))
    c.add(
      'apiVersion',
      `${show(apiVersion)} is not an API version of ${kind}: use ${accepted.map((a) => show(a)).join(' or ')}`,
    );
  if (!isObj(raw.metadata)) c.add('metadata', 'required');
  metaCheck(c, kind, meta);
  const obj = structuredClone(raw) as Record<string, unknown> & { metadata: Record<string, unknown> };
  obj.apiVersion = API_VERSIONS[kind];
  obj.kind = kind;
  obj.metadata = { ...meta };
  if (isNamespaced(kind)) obj.metadata.namespace = ns ?? 'default';
  else delete obj.metadata.namespace;
  // Server-set fields in a manifest are ignored, as kubectl apply does.
  for (const f of [
    'uid',
    'resourceVersion',
    'generation',
    'creationTimestamp',
    'deletionTimestamp',
    'managedFields',
    'selfLink',
  ])
    delete obj.metadata[f];
  const model = ROOT_MODELS[kind];
  if (model) unknownFields(c, obj, model, '');
  switch (kind) {
    case 'Namespace':
      namespaceDefaults(obj as Namespace);
      break;
    case 'Pod':
      podSpec(c, 'spec', obj.spec, opts);
      delete obj.status;
      break;
    case 'Deployment':
      deployment(c, obj, opts);
      delete obj.status;
      break;
    case 'Service':
      service(c, obj);
      break;
    case 'NetworkPolicy':
      networkPolicy(c, obj);
      break;
    case 'FelixConfiguration':
      if (obj.spec !== undefined && !isObj(obj.spec)) c.add('spec', 'must be an object');
      else c.issues.push(...validateFelixSpec(obj.spec ?? {}));
      obj.spec ??= {};
      break;
    default:
      // Calico's resources: the agent's policy engine judges the spec (and says what is wrong).
      if (obj.spec !== undefined && !isObj(obj.spec)) c.add('spec', 'must be an object');
      obj.spec ??= {};
      break;
  }
  if (c.issues.length > 0) throw new ObjectError(what, c.issues, source);
  return obj as KubeObject;
}

function namespaceDefaults(ns: Namespace): void {
  const meta = (ns.metadata ??= {});
  meta.labels = { ...(meta.labels ?? {}), 'kubernetes.io/metadata.name': meta.name ?? '' };
  ns.spec = { finalizers: ['kubernetes'], ...(ns.spec ?? {}) };
  delete ns.status;
}

// --- Pods ----------------------------------------------------------------------------------------

function portRef(c: Checker, field: string, v: unknown, names?: Set<string>): void {
  if (typeof v === 'number') intIn(c, field, v, 1, 65535, 'port');
  else if (typeof v === 'string') {
    if (!isPortName(v))
      c.add(
        field,
        `${show(v)} is not a valid port name (IANA_SVC_NAME: at most 15 characters, a-z, 0-9 and '-', with a letter)`,
      );
    else if (names && !names.has(v)) c.add(field, `port name ${show(v)} is not a named port of this container`);
  } else c.add(field, 'required (a port number or a port name)');
}

function probe(c: Checker, field: string, v: unknown, portNames: Set<string>): void {
  if (v === undefined) return;
  if (!isObj(v)) return c.add(field, 'must be an object');
  const handlers = ['exec', 'httpGet', 'tcpSocket', 'grpc'].filter((h) => v[h] !== undefined);
  if (handlers.length !== 1)
    c.add(
      field,
      `must have exactly one of exec, httpGet, tcpSocket${handlers.length ? ` (has ${handlers.join(', ')})` : ''}`,
    );
  if (isObj(v.tcpSocket)) portRef(c, `${field}.tcpSocket.port`, v.tcpSocket.port, portNames);
  if (isObj(v.httpGet)) {
    portRef(c, `${field}.httpGet.port`, v.httpGet.port, portNames);
    if (v.httpGet.path !== undefined && (typeof v.httpGet.path !== 'string' || !v.httpGet.path.startsWith('/')))
      c.add(`${field}.httpGet.path`, 'must be an absolute path');
    if (v.httpGet.scheme !== undefined) oneOf(c, `${field}.httpGet.scheme`, v.httpGet.scheme, ['HTTP'] as const);
    v.httpGet.path ??= '/';
    v.httpGet.scheme ??= 'HTTP';
  }
  if (isObj(v.exec)) {
    const cmd = v.exec.command;
    if (cmd === undefined || (Array.isArray(cmd) && cmd.length === 0)) c.add(`${field}.exec.command`, 'required');
    else stringArray(c, `${field}.exec.command`, cmd);
  }
  if (v.grpc !== undefined) c.add(`${field}.grpc`, 'gRPC probes are not supported by the lab');
  for (const [k, min, def] of [
    ['initialDelaySeconds', 0, 0],
    ['periodSeconds', 1, 10],
    ['timeoutSeconds', 1, 1],
    ['successThreshold', 1, 1],
    ['failureThreshold', 1, 3],
  ] as const) {
    if (v[k] !== undefined) intIn(c, `${field}.${k}`, v[k], min, 2 ** 31 - 1);
    else v[k] = def;
  }
}

function container(c: Checker, field: string, v: unknown, names: Set<string>): void {
  if (!isObj(v)) return c.add(field, 'must be an object');
  if (dnsLabel(c, `${field}.name`, v.name)) {
    if (names.has(v.name)) c.add(`${field}.name`, `duplicate container name ${show(v.name)}`);
    names.add(v.name);
  }
  const hasCmd = stringArray(c, `${field}.command`, v.command);
  stringArray(c, `${field}.args`, v.args);
  if (!hasCmd && v.command === undefined)
    c.add(
      `${field}.command`,
      "required in the lab (images are not run: the command runs in the pod's network namespace)",
    );
  else if (hasCmd && (v.command as string[]).length === 0) c.add(`${field}.command`, 'must not be empty');
  const portNames = new Set<string>();
  if (v.ports !== undefined) {
    if (!Array.isArray(v.ports)) c.add(`${field}.ports`, 'must be a list');
    else
      v.ports.forEach((p: unknown, i) => {
        const pf = `${field}.ports[${i}]`;
        if (!isObj(p)) return c.add(pf, 'must be an object');
        intIn(c, `${pf}.containerPort`, p.containerPort, 1, 65535, 'port');
        if (p.protocol === undefined) p.protocol = 'TCP';
        else oneOf(c, `${pf}.protocol`, p.protocol, ['TCP', 'UDP', 'SCTP'] as const);
        if (p.name !== undefined) {
          if (typeof p.name !== 'string' || !isPortName(p.name))
            c.add(
              `${pf}.name`,
              `${show(p.name)} is not a valid port name (IANA_SVC_NAME: at most 15 characters, a-z, 0-9 and '-', with a letter)`,
            );
          else if (portNames.has(p.name)) c.add(`${pf}.name`, `duplicate port name ${show(p.name)}`);
          else portNames.add(p.name);
        }
        if (p.hostPort !== undefined) c.add(`${pf}.hostPort`, 'host ports are not supported by the lab');
      });
  }
  if (v.env !== undefined) {
    if (!Array.isArray(v.env)) c.add(`${field}.env`, 'must be a list');
    else
      v.env.forEach((e: unknown, i) => {
        const ef = `${field}.env[${i}]`;
        if (!isObj(e)) return c.add(ef, 'must be an object');
        if (typeof e.name !== 'string' || !ENV_NAME.test(e.name))
          c.add(`${ef}.name`, `${show(e.name)} is not a valid environment variable name`);
        if (e.value !== undefined && typeof e.value !== 'string')
          c.add(`${ef}.value`, `must be a string, not ${show(e.value)} (quote it in YAML)`);
        if (e.valueFrom !== undefined) {
          const fr = isObj(e.valueFrom) ? e.valueFrom.fieldRef : undefined;
          if (!isObj(fr)) c.add(`${ef}.valueFrom`, 'only fieldRef is supported by the lab');
          else oneOf(c, `${ef}.valueFrom.fieldRef.fieldPath`, fr.fieldPath, FIELD_REFS);
          if (e.value !== undefined) c.add(ef, 'value and valueFrom are mutually exclusive');
        }
      });
  }
  probe(c, `${field}.readinessProbe`, v.readinessProbe, portNames);
  if (v.livenessProbe !== undefined) probe(c, `${field}.livenessProbe`, v.livenessProbe, portNames);
  if (v.startupProbe !== undefined) probe(c, `${field}.startupProbe`, v.startupProbe, portNames);
  const preStop = isObj(v.lifecycle) ? v.lifecycle.preStop : undefined;
  if (preStop !== undefined) {
    const pf = `${field}.lifecycle.preStop`;
    if (!isObj(preStop)) c.add(pf, 'must be an object');
    else if (isObj(preStop.sleep)) intIn(c, `${pf}.sleep.seconds`, preStop.sleep.seconds, 0, 3600, 'duration');
    else if (isObj(preStop.exec)) stringArray(c, `${pf}.exec.command`, preStop.exec.command);
    else c.add(pf, 'the lab supports sleep and exec preStop hooks');
  }
}

/** The downward API fields an env var can take (fieldRef.fieldPath). */
export const FIELD_REFS = [
  'metadata.name',
  'metadata.namespace',
  'metadata.uid',
  'spec.nodeName',
  'spec.serviceAccountName',
  'status.podIP',
  'status.hostIP',
] as const;

function podSpec(c: Checker, field: string, v: unknown, opts: ValidateOptions): void {
  if (!isObj(v)) return c.add(field, 'required');
  if (!Array.isArray(v.containers) || v.containers.length === 0)
    c.add(`${field}.containers`, 'required (at least one container)');
  else {
    const names = new Set<string>();
    v.containers.forEach((x: unknown, i) => container(c, `${field}.containers[${i}]`, x, names));
  }
  if (v.initContainers !== undefined) c.add(`${field}.initContainers`, 'init containers are not supported by the lab');
  if (v.restartPolicy === undefined) v.restartPolicy = 'Always';
  else oneOf(c, `${field}.restartPolicy`, v.restartPolicy, ['Always', 'OnFailure', 'Never'] as const);
  if (v.terminationGracePeriodSeconds === undefined) v.terminationGracePeriodSeconds = 30;
  else intIn(c, `${field}.terminationGracePeriodSeconds`, v.terminationGracePeriodSeconds, 0, 86400, 'duration');
  if (v.nodeName !== undefined) {
    if (typeof v.nodeName !== 'string' || (opts.nodes && !opts.nodes.includes(v.nodeName)))
      c.add(
        `${field}.nodeName`,
        `${show(v.nodeName)} is not a node of the lab${opts.nodes ? ` (${opts.nodes.join(', ')})` : ''}`,
      );
  }
  labelMap(c, `${field}.nodeSelector`, v.nodeSelector);
  if (v.hostNetwork !== undefined && typeof v.hostNetwork !== 'boolean')
    c.add(`${field}.hostNetwork`, 'must be true or false');
  if (v.hostname !== undefined) dnsLabel(c, `${field}.hostname`, v.hostname);
  if (v.subdomain !== undefined) dnsLabel(c, `${field}.subdomain`, v.subdomain);
  v.dnsPolicy ??= 'ClusterFirst';
  v.schedulerName ??= 'default-scheduler';
}

// --- Deployments ---------------------------------------------------------------------------------

function deployment(c: Checker, obj: Record<string, unknown>, opts: ValidateOptions): void {
  const spec = obj.spec;
  if (!isObj(spec)) return c.add('spec', 'required');
  if (spec.replicas === undefined) spec.replicas = 1;
  else intIn(c, 'spec.replicas', spec.replicas, 0, 1000, 'replica count');
  labelSelector(c, 'spec.selector', spec.selector, true);
  const tpl = spec.template;
  if (!isObj(tpl)) return c.add('spec.template', 'required');
  const tmeta = isObj(tpl.metadata) ? tpl.metadata : {};
  labelMap(c, 'spec.template.metadata.labels', tmeta.labels);
  labelMap(c, 'spec.template.metadata.annotations', tmeta.annotations, 'any');
  const sel = spec.selector as LabelSelector | undefined;
  if (isObj(spec.selector)) {
    if (Object.keys(sel?.matchLabels ?? {}).length === 0 && (sel?.matchExpressions ?? []).length === 0)
      c.add('spec.selector', 'empty selector is invalid for a Deployment');
    else if (!matchesSelector(tmeta.labels as Record<string, string> | undefined, sel))
      c.add('spec.template.metadata.labels', '`selector` does not match template `labels`');
  }
  if (isObj(tpl.spec) && tpl.spec.nodeName !== undefined)
    c.add('spec.template.spec.nodeName', 'must not be set in a template');
  podSpec(c, 'spec.template.spec', tpl.spec, opts);
  if (isObj(tpl.spec) && tpl.spec.restartPolicy !== 'Always')
    oneOf(c, 'spec.template.spec.restartPolicy', tpl.spec.restartPolicy, ['Always'] as const);
  const strategy = (spec.strategy ??= { type: 'RollingUpdate' }) as Record<string, unknown>;
  if (!isObj(strategy)) c.add('spec.strategy', 'must be an object');
  else {
    strategy.type ??= 'RollingUpdate';
    oneOf(c, 'spec.strategy.type', strategy.type, ['RollingUpdate', 'Recreate'] as const);
    if (strategy.type === 'RollingUpdate') strategy.rollingUpdate ??= { maxSurge: '25%', maxUnavailable: '25%' };
  }
  spec.revisionHistoryLimit ??= 10;
  spec.progressDeadlineSeconds ??= 600;
}

// --- Services ------------------------------------------------------------------------------------

const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const;

function service(c: Checker, obj: Record<string, unknown>): void {
  obj.spec ??= {};
  const s = obj.spec;
  if (!isObj(s)) return c.add('spec', 'must be an object');
  s.type ??= 'ClusterIP';
  if (!oneOf(c, 'spec.type', s.type, SERVICE_TYPES)) return;
  const type = s.type;
  const headless = s.clusterIP === 'None';
  if (s.selector !== undefined) labelMap(c, 'spec.selector', s.selector);
  if (type === 'ExternalName') {
    if (typeof s.externalName !== 'string' || !dnsSubdomain(new Checker(), '', s.externalName.replace(/\.$/, '')))
      c.add('spec.externalName', `${show(s.externalName)} must be a DNS name for type ExternalName`);
    if (s.clusterIP !== undefined && s.clusterIP !== '') c.add('spec.clusterIP', 'must be empty for type ExternalName');
  } else if (s.externalName !== undefined && s.externalName !== '') {
    c.add('spec.externalName', `may only be set for type ExternalName (type is ${type})`);
  }
  if (
    s.clusterIP !== undefined &&
    s.clusterIP !== '' &&
    s.clusterIP !== 'None' &&
    parseIpv4(String(s.clusterIP)) === undefined
  )
    c.add('spec.clusterIP', `${show(s.clusterIP)} is not a valid IPv4 address (or "None" for a headless Service)`);
  if (headless && (type === 'NodePort' || type === 'LoadBalancer'))
    c.add('spec.clusterIP', `may not be "None" for type ${type}`);
  if (s.clusterIPs !== undefined) {
    if (stringArray(c, 'spec.clusterIPs', s.clusterIPs)) {
      if (s.clusterIPs.length > 1) c.add('spec.clusterIPs', 'the lab is IPv4 only: at most one address');
      else if (s.clusterIPs.length === 1 && s.clusterIP !== undefined && s.clusterIP !== s.clusterIPs[0])
        c.add('spec.clusterIPs[0]', `must match spec.clusterIP ${show(s.clusterIP)}`);
      else if (s.clusterIPs.length === 1) s.clusterIP ??= s.clusterIPs[0];
    }
  }
  if (s.ipFamilies !== undefined && (!Array.isArray(s.ipFamilies) || s.ipFamilies.some((f) => f !== 'IPv4')))
    c.add('spec.ipFamilies', 'the lab is IPv4 only: ["IPv4"]');
  if (s.ipFamilyPolicy !== undefined) {
    if (
      oneOf(c, 'spec.ipFamilyPolicy', s.ipFamilyPolicy, [
        'SingleStack',
        'PreferDualStack',
        'RequireDualStack',
      ] as const) &&
      s.ipFamilyPolicy === 'RequireDualStack'
    )
      c.add('spec.ipFamilyPolicy', 'the lab is IPv4 only: RequireDualStack cannot be met');
  }

  // ports
  const ports = s.ports;
  if (ports === undefined || (Array.isArray(ports) && ports.length === 0)) {
    if (type !== 'ExternalName' && !headless) c.add('spec.ports', 'required (at least one port)');
  } else if (!Array.isArray(ports)) c.add('spec.ports', 'must be a list');
  else {
    const names = new Set<string>();
    const seen = new Set<string>();
    const nodePorts = new Set<string>();
    ports.forEach((p: unknown, i) => {
      const f = `spec.ports[${i}]`;
      if (!isObj(p)) return c.add(f, 'must be an object');
      if (ports.length > 1 || p.name !== undefined) {
        if (p.name === undefined || p.name === '') c.add(`${f}.name`, 'required when a Service has more than one port');
        else if (dnsLabel(c, `${f}.name`, p.name) && names.has(p.name))
          c.add(`${f}.name`, `duplicate port name ${show(p.name)}`);
        else if (typeof p.name === 'string') names.add(p.name);
      }
      const portOk = intIn(c, `${f}.port`, p.port, 1, 65535, 'port');
      if (p.protocol === undefined) p.protocol = 'TCP';
      const protoOk = oneOf(c, `${f}.protocol`, p.protocol, ['TCP', 'UDP', 'SCTP'] as const);
      if (portOk && protoOk) {
        const k = `${p.port}/${p.protocol}`;
        if (seen.has(k)) c.add(f, `duplicate port ${p.port}/${String(p.protocol)}`);
        seen.add(k);
      }
      if (p.targetPort === undefined || p.targetPort === 0 || p.targetPort === '') p.targetPort = p.port;
      else portRef(c, `${f}.targetPort`, p.targetPort);
      if (p.nodePort !== undefined && p.nodePort !== 0) {
        if (type !== 'NodePort' && type !== 'LoadBalancer') c.add(`${f}.nodePort`, `may not be set for type ${type}`);
        else if (intIn(c, `${f}.nodePort`, p.nodePort, NODE_PORT_MIN, NODE_PORT_MAX, 'node port')) {
          const k = `${p.nodePort}/${String(p.protocol)}`;
          if (nodePorts.has(k)) c.add(`${f}.nodePort`, `duplicate node port ${p.nodePort}/${String(p.protocol)}`);
          nodePorts.add(k);
        }
      } else delete p.nodePort;
      if (p.appProtocol !== undefined && typeof p.appProtocol !== 'string')
        c.add(`${f}.appProtocol`, 'must be a string');
    });
  }

  // affinity and policies
  s.sessionAffinity ??= 'None';
  if (oneOf(c, 'spec.sessionAffinity', s.sessionAffinity, ['None', 'ClientIP'] as const)) {
    if (s.sessionAffinity === 'ClientIP') {
      if (type === 'ExternalName') c.add('spec.sessionAffinity', 'must be None for type ExternalName');
      const cfg = (s.sessionAffinityConfig ??= {}) as Record<string, unknown>;
      const cip = (cfg.clientIP ??= {}) as Record<string, unknown>;
      if (cip.timeoutSeconds === undefined) cip.timeoutSeconds = 10800;
      else intIn(c, 'spec.sessionAffinityConfig.clientIP.timeoutSeconds', cip.timeoutSeconds, 1, 86400, 'timeout');
    } else if (s.sessionAffinityConfig !== undefined) {
      c.add('spec.sessionAffinityConfig', 'may only be set when sessionAffinity is ClientIP');
    }
  }
  const externalIPs = s.externalIPs;
  if (externalIPs !== undefined && stringArray(c, 'spec.externalIPs', externalIPs)) {
    externalIPs.forEach((ip, i) => {
      if (parseIpv4(ip) === undefined) c.add(`spec.externalIPs[${i}]`, `${show(ip)} is not a valid IPv4 address`);
    });
  }
  const externallyAccessible =
    type === 'NodePort' ||
    type === 'LoadBalancer' ||
    (type === 'ClusterIP' && Array.isArray(externalIPs) && externalIPs.length > 0);
  if (s.externalTrafficPolicy !== undefined) {
    if (!externallyAccessible)
      c.add(
        'spec.externalTrafficPolicy',
        'may only be set for externally accessible Services (NodePort, LoadBalancer, or with externalIPs)',
      );
    else oneOf(c, 'spec.externalTrafficPolicy', s.externalTrafficPolicy, ['Cluster', 'Local'] as const);
  } else if (type === 'NodePort' || type === 'LoadBalancer') s.externalTrafficPolicy = 'Cluster';
  if (type !== 'ExternalName') {
    if (s.internalTrafficPolicy === undefined) s.internalTrafficPolicy = 'Cluster';
    else oneOf(c, 'spec.internalTrafficPolicy', s.internalTrafficPolicy, ['Cluster', 'Local'] as const);
  }
  if (s.publishNotReadyAddresses !== undefined && typeof s.publishNotReadyAddresses !== 'boolean')
    c.add('spec.publishNotReadyAddresses', 'must be true or false');
  if (type === 'LoadBalancer') {
    s.allocateLoadBalancerNodePorts ??= true;
    if (typeof s.allocateLoadBalancerNodePorts !== 'boolean')
      c.add('spec.allocateLoadBalancerNodePorts', 'must be true or false');
  } else {
    for (const f of [
      'loadBalancerSourceRanges',
      'loadBalancerIP',
      'allocateLoadBalancerNodePorts',
      'loadBalancerClass',
    ])
      if (s[f] !== undefined) c.add(`spec.${f}`, `may only be set for type LoadBalancer (type is ${type})`);
  }
  if (
    s.loadBalancerSourceRanges !== undefined &&
    stringArray(c, 'spec.loadBalancerSourceRanges', s.loadBalancerSourceRanges)
  )
    s.loadBalancerSourceRanges.forEach((r, i) => {
      if (!parseCidr(r.trim())) c.add(`spec.loadBalancerSourceRanges[${i}]`, `${show(r)} is not a valid IPv4 CIDR`);
    });
  if (
    s.loadBalancerIP !== undefined &&
    (typeof s.loadBalancerIP !== 'string' || parseIpv4(s.loadBalancerIP) === undefined)
  )
    c.add('spec.loadBalancerIP', `${show(s.loadBalancerIP)} is not a valid IPv4 address`);
  if (s.healthCheckNodePort !== undefined) {
    if (type !== 'LoadBalancer' || s.externalTrafficPolicy !== 'Local')
      c.add('spec.healthCheckNodePort', 'may only be set for type LoadBalancer with externalTrafficPolicy Local');
    else intIn(c, 'spec.healthCheckNodePort', s.healthCheckNodePort, NODE_PORT_MIN, NODE_PORT_MAX, 'node port');
  }
  if (type !== 'ExternalName') {
    s.ipFamilies = ['IPv4'];
    s.ipFamilyPolicy ??= 'SingleStack';
  }
  const status = isObj(obj.status) ? obj.status : {};
  obj.status = { loadBalancer: isObj(status.loadBalancer) ? status.loadBalancer : {} };
}

// --- NetworkPolicies -----------------------------------------------------------------------------

function policyPeers(c: Checker, field: string, v: unknown): void {
  if (v === undefined) return;
  if (!Array.isArray(v)) return c.add(field, 'must be a list');
  v.forEach((p: unknown, i) => {
    const f = `${field}[${i}]`;
    if (!isObj(p)) return c.add(f, 'must be an object');
    const kinds = ['podSelector', 'namespaceSelector', 'ipBlock'].filter((k) => p[k] !== undefined);
    if (kinds.length === 0) c.add(f, 'must have podSelector, namespaceSelector or ipBlock');
    if (p.ipBlock !== undefined && kinds.length > 1)
      c.add(f, 'ipBlock may not be combined with podSelector or namespaceSelector');
    if (p.podSelector !== undefined) labelSelector(c, `${f}.podSelector`, p.podSelector, false);
    if (p.namespaceSelector !== undefined) labelSelector(c, `${f}.namespaceSelector`, p.namespaceSelector, false);
    if (p.ipBlock !== undefined) {
      if (!isObj(p.ipBlock)) return c.add(`${f}.ipBlock`, 'must be an object');
      const cidr = typeof p.ipBlock.cidr === 'string' ? parseCidr(p.ipBlock.cidr) : undefined;
      if (!cidr) c.add(`${f}.ipBlock.cidr`, `${show(p.ipBlock.cidr)} is not a valid IPv4 CIDR`);
      if (p.ipBlock.except !== undefined && stringArray(c, `${f}.ipBlock.except`, p.ipBlock.except))
        p.ipBlock.except.forEach((e, j) => {
          const ex = parseCidr(e);
          if (!ex) c.add(`${f}.ipBlock.except[${j}]`, `${show(e)} is not a valid IPv4 CIDR`);
          else if (cidr && !(ex.prefix > cidr.prefix && inCidr(ex.base, cidr)))
            c.add(
              `${f}.ipBlock.except[${j}]`,
              `${show(e)} must be strictly within ${String(p.ipBlock && (p.ipBlock as Record<string, unknown>).cidr)}`,
            );
        });
    }
  });
}

function policyPorts(c: Checker, field: string, v: unknown): void {
  if (v === undefined) return;
  if (!Array.isArray(v)) return c.add(field, 'must be a list');
  v.forEach((p: unknown, i) => {
    const f = `${field}[${i}]`;
    if (!isObj(p)) return c.add(f, 'must be an object');
    p.protocol ??= 'TCP';
    oneOf(c, `${f}.protocol`, p.protocol, ['TCP', 'UDP', 'SCTP'] as const);
    if (p.port !== undefined) portRef(c, `${f}.port`, p.port);
    if (p.endPort !== undefined) {
      if (typeof p.port !== 'number') c.add(`${f}.endPort`, 'may only be set with a numeric port');
      else if (intIn(c, `${f}.endPort`, p.endPort, 1, 65535, 'port') && p.endPort < p.port)
        c.add(`${f}.endPort`, `must be greater than or equal to port (${p.port})`);
    }
  });
}

function networkPolicy(c: Checker, obj: Record<string, unknown>): void {
  const s = obj.spec;
  if (!isObj(s)) return c.add('spec', 'required');
  labelSelector(c, 'spec.podSelector', s.podSelector ?? (s.podSelector = {}), true);
  if (s.policyTypes === undefined) s.policyTypes = s.egress !== undefined ? ['Ingress', 'Egress'] : ['Ingress'];
  else if (Array.isArray(s.policyTypes))
    s.policyTypes.forEach((t, i) => oneOf(c, `spec.policyTypes[${i}]`, t, ['Ingress', 'Egress'] as const));
  else c.add('spec.policyTypes', 'must be a list');
  for (const [dir, peers] of [
    ['ingress', 'from'],
    ['egress', 'to'],
  ] as const) {
    const rules = s[dir];
    if (rules === undefined) continue;
    if (!Array.isArray(rules)) {
      c.add(`spec.${dir}`, 'must be a list');
      continue;
    }
    rules.forEach((r: unknown, i) => {
      const f = `spec.${dir}[${i}]`;
      if (!isObj(r)) return c.add(f, 'must be an object');
      policyPeers(c, `${f}.${peers}`, r[peers]);
      policyPorts(c, `${f}.ports`, r.ports);
    });
  }
}

// --- FelixConfiguration --------------------------------------------------------------------------

const GO_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;

type FelixField = 'bool' | 'port' | 'positive' | 'uint' | 'regex' | 'duration' | readonly string[];

/** The FelixConfiguration fields Sluice reads, with their types (Calico's v3 names). */
export const FELIX_FIELDS: Readonly<Record<string, FelixField>> = {
  bpfEnabled: 'bool',
  bpfDataIfacePattern: 'regex',
  bpfL3IfacePattern: 'regex',
  bpfKubeProxyIptablesCleanupEnabled: 'bool',
  bpfExternalServiceMode: ['Tunnel', 'DSR'],
  bpfConnectTimeLoadBalancing: ['TCP', 'Enabled', 'Disabled'],
  bpfConnectTimeLoadBalancingEnabled: 'bool',
  bpfHostNetworkedNATWithoutCTLB: ['Enabled', 'Disabled'],
  bpfLogLevel: ['Off', 'Info', 'Debug'],
  bpfMapSizeNATFrontend: 'positive',
  bpfMapSizeNATBackend: 'positive',
  bpfMapSizeNATAffinity: 'positive',
  bpfMapSizeConntrack: 'positive',
  bpfMapSizeRoute: 'positive',
  bpfMapSizeIPSets: 'positive',
  bpfMapSizeIfState: 'positive',
  bpfKubeProxyHealthzPort: 'port',
  bpfKubeProxyMinSyncPeriod: 'duration',
  bpfEnforceRPF: ['Disabled', 'Strict', 'Loose'],
  bpfPSNATPorts: 'regex',
  vxlanEnabled: 'bool',
  vxlanMTU: 'positive',
  vxlanPort: 'port',
  vxlanVNI: 'positive',
  healthEnabled: 'bool',
  healthPort: 'port',
  healthHost: 'regex',
  prometheusMetricsEnabled: 'bool',
  prometheusMetricsPort: 'port',
  logSeverityScreen: ['Debug', 'Info', 'Warning', 'Error', 'Fatal'],
  routeRefreshInterval: 'duration',
};

const CONNTRACK_TIMEOUTS = [
  'creationGracePeriod',
  'tcpSynSent',
  'tcpEstablished',
  'tcpFinsSeen',
  'tcpResetSeen',
  'udpTimeout',
  'genericTimeout',
  'icmpTimeout',
];

/**
 * Checks the fields of a FelixConfiguration spec that Sluice reads; other fields are Calico's
 * and left alone. The agent uses the same check on what a Kubernetes datastore gives it.
 */
export function validateFelixSpec(spec: Record<string, unknown>): Issue[] {
  const c = new Checker();
  for (const [k, v] of Object.entries(spec)) {
    const f = `spec.${k}`;
    if (k === 'bpfConntrackTimeouts') {
      if (!isObj(v)) {
        c.add(f, 'must be an object of durations');
        continue;
      }
      for (const [tk, tv] of Object.entries(v)) {
        if (!CONNTRACK_TIMEOUTS.includes(tk))
          c.add(`${f}.${tk}`, `unknown timeout (one of ${CONNTRACK_TIMEOUTS.join(', ')})`);
        else if (typeof tv !== 'string' || !(GO_DURATION.test(tv) || tv === 'Auto'))
          c.add(`${f}.${tk}`, `${show(tv)} is not a duration (e.g. "30s", "1h5m")`);
      }
      continue;
    }
    const t = FELIX_FIELDS[k];
    if (t === undefined) continue;
    if (Array.isArray(t)) oneOf(c, f, v, t);
    else if (t === 'bool') {
      if (typeof v !== 'boolean') c.add(f, `${show(v)} is not true or false`);
    } else if (t === 'port') intIn(c, f, v, 0, 65535, 'port');
    else if (t === 'positive') intIn(c, f, v, 1, 2 ** 31 - 1, `${k}`);
    else if (t === 'uint') intIn(c, f, v, 0, 2 ** 31 - 1, `${k}`);
    else if (t === 'duration') {
      if (typeof v !== 'string' || !GO_DURATION.test(v)) c.add(f, `${show(v)} is not a duration (e.g. "30s", "1h5m")`);
    } else if (t === 'regex') {
      if (typeof v !== 'string') c.add(f, `${show(v)} is not a string`);
      else
        try {
          new RegExp(v);
        } catch (err) {
          c.add(
            f,
            `${show(v)} is not a valid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`,
          );
        }
    }
  }
  return c.issues;
}

// ---------------------------------------------------------------------------------------------
// Admission: allocation, merging with what is stored, cross-object checks

export const SERVICE_CIDR = '10.96.0.0/12';
export const NODE_PORT_MIN = 30000;
export const NODE_PORT_MAX = 32767;
/** NodePorts below this are left for explicit requests (as Kubernetes' static band). */
const NODE_PORT_DYNAMIC_MIN = 30086;

export interface ClusterConfig {
  serviceCidr: string;
  /** LoadBalancer ingress addresses. */
  lbPool: string;
  /** Node names. */
  nodes: string[];
  /** Addresses that the LB pool must not hand out (node IPs, the external client). */
  reserved?: string[];
}

/** The cluster configuration of a lab: its nodes, underlay, and the addresses the pool must skip. */
export function labClusterConfig(topo: Pick<Topology, 'nodes' | 'underlay' | 'external'>): ClusterConfig {
  return defaultClusterConfig(
    topo.nodes.map((n) => n.name),
    topo.underlay,
    [...topo.nodes.map((n) => n.ip), ...(topo.external ? [topo.external.ip] : [])],
  );
}

export function defaultClusterConfig(
  nodes: string[],
  underlay = '192.168.77.0/24',
  reserved: string[] = [],
): ClusterConfig {
  const u = parseCidr(underlay);
  if (!u) throw new Error(`not a CIDR: ${underlay}`);
  return { serviceCidr: SERVICE_CIDR, lbPool: `${formatIpv4(u.base + 64)}/27`, nodes, reserved };
}

/** The ClusterIP Kubernetes reserves for `default/kubernetes` (the first address of the range). */
export function reservedClusterIp(serviceCidr = SERVICE_CIDR): string {
  const r = parseCidr(serviceCidr);
  if (!r) throw new Error(`not a CIDR: ${serviceCidr}`);
  return formatIpv4(r.base + 1);
}

function usedClusterIps(tx: StoreTx, except: string): Set<string> {
  const used = new Set<string>();
  for (const s of tx.list('Service')) {
    if (`${s.metadata?.namespace}/${s.metadata?.name}` === except) continue;
    for (const ip of s.spec?.clusterIPs ?? [s.spec?.clusterIP]) if (ip && ip !== 'None') used.add(ip);
  }
  return used;
}

function usedNodePorts(tx: StoreTx, except: string): Map<number, string> {
  const used = new Map<number, string>();
  for (const s of tx.list('Service')) {
    const id = `${s.metadata?.namespace}/${s.metadata?.name}`;
    if (id === except) continue;
    for (const p of s.spec?.ports ?? []) if (p.nodePort) used.set(p.nodePort, id);
    if (s.spec?.healthCheckNodePort) used.set(s.spec.healthCheckNodePort, id);
  }
  return used;
}

/**
 * A LoadBalancer address from the lab's pool (`poolCidr`): the one the Service asks for
 * (spec.loadBalancerIP), else the one it had, else the first free one that is not reserved; or why
 * there is none. `used` maps the addresses other Services hold to their namespace/name. Shared by
 * the file-store lab and the lab kubelet of a real API server.
 */
export function pickLoadBalancerIp(
  poolCidr: string,
  used: ReadonlyMap<string, string>,
  reserved: ReadonlySet<string>,
  asked?: string,
  had?: string,
): { ip: string } | { field: string; problem: string } {
  const pool = parseCidr(poolCidr);
  if (!pool) throw new Error(`bad LB pool ${poolCidr}`);
  if (asked) {
    const n = parseIpv4(asked) ?? 0;
    if (!inCidr(n, pool))
      return {
        field: 'spec.loadBalancerIP',
        problem: `${show(asked)} is not in the lab's LoadBalancer pool ${poolCidr}`,
      };
    if (used.has(asked))
      return { field: 'spec.loadBalancerIP', problem: `${show(asked)} is already used by ${used.get(asked)}` };
    return { ip: asked };
  }
  if (had && !used.has(had)) return { ip: had };
  for (let n = pool.base + 1; n < pool.base + pool.size - 1; n++) {
    const ip = formatIpv4(n);
    if (!used.has(ip) && !reserved.has(ip)) return { ip };
  }
  return { field: 'status.loadBalancer', problem: `no free address left in the lab's LoadBalancer pool ${poolCidr}` };
}

function usedLbIps(tx: StoreTx, except: string): Map<string, string> {
  const used = new Map<string, string>();
  for (const s of tx.list('Service')) {
    const id = `${s.metadata?.namespace}/${s.metadata?.name}`;
    if (id === except) continue;
    for (const i of s.status?.loadBalancer?.ingress ?? []) if (i.ip) used.set(i.ip, id);
  }
  return used;
}

function admitService(tx: StoreTx, svc: Service, old: Service | undefined, cfg: ClusterConfig, c: Checker): void {
  const s = svc.spec ?? {};
  const id = `${svc.metadata?.namespace}/${svc.metadata?.name}`;
  const range = parseCidr(cfg.serviceCidr);
  if (!range) throw new Error(`bad service CIDR ${cfg.serviceCidr}`);
  const type = s.type ?? 'ClusterIP';

  // ClusterIP: immutable once allocated (unless the type changes to or from ExternalName).
  if (type === 'ExternalName') {
    delete s.clusterIP;
    delete s.clusterIPs;
  } else {
    const oldIp = old?.spec?.type !== 'ExternalName' ? old?.spec?.clusterIP : undefined;
    if (oldIp && s.clusterIP !== undefined && s.clusterIP !== '' && s.clusterIP !== oldIp) {
      c.add('spec.clusterIP', `field is immutable (${show(oldIp)}; delete and re-create the Service to change it)`);
      return;
    }
    if (oldIp && (s.clusterIP === undefined || s.clusterIP === '')) s.clusterIP = oldIp;
    if (s.clusterIP === undefined || s.clusterIP === '') {
      const used = usedClusterIps(tx, id);
      used.add(reservedClusterIp(cfg.serviceCidr));
      // dynamic allocations from the upper part of the range; the first 256 stay for requests
      const first = range.base + 257;
      let ip: string | undefined;
      for (let n = first; n < range.base + range.size - 1; n++) {
        const cand = formatIpv4(n);
        if (!used.has(cand)) {
          ip = cand;
          break;
        }
      }
      if (!ip) {
        c.add('spec.clusterIP', `no free address left in ${cfg.serviceCidr}`);
        return;
      }
      s.clusterIP = ip;
    } else if (s.clusterIP !== 'None' && s.clusterIP !== oldIp) {
      const n = parseIpv4(s.clusterIP) ?? 0;
      if (!inCidr(n, range) || n === range.base || n === range.base + range.size - 1)
        c.add('spec.clusterIP', `${show(s.clusterIP)} is not in the service range ${cfg.serviceCidr}`);
      else if (s.clusterIP === reservedClusterIp(cfg.serviceCidr))
        c.add('spec.clusterIP', `${show(s.clusterIP)} is reserved for default/kubernetes`);
      else {
        const other = tx
          .list('Service')
          .find((o) => `${o.metadata?.namespace}/${o.metadata?.name}` !== id && o.spec?.clusterIP === s.clusterIP);
        if (other)
          c.add(
            'spec.clusterIP',
            `${show(s.clusterIP)} is already allocated to ${other.metadata?.namespace}/${other.metadata?.name}`,
          );
      }
    }
    s.clusterIPs = [s.clusterIP];
  }

  // NodePorts: kept across updates by port name, allocated when missing.
  const wantsNodePorts = type === 'NodePort' || (type === 'LoadBalancer' && s.allocateLoadBalancerNodePorts !== false);
  const used = usedNodePorts(tx, id);
  const taken = new Set<number>();
  for (const p of s.ports ?? []) {
    if (p.nodePort) {
      const owner = used.get(p.nodePort);
      if (owner)
        c.add(`spec.ports[${(s.ports ?? []).indexOf(p)}].nodePort`, `${p.nodePort} is already allocated to ${owner}`);
      taken.add(p.nodePort);
    }
  }
  const allocate = (): number | undefined => {
    for (let n = NODE_PORT_DYNAMIC_MIN; n <= NODE_PORT_MAX; n++) if (!used.has(n) && !taken.has(n)) return n;
    for (let n = NODE_PORT_MIN; n < NODE_PORT_DYNAMIC_MIN; n++) if (!used.has(n) && !taken.has(n)) return n;
    return undefined;
  };
  if (wantsNodePorts) {
    const oldByName = new Map(
      (old?.spec?.ports ?? []).filter((p) => p.nodePort).map((p) => [p.name ?? '', p.nodePort as number]),
    );
    for (const p of s.ports ?? []) {
      if (p.nodePort) continue;
      const prev = oldByName.get(p.name ?? '');
      const n = prev !== undefined && !taken.has(prev) ? prev : allocate();
      if (n === undefined) {
        c.add('spec.ports', `no free node port left in ${NODE_PORT_MIN}-${NODE_PORT_MAX}`);
        return;
      }
      p.nodePort = n;
      taken.add(n);
    }
  } else {
    (s.ports ?? []).forEach((p, i) => {
      if (p.nodePort && type === 'LoadBalancer') return; // explicitly requested with allocateLoadBalancerNodePorts false
      if (p.nodePort) c.add(`spec.ports[${i}].nodePort`, `may not be set for type ${type}`);
    });
  }

  // Health-check node port for externalTrafficPolicy Local LoadBalancers.
  if (type === 'LoadBalancer' && s.externalTrafficPolicy === 'Local') {
    if (!s.healthCheckNodePort) {
      const prev = old?.spec?.healthCheckNodePort;
      const n = prev && !taken.has(prev) && !used.has(prev) ? prev : allocate();
      if (n === undefined) c.add('spec.healthCheckNodePort', 'no free node port left');
      else s.healthCheckNodePort = n;
    } else if (used.has(s.healthCheckNodePort) || taken.has(s.healthCheckNodePort)) {
      c.add('spec.healthCheckNodePort', `${s.healthCheckNodePort} is already allocated`);
    }
  } else delete s.healthCheckNodePort;

  // LoadBalancer ingress from the lab's pool (not for another loadBalancerClass).
  const status = (svc.status ??= {});
  if (type === 'LoadBalancer' && !s.loadBalancerClass) {
    const picked = pickLoadBalancerIp(
      cfg.lbPool,
      usedLbIps(tx, id),
      new Set(cfg.reserved ?? []),
      s.loadBalancerIP,
      old?.status?.loadBalancer?.ingress?.[0]?.ip,
    );
    if ('problem' in picked) c.add(picked.field, picked.problem);
    const ip = 'ip' in picked ? picked.ip : undefined;
    status.loadBalancer = ip ? { ingress: [{ ip, ipMode: 'VIP' }] } : {};
  } else {
    status.loadBalancer = {};
  }
}

/** Pod spec as stored, for comparing an update: scheduling decisions left out. */
function podSpecForCompare(p: Pod): string {
  const spec = { ...(p.spec ?? {}) } as Record<string, unknown>;
  delete spec.nodeName;
  return JSON.stringify(spec);
}

/** Annotations under this prefix are the lab's own (e.g. a pod's network namespace); apply keeps them. */
export const LAB_ANNOTATION_PREFIX = 'lab.sluice.dev/';

export interface AdmitResult {
  object: KubeObject;
  result: PutResult;
}

/**
 * Validates `raw` and writes it through `tx` (create or update), with allocation and the checks
 * that need the other objects. Throws ObjectError; nothing is written then.
 */
export function admit(tx: StoreTx, raw: unknown, cfg: ClusterConfig, source?: string): AdmitResult {
  const obj = validateObject(raw, { nodes: cfg.nodes }, source);
  const kind = obj.kind as Kind;
  const meta = obj.metadata ?? {};
  const name = meta.name ?? '';
  const what = describeObject(kind, meta.namespace, name);
  const c = new Checker();
  if (isNamespaced(kind)) {
    const ns = tx.get('Namespace', undefined, meta.namespace ?? 'default');
    if (!ns)
      c.add(
        'metadata.namespace',
        `namespace ${show(meta.namespace)} does not exist (create it first, e.g. earlier in the same file)`,
      );
    else if (ns.metadata?.deletionTimestamp)
      c.add('metadata.namespace', `namespace ${show(meta.namespace)} is being deleted`);
  }
  const old = tx.get(kind, meta.namespace, name);
  if (old?.metadata?.deletionTimestamp)
    c.add('metadata.deletionTimestamp', `${what} is being deleted; apply it again when it is gone`);
  if (c.issues.length > 0) throw new ObjectError(what, c.issues, source);

  // What the lab (not the manifest) owns is kept across updates.
  if (old) {
    const keep = Object.entries(old.metadata?.annotations ?? {}).filter(([k]) => k.startsWith(LAB_ANNOTATION_PREFIX));
    if (keep.length > 0) meta.annotations = { ...Object.fromEntries(keep), ...(meta.annotations ?? {}) };
    if (!meta.ownerReferences && old.metadata?.ownerReferences) meta.ownerReferences = old.metadata.ownerReferences;
  }
  switch (kind) {
    case 'Service':
      admitService(tx, obj as Service, old as Service | undefined, cfg, c);
      break;
    case 'Pod': {
      const pod = obj as Pod;
      const prev = old as Pod | undefined;
      if (prev) {
        if (podSpecForCompare(prev) !== podSpecForCompare(pod))
          c.add('spec', 'pod updates may not change the spec (delete the Pod and apply it again)');
        pod.spec = prev.spec;
        pod.status = prev.status;
      } else {
        pod.status = { phase: 'Pending' };
      }
      break;
    }
    case 'Deployment': {
      const d = obj as Deployment;
      const prev = old as Deployment | undefined;
      if (prev && JSON.stringify(prev.spec?.selector) !== JSON.stringify(d.spec?.selector))
        c.add('spec.selector', 'field is immutable');
      d.status = prev?.status ?? {};
      break;
    }
    case 'Namespace': {
      const ns = obj as Namespace;
      ns.status = { phase: 'Active' };
      break;
    }
    case 'NetworkPolicy':
    case 'FelixConfiguration':
      break;
    default:
      break;
  }
  if (c.issues.length > 0) throw new ObjectError(what, c.issues, source);
  const r = tx.put(obj);
  return { object: r.object, result: r.result };
}

/**
 * Marks an object for deletion the way the API server does: Pods and Namespaces get a
 * deletionTimestamp (the lab controller finishes them), everything else is removed now.
 * Returns undefined when there is no such object.
 */
export function requestDelete(
  tx: StoreTx,
  kind: Kind,
  namespace: string | undefined,
  name: string,
): KubeObject | undefined {
  const old = tx.get(kind, namespace, name);
  if (!old) return undefined;
  if (kind === 'Pod' || kind === 'Namespace') {
    if (old.metadata?.deletionTimestamp) return old;
    const meta = (old.metadata ??= {});
    meta.deletionTimestamp = timestamp();
    if (kind === 'Pod') meta.deletionGracePeriodSeconds = (old as Pod).spec?.terminationGracePeriodSeconds ?? 30;
    if (kind === 'Namespace') (old as Namespace).status = { phase: 'Terminating' };
    return tx.put(old).object;
  }
  return tx.delete(kind, namespace, name);
}

// ---------------------------------------------------------------------------------------------
// Names as kubectl prints them

const RESOURCE_NAMES: Record<Kind, string> = {
  Namespace: 'namespace',
  Node: 'node',
  Pod: 'pod',
  Deployment: 'deployment.apps',
  Service: 'service',
  EndpointSlice: 'endpointslice.discovery.k8s.io',
  NetworkPolicy: 'networkpolicy.networking.k8s.io',
  FelixConfiguration: 'felixconfiguration.projectcalico.org',
  Tier: 'tier.projectcalico.org',
  CalicoNetworkPolicy: 'networkpolicy.projectcalico.org',
  GlobalNetworkPolicy: 'globalnetworkpolicy.projectcalico.org',
  NetworkSet: 'networkset.projectcalico.org',
  GlobalNetworkSet: 'globalnetworkset.projectcalico.org',
  HostEndpoint: 'hostendpoint.projectcalico.org',
};

/** `deployment.apps/echo`, as kubectl prints it. */
export function resourceName(kind: Kind, name: string): string {
  return `${RESOURCE_NAMES[kind]}/${name}`;
}

/** Identity of a manifest object, as far as it can be read (for delete -f). */
export function manifestRef(raw: unknown): { kind: Kind; namespace: string | undefined; name: string } | undefined {
  if (!isObj(raw)) return undefined;
  const kind = storedKind(raw.apiVersion, raw.kind);
  if (!isKind(kind) || !isObj(raw.metadata) || typeof raw.metadata.name !== 'string') return undefined;
  const ns = isNamespaced(kind)
    ? typeof raw.metadata.namespace === 'string' && raw.metadata.namespace
      ? raw.metadata.namespace
      : 'default'
    : undefined;
  return { kind, namespace: ns, name: raw.metadata.name };
}

export type { FelixConfiguration, NetworkPolicy };
