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
import { labClusterConfig, pickLoadBalancerIp } from '../resources.js';
import type { EndpointSlice, Service } from '../store.js';
import type { Topology } from '../topology.js';
import type { KubeApi } from './api.js';

const key = (o: { metadata?: { namespace?: string; name?: string } }): string =>
  `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

const ingressIp = (s: Service): string | undefined => s.status?.loadBalancer?.ingress?.[0]?.ip;

/** A Service this controller acts for: one that needs an address or a route from the outside. */
const external = (s: Service): boolean => s.spec?.type === 'LoadBalancer' || (s.spec?.externalIPs?.length ?? 0) > 0;

const sliceService = (sl: EndpointSlice): string =>
  `${sl.metadata?.namespace ?? ''}/${sl.metadata?.labels?.['kubernetes.io/service-name'] ?? ''}`;

export class KubeServiceLoadBalancer {
  /**
   * Only the external Services: a benchmark's 30,000 ClusterIP Services and their slices then cost
   * a map lookup each, where a pass over all of them per event took most of a core.
   */
  private readonly services = new Map<string, Service>();
  private readonly slices = new Map<string, EndpointSlice>();
  private datastore?: KubernetesDatastore;
  private watch?: Watch;
  private busy = false;
  private again = false;
  private stopped = false;
  private readonly pool: string;
  private readonly reserved: Set<string>;

  constructor(
    private readonly topo: Topology,
    private readonly api: KubeApi,
    private readonly kc: KubeConfig,
    private readonly log: (m: string) => void,
  ) {
    const cfg = labClusterConfig(topo);
    this.pool = cfg.lbPool;
    this.reserved = new Set(cfg.reserved);
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
    if (ev.kind === 'Service') {
      const s = ev.object as Service;
      const k = key(s);
      const was = this.services.delete(k);
      if (ev.type !== 'DELETED' && external(s)) this.services.set(k, s);
      if (was || this.services.has(k)) this.kick();
      return;
    }
    const sl = ev.object as EndpointSlice;
    if (ev.type === 'DELETED') this.slices.delete(key(sl));
    else this.slices.set(key(sl), sl);
    if (this.services.has(sliceService(sl))) this.kick();
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
    const used = new Map<string, string>();
    for (const sv of this.services.values()) {
      const ip = ingressIp(sv);
      if (ip) used.set(ip, key(sv));
    }
    for (const sv of this.services.values()) {
      if (sv.spec?.type !== 'LoadBalancer' || sv.spec.loadBalancerClass || ingressIp(sv)) continue;
      const picked = pickLoadBalancerIp(this.pool, used, this.reserved, sv.spec.loadBalancerIP);
      if (!('ip' in picked)) {
        this.log(`service ${key(sv)}: ${picked.field}: ${picked.problem}`);
        continue;
      }
      used.set(picked.ip, key(sv));
      await this.api.patch(`/api/v1/namespaces/${sv.metadata?.namespace}/services/${sv.metadata?.name}/status`, {
        status: { loadBalancer: { ingress: [{ ip: picked.ip, ipMode: 'VIP' }] } },
      });
      this.log(`service ${key(sv)}: LoadBalancer ingress ${picked.ip}`);
    }
    // the slices are kept for every Service (one may become external later); only these are read
    const want = wantedExternalRoutes(this.topo, [...this.services.values()], (ns, name) =>
      [...this.slices.values()].filter((sl) => isSliceOf(sl, ns, name)),
    );
    await applyExternalRoutes(this.topo, want, this.log);
  }
}
