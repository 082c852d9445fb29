// A node of the Service datapath simulated with BPF_PROG_TEST_RUN: the real tc programs loaded
// with the node's constants and private maps. Tests pass a packet from one node's program to the
// next to follow its journey across nodes without a network.
import { loadObjectFile } from '../bpf/spec.js';
import { Collection } from '../bpf/collection.js';
import { runPacket, type PacketRun, type SkbContext } from '../bpf/test-run.js';
import { bpfObjectPath } from '../paths.js';
import { natMaps, type NatMaps } from '../datapath/nat.js';
import { writeFrontend, type FrontendSpec } from '../datapath/service-entries.js';
import { routesMap, cidrKey, RouteFlags } from '../datapath/routes.js';
import { ctMap } from '../datapath/conntrack.js';
import { CT_MAP, ROUTES_MAP } from '../datapath/index.js';
import { ipv4Constant } from '../bpf/codec.js';

export type Role = 'from_wep' | 'to_wep' | 'from_hep' | 'to_hep';

export type SimService = FrontendSpec;

export class SimNode {
  readonly coll: Collection;
  readonly nat: NatMaps;

  constructor(
    readonly hostIp: string,
    opts: { dsr?: boolean; fibRedirect?: boolean; tunnelMtu?: number } = {},
  ) {
    this.coll = Collection.load(loadObjectFile(bpfObjectPath('tc')), {
      constants: {
        sl_host_ip: ipv4Constant(hostIp),
        sl_dsr: opts.dsr ? 1 : 0,
        // Test-run has no real devices to redirect to: the programs hand packets to "the kernel".
        sl_fib_redirect: opts.fibRedirect ? 1 : 0,
        sl_tunnel_mtu: opts.tunnelMtu ?? 1450,
      },
    });
    this.nat = natMaps(this.coll);
    this.route(`${hostIp}/32`, RouteFlags.LOCAL_HOST);
  }

  get routes() {
    return routesMap(this.coll.map(ROUTES_MAP));
  }

  get conntrack() {
    return ctMap(this.coll.map(CT_MAP));
  }

  route(cidr: string, flags: number, opts: { ifindex?: number; nextHop?: string } = {}): void {
    this.routes.set(cidrKey(cidr), { flags, ifindex: opts.ifindex ?? 0, nextHop: opts.nextHop ?? '0.0.0.0' });
  }

  service(s: SimService): void {
    writeFrontend(this.nat, s);
  }

  run(role: Role, frame: Buffer, ctx?: SkbContext): PacketRun {
    return runPacket(this.coll.program(`sl_${role}`), frame, { ctx, watch: [this.coll.map(CT_MAP)] });
  }

  close(): void {
    this.coll.close();
  }
}
