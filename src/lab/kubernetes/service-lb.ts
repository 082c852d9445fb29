// The lab's load-balancer controller for a real API server, run by the lab kubelet: what a cloud
// controller (or MetalLB) does for a cluster. kube-controller-manager assigns no LoadBalancer
// addresses, so without this a LoadBalancer Service stays <pending>.
//   - a LoadBalancer Service without loadBalancerClass gets status.loadBalancer.ingress from the
//     lab's pool (its spec.loadBalancerIP when that is in the pool and free), written through
//     services/status;
//   - the external client's routes to ingress IPs and externalIPs follow the Services and their
//     EndpointSlices (external-routes.ts, as in the file-store lab).
import { KubernetesDatastore } from '../../agent/datastore/kubernetes.js';
import type { DatastoreLogger, Watch, WatchEvent } from '../../agent/datastore/types.js';
import type { KubeConfig } from '@kubernetes/client-node';
import { applyExternalRoutes, wantedExternalRoutes } from '../external-routes.js';
import { isSliceOf } from '../endpointslices.js';
import { defaultClusterConfig, formatIpv4, parseCidr, parseIpv4 } from '../resources.js';
import type { EndpointSlice, Service } from '../store.js';
import type { Topology } from '../topology.js';
import type { KubeApi } from './api.js';

const key = (o: { metadata?: { namespace?: string; name?: string } }): string =>
  `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

const ingressIp = (s: Service): string | undefined => s.status?.loadBalancer?.ingress?.[0]?.ip;

export class KubeServiceLoadBalancer {
  private readonly services = new Map<string, Service>();
  private readonly slices = new Map<string, EndpointSlice>();
  private datastore?: KubernetesDatastore;
  private watch?: Watch;
  private busy = false;
  private again = false;
  private stopped = false;
  private readonly pool: { base: number; size: number };
  private readonly reserved: Set<string>;

  constructor(
    private readonly topo: Topology,
    private readonly api: KubeApi,
    private readonly kc: KubeConfig,
    private readonly log: (m: string) => void,
  ) {
    const reserved = [...topo.nodes.map((n) => n.ip), ...(topo.external ? [topo.external.ip] : [])];
    const cfg = defaultClusterConfig(
      topo.nodes.map((n) => n.name),
      topo.underlay,
      reserved,
    );
    const pool = parseCidr(cfg.lbPool);
    if (!pool) throw new Error(`bad LoadBalancer pool ${cfg.lbPool}`);
    this.pool = pool;
    this.reserved = new Set(reserved);
  }

  async start(): Promise<void> {
    const logger: DatastoreLogger = {
      debug: () => undefined,
      info: () => undefined,
      warn: (_o, m) => this.log(`warning: ${m}`),
      error: (_o, m) => this.log(`error: ${m}`),
    };
    this.datastore = new KubernetesDatastore({ kubeConfig: this.kc, logger });
    this.watch = this.datastore.watch(['Service', 'EndpointSlice'], (ev) => this.onEvent(ev), {
      onError: (err) => this.log(`watch services: ${err.message}`),
    });
    await this.watch.synced;
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.stop();
    await this.datastore?.close();
  }

  private onEvent(ev: WatchEvent): void {
    const map = (ev.kind === 'Service' ? this.services : this.slices) as Map<string, unknown>;
    if (ev.type === 'DELETED') map.delete(key(ev.object as Service));
    else map.set(key(ev.object as Service), ev.object);
    this.kick();
  }

  private kick(): void {
    if (this.stopped) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    void (async () => {
      try {
        do {
          this.again = false;
          await this.sync();
        } while (this.again && !this.stopped);
      } catch (err) {
        this.log(`load balancer: ${(err as Error).message}; retrying`);
        setTimeout(() => this.kick(), 1000).unref();
      } finally {
        this.busy = false;
      }
    })();
  }

  private async sync(): Promise<void> {
    const used = new Set<string>();
    for (const s of this.services.values()) {
      const ip = ingressIp(s);
      if (ip) used.add(ip);
    }
    for (const s of this.services.values()) {
      if (s.spec?.type !== 'LoadBalancer' || s.spec.loadBalancerClass || ingressIp(s)) continue;
      const ip = this.pick(s, used);
      if (!ip) {
        this.log(`service ${key(s)}: no free address in the LoadBalancer pool`);
        continue;
      }
      used.add(ip);
      await this.api.patch(`/api/v1/namespaces/${s.metadata?.namespace}/services/${s.metadata?.name}/status`, {
        status: { loadBalancer: { ingress: [{ ip, ipMode: 'VIP' }] } },
      });
      this.log(`service ${key(s)}: LoadBalancer ingress ${ip}`);
    }
    const want = wantedExternalRoutes(this.topo, [...this.services.values()], (ns, name) =>
      [...this.slices.values()].filter((sl) => isSliceOf(sl, ns, name)),
    );
    await applyExternalRoutes(this.topo, want, this.log);
  }

  private pick(s: Service, used: Set<string>): string | undefined {
    const inPool = (ip: string): boolean => {
      const n = parseIpv4(ip);
      return n !== undefined && n > this.pool.base && n < this.pool.base + this.pool.size - 1;
    };
    const asked = s.spec?.loadBalancerIP;
    if (asked) return inPool(asked) && !used.has(asked) ? asked : undefined;
    for (let n = this.pool.base + 1; n < this.pool.base + this.pool.size - 1; n++) {
      const ip = formatIpv4(n);
      if (!used.has(ip) && !this.reserved.has(ip)) return ip;
    }
    return undefined;
  }
}
