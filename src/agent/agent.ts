// The node agent: watches the datastore, computes what this node's datapath must hold and keeps
// the BPF maps and attachments exactly in step, by difference. Data flows one way:
//   datastore events -> trackers (services, nodes, config) -> sync -> NAT writer, routes,
//   interfaces -> maps and programs.
// The datapath lives in pinned maps and links, so the agent can die and restart without
// breaking traffic: on start it adopts what is pinned and reconciles by difference.
import { spawn, type ChildProcess } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { NodeDatapath, type InterfaceRole } from '../datapath/node.js';
import { cidrKey, RouteFlags, type Route, type RouteKey } from '../datapath/routes.js';
import { Proto } from '../datapath/nat.js';
import { COUNTERS_MAP, CT_MAP, NAT_AFF_MAP, NAT_BE_MAP, NAT_FE_MAP, ROUTES_MAP } from '../datapath/index.js';
import { readCounters } from '../datapath/counters.js';
import { ServiceChangeTracker } from '../proxy/tracker.js';
import { toNatFrontend } from '../proxy/model.js';
import { NatWriter, type FlushResult } from '../proxy/nat-writer.js';
import { ConfigStore, datapathSettings, resolveConntrackTimeouts, type Config } from './config.js';
import { scanConntrack } from './conntrack-scanner.js';
import { KubeProxyCleaner } from './kube-proxy-cleanup.js';
import { readNodeNetwork, type NodeNetwork } from './interfaces.js';
import { AgentMetrics } from './metrics.js';
import { HealthServers, type HealthCheckService } from './health.js';
import { probeAll } from '../bpf/features.js';
import { judgeFeatures } from '../datapath/requirements.js';
import {
  AGENT_KINDS,
  type Datastore,
  type Kind,
  type KubeObject,
  type Watch,
  type WatchEvent,
} from './datastore/types.js';
import { DEFAULT_BPFFS_ROOT } from '../paths.js';
import { PolicyEngine, podInfo } from '../policy/engine.js';
import { PolicyWriter, type DesiredEndpoint } from '../policy/writer.js';
import { EP_MAP, IPSETS_MAP, LOG_MAP, RULES_MAP, epMap, ipsetsMap, logEvent, rulesMap } from '../datapath/policy.js';
import { RingBufReader } from '../bpf/ringbuf.js';
import { IpSets } from '../policy/ipsets.js';
import { NftPolicyBackend, type NftEndpoint } from '../policy/nftables.js';
import { KernelPathGuard, kubeProxyServedHere } from './kernel-path-guard.js';
import { mixedClusterWarning, nodeModes } from './mixed-cluster.js';
import { IPSET_PREFIX_FIXED } from '../datapath/policy.js';

/**
 * The kernel's tunnel devices of the pod network (the lab's and Calico's names): traffic from other
 * nodes arrives on them decapsulated, and their ingress tells the kernel's conntrack its path.
 */
const OVERLAY_DEVICE = /^(vxlan\.sl|vxlan\.calico|vxlan-v6\.calico|tunl0|wireguard\.cali)$/;
export interface AgentOptions {
  nodeName: string;
  /** The node's IP; by default its Node object's InternalIP. */
  nodeIp?: string;
  datastore: Datastore;
  logger: Logger;
  pinRoot?: string;
  env?: NodeJS.ProcessEnv;
  /** Host-side names of pod interfaces (Calico's cali*, the lab's slw*). */
  workloadPrefixes?: string[];
  /** A sub-cgroup whose processes get connect-time load balancing (never a cgroup root). */
  cgroup?: string;
  /** Port overrides (0 = any free port, tests); by default from the configuration. */
  ports?: { health?: number; healthz?: number; metrics?: number };
  intervals?: { conntrackScanMs?: number; interfacePollMs?: number };
  /** A file the agent rewrites after every sync with its state (the lab reads it). */
  statusFile?: string;
}

interface NodeInfo {
  ip?: string;
  podCidrs: string[];
}

/** Applies one change to every IP set holder there is (the BPF writer's, the nftables one). */
function setsOf(holders: (IpSets | undefined)[]) {
  const hs = holders.filter((h): h is IpSets => h !== undefined);
  return {
    upsertEndpoint: (k: string, ep: Parameters<IpSets['upsertEndpoint']>[1]) =>
      hs.forEach((h) => h.upsertEndpoint(k, ep)),
    removeEndpoint: (k: string) => hs.forEach((h) => h.removeEndpoint(k)),
  };
}

interface HostEndpointObject {
  metadata?: { name?: string; labels?: Record<string, string> };
  spec?: { node?: string; interfaceName?: string; expectedIPs?: string[] };
}

/** Policy Log events written to the agent's log per second at most; the rest are counted. */
const LOG_EVENTS_PER_SECOND = 50;
const PROTOCOL_NAMES: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP' };

const routeId = (k: RouteKey) => `${k.addr}/${k.prefixlen}`;
const sameRoute = (a: Route, b: Route) => a.flags === b.flags && a.ifindex === b.ifindex && a.nextHop === b.nextHop;

