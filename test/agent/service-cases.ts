// The agent's Service tests, against a lab's own store (agent-lab.test.ts) or a real API server
// (agent-kubernetes.test.ts): Services of every kind applied as Kubernetes objects reach the maps
// and answer real traffic; endpoint changes follow; a SIGKILL of an agent under continuous
// traffic breaks nothing; FelixConfiguration changes (DSR, map sizes, rollback) apply live.
// The fixture is test/agent/fixtures/services.yaml; the backend says how objects are read and
// written.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { agentStatusPath, labPinRoot } from '../../src/lab/lab.js';
import { Topology } from '../../src/lab/topology.js';
import { tcpAsk, udpAsk } from '../../src/lab/echo.js';
import type { EndpointSlice, Pod, Service } from '../../src/lab/store.js';
import { packageRoot } from '../../src/paths.js';

const run = promisify(execFile);
export const SERVICES_FIXTURE = path.join(packageRoot, 'test', 'agent', 'fixtures', 'services.yaml');

/** A lab pod's network: its namespace, address and the host side of its veth. */
export interface LabPodNet {
  ns: string;
  ip: string;
  hostIfindex: number;
}

export interface ServiceBackend {
  lab: string;
  /** Whether the lab can run here (else the test skips, or fails under CI=true). */
  ready(t: TestContext): boolean;
  service(name: string): Promise<Service>;
  pods(): Promise<Pod[]>;
  deletePod(name: string): Promise<void>;
  slices(): Promise<EndpointSlice[]>;
  /** Replaces the default FelixConfiguration's spec. */
  felix(spec: Record<string, unknown>): Promise<void>;
  /** Applies a file; returns what was printed. */
  apply(file: string): Promise<string>;
  /** `lab up` again (it restarts agents that are gone); its exit code. */
  up(): Promise<number>;
  pod(name: string): LabPodNet;
}

