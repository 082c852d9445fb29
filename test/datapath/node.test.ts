// One node's datapath across an agent restart: maps and links survive through their pins, and a
// new agent adopts the links (swapping its programs in place) instead of stacking new ones.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { NodeDatapath } from '../../src/datapath/node.js';
import { NetnsFixture, privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import { tempPinRoot } from '../../src/testing/bpffs.js';
import { ifindexIn, withNetns } from '../../src/bpf/netns.js';
import { queryTcx } from '../../src/bpf/link.js';
import { frontendKey, Proto } from '../../src/datapath/nat.js';

const fx = new NetnsFixture('node');
const pins = privilegeProblem() ? undefined : tempPinRoot('node');
let ns = '';
before(async () => {
  if (privilegeProblem()) return;
  ns = await fx.addNetns();
  await fx.addVeth({ ns, name: 'slwtest0', peerName: 'peer0', addr: '10.99.1.1/24', peerAddr: '10.99.1.2/24' });
});
after(async () => {
  await fx.cleanup();
  pins?.cleanup();
});

/** Program ids attached with tcx to each hook of a device in the namespace. */
function tcxPrograms(dev: string): { ingress: number[]; egress: number[] } {
  const ifindex = ifindexIn(ns, dev);
  return withNetns(ns, () => ({
    ingress: queryTcx(ifindex, 'ingress').progIds,
    egress: queryTcx(ifindex, 'egress').progIds,
  }));
}

test('a restarted agent adopts pinned maps and links: one program per hook, swapped in place', async (t) => {
  if (!requirePrivileges(t)) return;
  const root = `${pins!.path}/n1`;
  const ifindex = ifindexIn(ns, 'slwtest0');
  const first = NodeDatapath.load({ pinRoot: root, hostIp: '10.99.1.1', netns: ns, attachMode: 'tcx' });
  first.attach('slwtest0', ifindex, 'workload');
  first.nat.frontends.set(frontendKey('10.96.0.1', 443, Proto.TCP), {
    svcId: 1,
    count: 0,
    localCount: 0,
    affinityTimeout: 0,
    flags: 0,
  });
  const before = tcxPrograms('slwtest0');
  assert.deepEqual(before, {
    ingress: [first.tc.program('sl_from_wep').id()],
    egress: [first.tc.program('sl_to_wep').id()],
  });
  // The agent dies without cleaning up: only its file descriptors go.
  first.tc.close();
  first.ctlb.close();
  assert.deepEqual(tcxPrograms('slwtest0'), before, 'programs keep running from the pinned links');

  const second = NodeDatapath.load({ pinRoot: root, hostIp: '10.99.1.1', netns: ns, attachMode: 'tcx' });
  t.after(() => second.close({ unpin: true }));
  assert.equal(
    second.nat.frontends.get(frontendKey('10.96.0.1', 443, Proto.TCP))?.svcId,
    1,
    'maps adopted with their contents',
  );
  assert.deepEqual(second.pinnedInterfaces(), ['slwtest0']);
  second.attach('slwtest0', ifindex, 'workload');
  assert.deepEqual(
    tcxPrograms('slwtest0'),
    { ingress: [second.tc.program('sl_from_wep').id()], egress: [second.tc.program('sl_to_wep').id()] },
    'one program per hook, swapped into the old links by the new agent',
  );
  second.detach('slwtest0');
  assert.deepEqual(tcxPrograms('slwtest0'), { ingress: [], egress: [] });
});
