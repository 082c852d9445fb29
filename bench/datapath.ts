// Per-packet cost of the Service datapath, from BPF_PROG_TEST_RUN, against a program that only
// parses and passes (the same parser), measured in the same run.
//
// Established flows: test-run repeats on one packet, and a NAT rewrite changes it, so the bench
// plants two conntrack entries that translate into each other (VIP -> backend -> VIP ...): every
// repetition then takes the full established forward-NAT path, rewrite included. New flows differ
// in every packet, so they are timed one run at a time, against the baseline timed the same way.
import { Collection } from '../src/bpf/collection.js';
import { loadObjectFile } from '../src/bpf/spec.js';
import { bpfObjectPath } from '../src/paths.js';
import { SimNode } from '../src/testing/sim-node.js';
import { Proto } from '../src/datapath/nat.js';
import { RouteFlags } from '../src/datapath/routes.js';
import { CtType, ctKeyOf, ctMap } from '../src/datapath/conntrack.js';
import { CT_MAP } from '../src/datapath/index.js';
import { eth, frame, ipv4, tcp, payload } from '../src/packet/index.js';
import type { Program } from '../src/bpf/program.js';
import { median } from './stats.js';

export interface PacketCost {
  repeat: number;
  parsePassNs: number;
  establishedNatNs: number;
  establishedOverBaseline: number;
  /** Parse plus one conntrack lookup: what any conntrack-based datapath must at least do. */
  parseCtNs: number;
  parseCtOverBaseline: number;
  establishedOverParseCt: number;
  singleRuns: number;
  parsePassSingleNs: number;
  newFlowSingleNs: number;
  newFlowOverBaseline: number;
}

/** Median over rounds of the kernel's mean time per repetition. */
function repeated(prog: Program, data: Buffer, repeat: number, rounds = 7): number {
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) samples.push(prog.testRun({ data, repeat }).durationNs);
  return median(samples);
}

function single(prog: Program, frames: () => Buffer, runs: number): number {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) samples.push(prog.testRun({ data: frames() }).durationNs);
  return median(samples);
}

export function benchPacketCost(repeat = 100_000, runs = 20_000): PacketCost {
  const base = Collection.load(loadObjectFile(bpfObjectPath('bench/parse_pass')));
  const floor = Collection.load(loadObjectFile(bpfObjectPath('bench/parse_ct')));
  const node = new SimNode('192.168.77.11');
  try {
    node.route('10.65.2.0/24', RouteFlags.REMOTE_WL | RouteFlags.IN_POOL, { nextHop: '192.168.77.12' });
    node.service({
      svcId: 1,
      addr: '10.96.0.10',
      port: 80,
      proto: Proto.TCP,
      backends: [{ addr: '10.65.2.2', port: 8080 }],
    });
    const prog = node.coll.program('sl_from_wep');
    const basePass = base.program('sl_parse_pass');
    const client = '10.65.1.2';
    const established = frame(
      eth(),
      ipv4({ src: client, dst: '10.96.0.10' }),
      tcp({ sport: 40000, dport: 80, flags: 'A' }),
      payload(64),
    );
    const now = Number(process.hrtime.bigint());
    const entry = {
      createdNs: now,
      lastSeenNs: now,
      type: CtType.NAT_FWD,
      flags: 0,
      tcpA: 0,
      tcpB: 0,
      pol: 0,
      openerIsB: 0,
      tunIp: '0.0.0.0',
      snatAddr: '0.0.0.0',
      snatPort: 0,
    };
    const toBackend = ctKeyOf(client, 40000, '10.96.0.10', 80, Proto.TCP);
    const toVip = ctKeyOf(client, 40000, '10.65.2.2', 8080, Proto.TCP);
    node.conntrack.set(toBackend, {
      ...entry,
      openerIsB: toBackend.addrA === client ? 0 : 1,
      natAddr: '10.65.2.2',
      natPort: 8080,
    });
    ctMap(floor.map(CT_MAP)).set(toBackend, {
      ...entry,
      openerIsB: toBackend.addrA === client ? 0 : 1,
      natAddr: '10.65.2.2',
      natPort: 8080,
    });
    node.conntrack.set(toVip, {
      ...entry,
      openerIsB: toVip.addrA === client ? 0 : 1,
      natAddr: '10.96.0.10',
      natPort: 80,
    });
    const parsePassNs = repeated(basePass, established, repeat);
    const establishedNatNs = repeated(prog, established, repeat);
    const parseCtNs = repeated(floor.program('sl_parse_ct'), established, repeat);

    let sport = 1024;
    const newFlow = () =>
      frame(
        eth(),
        ipv4({ src: client, dst: '10.96.0.10' }),
        tcp({ sport: (sport = sport >= 65535 ? 1024 : sport + 1), dport: 80, flags: 'S' }),
        payload(64),
      );
    const parsePassSingleNs = single(basePass, () => established, runs);
    const newFlowSingleNs = single(prog, newFlow, runs);
    return {
      repeat,
      parsePassNs,
      establishedNatNs,
      establishedOverBaseline: establishedNatNs / parsePassNs,
      parseCtNs,
      parseCtOverBaseline: parseCtNs / parsePassNs,
      establishedOverParseCt: establishedNatNs / parseCtNs,
      singleRuns: runs,
      parsePassSingleNs,
      newFlowSingleNs,
      newFlowOverBaseline: newFlowSingleNs / parsePassSingleNs,
    };
  } finally {
    base.close();
    floor.close();
    node.close();
  }
}