export function defineServiceTests(b: ServiceBackend): void {
  // read when used: the lab is made by the test file's own before hook
  const topo = (): Topology => Topology.open(b.lab)!;
  const clientNs = () => b.pod('client').ns;

  /** Continuous TCP and UDP from the client pod to `ip` (traffic-loop.js) for `seconds`. */
  function trafficLoop(ip: string, seconds: number) {
    const script = path.join(packageRoot, 'dist', 'src', 'lab', 'traffic-loop.js');
    const args = ['--tcp', `${ip}:80`, '--udp', `${ip}:53`, '--seconds', String(seconds), '--interval-ms', '50'];
    return run('nsenter', [`--net=/run/netns/${clientNs()}`, process.execPath, script, ...args], { encoding: 'utf8' });
  }

  test('ClusterIP, multi-port and named target ports: TCP and UDP from a pod, client address preserved', async (t) => {
    if (!b.ready(t)) return;
    const web = await b.service('web');
    const ip = web.spec!.clusterIP!;
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const r = await tcpAsk(clientNs(), ip, 80);
      assert.ok(r.ok, r.error);
      assert.equal(r.client?.split(':')[0], b.pod('client').ip);
      seen.add(r.name!);
    }
    assert.ok(seen.size >= 2, `connections spread over backends (${[...seen].join(', ')})`);
    const u = await udpAsk(clientNs(), ip, 53);
    assert.ok(u.ok, u.error);
  });

  test('NodePort on every node IP and a LoadBalancer IP with externalTrafficPolicy Local, from outside', async (t) => {
    if (!b.ready(t)) return;
    const ext = topo().external!;
    for (const n of topo().nodes) {
      const r = await tcpAsk(topo().nsOf('ext'), n.ip, 30080);
      assert.ok(r.ok, `NodePort on ${n.name}: ${r.error}`);
      assert.equal(r.client?.split(':')[0], ext.ip, 'the backend sees the external client');
    }
    const u = await udpAsk(topo().nsOf('ext'), topo().nodes[1].ip, 30053);
    assert.ok(u.ok, `UDP NodePort: ${u.error}`);
    const lb = await b.service('web-lb');
    const lbIp = lb.status?.loadBalancer?.ingress?.[0]?.ip;
    assert.ok(lbIp, 'the lab assigned a LoadBalancer IP');
    const r = await tcpAsk(topo().nsOf('ext'), lbIp!, 80);
    assert.ok(r.ok, `LoadBalancer: ${r.error}`);
    assert.equal(r.client?.split(':')[0], ext.ip);
  });

  test("a node's own processes reach a ClusterIP (connect-time balancing via `lab exec node/...`)", async (t) => {
    if (!b.ready(t)) return;
    const web = await b.service('web');
    for (const proto of ['tcp', 'udp'] as const) {
      const port = proto === 'tcp' ? 80 : 53;
      const r = await run(
        process.execPath,
        [
          path.join(packageRoot, 'bin', 'sluice.js'),
          'lab',
          'exec',
          '--name',
          b.lab,
          'node/node2',
          '--',
          process.execPath,
          path.join(packageRoot, 'dist', 'src', 'lab', 'echo-main.js'),
          'client',
          `--${proto}`,
          `${web.spec!.clusterIP}:${port}`,
          '--timeout',
          '3000',
        ],
        { encoding: 'utf8' },
      );
      const res = JSON.parse(r.stdout.trim().split('\n')[0]) as { ok: boolean; error?: string; name?: string };
      assert.ok(res.ok, `${proto} from node2's namespace: ${res.error}`);
      assert.match(res.name ?? '', /^web-/);
    }
  });

  test('externalIPs and sessionAffinity ClientIP', async (t) => {
    if (!b.ready(t)) return;
    const sticky = await b.service('web-sticky');
    const names = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const r = await tcpAsk(clientNs(), sticky.spec!.clusterIP!, 80);
      assert.ok(r.ok, r.error);
      names.add(r.name!);
    }
    assert.equal(names.size, 1, 'one backend for every connection of one client');
    const r = await tcpAsk(clientNs(), '192.168.77.99', 8000);
    assert.ok(r.ok, `externalIP from a pod: ${r.error}`);
  });

  test("the maps follow the endpoints: a pod that goes is replaced in every node's maps", async (t) => {
    if (!b.ready(t)) return;
    const victim = (await b.pods()).find((p) => p.metadata?.labels?.app === 'web' && p.metadata.name !== 'web-pinned')!;
    await b.deletePod(victim.metadata!.name!);
    // The Deployment replaces the pod (possibly at the same address). Wait until every node's maps
    // hold exactly the ready endpoints of the Service's slices, the victim's among none.
    const readyIps = async () => {
      const ips = new Set<string>();
      for (const sl of await b.slices()) {
        if (sl.metadata?.labels?.['kubernetes.io/service-name'] !== 'web') continue;
        for (const e of sl.endpoints ?? []) {
          if (e.conditions?.ready && e.targetRef?.name !== victim.metadata!.name) ips.add(e.addresses[0]);
        }
      }
      return [...ips].sort();
    };
    const deadline = Date.now() + 30_000;
    for (;;) {
      const want = await readyIps();
      const web = await b.service('web');
      const dumps = await Promise.all(
        topo().nodes.map((n) =>
          run(
            'nsenter',
            [
              `--net=/run/netns/${n.ns}`,
              process.execPath,
              path.join(packageRoot, 'bin', 'sluice.js'),
              'bpf',
              'nat',
              'dump',
              '--pin-root',
              path.join(labPinRoot(b.lab), n.name),
              '-o',
              'json',
            ],
            { encoding: 'utf8' },
          ),
        ),
      );
      const match = dumps.every((d) => {
        const j = JSON.parse(d.stdout) as {
          frontends: { frontend: string; svcId: number }[];
          backends: { svcId: number; backend: string }[];
        };
        const fe = j.frontends.find((f) => f.frontend === `${web.spec!.clusterIP}:80/tcp`);
        const have = j.backends
          .filter((b) => b.svcId === fe?.svcId)
          .map((b) => b.backend.split(':')[0])
          .sort();
        return want.length === 4 && JSON.stringify(have) === JSON.stringify(want);
      });
      if (match) break;
      assert.ok(Date.now() < deadline, `every node's maps hold the ready endpoints (${want.join(', ')})`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const web = await b.service('web');
    for (let i = 0; i < 6; i++) {
      const r = await tcpAsk(clientNs(), web.spec!.clusterIP!, 80);
      assert.ok(r.ok, r.error);
      assert.notEqual(r.name, victim.metadata!.name);
    }
  });

  test('SIGKILL of an agent under continuous TCP and UDP traffic: no failed connection, no broken stream', async (t) => {
    if (!b.ready(t)) return;
    const web = await b.service('web');
    const ip = web.spec!.clusterIP!;
    const loop = trafficLoop(ip, 8);
    await new Promise((r) => setTimeout(r, 1500));
    const st = JSON.parse(readFileSync(agentStatusPath(b.lab, 'node1'), 'utf8')) as { pid: number };
    process.kill(st.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 2000));
    // `up` restarts agents that are gone; the new one adopts the pinned maps and links.
    assert.equal(await b.up(), 0);
    const after = JSON.parse(readFileSync(agentStatusPath(b.lab, 'node1'), 'utf8')) as { pid: number; ready: boolean };
    assert.notEqual(after.pid, st.pid);
    assert.ok(after.ready);
    const { stdout } = await loop;
    const totals = JSON.parse(stdout.trim()) as {
      newConnections: number;
      newFailures: number;
      streamBroken: boolean;
      udpQueries: number;
      udpFailures: number;
      streamMessages: number;
      errors: string[];
    };
    assert.ok(totals.newConnections > 100, `traffic ran (${JSON.stringify(totals)})`);
    assert.equal(totals.newFailures, 0, `no failed TCP connection (${totals.errors.join(', ')})`);
    assert.equal(totals.udpFailures, 0, `no failed UDP query (${totals.errors.join(', ')})`);
    assert.equal(totals.streamBroken, false, 'the long-lived stream survived');
  });

  test('bpfExternalServiceMode switches to DSR and back live, NodePort answering throughout', async (t) => {
    if (!b.ready(t)) return;
    const ext = topo().external!;
    const mode = (dsr: boolean) =>
      b.felix({
        bpfEnabled: true,
        bpfExternalServiceMode: dsr ? 'DSR' : 'Tunnel',
        bpfKubeProxyIptablesCleanupEnabled: false,
      });
    const waitAll = async (dsr: boolean) => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const all = topo().nodes.every(
          (n) => (JSON.parse(readFileSync(agentStatusPath(b.lab, n.name), 'utf8')) as { dsr: boolean }).dsr === dsr,
        );
        if (all) return;
        assert.ok(Date.now() < deadline, `every agent switched to ${dsr ? 'DSR' : 'Tunnel'}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    for (const dsr of [true, false]) {
      await mode(dsr);
      await waitAll(dsr);
      for (const n of topo().nodes) {
        const r = await tcpAsk(topo().nsOf('ext'), n.ip, 30080);
        assert.ok(r.ok, `NodePort on ${n.name} in ${dsr ? 'DSR' : 'Tunnel'} mode: ${r.error}`);
        assert.equal(r.client?.split(':')[0], ext.ip);
      }
    }
  });

  test('bpfMapSizeConntrack changed under traffic: maps resized with their entries, established flows kept', async (t) => {
    if (!b.ready(t)) return;
    const web = await b.service('web');
    const ip = web.spec!.clusterIP!;
    const loop = trafficLoop(ip, 5);
    await new Promise((r) => setTimeout(r, 1500));
    await b.felix({ bpfEnabled: true, bpfKubeProxyIptablesCleanupEnabled: false, bpfMapSizeConntrack: 600000 });
    const { BpfMap } = await import('../../src/bpf/map.js');
    const { withNetns } = await import('../../src/bpf/netns.js');
    const pin = path.join(labPinRoot(b.lab), 'node1', 'sl_ct_v1');
    const deadline = Date.now() + 15_000;
    for (;;) {
      const size = withNetns(topo().node(1).ns, () => {
        const m = BpfMap.openPinned(pin);
        try {
          return m.def.maxEntries;
        } finally {
          m.close();
        }
      });
      if (size === 600000) break;
      assert.ok(Date.now() < deadline, 'node1 resized its conntrack map');
      await new Promise((r) => setTimeout(r, 100));
    }
    const { stdout } = await loop;
    const totals = JSON.parse(stdout.trim()) as {
      newConnections: number;
      newFailures: number;
      streamBroken: boolean;
      udpFailures: number;
      errors: string[];
    };
    assert.ok(totals.newConnections > 50);
    // A resize is a restart-class change: programs swap interface by interface, and a connection
    // opened in that instant can meet a hook still on the old map. Established flows must survive
    // (their entries are copied); only a handful of new ones may fail, never a stream.
    assert.equal(totals.streamBroken, false, 'the established stream kept its conntrack entries');
    assert.ok(
      totals.newFailures <= 3,
      `at most a few new connections lost in the swap (${totals.newFailures}: ${totals.errors.join(', ')})`,
    );
    assert.ok(totals.udpFailures <= 3, `at most a few UDP queries lost in the swap (${totals.udpFailures})`);
  });

  test("internalTrafficPolicy Local, loadBalancerSourceRanges, another proxy's Service, publishNotReadyAddresses", async (t) => {
    if (!b.ready(t)) return;
    const podNode = new Map((await b.pods()).map((p) => [p.metadata!.name!, p.spec?.nodeName]));
    // ITP Local from a pod on node1: only node1's backends (web-pinned at least) answer.
    const itp = await b.service('web-itp');
    for (let i = 0; i < 6; i++) {
      const r = await tcpAsk(clientNs(), itp.spec!.clusterIP!, 80);
      assert.ok(r.ok, r.error);
      assert.equal(podNode.get(r.name!), 'node1', `${r.name} is on node1`);
    }
    // Source ranges that exclude the external client: its connections are dropped.
    const ranges = await b.service('web-ranges');
    const lbIp = ranges.status?.loadBalancer?.ingress?.[0]?.ip;
    assert.ok(lbIp);
    const denied = await tcpAsk(topo().nsOf('ext'), lbIp!, 81, { timeoutMs: 1500 });
    assert.equal(denied.ok, false, 'a source outside loadBalancerSourceRanges is not served');
    // A Service labelled for another proxy is left alone: its ClusterIP is not programmed.
    const other = await b.service('web-other-proxy');
    const r = await tcpAsk(clientNs(), other.spec!.clusterIP!, 80, { timeoutMs: 1500 });
    assert.equal(r.ok, false);
    // A pod that never becomes ready serves only through the Service that publishes not-ready
    // addresses.
    const applied = await b.apply(path.join(packageRoot, 'test', 'agent', 'fixtures', 'unready.yaml'));
    assert.match(applied, /service\/unready created/);
    const until = Date.now() + 20_000;
    let p = await tcpAsk(clientNs(), (await b.service('unready-published')).spec!.clusterIP!, 80, { timeoutMs: 1000 });
    while (!p.ok && Date.now() < until) {
      await new Promise((res) => setTimeout(res, 250));
      p = await tcpAsk(clientNs(), (await b.service('unready-published')).spec!.clusterIP!, 80, { timeoutMs: 1000 });
    }
    const pub = await b.service('unready-published');
    p = await tcpAsk(clientNs(), pub.spec!.clusterIP!, 80);
    assert.ok(p.ok, `publishNotReadyAddresses: ${p.error}`);
    assert.equal(p.name, 'unready');
    const hidden = await b.service('unready');
    const h = await tcpAsk(clientNs(), hidden.spec!.clusterIP!, 80, { timeoutMs: 1500 });
    assert.equal(h.ok, false, 'no ready endpoint: refused');
    assert.equal(h.error, 'ECONNREFUSED', 'a Service without endpoints rejects at once');
  });

  test('a NAT map too small: the agent keeps running, names the field in its status, and programs all once it fits', async (t) => {
    if (!b.ready(t)) return;
    type Status = {
      pid: number;
      ready: boolean;
      mapFull?: { servicePorts: number; fields: string[]; examples: string[] };
    };
    const status = (): Status => JSON.parse(readFileSync(agentStatusPath(b.lab, 'node1'), 'utf8')) as Status;
    const web = await b.service('web');
    const pid = status().pid;
    const base = { bpfEnabled: true, bpfKubeProxyIptablesCleanupEnabled: false };
    // One backend entry: every Service port with more than one backend cannot be written.
    await b.felix({ ...base, bpfMapSizeNATBackend: 1 });
    const deadline = Date.now() + 20_000;
    while (!status().mapFull) {
      assert.ok(Date.now() < deadline, 'node1 reported the full backend map in its status');
      await new Promise((r) => setTimeout(r, 100));
    }
    const full = status();
    assert.equal(full.pid, pid, 'the agent kept running');
    assert.equal(full.ready, true);
    assert.deepEqual(full.mapFull!.fields, ['bpfMapSizeNATBackend']);
    assert.ok(full.mapFull!.servicePorts >= 1);
    assert.match(full.mapFull!.examples[0], /^default\//, 'examples name the Service');
    const bin = path.join(packageRoot, 'bin', 'sluice.js');
    const shown = await run(process.execPath, [bin, 'lab', 'status', '--name', b.lab], { encoding: 'utf8' });
    assert.match(shown.stdout, /not programmed, a NAT map is full .*raise bpfMapSizeNATBackend in FelixConfiguration/);
    // Room again: everything is programmed and the error leaves the status.
    await b.felix(base);
    const until = Date.now() + 20_000;
    while (status().mapFull) {
      assert.ok(Date.now() < until, 'the status no longer reports a full map');
      await new Promise((r) => setTimeout(r, 100));
    }
    let ok = await tcpAsk(clientNs(), web.spec!.clusterIP!, 80, { timeoutMs: 1000 });
    while (!ok.ok && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 200));
      ok = await tcpAsk(clientNs(), web.spec!.clusterIP!, 80, { timeoutMs: 1000 });
    }
    assert.ok(ok.ok, `web answers once its backends fit: ${ok.error}`);
    assert.equal(status().pid, pid);
  });

  test('rollback: bpfEnabled false detaches every program and removes every pin; true programs again', async (t) => {
    if (!b.ready(t)) return;
    const { existsSync } = await import('node:fs');
    const { withNetns } = await import('../../src/bpf/netns.js');
    const { queryTcx } = await import('../../src/bpf/link.js');
    const felix = (enabled: boolean) => b.felix({ bpfEnabled: enabled, bpfKubeProxyIptablesCleanupEnabled: false });
    const web = await b.service('web');
    const client = b.pod('client');
    const programsOnClient = () =>
      withNetns(
        topo().node(1).ns,
        () =>
          queryTcx(client.hostIfindex, 'ingress').progIds.length +
          queryTcx(client.hostIfindex, 'egress').progIds.length,
      );
    assert.equal(programsOnClient(), 2);
    await felix(false);
    const deadline = Date.now() + 15_000;
    while (
      topo().nodes.some((n) => existsSync(path.join(labPinRoot(b.lab), n.name, 'sl_ct_v1'))) ||
      programsOnClient() > 0
    ) {
      assert.ok(Date.now() < deadline, 'every node rolled back');
      await new Promise((r) => setTimeout(r, 100));
    }
    // No kube-proxy in the lab: with Sluice gone, the ClusterIP leads nowhere.
    const off = await tcpAsk(clientNs(), web.spec!.clusterIP!, 80, { timeoutMs: 1000 });
    assert.equal(off.ok, false);
    await felix(true);
    const until = Date.now() + 15_000;
    let on = await tcpAsk(clientNs(), web.spec!.clusterIP!, 80, { timeoutMs: 1000 });
    while (!on.ok && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 200));
      on = await tcpAsk(clientNs(), web.spec!.clusterIP!, 80, { timeoutMs: 1000 });
    }
    assert.ok(on.ok, `enabled again: ${on.error}`);
    assert.equal(programsOnClient(), 2, 'one program per hook again');
  });
}
