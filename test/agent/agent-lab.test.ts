// The node agent in the lab, on the lab's own store: the Service tests of service-cases.ts.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { labDown, labUp } from '../../src/lab/lab.js';
import { Topology } from '../../src/lab/topology.js';
import { FileStore } from '../../src/lab/store.js';
import { storeDir } from '../../src/lab/controller.js';
import { packageRoot } from '../../src/paths.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import { defineServiceTests, SERVICES_FIXTURE } from './service-cases.js';

const run = promisify(execFile);
const LAB = 'tagent';
const quiet = { out: () => undefined, err: (l: string) => process.stderr.write(l + '\n') };
let store: FileStore;

before(async () => {
  if (privilegeProblem()) return;
  await labDown(LAB, quiet);
  const code = await labUp({ name: LAB, nodes: 3, files: [SERVICES_FIXTURE], out: quiet });
  assert.equal(code, 0, 'lab up');
  store = await FileStore.open(storeDir(LAB), { create: false });
});
after(async () => {
  store?.close();
  if (!privilegeProblem()) await labDown(LAB, quiet);
});

defineServiceTests({
  lab: LAB,
  ready: (t) => requirePrivileges(t),
  async service(name) {
    store.refresh();
    const s = await store.get('Service', 'default', name);
    assert.ok(s, `Service ${name}`);
    return s;
  },
  async pods() {
    store.refresh();
    return store.snapshot('Pod');
  },
  async deletePod(name) {
    await store.delete('Pod', 'default', name);
  },
  async slices() {
    store.refresh();
    return store.snapshot('EndpointSlice');
  },
  async felix(spec) {
    await store.apply({
      apiVersion: 'projectcalico.org/v3',
      kind: 'FelixConfiguration',
      metadata: { name: 'default' },
      spec,
    } as never);
  },
  async apply(file) {
    const bin = path.join(packageRoot, 'bin', 'sluice.js');
    const r = await run(process.execPath, [bin, 'lab', 'apply', '--name', LAB, '-f', file], { encoding: 'utf8' });
    return r.stdout;
  },
  up: () => labUp({ name: LAB, out: quiet }),
  pod: (name) => Topology.open(LAB)!.pod(name),
});
