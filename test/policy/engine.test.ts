// Bad policies: a clear error naming the policy and the field, the policy fails closed for the
// endpoints it selects (in its directions), and every other policy keeps working.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyEngine, podInfo } from '../../src/policy/engine.js';
import { parseCidr } from '../../src/policy/cidr.js';

function world(): PolicyEngine {
  const e = new PolicyEngine();
  e.setNamespace('ns1', {});
  for (const [name, app, ip] of [
    ['web', 'web', '10.65.1.2'],
    ['db', 'db', '10.65.1.3'],
  ] as const)
    e.setPod(podInfo({ metadata: { namespace: 'ns1', name, labels: { app } }, status: { podIP: ip } }));
  // A good policy on db that must keep working whatever happens to the others.
  e.setK8sPolicy({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { namespace: 'ns1', name: 'db' },
    spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ ports: [{ port: 5432 }] }] },
  } as never);
  return e;
}

const k8s = (spec: object) =>
  ({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { namespace: 'ns1', name: 'bad' },
    spec,
  }) as never;
const webSelector = { podSelector: { matchLabels: { app: 'web' } } };

const cases: [string, () => object, RegExp][] = [
  [
    'a CIDR with host bits',
    () => k8s({ ...webSelector, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.1/8' } }] }] }),
    /NetworkPolicy ns1\/bad: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: 10\.0\.0\.1\/8 has host bits set \(did you mean 10\.0\.0\.0\/8\?\)/,
  ],
  [
    'port 0',
    () => k8s({ ...webSelector, ingress: [{ ports: [{ port: 0 }] }] }),
    /spec\.ingress\[0\]\.ports\[0\]\.port: port 0 is not in 1-65535/,
  ],
  [
    'port 70000',
    () => k8s({ ...webSelector, ingress: [{ ports: [{ port: 70000 }] }] }),
    /ports\[0\]\.port: port 70000 is not in 1-65535/,
  ],
  [
    'an unknown protocol',
    () => k8s({ ...webSelector, egress: [{ ports: [{ protocol: 'GRE', port: 1 }] }] }),
    /spec\.egress\[0\]\.ports\[0\]\.protocol: unknown protocol "GRE"/,
  ],
  [
    'SCTP',
    () => k8s({ ...webSelector, ingress: [{ ports: [{ protocol: 'SCTP', port: 9 }] }] }),
    /ports\[0\]\.protocol: SCTP is not supported by the eBPF dataplane/,
  ],
  [
    'endPort below port',
    () => k8s({ ...webSelector, ingress: [{ ports: [{ port: 90, endPort: 80 }] }] }),
    /ports\[0\]\.endPort: endPort 80 is not in 90-65535/,
  ],
];

for (const [what, obj, message] of cases) {
  test(`Kubernetes NetworkPolicy with ${what}: named error, fail closed, others unaffected`, () => {
    const e = world();
    const before = e.tablesFor('ns1/db');
    e.setK8sPolicy(obj() as never);
    assert.equal(e.errors.length, 1);
    assert.match(e.errors[0]!.message, message);
    const web = e.tablesFor('ns1/web');
    const dir = /egress/.test(e.errors[0]!.message) ? 'egress' : 'ingress';
    assert.equal(web[dir]?.rules.length, 1, 'one rule: deny');
    assert.equal(web[dir]?.rules[0]?.action, 'deny');
    assert.match(web[dir]!.rules[0]!.name, /fail closed/);
    assert.deepEqual(e.tablesFor('ns1/db'), before, 'the other policy is untouched');
  });
}

const calico = (spec: object, kind = 'GlobalNetworkPolicy') =>
  ({ apiVersion: 'projectcalico.org/v3', kind, metadata: { name: 'bad', namespace: 'ns1' }, spec }) as never;

test('Calico: an unparsable rule selector is named with its position; the policy fails closed', () => {
  const e = world();
  e.setCalicoPolicy(
    calico({ selector: "app == 'web'", ingress: [{ action: 'Allow', source: { selector: 'app == ' } }] }),
  );
  assert.match(
    e.errors[0]!.message,
    /^GlobalNetworkPolicy bad: spec\.ingress\[0\]\.source\.selector: bad selector "app == ": .* at position 7/,
  );
  assert.equal(e.tablesFor('ns1/web').ingress?.rules[0]?.action, 'deny');
  assert.equal(
    e.tablesFor('ns1/db').ingress?.rules.at(-2)?.action,
    'deny',
    'db keeps its own table (default deny at the end of the tier)',
  );
});

test('Calico: an unparsable policy selector selects nothing (it cannot fail closed) and says so', () => {
  const e = world();
  e.setCalicoPolicy(calico({ selector: 'has(', ingress: [{ action: 'Deny' }] }));
  assert.match(e.errors[0]!.message, /GlobalNetworkPolicy bad: spec\.selector: bad selector "has\("/);
  assert.deepEqual(e.tablesFor('ns1/web'), {});
});

test('Calico: SCTP, unknown actions, ports without a protocol, ICMP without protocol ICMP', () => {
  for (const [rule, message] of [
    [{ action: 'Allow', protocol: 'SCTP' }, /spec\.ingress\[0\]\.protocol: SCTP is not supported/],
    [{ action: 'Reject' }, /spec\.ingress\[0\]\.action: unknown action "Reject"/],
    [{ action: 'Allow', destination: { ports: [80] } }, /destination\.ports: ports need protocol TCP, UDP or UDPLite/],
    [
      { action: 'Allow', protocol: 'TCP', icmp: { type: 8 } },
      /spec\.ingress\[0\]\.icmp: ICMP matches need protocol ICMP/,
    ],
    [{ action: 'Allow', protocol: 'TCP', destination: { ports: ['90:80'] } }, /ports\[0\]: range 90:80 is backwards/],
    [{ action: 'Allow', protocol: 'TCP', destination: { ports: [70000] } }, /ports\[0\]: port 70000 is not in 0-65535/],
  ] as const) {
    const e = world();
    e.setCalicoPolicy(calico({ selector: "app == 'web'", ingress: [rule] }));
    assert.match(e.errors[0]?.message ?? '(no error)', message);
    assert.equal(e.tablesFor('ns1/web').ingress?.rules[0]?.action, 'deny');
  }
});

test('a fixed policy replaces its fail-closed state', () => {
  const e = world();
  e.setK8sPolicy(k8s({ ...webSelector, ingress: [{ ports: [{ port: 0 }] }] }));
  assert.equal(e.tablesFor('ns1/web').ingress?.rules[0]?.action, 'deny');
  e.setK8sPolicy(k8s({ ...webSelector, ingress: [{ ports: [{ port: 80 }] }] }));
  const rules = e.tablesFor('ns1/web').ingress!.rules;
  assert.deepEqual(rules[0]?.dport, [{ lo: 80, hi: 80 }]);
  assert.equal(rules[0]?.action, 'allow');
});

test('CIDRs: host bits, prefix lengths and IPv6 are refused with the reason', () => {
  assert.throws(() => parseCidr('10.1.2.3/24'), /host bits set/);
  assert.throws(() => parseCidr('10.0.0.0/33'), /prefix length must be 0-32/);
  assert.throws(() => parseCidr('fd00::/64'), /IPv6 is not supported yet/);
  assert.equal(parseCidr('10.1.2.3').text, '10.1.2.3/32');
});

test("Calico: pre-DNAT policy follows Calico's rules (global, applyOnForward, ingress only); doNotTrack is refused", () => {
  for (const [spec, kind, message] of [
    [
      { preDNAT: true, applyOnForward: true, ingress: [{ action: 'Deny' }] },
      'NetworkPolicy',
      /spec\.preDNAT: only a GlobalNetworkPolicy/,
    ],
    [
      { preDNAT: true, ingress: [{ action: 'Deny' }] },
      'GlobalNetworkPolicy',
      /spec\.applyOnForward: must be true when preDNAT is/,
    ],
    [
      { preDNAT: true, applyOnForward: true, egress: [{ action: 'Deny' }] },
      'GlobalNetworkPolicy',
      /spec\.egress: pre-DNAT policy has ingress rules only/,
    ],
    [
      { doNotTrack: true, applyOnForward: true, ingress: [{ action: 'Deny' }] },
      'GlobalNetworkPolicy',
      /spec\.doNotTrack: untracked policy is not supported yet/,
    ],
  ] as const) {
    const e = world();
    e.setCalicoPolicy(calico({ selector: "role == 'node'", ...spec }, kind));
    assert.match(e.errors[0]?.message ?? '(no error)', message);
  }
  const e = world();
  e.setCalicoPolicy(
    calico({ selector: "role == 'node'", preDNAT: true, applyOnForward: true, ingress: [{ action: 'Deny' }] }),
  );
  assert.deepEqual(e.errors, []);
  const t = e.hostTables({ role: 'node' }, { ingress: [], egress: [] });
  assert.ok(t.preDNAT && !t.fwdIngress, 'pre-DNAT policy makes only the pre-DNAT table');
  assert.equal(t.preDNAT.rules.at(-1)?.action, 'allow', 'what pre-DNAT policy does not deny goes on');
});

test('more rules than the datapath walks: a clear error, the endpoint fails closed', () => {
  const e = world();
  const rules = Array.from({ length: 8200 }, (_, i) => ({
    action: 'Allow',
    protocol: 'TCP',
    destination: { ports: [(i % 60000) + 1] },
  }));
  e.setCalicoPolicy(calico({ selector: "app == 'web'", ingress: rules }));
  const t = e.tablesFor('ns1/web');
  assert.match(
    e.errors.map((x) => x.message).join('\n'),
    /pod ns1\/web: ingress policy: ingress table: rules: 8202 rules, more than the 8192 the datapath evaluates/,
  );
  assert.equal(t.ingress?.rules.length, 1);
  assert.equal(t.ingress?.rules[0]?.action, 'deny');
});
