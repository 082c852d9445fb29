// Kernel tests of attachment: the counting programs attached with tcx, with the legacy clsact
// path and with XDP to a veth inside namespaces the test made, counting real packets; links
// pinned and replaced atomically; cgroup attachment refused at a cgroup root.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { loadObjectFile } from '../../src/bpf/spec.js';
import { Collection } from '../../src/bpf/collection.js';
import { attachCgroup, attachTcx, attachXdp, Link } from '../../src/bpf/link.js';
import { attachTcLegacy, listTcFilters } from '../../src/bpf/tc-legacy.js';
import { ifindexIn, withNetns } from '../../src/bpf/netns.js';
import { AttachType } from '../../src/bpf/syscall.js';
import { BpfError } from '../../src/bpf/errors.js';
import { bpfObjectPath } from '../../src/paths.js';
import { tempPinRoot } from '../../src/testing/bpffs.js';
import { NetnsFixture, privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import { Hook, readCounters } from '../../src/datapath/counters.js';

const fx = new NetnsFixture('attach');
const pins = tempPinRoot('attach');
let nsA = '';
let nsB = '';

before(async () => {
  if (privilegeProblem()) return;
  nsA = await fx.addNetns();
  nsB = await fx.addNetns();
  await fx.addVeth({
    ns: nsA,
    name: 'a0',
    peerNs: nsB,
    peerName: 'b0',
    addr: '10.99.0.1/24',
    peerAddr: '10.99.0.2/24',
  });
});
after(async () => {
  await fx.cleanup();
  pins.cleanup();
});

async function ping(count: number): Promise<void> {
  await fx.mustExec(nsA, 'ping', ['-c', String(count), '-i', '0.01', '-W', '1', '-q', '10.99.0.2']);
}

function countersFor(coll: Collection, ifindex: number, hook: string) {
  return readCounters(coll.map('sl_counters_v1')).find((r) => r.ifindex === ifindex && r.hook === hook)?.counters;
}

test('tcx: ingress and egress links count real packets, survive pinning, swap atomically', async (t) => {
  if (!requirePrivileges(t, ['ip', 'nsenter', 'ethtool', 'ping'])) return;
  const spec = loadObjectFile(bpfObjectPath('tc_count'));
  const ingress = Collection.load(spec, { pinRoot: pins.path, constants: { sl_hook: Hook.TC_INGRESS } });
  const egress = Collection.load(spec, { pinRoot: pins.path, constants: { sl_hook: Hook.TC_EGRESS } });
  t.after(() => {
    ingress.close();
    egress.close();
  });
  const ifindex = ifindexIn(nsB, 'b0');
  const [inLink, outLink] = withNetns(nsB, () => [
    attachTcx(ingress.program('sl_tc_count'), ifindex, 'ingress'),
    attachTcx(egress.program('sl_tc_count'), ifindex, 'egress'),
  ]);
  assert.equal(inLink.kind, 'tcx');
  assert.equal(inLink.info().ifindex, ifindex);
  await ping(5);
  const rx = countersFor(ingress, ifindex, 'tc-ingress');
  const tx = countersFor(ingress, ifindex, 'tc-egress');
  assert.ok(rx && rx.icmp >= 5, `ingress saw the 5 echo requests (${JSON.stringify(rx)})`);
  assert.ok(tx && tx.icmp >= 5, `egress saw the 5 echo replies (${JSON.stringify(tx)})`);
  assert.equal(rx.accepted, rx.packets);

  // Pin the ingress link, drop our fd: the program keeps running.
  const linkPin = path.join(pins.path, 'link_b0_ingress');
  inLink.pin(linkPin);
  const linkId = inLink.info().id;
  inLink.close();
  const before = countersFor(ingress, ifindex, 'tc-ingress')!.icmp;
  await ping(3);
  assert.ok(countersFor(ingress, ifindex, 'tc-ingress')!.icmp >= before + 3, 'pinned link still counts');

  // Reopen from the pin and replace the program in place (no window without a program).
  const reopened = Link.openPinned(linkPin);
  assert.equal(reopened.info().id, linkId);
  const replacement = Collection.load(spec, { pinRoot: pins.path, constants: { sl_hook: Hook.XDP } });
  t.after(() => replacement.close());
  reopened.update(replacement.program('sl_tc_count'), ingress.program('sl_tc_count'));
  assert.equal(reopened.info().progId, replacement.program('sl_tc_count').id());
  await ping(2);
  // The replacement reports under another hook id, which tells its packets apart.
  assert.ok((countersFor(replacement, ifindex, 'xdp')?.icmp ?? 0) >= 2, 'replacement program runs');
  // A stale expected program is refused, so two writers cannot silently overwrite each other.
  assert.throws(() => reopened.update(ingress.program('sl_tc_count'), ingress.program('sl_tc_count')), BpfError);

  reopened.detach();
  reopened.close();
  outLink.detach();
  outLink.close();
  const frozen = countersFor(replacement, ifindex, 'xdp')!.icmp;
  await ping(2);
  assert.equal(countersFor(replacement, ifindex, 'xdp')!.icmp, frozen, 'detached: no more counting');
});

test('legacy clsact + bpf filter counts real packets and swaps programs atomically', async (t) => {
  if (!requirePrivileges(t, ['ip', 'nsenter', 'ethtool', 'ping', 'tc'])) return;
  const spec = loadObjectFile(bpfObjectPath('tc_count'));
  const coll = Collection.load(spec, { pinRoot: pins.path, constants: { sl_hook: Hook.TC_INGRESS } });
  const coll2 = Collection.load(spec, { pinRoot: pins.path, constants: { sl_hook: Hook.TC_EGRESS } });
  t.after(() => {
    coll.close();
    coll2.close();
  });
  const ifindex = ifindexIn(nsA, 'a0');
  const filter = attachTcLegacy({
    ifindex,
    netns: nsA,
    direction: 'ingress',
    progFd: coll.program('sl_tc_count').fd,
    name: 'sl_tc_count',
  });
  await ping(4);
  assert.ok(countersFor(coll, ifindex, 'tc-ingress')!.icmp >= 4, 'replies counted on a0 ingress');
  filter.replace(coll2.program('sl_tc_count').fd, 'sl_tc_count');
  const listed = withNetns(nsA, () => listTcFilters(ifindex, 'ingress'));
  assert.equal(listed.length, 1);
  assert.equal(listed[0].progId, coll2.program('sl_tc_count').id());
  await ping(4);
  assert.ok(countersFor(coll2, ifindex, 'tc-egress')!.icmp >= 4, 'the replacement counts');
  filter.detach();
});

test('XDP link counts real packets on a veth', async (t) => {
  if (!requirePrivileges(t, ['ip', 'nsenter', 'ethtool', 'ping'])) return;
  const coll = Collection.load(loadObjectFile(bpfObjectPath('xdp_count')), { pinRoot: pins.path });
  t.after(() => coll.close());
  const ifindex = ifindexIn(nsB, 'b0');
  const link = withNetns(nsB, () => attachXdp(coll.program('sl_xdp_count'), ifindex));
  t.after(() => link.close());
  assert.equal(link.kind, 'xdp');
  await ping(5);
  const c = countersFor(coll, ifindex, 'xdp');
  assert.ok(c && c.icmp >= 5, `XDP saw the echo requests (${JSON.stringify(c)})`);
});

test('cgroup links attach to a sub-cgroup and are refused at a cgroup root', (t) => {
  if (!requirePrivileges(t)) return;
  const root = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].find((p) => existsSync(path.join(p, 'cgroup.procs')));
  assert.ok(root, 'a cgroup v2 hierarchy is mounted');
  // A minimal connect4 program: allow (return 1) without rewriting anything.
  const spec = loadObjectFile(bpfObjectPath('test/cgroup_allow'));
  const coll = Collection.load(spec);
  t.after(() => coll.close());
  const prog = coll.program('allow_connect4');
  assert.throws(
    () => attachCgroup(prog, root!, AttachType.CGROUP_INET4_CONNECT),
    /refusing to attach to a cgroup root/,
  );
  const sub = path.join(root!, `sluice-test-${process.pid}`);
  mkdirSync(sub);
  t.after(() => rmdirSync(sub));
  const link = attachCgroup(prog, sub, AttachType.CGROUP_INET4_CONNECT);
  assert.equal(link.kind, 'cgroup');
  assert.equal(link.info().progId, prog.id());
  link.close();
});
