// `sluice bpf nat|conntrack|routes dump` read the pinned maps of a loaded datapath.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { NodeDatapath } from '../../src/datapath/node.js';
import { tempPinRoot } from '../../src/testing/bpffs.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';
import { frontendKey, Proto, FrontendFlags } from '../../src/datapath/nat.js';
import { cidrKey, RouteFlags } from '../../src/datapath/routes.js';
import { runPacket } from '../../src/bpf/test-run.js';
import { eth, frame, ipv4, tcp } from '../../src/packet/index.js';
import { packageRoot } from '../../src/paths.js';

const sluice = path.join(packageRoot, 'bin', 'sluice.js');
const pins = privilegeProblem() ? undefined : tempPinRoot('dump');
after(() => pins?.cleanup());

function cli(...args: string[]): string {
  return execFileSync(process.execPath, [sluice, ...args], { encoding: 'utf8' });
}

test('nat, conntrack and routes dumps show what the datapath holds, as tables and JSON', (t) => {
  if (!requirePrivileges(t)) return;
  const root = path.join(pins!.path, 'node');
  const dp = NodeDatapath.load({ pinRoot: root, hostIp: '192.168.77.11' });
  t.after(() => dp.close());
  dp.nat.backends.set({ svcId: 7, ordinal: 0 }, { addr: '10.65.2.2', port: 8080 });
  dp.nat.frontends.set(frontendKey('10.96.0.10', 80, Proto.TCP), {
    svcId: 7,
    count: 1,
    localCount: 0,
    affinityTimeout: 0,
    flags: 0,
  });
  dp.nat.frontends.set(frontendKey('0.0.0.0', 30080, Proto.TCP), {
    svcId: 7,
    count: 1,
    localCount: 0,
    affinityTimeout: 0,
    flags: FrontendFlags.NODEPORT,
  });
  dp.routes.set(cidrKey('10.65.2.0/24'), {
    flags: RouteFlags.REMOTE_WL | RouteFlags.IN_POOL,
    ifindex: 0,
    nextHop: '192.168.77.12',
  });
  runPacket(
    dp.tc.program('sl_from_wep'),
    frame(eth(), ipv4({ src: '10.65.1.2', dst: '10.96.0.10' }), tcp({ sport: 40000, dport: 80, flags: 'S' })),
  );

  const nat = JSON.parse(cli('bpf', 'nat', 'dump', '--pin-root', root, '-o', 'json'));
  assert.deepEqual(
    nat.frontends.map((f: { frontend: string }) => f.frontend),
    ['*:30080/tcp', '10.96.0.10:80/tcp'],
  );
  assert.deepEqual(nat.backends, [{ svcId: 7, ordinal: 0, backend: '10.65.2.2:8080' }]);
  const natTable = cli('bpf', 'nat', 'dump', '--pin-root', root);
  assert.match(natTable, /10\.96\.0\.10:80\/tcp\s+0\.0\.0\.0\/0\s+7\s+1\s+0\s+0\s+-/);
  assert.match(natTable, /\*:30080\/tcp.*nodeport/);

  const ct = JSON.parse(cli('bpf', 'conntrack', 'dump', '--pin-root', root, '-o', 'json'));
  const types = ct.entries
    .map((e: { type: string; from: string; to: string; nat: string }) => `${e.type} ${e.from} ${e.to} ${e.nat}`)
    .sort();
  assert.deepEqual(types, [
    'nat-fwd 10.65.1.2:40000 10.96.0.10:80 10.65.2.2:8080',
    'nat-rev 10.65.1.2:40000 10.65.2.2:8080 10.96.0.10:80',
  ]);
  assert.match(
    cli('bpf', 'conntrack', 'dump', '--pin-root', root),
    /tcp\s+10\.65\.1\.2:40000\s+10\.96\.0\.10:80\s+nat-fwd/,
  );

  const routes = JSON.parse(cli('bpf', 'routes', 'dump', '--pin-root', root, '-o', 'json')).routes;
  assert.deepEqual(
    routes.map((r: { cidr: string; flags: string[] }) => `${r.cidr} ${r.flags.join(',')}`),
    ['10.65.2.0/24 remote-wl,in-pool'],
  );
});

test('a dump without a loaded datapath names the missing path', (t) => {
  if (!requirePrivileges(t)) return;
  const r = spawnSync(process.execPath, [sluice, 'bpf', 'conntrack', 'dump', '--pin-root', '/nonexistent/x'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^sluice: no map pinned at \/nonexistent\/x\/sl_ct_v1/);
});
