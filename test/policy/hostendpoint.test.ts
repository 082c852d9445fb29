// Host endpoints in the lab: a HostEndpoint on node1's data interface, global policy selecting
// it, and the failsafe ports that no policy can close. Servers run in node1's own namespace; the
// external client asks them over the underlay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { labDown, labUp, agentStatusPath, labPinRoot } from '../../src/lab/lab.js';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { packageRoot } from '../../src/paths.js';
import { Topology } from '../../src/lab/topology.js';
import { FileStore } from '../../src/lab/store.js';
import { storeDir } from '../../src/lab/controller.js';
import { ECHO_MAIN, tcpAsk, waitEchoReady } from '../../src/lab/echo.js';
import { validateObject } from '../../src/lab/resources.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';

const LAB = 'thep';
const quiet = { out: () => undefined, err: (l: string) => process.stderr.write(l + '\n') };
let topo: Topology;
let store: FileStore;
const servers: ChildProcess[] = [];

async function programmed(): Promise<void> {
  store.refresh();
  const target = Number((await store.list('Pod')).resourceVersion);
  for (const deadline = Date.now() + 20_000; ;) {
    const behind = topo.nodes.filter((n) => {
      const st = JSON.parse(readFileSync(agentStatusPath(LAB, n.name), 'utf8')) as { syncedRevision?: string };
      return Number(st.syncedRevision ?? 0) < target;
    });
    if (behind.length === 0) return;
    if (Date.now() > deadline) throw new Error('agents did not catch up');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const node1 = () => topo.nodes[0]!;
async function reach(port: number, timeoutMs = 1500): Promise<boolean> {
  return (await tcpAsk(topo.nsOf('ext'), node1().ip, port, { timeoutMs })).ok;
}

before(async () => {
  if (privilegeProblem()) return;
  await labDown(LAB, quiet);
  assert.equal(await labUp({ name: LAB, nodes: 2, files: [], out: quiet }), 0, 'lab up');
  topo = Topology.open(LAB)!;
  store = await FileStore.open(storeDir(LAB), { create: false });
  for (const port of [22, 8080, 8081]) {
    const child = spawn(
      'nsenter',
      [
        `--net=/run/netns/${node1().ns}`,
        process.execPath,
        ECHO_MAIN,
        'server',
        '--name',
        `node1-${port}`,
        '--tcp',
        String(port),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    servers.push(child);
    await waitEchoReady(child);
  }
});

after(async () => {
  for (const s of servers) s.kill();
  store?.close();
  if (!privilegeProblem()) await labDown(LAB, quiet);
});

test('a HostEndpoint with policy: allowed port open, others closed, failsafe SSH open; removal restores', async (t) => {
  if (!requirePrivileges(t)) return;
  assert.deepEqual([await reach(22), await reach(8080), await reach(8081)], [true, true, true], 'before: all open');
  await store.apply(
    validateObject({
      apiVersion: 'projectcalico.org/v3',
      kind: 'HostEndpoint',
      metadata: { name: 'node1-eth0', labels: { role: 'node' } },
      spec: { node: 'node1', interfaceName: 'eth0', expectedIPs: [node1().ip] },
    }),
  );
  await store.apply(
    validateObject({
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'default.node-ingress' },
      spec: {
        selector: "role == 'node'",
        types: ['Ingress'],
        ingress: [
          {
            action: 'Allow',
            protocol: 'TCP',
            source: { nets: [`${topo.external!.ip}/32`] },
            destination: { ports: [8080] },
          },
        ],
      },
    }),
  );
  await programmed();
  assert.equal(await reach(8080), true, 'the policy allows 8080');
  assert.equal(await reach(8081, 600), false, 'no policy allows 8081: denied');
  assert.equal(await reach(22), true, 'failsafe inbound TCP 22');
  // What is enforced, read back from the pinned maps in node1's namespace.
  const dump = execFileSync(
    'nsenter',
    [
      `--net=/run/netns/${node1().ns}`,
      process.execPath,
      path.join(packageRoot, 'bin', 'sluice.js'),
      'bpf',
      'policy',
      'dump',
      'eth0',
      '--pin-root',
      path.join(labPinRoot(LAB), 'node1'),
    ],
    { encoding: 'utf8' },
  );
  t.diagnostic(dump);
  assert.match(dump, /eth0 \(ifindex \d+\): host endpoint \[host, in-policy, eg-policy\]/);
  assert.match(dump, /allow\s+proto tcp, dport 22\b/);
  assert.match(dump, /allow\s+proto tcp, src in set \d+, dport 8080\b/);
  assert.match(dump, /deny\s+any/);
  // Pods and Services on other nodes are not behind node1's host endpoint.
  assert.equal((await tcpAsk(topo.nsOf('ext'), topo.nodes[1]!.ip, 8081, { timeoutMs: 600 })).error, 'ECONNREFUSED');

  await store.delete('GlobalNetworkPolicy', undefined, 'default.node-ingress');
  await programmed();
  assert.equal(await reach(8080, 600), false, 'a host endpoint without policy denies (failsafes aside)');
  assert.equal(await reach(22), true, 'failsafe still open');

  await store.delete('HostEndpoint', undefined, 'node1-eth0');
  await programmed();
  assert.deepEqual([await reach(22), await reach(8080), await reach(8081)], [true, true, true], 'after: all open');
});
