// bpfKubeProxyIptablesCleanupEnabled: kube-proxy's iptables chains and nftables table go, other
// rules stay. Run inside a namespace the test made (never in the machine's own).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { withoutKubeProxy } from '../../src/agent/kube-proxy-cleanup.js';
import { NetnsFixture, requirePrivileges } from '../../src/testing/netns.js';
import { packageRoot } from '../../src/paths.js';

const fx = new NetnsFixture('kpclean');
after(() => fx.cleanup());

const KUBE_NAT = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABCDEF - [0:0]
:KUBE-SEP-123456 - [0:0]
:KUBE-NODEPORTS - [0:0]
:MY-OWN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 10.0.0.0/8 -j MY-OWN
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-ABCDEF
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-ABCDEF -j KUBE-SEP-123456
-A KUBE-SEP-123456 -p tcp -m tcp -j DNAT --to-destination 10.65.1.2:8080
-A MY-OWN -j RETURN
COMMIT
`;

test('the filter drops KUBE-* chains and every rule that uses them, nothing else', () => {
  const r = withoutKubeProxy(KUBE_NAT);
  assert.equal(r.chains, 4);
  assert.equal(r.rules, 6);
  assert.doesNotMatch(r.text, /KUBE-/);
  assert.match(r.text, /-A POSTROUTING -s 10\.0\.0\.0\/8 -j MY-OWN/);
  assert.match(r.text, /:MY-OWN/);
});

test("kube-proxy's iptables chains and nftables table are removed in the node's namespace; others stay", async (t) => {
  if (!requirePrivileges(t, ['ip', 'nsenter', 'iptables-save', 'iptables-restore', 'nft'])) return;
  const ns = await fx.addNetns();
  await fx.mustExec(ns, 'iptables-restore', [], { input: KUBE_NAT });
  await fx.mustExec(ns, 'nft', ['add', 'table', 'ip', 'kube-proxy']);
  await fx.mustExec(ns, 'nft', ['add', 'table', 'ip', 'somebody-else']);
  const mod = path.join(packageRoot, 'dist', 'src', 'agent', 'kube-proxy-cleanup.js');
  const r = await fx.mustExec(ns, process.execPath, [
    '-e',
    `import('${mod}').then(async (m) => console.log(JSON.stringify(await m.removeKubeProxyRules())))`,
  ]);
  const removed = (JSON.parse(r.trim().split('\n').pop()!) as { removed: string[] }).removed;
  assert.ok(
    removed.some((x) => /iptables nat: 4 KUBE-\* chains, 6 rules/.test(x)),
    removed.join('; '),
  );
  assert.ok(removed.includes('nft table ip kube-proxy'));
  const nat = await fx.mustExec(ns, 'iptables-save', ['-t', 'nat']);
  assert.doesNotMatch(nat, /KUBE-/);
  assert.match(nat, /-A POSTROUTING -s 10\.0\.0\.0\/8 -j MY-OWN/);
  const tables = await fx.mustExec(ns, 'nft', ['list', 'tables']);
  assert.doesNotMatch(tables, /kube-proxy/);
  assert.match(tables, /somebody-else/);
  // Nothing left to do the second time.
  const again = await fx.mustExec(ns, process.execPath, [
    '-e',
    `import('${mod}').then(async (m) => console.log(JSON.stringify(await m.removeKubeProxyRules())))`,
  ]);
  assert.deepEqual(JSON.parse(again.trim().split('\n').pop()!), { removed: [] });
});