export class Agent {
  readonly metrics = new AgentMetrics();
  private readonly log: Logger;
  private readonly config: ConfigStore;
  private readonly tracker: ServiceChangeTracker;
  private readonly felix = new Map<string, KubeObject>();
  private readonly nodes = new Map<string, NodeInfo>();
  private datapath: NodeDatapath | undefined;
  private writer: NatWriter | undefined;
  private readonly policy = new PolicyEngine();
  private policyWriter: PolicyWriter | undefined;
  private readonly hostEndpoints = new Map<string, HostEndpointObject>();
  /** The standard dataplane's policy (nftables) and its IP sets, while eBPF mode is off. */
  private readonly nft = new NftPolicyBackend();
  private readonly kernelPath = new KernelPathGuard();
  /** The mixed-cluster warning last logged (undefined: every node in this node's mode). */
  private mixedWarning: string | undefined;
  private nftSets: IpSets | undefined;
  private fwdPolicyFlag = 0;
  private logReader: RingBufReader | undefined;
  private logBudget = { tokens: LOG_EVENTS_PER_SECOND, at: 0, suppressed: 0 };
  /** Pod IP -> namespace/name, to find the pod behind a workload interface. */
  private readonly podsByIp = new Map<string, string>();
  private watch: Watch | undefined;
  private network: NodeNetwork | undefined;
  private attached = new Map<string, { ifindex: number; role: InterfaceRole }>();
  private routesInMap = new Map<string, [RouteKey, Route]>();
  private healthChecks = new Map<number, HealthCheckService>();
  /** Service ports that do not fit in a full NAT map, with the FelixConfiguration field that would make room. */
  private mapFull = new Map<string, string>();
  private readonly health: HealthServers;
  private timers: NodeJS.Timeout[] = [];
  private syncScheduled = false;
  /** Features the datapath needs that this kernel lacks (probed once). */
  private unsupported: string[] | undefined;
  private pendingSince = 0;
  private synced = false;
  private firstSyncDone = false;
  /** The next sync programs every frontend (the datapath was just loaded or adopted). */
  private fullSync = false;
  private stopped = false;
  private syncedRevision: string | undefined;
  private syncing: Promise<void> = Promise.resolve();
  readonly state = {
    ready: false,
    lastSyncMs: 0,
    stale: () => this.pendingSince > 0 && Date.now() - this.pendingSince > 30_000,
  };

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.logger;
    this.config = new ConfigStore(opts.nodeName, opts.env ?? process.env);
    this.tracker = new ServiceChangeTracker({ nodeName: opts.nodeName, nodeIPs: opts.nodeIp ? [opts.nodeIp] : [] });
    this.health = new HealthServers(this.state, this.metrics, '0.0.0.0', (port, err) =>
      this.log.warn(
        { port, err: err.message },
        "kube-proxy's health port is taken (is kube-proxy still running?): /healthz will be served once it is free",
      ),
    );
  }

  get cfg(): Config {
    return this.config.current();
  }

  get pinRoot(): string {
    return this.opts.pinRoot ?? DEFAULT_BPFFS_ROOT;
  }

  async start(): Promise<void> {
    const c = this.cfg;
    await this.health.start({
      healthPort: this.opts.ports?.health ?? (c.healthEnabled ? c.healthPort : undefined),
      healthzPort: this.opts.ports?.healthz ?? c.bpfKubeProxyHealthzPort,
      metricsPort: this.opts.ports?.metrics ?? (c.prometheusMetricsEnabled ? c.prometheusMetricsPort : undefined),
    });
    this.watch = this.opts.datastore.watch(AGENT_KINDS, (ev) => this.onEvent(ev), {
      onSynced: (rv) => {
        this.log.info({ resourceVersion: rv }, 'datastore in sync');
        if (this.synced) this.metrics.resyncs.inc({ reason: 'relist' });
        this.synced = true;
        this.scheduleSync();
      },
      onError: (err) => this.log.error({ err }, 'datastore watch error'),
    });
    await this.watch.synced;
    const iv = this.opts.intervals ?? {};
    this.watchNetwork();
    this.timers.push(setInterval(() => this.pollInterfaces(), iv.interfacePollMs ?? 5000));
    this.timers.push(setInterval(() => this.scanConntrack(), iv.conntrackScanMs ?? 10_000));
    this.metrics.readMapEntries = () => this.readMapEntries();
    this.metrics.readPackets = () => this.readPackets();
    this.timers.push(setInterval(() => this.readPolicyLog(), 200));
    this.timers.push(setInterval(() => void this.cleanKubeProxy(), 30_000));
    for (const t of this.timers) t.unref();
    await this.whenSynced();
  }

  /** Resolves after the sync that is pending (or running) now has finished. */
  async whenSynced(): Promise<void> {
    for (let i = 0; i < 1000 && (this.syncScheduled || this.pendingSince > 0); i++) {
      await this.syncing;
      await new Promise((r) => setImmediate(r));
    }
    await this.syncing;
  }

  /** Stops watching; the datapath keeps running from its pins unless `detach`. */
  async stop(opts: { detach?: boolean } = {}): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.monitor?.kill();
    this.watch?.stop();
    await this.syncing;
    await this.health.stop();
    if (opts.detach) {
      this.datapath?.close({ unpin: true });
      await this.nft.remove().catch((err: unknown) => this.log.warn({ err }, 'removing the nftables policy failed'));
      await this.kernelPath
        .remove()
        .catch((err: unknown) => this.log.warn({ err }, 'removing the kernel-path guard failed'));
    } else {
      this.datapath?.tc.close();
      this.datapath?.ctlb.close();
    }
  }

  private onEvent(ev: WatchEvent): void {
    this.metrics.events.inc({ kind: ev.kind, type: ev.type });
    const o = ev.object as KubeObject & { metadata?: { name?: string } };
    switch (ev.kind) {
      case 'Service':
      case 'EndpointSlice': {
        // The tracker keeps the objects itself: a delete carries the last state, anything else
        // the new one (names are immutable, so there is no rename to report).
        const prev = ev.type === 'DELETED' ? o : undefined;
        const cur = ev.type === 'DELETED' ? undefined : o;
        if (ev.kind === 'Service') this.tracker.onServiceUpdate(prev as never, cur as never);
        else this.tracker.onEndpointSliceUpdate(prev as never, cur as never);
        break;
      }
      case 'Node':
        this.onNode(ev.type, o);
        break;
      case 'FelixConfiguration':
        if (ev.type === 'DELETED') this.felix.delete(o.metadata?.name ?? '');
        else this.felix.set(o.metadata?.name ?? '', o);
        this.onConfig();
        break;
      case 'Namespace':
      case 'Pod':
      case 'NetworkPolicy':
      case 'Tier':
      case 'CalicoNetworkPolicy':
      case 'GlobalNetworkPolicy':
      case 'NetworkSet':
      case 'GlobalNetworkSet':
        this.onPolicyInput(ev.kind, ev.type, o);
        break;
      case 'HostEndpoint':
        if (ev.type === 'DELETED') this.hostEndpoints.delete(o.metadata?.name ?? '');
        else this.hostEndpoints.set(o.metadata?.name ?? '', o as HostEndpointObject);
        break;
      default:
        return;
    }
    this.scheduleSync();
  }

  /** Pods, namespaces and policies feed the policy engine and the IP sets. */
  private onPolicyInput(kind: Kind, type: string, o: KubeObject): void {
    const meta = (o as { metadata?: { name?: string; namespace?: string; labels?: Record<string, string> } }).metadata;
    const name = meta?.name ?? '';
    const ns = meta?.namespace ?? 'default';
    const sets = setsOf([this.policyWriter?.sets, this.nftSets]);
    if (kind === 'Namespace') {
      if (type === 'DELETED') return this.policy.deleteNamespace(name);
      for (const key of this.policy.setNamespace(name, meta?.labels)) {
        const ep = this.policy.setEndpointOf(key);
        if (ep) sets?.upsertEndpoint(key, ep);
      }
      return;
    }
    switch (kind) {
      case 'Tier':
        if (type === 'DELETED') this.policy.deleteTier(name);
        else this.policy.setTierObject(o as never);
        return this.reportPolicyErrors();
      case 'CalicoNetworkPolicy':
      case 'GlobalNetworkPolicy':
        if (type === 'DELETED') this.policy.deleteCalicoPolicy(o as never);
        else this.policy.setCalicoPolicy(o as never);
        return this.reportPolicyErrors();
      case 'NetworkSet':
      case 'GlobalNetworkSet': {
        if (type === 'DELETED') {
          sets?.removeEndpoint(this.policy.deleteNetworkSet(o as never));
          return;
        }
        const key = this.policy.setNetworkSet(o as never);
        const ep = this.policy.setEndpointOf(key);
        if (ep) sets?.upsertEndpoint(key, ep);
        else sets?.removeEndpoint(key);
        return this.reportPolicyErrors();
      }
    }
    if (kind === 'Pod') {
      const key = `${ns}/${name}`;
      const prev = this.policy.pod(key);
      if (prev?.ip && this.podsByIp.get(prev.ip) === key) this.podsByIp.delete(prev.ip);
      if (type === 'DELETED') {
        this.policy.deletePod(ns, name);
        sets?.removeEndpoint(key);
        return;
      }
      const info = podInfo(o as never);
      this.policy.setPod(info);
      const ep = this.policy.setEndpoint(info);
      if (ep?.ip) {
        this.podsByIp.set(ep.ip, key);
        sets?.upsertEndpoint(key, ep);
      } else sets?.removeEndpoint(key);
      return;
    }
    if (type === 'DELETED') this.policy.deleteK8sPolicy(ns, name);
    else this.policy.setK8sPolicy(o as never);
    this.reportPolicyErrors();
  }

  /** The Log action's events: one structured line each, at most LOG_EVENTS_PER_SECOND. */
  private readPolicyLog(): void {
    const reader = this.logReader;
    const writer = this.policyWriter;
    if (!reader || !writer || this.stopped) return;
    const now = Date.now();
    const b = this.logBudget;
    b.tokens = Math.min(LOG_EVENTS_PER_SECOND, b.tokens + ((now - b.at) / 1000) * LOG_EVENTS_PER_SECOND);
    b.at = now;
    reader.consume((data, offset) => {
      this.metrics.policyLogEvents.inc();
      if (b.tokens < 1) {
        b.suppressed++;
        return;
      }
      b.tokens--;
      const e = logEvent.decode(data, offset);
      const iface = [...this.attached].find(([, a]) => a.ifindex === e.ifindex)?.[0];
      this.log.info(
        {
          policyLog: writer.ruleName(e.ruleId),
          direction: e.ingress ? 'ingress' : 'egress',
          iface: iface ?? e.ifindex,
          protocol: PROTOCOL_NAMES[e.proto] ?? e.proto,
          src: `${e.saddr}:${e.sport}`,
          dst: `${e.daddr}:${e.dport}`,
        },
        'policy log',
      );
    });
    if (b.suppressed && b.tokens >= 1) {
      this.log.warn({ suppressed: b.suppressed }, 'policy log events over the rate limit were not written');
      b.suppressed = 0;
    }
  }

  /**
   * The standard dataplane (eBPF off, or a kernel that cannot run it): the same tables enforced
   * with nftables on the workload and host interfaces; Services stay with kube-proxy.
   */
  private async syncStandardPolicy(): Promise<void> {
    try {
      if (!this.nftSets) {
        this.nftSets = new IpSets();
        for (const [key, ep] of this.policy.endpoints()) this.nftSets.upsertEndpoint(key, ep);
      }
      const sets = this.nftSets;
      const net = await readNodeNetwork(this.workloadPrefixes);
      this.network = net;
      const rpf = this.cfg.bpfEnforceRPF !== 'Disabled';
      const eps: NftEndpoint[] = [];
      for (const r of net.workloadRoutes) {
        const key = this.podsByIp.get(r.addr);
        eps.push({ ifname: r.ifname, addr: r.addr, rpf, ...(key ? this.policy.tablesFor(key) : {}) });
      }
      const failsafe = this.failsafePorts();
      const pattern = this.cfg.bpfDataIfacePattern;
      for (const i of net.interfaces) {
        if (!pattern.test(i.name)) continue;
        const hep = this.hostEndpointFor(i.name);
        if (hep)
          eps.push({
            ifname: i.name,
            host: true,
            rpf: false,
            ...this.policy.hostTables(hep.metadata?.labels ?? {}, failsafe),
          });
      }
      const used = new Set<string>();
      for (const e of eps)
        for (const t of [e.ingress, e.egress])
          for (const [k, d] of t?.sets ?? []) {
            sets.ensure(k, d);
            used.add(k);
          }
      for (const k of [...sets.keys()]) if (!used.has(k)) sets.drop(k);
      sets.drain(); // the whole table is rendered: queued map changes do not apply here
      const changed = await this.nft.apply(eps, (k) =>
        sets.members(k).map((m) => ({
          cidr: `${m.addr}/${m.prefixlen - IPSET_PREFIX_FIXED}`,
          ...(m.portKey ? { proto: m.portKey >>> 16, port: m.portKey & 0xffff } : {}),
        })),
      );
      this.reportPolicyErrors();
      if (changed) this.log.debug({ endpoints: eps.length }, 'nftables policy updated');
    } catch (err) {
      this.log.error({ err }, 'programming the nftables policy failed; retrying');
      setTimeout(() => this.scheduleSync(), 1000).unref();
    }
  }

  private failsafePorts() {
    return {
      ingress: this.cfg.failsafeInboundHostPorts.map((f) => ({
        protocol: f.protocol === 'TCP' ? 6 : 17,
        port: f.port,
      })),
      egress: this.cfg.failsafeOutboundHostPorts.map((f) => ({
        protocol: f.protocol === 'TCP' ? 6 : 17,
        port: f.port,
      })),
    };
  }

  private hostEndpointFor(ifname: string): HostEndpointObject | undefined {
    const heps = [...this.hostEndpoints.values()].filter((h) => h.spec?.node === this.opts.nodeName);
    return heps.find((h) => h.spec?.interfaceName === ifname) ?? heps.find((h) => h.spec?.interfaceName === '*');
  }

  private reportPolicyErrors(): void {
    for (const err of this.policy.errors.splice(0)) {
      this.metrics.errors.inc({ kind: 'NetworkPolicy' });
      this.log.error(
        { err: err.message },
        `${err.message} (the pods it selects deny that direction until it is fixed)`,
      );
    }
  }

  /** Every local workload interface gets its pod's tables (or none: not isolated). */
  private syncPolicy(dp: NodeDatapath): void {
    if (!this.policyWriter) {
      const w = new PolicyWriter(
        {
          ep: epMap(dp.tc.map(EP_MAP)),
          rules: rulesMap(dp.tc.map(RULES_MAP)),
          ipsets: ipsetsMap(dp.tc.map(IPSETS_MAP)),
          conntrack: dp.conntrack,
        },
        dp.tc.map(RULES_MAP).def.maxEntries,
      );
      w.adopt();
      for (const [key, ep] of this.policy.endpoints()) w.sets.upsertEndpoint(key, ep);
      this.policyWriter = w;
      this.fwdPolicyFlag = -1; // a new load: its globals start at zero
      this.logReader?.close();
      this.logReader = new RingBufReader(dp.tc.map(LOG_MAP));
    }
    const rpf = this.cfg.bpfEnforceRPF !== 'Disabled';
    const desired = new Map<number, DesiredEndpoint>();
    for (const r of this.network!.workloadRoutes) {
      const key = this.podsByIp.get(r.addr);
      desired.set(r.ifindex, { addr: r.addr, rpf, ...(key ? this.policy.tablesFor(key) : {}) });
    }
    // Host endpoints of this node: by interface name, or "*" for every host data interface.
    const failsafe = this.failsafePorts();
    for (const [ifname, a] of this.attached) {
      if (a.role !== 'host') continue;
      const heps = [...this.hostEndpoints.values()].filter((h) => h.spec?.node === this.opts.nodeName);
      const hep = heps.find((h) => h.spec?.interfaceName === ifname) ?? heps.find((h) => h.spec?.interfaceName === '*');
      if (!hep) continue;
      const tables = this.policy.hostTables(hep.metadata?.labels ?? {}, failsafe);
      desired.set(a.ifindex, { addr: '0.0.0.0', rpf: false, host: true, ...tables });
    }
    const res = this.policyWriter.sync(desired);
    // Established flows crossing host interfaces need the forwarded-traffic verdict only while
    // some host endpoint has applyOnForward policy.
    const fwd = [...desired.values()].some((d) => d.fwdIngress || d.fwdEgress) ? 1 : 0;
    if (fwd !== this.fwdPolicyFlag) {
      dp.tc.setGlobal('sl_fwd_policy', fwd);
      this.fwdPolicyFlag = fwd;
    }
    this.reportPolicyErrors();
    if (res.tables || res.endpoints) this.log.debug(res, 'policy maps updated');
    if (res.rejudge) {
      // Established flows are re-judged once the new tables are in force (a conntrack scan): in
      // this sync, so the revision the status reports includes flows the change cuts.
      try {
        const n = this.policyWriter.rejudgeFlows();
        if (n) this.log.debug({ flows: n }, 'established flows will be judged again by the new policy');
      } catch (err) {
        this.log.warn({ err }, 're-judging established flows failed');
      }
    }
    if (this.policyWriter.pendingRelease) {
      // Replaced tables and sets are freed once no evaluation can still be walking them.
      setTimeout(() => this.scheduleSync(), 1100).unref();
    }
  }

  private onNode(type: string, o: KubeObject): void {
    const n = o as {
      metadata?: { name?: string };
      spec?: { podCIDR?: string; podCIDRs?: string[] };
      status?: { addresses?: { type: string; address: string }[] };
    };
    const name = n.metadata?.name ?? '';
    if (type === 'DELETED') {
      this.nodes.delete(name);
      return;
    }
    const ip = n.status?.addresses?.find(
      (a) => a.type === 'InternalIP' && /^\d+\.\d+\.\d+\.\d+$/.test(a.address),
    )?.address;
    const cidrs = (n.spec?.podCIDRs ?? (n.spec?.podCIDR ? [n.spec.podCIDR] : [])).filter((c) => c.includes('.'));
    this.nodes.set(name, { ip, podCidrs: cidrs });
    if (name === this.opts.nodeName && ip && !this.opts.nodeIp) this.tracker.setNodeIPs([ip]);
  }

  /** Says (once per change) which nodes run the other dataplane, and what does not work between them. */
  private checkMixedCluster(): void {
    const modes = nodeModes(this.nodes.keys(), [...this.felix.values()]);
    const selfEbpf = this.cfg.bpfEnabled && (this.unsupported?.length ?? 0) === 0;
    const warning = mixedClusterWarning(this.opts.nodeName, selfEbpf, modes);
    const other = selfEbpf ? modes.standard : modes.ebpf;
    this.metrics.otherModeNodes.set(warning ? other.filter((n) => n !== this.opts.nodeName).length : 0);
    if (warning === this.mixedWarning) return;
    this.mixedWarning = warning;
    if (warning) this.log.warn({ ebpfNodes: modes.ebpf, standardNodes: modes.standard }, `mixed cluster: ${warning}`);
    else this.log.info('every node runs the same dataplane as this one');
  }

  private onConfig(): void {
    const { changed, errors } = this.config.update([...this.felix.values()]);
    for (const e of errors) {
      this.metrics.errors.inc({ kind: 'FelixConfiguration' });
      this.log.error({ source: e.source, field: e.field }, e.message);
    }
    for (const c of changed)
      this.log.info({ field: c.name, old: c.old, new: c.new, apply: c.apply }, 'configuration changed');
    const restart = changed.filter((c) => c.apply === 'restart');
    const reload = changed.some((c) => c.apply === 'reload');
    if (!this.cfg.bpfEnabled && this.datapath) {
      this.rollback();
      return;
    }
    if (restart.length && this.datapath) {
      // New map sizes need new maps: the datapath restarts with its entries migrated into them.
      this.log.info(
        { fields: restart.map((c) => c.name) },
        'restarting the datapath: new maps for the new sizes, entries migrated',
      );
      this.reloadDatapath(true);
    } else if (reload && this.datapath) {
      this.log.info('reloading the datapath programs for the new configuration');
      this.reloadDatapath(false);
    }
  }

  /**
   * bpfEnabled: false. Every program is detached, every pin removed: the node is left as if Sluice
   * had never run, for kube-proxy (or the standard dataplane) to serve it. Enabling again later
   * starts from nothing.
   */
  private rollback(): void {
    const dp = this.datapath!;
    this.log.info({ pinRoot: this.pinRoot }, 'bpfEnabled is false: detaching every program and removing the pins');
    for (const name of dp.pinnedInterfaces()) if (!this.attached.has(name)) dp.dropPinned(name);
    dp.close({ unpin: true });
    this.datapath = undefined;
    this.writer = undefined;
    this.policyWriter = undefined;
    this.logReader?.close();
    this.logReader = undefined;
    this.attached.clear();
    this.routesInMap.clear();
    this.mapFull.clear();
    this.firstSyncDone = false;
    void this.kernelPath
      .remove()
      .catch((err: unknown) => this.log.warn({ err }, 'removing the kernel-path guard failed'));
    this.writeStatus();
  }

  private nodeIp(): string | undefined {
    return this.opts.nodeIp ?? this.nodes.get(this.opts.nodeName)?.ip;
  }

  private loadDatapath(migrate = false): NodeDatapath | undefined {
    const ip = this.nodeIp();
    if (!ip) {
      this.log.warn({ node: this.opts.nodeName }, 'waiting for the Node object (no InternalIP yet)');
      return undefined;
    }
    const settings = datapathSettings(this.cfg);
    const dp = NodeDatapath.load({
      pinRoot: this.pinRoot,
      hostIp: ip,
      vxlanPort: settings.vxlanPort,
      tunnelMtu: settings.tunnelMtu,
      dsr: settings.dsr,
      maxEntries: settings.maxEntries,
      onPinMismatch: migrate ? 'migrate' : 'error',
    });
    this.log.info({ pinRoot: this.pinRoot, hostIp: ip, mode: dp.mode, dsr: settings.dsr }, 'datapath loaded');
    for (const [name, map] of dp.tc.maps)
      if (name.startsWith('sl_')) this.metrics.mapCapacity.set({ map: name }, map.def.maxEntries);
    return dp;
  }

  /**
   * New programs with the new constants, swapped into the existing links. Maps are kept, or with
   * `resize` replaced by maps of the configured sizes holding the same entries.
   */
  private reloadDatapath(resize: boolean): void {
    const old = this.datapath;
    const dp = this.loadDatapath(resize);
    if (!dp || !old) return;
    for (const [ifname, a] of this.attached) dp.attach(ifname, a.ifindex, a.role);
    if (resize) {
      // Flows the old programs recorded between the copy and the swap: copy what is missing.
      for (const [name, m] of dp.tc.maps) {
        const before = old.tc.maps.get(name);
        if (before && before.fd !== m.fd && name.startsWith('sl_') && before.id() !== m.id()) m.copyFrom(before, true);
      }
    }
    if (this.opts.cgroup) {
      old.detachCgroup(this.opts.cgroup);
      dp.attachCgroup(this.opts.cgroup);
    }
    old.tc.close();
    old.ctlb.close();
    this.datapath = dp;
    // The writer's maps were the old load's file descriptors: adopt the same pinned maps anew.
    this.writer = new NatWriter(dp.nat);
    for (const f of this.tracker.frontends()) this.writer.upsert(toNatFrontend(f));
    this.reportMapFull(this.writer.flush({ prune: true }));
    this.policyWriter = undefined;
    if (this.network) this.syncPolicy(dp);
    this.writeStatus();
  }

  private scheduleSync(): void {
    if (this.pendingSince === 0) this.pendingSince = performance.now();
    if (this.syncScheduled || !this.synced || this.stopped) return;
    this.syncScheduled = true;
    setImmediate(() => {
      this.syncScheduled = false;
      this.syncing = this.syncing
        .then(() => this.sync())
        .catch((err: unknown) => {
          this.log.error({ err }, 'datapath sync failed; retrying');
          this.metrics.resyncs.inc({ reason: 'error' });
          setTimeout(() => this.scheduleSync(), 1000).unref();
        });
    });
  }

  private async sync(): Promise<void> {
    const started = this.pendingSince || performance.now();
    // Everything the datastore delivered up to here is in this sync's result.
    const revision = this.watch?.resourceVersion;
    this.pendingSince = 0;
    // Once per coalesced sync, not per Node event: a cluster's first list is thousands of them.
    this.checkMixedCluster();
    if (!this.cfg.bpfEnabled) {
      if (!this.firstSyncDone)
        this.log.info('bpfEnabled is false: the eBPF dataplane is off (set it in the default FelixConfiguration)');
      await this.syncStandardPolicy();
      this.syncedRevision = revision;
      this.firstSyncDone = true;
      this.state.ready = true;
      this.writeStatus();
      return;
    }
    if (!this.datapath) {
      if (this.unsupported === undefined) {
        const v = judgeFeatures(probeAll());
        this.unsupported = [...v.unsupported, ...v.inconclusive].map((p) => p.name);
      }
      if (this.unsupported.length) {
        // As Calico does: warn and keep the standard dataplane rather than fail the node.
        if (!this.firstSyncDone) {
          this.log.warn(
            { missing: this.unsupported },
            'this kernel cannot run the eBPF dataplane; keeping the standard dataplane (see `sluice check`)',
          );
        }
        await this.syncStandardPolicy();
        this.syncedRevision = revision;
        this.firstSyncDone = true;
        this.state.ready = true;
        this.writeStatus();
        return;
      }
      this.datapath = this.loadDatapath();
      if (!this.datapath) return;
      // Before any program is attached: connections the kernel carries now go on there.
      if (await kubeProxyServedHere())
        await this.kernelPath
          .install()
          .catch((err: unknown) => this.log.warn({ err }, 'installing the kernel-path guard failed'));
      // eBPF mode takes over policy from the standard dataplane.
      this.nftSets = undefined;
      await this.nft.remove().catch((err: unknown) => this.log.warn({ err }, 'removing the nftables policy failed'));
      this.writer = new NatWriter(this.datapath.nat);
      this.fullSync = true;
      for (const [k, v] of this.datapath.routes.entries()) this.routesInMap.set(routeId(k), [k, v]);
      if (this.opts.cgroup) this.datapath.attachCgroup(this.opts.cgroup);
    }
    const dp = this.datapath;
    const writer = this.writer!;
    // Services: deletes before upserts (an address can move from one Service to another).
    const changes = this.tracker.sync();
    for (const e of changes.errors) {
      this.metrics.errors.inc({ kind: e.object.split(' ')[0] });
      this.log.error({ object: e.object, field: e.field }, `${e.object}: ${e.field}: ${e.reason}`);
    }
    // A freshly loaded (or adopted) datapath gets everything, and loses what nothing claims.
    const full = this.fullSync;
    this.fullSync = false;
    if (full) {
      for (const f of this.tracker.frontends()) writer.upsert(toNatFrontend(f));
    } else {
      for (const key of changes.deletes) writer.remove(key);
      for (const f of changes.upserts) writer.upsert(toNatFrontend(f));
    }
    const r = writer.flush({ prune: full });
    this.reportMapFull(r);
    for (const b of r.removedBackends) {
      // UDP has no end-of-flow: forget flows and sockets aimed at a gone backend. TCP flows to a
      // terminating backend finish on their own, as with kube-proxy.
      if (b.proto === Proto.UDP) {
        const gone = dp.forgetBackend(b);
        if (gone.flows || gone.sockets)
          this.log.info({ backend: `${b.addr}:${b.port}`, ...gone }, 'forgot a removed UDP backend');
      }
    }
    if (changes.healthCheckNodePorts) {
      this.healthChecks = new Map(
        changes.healthCheckNodePorts.map((h) => [
          h.port,
          { namespace: h.service.namespace, name: h.service.name, localEndpoints: h.localEndpoints },
        ]),
      );
      await this.health.setHealthChecks(this.healthChecks);
    }
    if (!this.network) this.network = await readNodeNetwork(this.workloadPrefixes);
    // Routes before the programs attach: a program that does not yet know this node's addresses
    // would miss its NodePorts (and leave them to the kernel, with nothing there to serve them).
    this.syncRoutes(dp);
    this.syncInterfaces(dp);
    this.syncPolicy(dp);
    if (full) await this.cleanKubeProxy();
    this.syncedRevision = revision;
    this.firstSyncDone = true;
    this.state.ready = true;
    this.state.lastSyncMs = Date.now();
    this.metrics.syncSeconds.observe((performance.now() - started) / 1000);
    this.writeStatus();
    if (r.frontendsWritten || r.frontendsDeleted || r.backendsWritten || r.backendsDeleted) {
      this.log.debug({ ...r, removedBackends: r.removedBackends.length }, 'NAT maps updated');
    }
  }

  /** Each Service port or frontend that does not fit is an error once, and again after it fitted. */
  private reportMapFull(r: FlushResult): void {
    const now = new Map<string, { field: string; message: string }>();
    for (const f of r.backendMapFull)
      now.set(f.group, {
        field: 'bpfMapSizeNATBackend',
        message: `its ${f.backends} backends do not fit in the NAT backend map (${f.capacity} entries, full)`,
      });
    for (const f of r.frontendMapFull)
      now.set(f.key, {
        field: 'bpfMapSizeNATFrontend',
        message: `its frontend does not fit in the NAT frontend map (${f.capacity} entries, full)`,
      });
    for (const [what, e] of now) {
      if (this.mapFull.has(what)) continue;
      this.metrics.errors.inc({ kind: 'Service' });
      this.log.error(
        { object: `Service ${what}`, field: e.field },
        `Service ${what}: ${e.message}: it is left as it was; raise ${e.field} in FelixConfiguration`,
      );
    }
    for (const what of this.mapFull.keys())
      if (!now.has(what)) this.log.info({ object: `Service ${what}` }, 'programmed now');
    this.mapFull = new Map([...now].map(([what, e]) => [what, e.field]));
  }

  /** What the lab shows as the agent's health. */
  status(): object {
    return {
      pid: process.pid,
      node: this.opts.nodeName,
      ready: this.state.ready,
      bpfEnabled: this.cfg.bpfEnabled,
      externalServiceMode: this.cfg.bpfExternalServiceMode,
      dsr: this.datapath?.config.dsr ?? false,
      lastSyncMs: this.state.lastSyncMs,
      revision: this.watch?.resourceVersion,
      /** The datastore revision the datapath reflects (the last completed sync's). */
      syncedRevision: this.syncedRevision,
      frontends: this.writer?.frontendEntries ?? 0,
      // what the log's map-full errors say, where `sluice lab status` and an operator look first
      ...(this.mapFull.size > 0
        ? {
            mapFull: {
              servicePorts: this.mapFull.size,
              fields: [...new Set(this.mapFull.values())].sort(),
              examples: [...this.mapFull.keys()].slice(0, 3),
            },
          }
        : {}),
      interfaces: [...this.attached.entries()].map(([name, a]) => `${name}:${a.role}`),
      mode: this.datapath?.mode,
    };
  }

  private writeStatus(): void {
    if (!this.opts.statusFile) return;
    try {
      const tmp = `${this.opts.statusFile}.tmp`;
      writeFileSync(tmp, JSON.stringify(this.status()) + '\n');
      renameSync(tmp, this.opts.statusFile);
    } catch (err) {
      this.log.warn({ err }, 'writing the status file failed');
    }
  }

  private get workloadPrefixes(): string[] {
    return this.opts.workloadPrefixes ?? ['slw', 'cali'];
  }

  /** `ip monitor` reports link and route changes as they happen: a new pod is attached at once. */
  private watchNetwork(): void {
    const mon = spawn('ip', ['monitor', 'link', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.monitor = mon;
    let pending: NodeJS.Timeout | undefined;
    mon.stdout.on('data', () => {
      if (pending) return;
      pending = setTimeout(() => {
        pending = undefined;
        void this.pollInterfaces();
      }, 20);
    });
    mon.on('error', (err) => this.log.warn({ err }, 'ip monitor failed; polling only'));
  }

  private monitor: ChildProcess | undefined;

  private async pollInterfaces(): Promise<void> {
    if (this.stopped || (!this.datapath && this.cfg.bpfEnabled)) return;
    try {
      const net = await readNodeNetwork(this.workloadPrefixes);
      const before = JSON.stringify(this.network);
      this.network = net;
      if (JSON.stringify(net) !== before) this.scheduleSync();
    } catch (err) {
      this.log.warn({ err }, 'reading the node network failed');
    }
  }

  private syncInterfaces(dp: NodeDatapath): void {
    const net = this.network!;
    const pattern = this.cfg.bpfDataIfacePattern;
    const workloads = new Set(net.workloadRoutes.map((r) => r.ifname));
    const want = new Map<string, { ifindex: number; role: InterfaceRole }>();
    for (const i of net.interfaces) {
      if (workloads.has(i.name) || this.workloadPrefixes.some((p) => i.name.startsWith(p)))
        want.set(i.name, { ifindex: i.ifindex, role: 'workload' });
      else if (OVERLAY_DEVICE.test(i.name)) want.set(i.name, { ifindex: i.ifindex, role: 'overlay' });
      else if (pattern.test(i.name)) want.set(i.name, { ifindex: i.ifindex, role: 'host' });
    }
    for (const [name, a] of want) {
      const have = this.attached.get(name);
      if (have && have.ifindex === a.ifindex && have.role === a.role) continue;
      try {
        dp.attach(name, a.ifindex, a.role);
        this.attached.set(name, a);
        this.log.info({ iface: name, ifindex: a.ifindex, role: a.role, mode: dp.mode }, 'programs attached');
      } catch (err) {
        this.log.error({ err, iface: name }, 'attaching programs failed');
      }
    }
    for (const name of [...this.attached.keys()]) {
      if (want.has(name)) continue;
      dp.detach(name);
      this.attached.delete(name);
      this.log.info({ iface: name }, 'programs detached (interface gone)');
    }
    // Links a previous agent pinned for interfaces that no longer exist.
    for (const name of dp.pinnedInterfaces()) if (!want.has(name) && !this.attached.has(name)) dp.dropPinned(name);
  }

  private syncRoutes(dp: NodeDatapath): void {
    const want = new Map<string, [RouteKey, Route]>();
    const add = (cidr: string, flags: number, ifindex = 0, nextHop = '0.0.0.0') => {
      const k = cidrKey(cidr);
      const id = routeId(k);
      const prev = want.get(id);
      want.set(id, [
        k,
        {
          flags: (prev?.[1].flags ?? 0) | flags,
          ifindex: ifindex || prev?.[1].ifindex || 0,
          nextHop: nextHop !== '0.0.0.0' ? nextHop : (prev?.[1].nextHop ?? nextHop),
        },
      ]);
    };
    for (const [name, n] of this.nodes) {
      const self = name === this.opts.nodeName;
      if (n.ip) add(`${n.ip}/32`, self ? RouteFlags.LOCAL_HOST : RouteFlags.REMOTE_HOST);
      for (const c of n.podCidrs)
        add(
          c,
          self ? RouteFlags.IN_POOL : RouteFlags.REMOTE_WL | RouteFlags.IN_POOL | RouteFlags.TUNNELED,
          0,
          self ? '0.0.0.0' : (n.ip ?? '0.0.0.0'),
        );
    }
    for (const a of this.network!.addresses) add(`${a.addr}/32`, RouteFlags.LOCAL_HOST);
    for (const w of this.network!.workloadRoutes)
      add(`${w.addr}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, w.ifindex);
    const writes: [RouteKey, Route][] = [];
    for (const [id, e] of want) {
      const cur = this.routesInMap.get(id);
      if (!cur || !sameRoute(cur[1], e[1])) writes.push(e);
    }
    const deletes = [...this.routesInMap].filter(([id]) => !want.has(id)).map(([, e]) => e[0]);
    if (writes.length) dp.routes.setMany(writes);
    if (deletes.length) dp.routes.deleteMany(deletes);
    this.routesInMap = want;
  }

  private kubeProxyCleaner: KubeProxyCleaner | undefined;

  /** bpfKubeProxyIptablesCleanupEnabled: kube-proxy's rules go once Sluice serves Services. */
  private async cleanKubeProxy(): Promise<void> {
    if (this.stopped || !this.datapath || !this.cfg.bpfKubeProxyIptablesCleanupEnabled) return;
    try {
      this.kubeProxyCleaner ??= new KubeProxyCleaner(this.log);
      await this.kubeProxyCleaner.tick();
    } catch (err) {
      this.log.warn({ err }, "removing kube-proxy's rules failed");
    }
  }

  private scanConntrack(): void {
    if (this.stopped || !this.datapath) return;
    try {
      const r = scanConntrack(this.datapath.conntrack, resolveConntrackTimeouts(this.cfg));
      this.metrics.conntrackEntries.set(r.scanned - r.expired);
      this.metrics.mapEntries.set({ map: CT_MAP }, r.scanned - r.expired);
      this.metrics.conntrackExpired.inc(r.expired);
    } catch (err) {
      this.log.warn({ err }, 'conntrack scan failed');
    }
  }

  /** On a scrape: the packet counters of every attached hook. */
  private readPackets(): void {
    const dp = this.datapath;
    if (this.stopped || !dp) return;
    try {
      for (const row of readCounters(dp.tc.map(COUNTERS_MAP))) {
        for (const [name, value] of Object.entries(row.counters))
          this.metrics.packets.set({ hook: `${row.ifindex}/${row.hook}`, counter: name }, value);
      }
    } catch (err) {
      this.log.warn({ err }, 'reading the packet counters failed');
    }
  }

  /**
   * On a scrape: the maps this agent alone writes are counted from what it wrote; the affinity map,
   * which the datapath fills, is read in batches; conntrack is counted by its scan.
   */
  private readMapEntries(): void {
    const dp = this.datapath;
    if (this.stopped || !dp) return;
    this.metrics.mapEntries.set({ map: ROUTES_MAP }, this.routesInMap.size);
    if (this.writer) {
      this.metrics.mapEntries.set({ map: NAT_FE_MAP }, this.writer.frontendEntries);
      this.metrics.mapEntries.set({ map: NAT_BE_MAP }, this.writer.backendEntries);
    }
    try {
      this.metrics.mapEntries.set({ map: NAT_AFF_MAP }, dp.tc.map(NAT_AFF_MAP).count());
    } catch (err) {
      this.log.warn({ err }, 'counting the affinity map failed');
    }
  }
}
