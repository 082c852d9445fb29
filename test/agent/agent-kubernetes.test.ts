// The node agent's Service tests (service-cases.ts) against a REAL API server: the lab is made with
// `--kubernetes`, the fixture is applied with kubectl, the real controllers make the Deployment's
// pods and the EndpointSlices, the lab kubelet runs the pods and gives LoadBalancer Services their
// addresses, and the agents (in-cluster, deploy/'s RBAC) read it all from kube-apiserver.
//
// Needs root and the Kubernetes binaries (`npm run build:kubernetes`); without the binaries it
// skips with a message, unless SLUICE_REQUIRE_KUBERNETES=1 (then it fails).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { labDown, labUp } from '../../src/lab/lab.js';
import { Topology } from '../../src/lab/topology.js';
import { findKubePod } from '../../src/lab/kubernetes/commands.js';
import type { EndpointSlice, Pod, Service } from '../../src/lab/store.js';
import { kubeLabPossible, kubeLabReady, labKubectl, run, BIN } from '../lab/kube-lab.js';
import { defineServiceTests, SERVICES_FIXTURE } from './service-cases.js';

const LAB = 'tagk8s';
const TOOLS = ['ip', 'bridge', 'nsenter', 'ethtool', 'sh', 'bash', 'openssl'];
const quiet = { out: () => undefined, err: (l: string) => process.stderr.write(l + '\n') };
const kubectl = (...args: string[]): Promise<string> => labKubectl(LAB, args);

before(async () => {
  if (!kubeLabPossible(TOOLS)) return;
  await labDown(LAB, quiet);
  const code = await labUp({ name: LAB, nodes: 3, kubernetes: true, files: [SERVICES_FIXTURE], out: quiet });
  assert.equal(code, 0, 'lab up --kubernetes');
});
after(async () => {
  if (kubeLabPossible(TOOLS)) await labDown(LAB, quiet);
});

defineServiceTests({
  lab: LAB,
  ready: (t) => kubeLabReady(t, TOOLS),
  async service(name) {
    return JSON.parse(await kubectl('get', 'service', name, '-o', 'json')) as Service;
  },
  async pods() {
    return (JSON.parse(await kubectl('get', 'pods', '-o', 'json')) as { items: Pod[] }).items;
  },
  async deletePod(name) {
    await kubectl('delete', 'pod', name, '--wait=false');
  },
  async slices() {
    return (JSON.parse(await kubectl('get', 'endpointslices', '-o', 'json')) as { items: EndpointSlice[] }).items;
  },
  async felix(spec) {
    const cur = JSON.parse(await kubectl('get', 'felixconfiguration', 'default', '-o', 'json')) as { spec: unknown };
    cur.spec = spec;
    await labKubectl(LAB, ['replace', '-f', '-'], JSON.stringify(cur));
  },
  async apply(file) {
    const r = await run(process.execPath, [BIN, 'lab', 'kubectl', '--name', LAB, '--', 'apply', '-f', file]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  },
  up: () => labUp({ name: LAB, kubernetes: true, out: quiet }),
  pod(name) {
    const rec = findKubePod(LAB, name);
    assert.ok(rec?.netns, `pod ${name} runs`);
    const p = Topology.open(LAB)!.pods.find((x) => x.ns === rec.netns);
    assert.ok(p, `pod ${name} in the lab's topology`);
    return p;
  },
});
