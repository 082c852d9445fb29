// Conntrack expiry: per protocol and TCP state, NAT pairs judged together, fresh entries spared,
// entries touched during the scan kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimNode } from '../../src/testing/sim-node.js';
import { requirePrivileges } from '../../src/testing/netns.js';
import { DEFAULT_CONNTRACK_TIMEOUTS, scanConntrack } from '../../src/agent/conntrack-scanner.js';
import { Proto } from '../../src/datapath/nat.js';
import { CtType, ctKeyOf } from '../../src/datapath/conntrack.js';
import { eth, frame, ipv4, tcp, udp } from '../../src/packet/index.js';

const S = 1e9;

test('expiry per protocol and TCP state; NAT pairs live and die together', (t) => {
  if (!requirePrivileges(t)) return;
  const node = new SimNode('192.168.77.11');
  t.after(() => node.close());
  node.service({
    svcId: 1,
    addr: '10.96.0.10',
    port: 80,
    proto: Proto.TCP,
    backends: [{ addr: '10.65.2.2', port: 8080 }],
  });
  node.service({
    svcId: 2,
    addr: '10.96.0.10',
    port: 53,
    proto: Proto.UDP,
    backends: [{ addr: '10.65.2.2', port: 5353 }],
  });
  // Real flows through the program: a TCP handshake and a UDP query.
  node.run(
    'from_wep',
    frame(eth(), ipv4({ src: '10.65.1.2', dst: '10.96.0.10' }), tcp({ sport: 40000, dport: 80, flags: 'S' })),
  );
  node.run(
    'to_wep',
    frame(eth(), ipv4({ src: '10.65.2.2', dst: '10.65.1.2' }), tcp({ sport: 8080, dport: 40000, flags: 'SA' })),
  );
  node.run(
    'from_wep',
    frame(eth(), ipv4({ src: '10.65.1.2', dst: '10.96.0.10' }), tcp({ sport: 40000, dport: 80, flags: 'A' })),
  );
  node.run('from_wep', frame(eth(), ipv4({ src: '10.65.1.2', dst: '10.96.0.10' }), udp({ sport: 41000, dport: 53 })));
  assert.equal([...node.conntrack.keys()].length, 4);
  const now = Number(process.hrtime.bigint());
  const T = DEFAULT_CONNTRACK_TIMEOUTS;

  // Within the grace period nothing goes, even far in the future relative to lastSeen... (created just now)
  assert.equal(scanConntrack(node.conntrack, T, now + 5 * S).expired, 0);
  // After the UDP timeout the UDP pair goes; the established TCP flow stays.
  const r = scanConntrack(node.conntrack, T, now + (T.udpTimeout + 1) * S);
  assert.equal(r.expired, 2);
  const left = [...node.conntrack.keys()].map((k) => k.proto);
  assert.deepEqual(left, [Proto.TCP, Proto.TCP]);
  // Established TCP lives an hour.
  assert.equal(scanConntrack(node.conntrack, T, now + (T.tcpEstablished - 10) * S).expired, 0);
  assert.equal(scanConntrack(node.conntrack, T, now + (T.tcpEstablished + 1) * S).expired, 2);
});

test('a half-open TCP flow (SYN only) expires after tcpSynSent; a reset one after tcpResetSeen', (t) => {
  if (!requirePrivileges(t)) return;
  const node = new SimNode('192.168.77.11');
  t.after(() => node.close());
  const now = Number(process.hrtime.bigint());
  const entry = (tcpA: number, tcpB: number) => ({
    createdNs: now - 100 * S,
    lastSeenNs: now,
    type: CtType.NORMAL,
    flags: 0,
    tcpA,
    tcpB,
    openerIsB: 0,
    pol: 0,
    tunIp: '0.0.0.0',
    natAddr: '0.0.0.0',
    natPort: 0,
    snatAddr: '0.0.0.0',
    snatPort: 0,
  });
  node.conntrack.set(ctKeyOf('10.0.0.1', 1000, '10.0.0.2', 80, Proto.TCP), entry(1, 0));
  node.conntrack.set(ctKeyOf('10.0.0.1', 1001, '10.0.0.2', 80, Proto.TCP), entry(3, 11));
  const T = DEFAULT_CONNTRACK_TIMEOUTS;
  assert.equal(scanConntrack(node.conntrack, T, now + (T.tcpSynSent + 1) * 1e9).expired, 1);
  assert.equal(scanConntrack(node.conntrack, T, now + (T.tcpResetSeen + 1) * 1e9).expired, 1);
});

test('an entry the datapath touches between scan and delete is kept', (t) => {
  if (!requirePrivileges(t)) return;
  const node = new SimNode('192.168.77.11');
  t.after(() => node.close());
  node.service({
    svcId: 2,
    addr: '10.96.0.10',
    port: 53,
    proto: Proto.UDP,
    backends: [{ addr: '10.65.2.2', port: 5353 }],
  });
  const q = frame(eth(), ipv4({ src: '10.65.1.2', dst: '10.96.0.10' }), udp({ sport: 41000, dport: 53 }));
  node.run('from_wep', q);
  // Make the entries look old, then let a packet arrive "during" the scan: wrap the map so the
  // datapath runs right after the scan has read everything.
  for (const [k, v] of [...node.conntrack.entries()])
    node.conntrack.set(k, { ...v, createdNs: v.createdNs - 1000 * S, lastSeenNs: v.lastSeenNs - 1000 * S });
  const ct = node.conntrack;
  const realEntries = ct.entries.bind(ct);
  ct.entries = function* () {
    const all = [...realEntries()];
    node.run('from_wep', q);
    yield* all;
  };
  const r = scanConntrack(ct, DEFAULT_CONNTRACK_TIMEOUTS);
  assert.equal(r.raced, 2, 'both halves of the touched NAT flow were recognised');
  assert.equal([...node.conntrack.keys()].length, 2, 'and kept');
});
