// Sluice's Service datapath on every node of a lab topology, programmed directly (the agent will
// do this from Kubernetes objects): programs attached to pods' host veths and to eth0, routes
// describing the cluster, and Services written into each node's maps.
import path from 'node:path';
import { NodeDatapath, type AttachMode } from '../datapath/node.js';
import { cidrKey, RouteFlags } from '../datapath/routes.js';
import { writeFrontend, type FrontendSpec } from '../datapath/service-entries.js';
import { ensureBpffs, removePinDir } from '../bpf/bpffs.js';
import type { Topology } from '../lab/topology.js';

export interface LabBackend {
  pod: string;
  port: number;
}

export interface LabService {
  svcId: number;
  addr: string;
  port: number;
  proto: number;
  backends: LabBackend[];
  flags?: number;
  affinityTimeout?: number;
}

export class LabDatapath {
  readonly nodes: NodeDatapath[] = [];
  readonly pinBase: string;

  constructor(
    readonly topo: Topology,
    opts: { tag: string; dsr?: boolean; attachMode?: AttachMode },
  ) {
    this.pinBase = path.join(ensureBpffs(), `sluice-test-${opts.tag}-${process.pid}`);
    try {
      for (const n of topo.nodes) {
        this.nodes.push(
          NodeDatapath.load({
            pinRoot: path.join(this.pinBase, n.name),
            hostIp: n.ip,
            netns: n.ns,
            dsr: opts.dsr,
            attachMode: opts.attachMode,
          }),
        );
      }
      this.program();
    } catch (err) {
      this.close();
      throw err;
    }
  }

  private program(): void {
    this.topo.nodes.forEach((n, i) => {
      const dp = this.nodes[i];
      dp.attach('eth0', n.eth0Ifindex, 'host');
      const routes: [string, number, { ifindex?: number; nextHop?: string }][] = [];
      for (const other of this.topo.nodes) {
        const self = other.index === n.index;
        routes.push([`${other.ip}/32`, self ? RouteFlags.LOCAL_HOST : RouteFlags.REMOTE_HOST, {}]);
        routes.push([
          other.podCidr,
          self ? RouteFlags.IN_POOL : RouteFlags.REMOTE_WL | RouteFlags.IN_POOL | RouteFlags.TUNNELED,
          { nextHop: other.ip },
        ]);
      }
      for (const p of this.topo.podsOn(n.index)) {
        dp.attach(p.hostIf, p.hostIfindex, 'workload');
        routes.push([`${p.ip}/32`, RouteFlags.LOCAL_WL | RouteFlags.IN_POOL, { ifindex: p.hostIfindex }]);
      }
      dp.routes.setMany(
        routes.map(([cidr, flags, o]) => [
          cidrKey(cidr),
          { flags, ifindex: o.ifindex ?? 0, nextHop: o.nextHop ?? '0.0.0.0' },
        ]),
      );
    });
  }

  /** Writes a Service into every node's maps, marking the backends local to each node. */
  service(s: LabService): void {
    this.topo.nodes.forEach((n, i) => {
      const spec: FrontendSpec = {
        ...s,
        backends: s.backends.map((b) => {
          const pod = this.topo.pod(b.pod);
          return { addr: pod.ip, port: b.port, local: pod.node === n.index };
        }),
      };
      writeFrontend(this.nodes[i].nat, spec);
    });
  }

  /** Detaches everything and removes the pins. */
  close(): void {
    for (const dp of this.nodes) dp.close({ unpin: true });
    removePinDir(this.pinBase);
  }
}
