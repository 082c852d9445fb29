// The same client traffic through a ClusterIP and a NodePort with each of the lab's Service
// proxies: a REAL kube-proxy (the DaemonSet `sluice lab up --kubernetes --proxy ...` installs, run
// by the lab kubelet in each node's namespace) in iptables mode and in nftables mode, with
// Sluice's agents off (--no-sluice), and Sluice itself (--proxy sluice). One 2-node lab at a
// time, the same workload each time: a backend on node2, a client pod on node1, the external
// client asking node1 (no local backend) for the NodePort.
//
// Needs root and the Kubernetes binaries (`npm run build:kubernetes`); without the binaries it
// skips with a message, unless SLUICE_REQUIRE_KUBERNETES=1 (then it fails).
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { askEchoIn } from '../../src/lab/echo.js';
import type { ProxyMode } from '../../src/lab/kubernetes/kube-proxy.js';
import { kubeLabPossible, kubeLabReady, labKubectl, run, sluice } from './kube-lab.js';

const LAB = 'tkp';
const TOOLS = ['ip', 'bridge', 'nsenter', 'ethtool', 'sh', 'bash', 'openssl', 'iptables-save', 'nft'];

const APP = `apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: node2
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: sluice
    command: [sluice, echo, server, --name, web, --tcp, '8080', --udp, '8081']
    ports: [{name: tcp, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]
    readinessProbe: {tcpSocket: {port: tcp}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: sluice, command: [sleep, '3600']}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: tcp, port: 80, targetPort: tcp, nodePort: 30080}
  - {name: udp, port: 53, protocol: UDP, targetPort: udp, nodePort: 30053}
`;

async function kubectl(args: string[]): Promise<string> {
  return labKubectl(LAB, args);
}

const ready = (t: TestContext): boolean => kubeLabReady(t, TOOLS);

let tmp = '';
before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-kp-'));
  fs.writeFileSync(path.join(tmp, 'app.yaml'), APP);
  if (kubeLabPossible(TOOLS)) await sluice(['lab', 'down', '--name', LAB]);
});

after(async () => {
  if (kubeLabPossible(TOOLS)) await sluice(['lab', 'down', '--name', LAB]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** What each node's tables hold that says who serves Services. */
async function dataplaneOf(node: string): Promise<{ iptables: boolean; nftables: boolean; agent: boolean }> {
  const ns = `sl-${LAB}-${node}`;
  const ipt = await run('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'nat']);
  const nft = await run('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables']);
  let agent = false;
  try {
    agent = fs.existsSync(`/run/sluice/lab-${LAB}/agents/${node}.json`);
  } catch {
    // none
  }
  return {
    iptables: /-A KUBE-SERVICES /.test(ipt.stdout),
    nftables: /table ip kube-proxy/.test(nft.stdout),
    agent,
  };
}

for (const proxy of ['kube-proxy-iptables', 'kube-proxy-nftables', 'sluice'] as ProxyMode[]) {
  test(`${proxy}: pod -> ClusterIP (TCP, UDP) and external -> NodePort through a node without a backend`, async (t) => {
    if (!ready(t)) return;
    const up = await sluice([
      'lab',
      'up',
      '--kubernetes',
      '--nodes',
      '2',
      '--proxy',
      proxy,
      ...(proxy === 'sluice' ? [] : ['--no-sluice']),
      '--name',
      LAB,
      '-f',
      path.join(tmp, 'app.yaml'),
    ]);
    try {
      assert.equal(up.code, 0, up.stdout + up.stderr);
      const status = JSON.parse((await sluice(['lab', 'status', '--name', LAB, '-o', 'json'])).stdout) as {
        kubernetes: { proxy: string };
      };
      assert.equal(status.kubernetes.proxy, proxy === 'sluice' ? 'sluice' : `${proxy} (no Sluice)`);
      const dp = await dataplaneOf('node1');
      assert.deepEqual(dp, {
        iptables: proxy === 'kube-proxy-iptables',
        nftables: proxy === 'kube-proxy-nftables',
        agent: proxy === 'sluice',
      });
      const clusterIp = (await kubectl(['get', 'svc', 'web', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
      const clientIp = (await kubectl(['get', 'pod', 'client', '-o', 'jsonpath={.status.podIP}'])).trim();
      const client = `sl-${LAB}-p-client`;
      // kube-proxy's rules can trail the pod's readiness by a sync: the first answer may take a moment
      const ask = async (ns: string, proto: 'tcp' | 'udp', ip: string, port: number) => {
        const deadline = Date.now() + 15_000;
        for (;;) {
          const r = await askEchoIn(ns, proto, ip, port, { timeoutMs: 2000 });
          if (r.ok || Date.now() > deadline) return r;
          await new Promise((res) => setTimeout(res, 300));
        }
      };
      const tcp = await ask(client, 'tcp', clusterIp, 80);
      assert.ok(tcp.ok, `ClusterIP tcp: ${tcp.error}`);
      assert.equal(tcp.name, 'web');
      assert.equal(tcp.client?.split(':')[0], clientIp, 'pod -> ClusterIP keeps the client address');
      const udp = await ask(client, 'udp', clusterIp, 53);
      assert.ok(udp.ok, `ClusterIP udp: ${udp.error}`);
      assert.equal(udp.client?.split(':')[0], clientIp);
      const np = await ask(`sl-${LAB}-ext`, 'tcp', '192.168.77.11', 30080);
      assert.ok(np.ok, `NodePort: ${np.error}`);
      assert.equal(np.name, 'web');
      const npUdp = await ask(`sl-${LAB}-ext`, 'udp', '192.168.77.11', 30053);
      assert.ok(npUdp.ok, `NodePort udp: ${npUdp.error}`);
      // kube-proxy masquerades traffic it forwards to another node (externalTrafficPolicy:
      // Cluster); Sluice forwards it over the tunnel with the client's address intact
      const seen = np.client?.split(':')[0];
      if (proxy === 'sluice') assert.equal(seen, '192.168.77.200', 'Sluice keeps the external client address');
      else assert.notEqual(seen, '192.168.77.200', `kube-proxy SNATs the forwarded NodePort flow (${seen})`);
      t.diagnostic(`${proxy}: the backend saw the NodePort client as ${seen}`);
    } finally {
      const down = await sluice(['lab', 'down', '--name', LAB]);
      assert.equal(down.code, 0, down.stderr);
    }
  });
}
