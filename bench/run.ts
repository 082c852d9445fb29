// `npm run bench`: runs the benchmarks, prints a summary and writes JSON to bench/results/.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../src/paths.js';
import { benchMapUpdates } from './map-updates.js';
import { benchPacketCost } from './datapath.js';
import { benchPolicy, policyReport } from './policy.js';
import type { AgentSyncResult } from './agent-sync.js';
import { agentNodeFlags } from '../src/agent/runtime.js';
import { execFileSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { benchThroughput } from './throughput.js';

const quick = process.argv.includes('--quick');
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

console.log(`sluice bench (${quick ? 'quick' : 'full'}) on ${os.release()}, ${os.cpus().length} CPUs`);
console.log('map updates from TypeScript (hash map, 8-byte keys, 16-byte values)...');
const mapUpdates = benchMapUpdates(quick ? 20_000 : 100_000, quick ? 3 : 7);
console.log(
  `  single update, one syscall each: ${fmt(mapUpdates.singlePerSec.median)}/s ` +
    `(min ${fmt(mapUpdates.singlePerSec.min)}, max ${fmt(mapUpdates.singlePerSec.max)})`,
);
console.log(
  `  batch update (4096 per call):     ${fmt(mapUpdates.batchPerSec.median)}/s ` +
    `(min ${fmt(mapUpdates.batchPerSec.min)}, max ${fmt(mapUpdates.batchPerSec.max)})`,
);
console.log(`  batch / single: ${mapUpdates.batchOverSingle.toFixed(2)}x`);
console.log(
  `  counting the ${fmt(mapUpdates.entries)} entries: key walk ${mapUpdates.countWalkMs.median.toFixed(0)} ms, ` +
    `batched count ${mapUpdates.countBatchMs.median.toFixed(0)} ms ` +
    `(${(mapUpdates.countWalkMs.median / mapUpdates.countBatchMs.median).toFixed(1)}x less time)`,
);
if (mapUpdates.c) {
  console.log(
    `  plain C in the same run: single ${fmt(mapUpdates.c.singlePerSec)}/s, batch ${fmt(mapUpdates.c.batchPerSec)}/s; ` +
      `TypeScript reaches ${(mapUpdates.singleOverC! * 100).toFixed(0)}% (single) and ` +
      `${(mapUpdates.batchOverC! * 100).toFixed(0)}% (batch) of C`,
  );
}

console.log(
  `control plane: ${quick ? '1,000' : '10,000'} Services x 10 endpoints into the maps, then 1,000 single-endpoint changes...`,
);
// In a process of its own, started the way the lab starts agents, so memory is the agent's.
const agentSync = JSON.parse(
  execFileSync(
    process.execPath,
    [
      ...agentNodeFlags(),
      '--expose-gc',
      '-e',
      `import('${pathToFileURL(path.join(packageRoot, 'dist', 'bench', 'agent-sync.js')).href}').then((m) => console.log(JSON.stringify(m.benchAgentSync(${quick ? 1000 : 10_000}, 10, 1000))))`,
    ],
    { encoding: 'utf8', maxBuffer: 1 << 20 },
  ),
) as AgentSyncResult;
console.log(
  `  initial sync: ${agentSync.initialSyncSeconds.toFixed(2)} s (${agentSync.frontends} frontends, ${agentSync.backends} backends)`,
);
console.log(
  `  one endpoint change, event to maps: p50 ${agentSync.changeMs.p50.toFixed(2)} ms, p99 ${agentSync.changeMs.p99.toFixed(2)} ms, max ${agentSync.changeMs.max.toFixed(2)} ms`,
);
console.log(
  `  memory: RSS ${agentSync.rssMB.toFixed(0)} MB, heap ${agentSync.heapMB.toFixed(0)} MB (the bench's own copies of the objects included)`,
);

console.log('per-packet cost from test-run (kernel-measured)...');
const packetCost = benchPacketCost(quick ? 20_000 : 200_000, quick ? 5_000 : 20_000);
console.log(`  parse and pass (baseline), per repetition:  ${packetCost.parsePassNs} ns`);
console.log(
  `  established NAT flow, per repetition:        ${packetCost.establishedNatNs} ns (${packetCost.establishedOverBaseline.toFixed(2)}x baseline)`,
);
console.log(
  `  parse + conntrack lookup (floor), per rep.:  ${packetCost.parseCtNs} ns (${packetCost.parseCtOverBaseline.toFixed(2)}x baseline; established is ${packetCost.establishedOverParseCt.toFixed(2)}x this floor)`,
);
console.log(`  parse and pass, single runs (median):       ${packetCost.parsePassSingleNs} ns`);
console.log(
  `  new flow, single runs (median):             ${packetCost.newFlowSingleNs} ns (${packetCost.newFlowOverBaseline.toFixed(2)}x baseline)`,
);

console.log(
  `network policy: new flows with 100${quick ? '' : ' and 1,000'} rules and a ${quick ? '1,000' : '10,000'}-member IP set, established flows, policy changes to the maps...`,
);
const policy = benchPolicy({ quick });
for (const line of policyReport(policy)) console.log(line);

console.log('TCP throughput, pod on node1 to pod on node2 over VXLAN (iperf3)...');
const throughput = [];
for (const streams of [1, 4]) {
  const t = await benchThroughput({
    seconds: quick ? 2 : 5,
    rounds: quick ? 1 : 3,
    streams,
    progress: (s) => console.log(s),
  });
  const g = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(', ');
  console.log(
    `  ${streams} stream(s): pod-to-pod ${g(t.podToPodGbps)} Gbit/s; through the ClusterIP ${g(t.clusterIpGbps)} Gbit/s`,
  );
  console.log(
    `  ${streams} stream(s): ClusterIP / pod-to-pod (medians): ${(t.clusterIpOverBaseline * 100).toFixed(1)}%`,
  );
  throughput.push(t);
}

const result = {
  date: new Date().toISOString(),
  kernel: os.release(),
  cpus: os.cpus().length,
  quick,
  mapUpdates,
  packetCost,
  policy,
  throughput,
};
const dir = path.join(packageRoot, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = path.join(dir, `bench-${quick ? 'quick' : 'full'}.json`);
writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
console.log(`results: ${path.relative(process.cwd(), file)}`);
