// The reference evaluator checked against hand-derived expectations, one documented semantic per
// test (Kubernetes NetworkPolicy first, then Calico), and the conformance case generator checked
// for determinism, size, coverage and useful cases. No kernel, no root.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  allowed,
  explain,
  labelSelectorMatches,
  parseSelector,
  selectorMatches,
  type NetworkPolicy,
  type NetworkPolicySpec,
  type RefConnection,
  type RefEndpoint,
  type RefPod,
  type RefWorld,
} from './reference.js';
import {
  FAMILY_NAMES,
  POD_NAMES,
  caseFeatures,
  expected,
  generateCases,
  makeWorld,
  probeKey,
  probeMatrix,
  type Case,
} from './cases.js';

// ---------------------------------------------------------------------------------------------
// A small world after the examples of the Kubernetes documentation

const db: RefPod = {
  namespace: 'default',
  name: 'db',
  labels: { role: 'db' },
  ip: '172.17.0.10',
  ports: [
    { name: 'redis', port: 6379, protocol: 'TCP' },
    { name: 'dns', port: 53, protocol: 'UDP' },
  ],
};
const fe: RefPod = {
  namespace: 'default',
  name: 'fe',
  labels: { role: 'frontend' },
  ip: '10.0.0.2',
  // fe's own `redis` port must not matter when fe is the client.
  ports: [{ name: 'redis', port: 6380, protocol: 'TCP' }],
  serviceAccount: 'web-sa',
};
const dc: RefPod = { namespace: 'default', name: 'dc', labels: { role: 'client' }, ip: '10.0.0.3', ports: [] };
const mp: RefPod = {
  namespace: 'myproject',
  name: 'mp',
  labels: { role: 'backend' },
  ip: '10.0.1.2',
  ports: [{ name: 'redis', port: 7000, protocol: 'TCP' }],
  serviceAccount: 'api-sa',
};
const client: RefPod = { namespace: 'other', name: 'client', labels: { role: 'client' }, ip: '10.0.2.2', ports: [] };
const stranger: RefPod = {
  namespace: 'other',
  name: 'stranger',
  labels: { role: 'frontend' },
  ip: '10.0.2.3',
  ports: [],
};

function world(...policies: object[]): RefWorld {
  return {
    namespaces: [
      { name: 'default', labels: {} },
      { name: 'myproject', labels: { project: 'myproject' } },
      { name: 'other', labels: { user: 'alice' } },
    ],
    pods: [db, fe, dc, mp, client, stranger],
    serviceAccounts: [
      { namespace: 'default', name: 'web-sa', labels: { team: 'blue' } },
      { namespace: 'myproject', name: 'api-sa', labels: { team: 'red' } },
    ],
    policies,
  };
}

function knp(namespace: string, name: string, spec: NetworkPolicySpec): NetworkPolicy {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec };
}

const ext = (ip: string): RefEndpoint => ({ ip });

function conn(
  src: RefEndpoint,
  dst: RefEndpoint,
  port = 6379,
  protocol: RefConnection['protocol'] = 'TCP',
): RefConnection {
  return { src, dst, protocol, port };
}

/** Asserts every [src, dst, port, protocol?, verdict] line, with the reference's account on failure. */
function expectAll(
  w: RefWorld,
  lines: [RefEndpoint, RefEndpoint, number, RefConnection['protocol'] | undefined, boolean][],
): void {
  for (const [src, dst, port, protocol, want] of lines) {
    const c = conn(src, dst, port, protocol ?? 'TCP');
    assert.equal(allowed(w, c), want, explain(w, c));
  }
}

const ALLOW = true;
const DENY = false;

// ---------------------------------------------------------------------------------------------

describe('Kubernetes NetworkPolicy', () => {
  test('without policies everything is allowed', () => {
    expectAll(world(), [
      [fe, db, 6379, 'TCP', ALLOW],
      [ext('8.8.8.8'), db, 1, 'UDP', ALLOW],
      [db, ext('8.8.8.8'), 443, 'TCP', ALLOW],
    ]);
  });

  test("the documentation's test-network-policy", () => {
    const w = world(
      knp('default', 'test-network-policy', {
        podSelector: { matchLabels: { role: 'db' } },
        policyTypes: ['Ingress', 'Egress'],
        ingress: [
          {
            from: [
              { ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } },
              { namespaceSelector: { matchLabels: { project: 'myproject' } } },
              { podSelector: { matchLabels: { role: 'frontend' } } },
            ],
            ports: [{ protocol: 'TCP', port: 6379 }],
          },
        ],
        egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 5978 }] }],
      }),
    );
    expectAll(w, [
      [fe, db, 6379, 'TCP', ALLOW], // role=frontend in the policy's namespace
      [fe, db, 80, 'TCP', DENY], // not the port
      [fe, db, 6379, 'UDP', DENY], // not the protocol
      [stranger, db, 6379, 'TCP', DENY], // role=frontend, but a podSelector alone means the policy's namespace
      [mp, db, 6379, 'TCP', ALLOW], // namespace project=myproject
      [client, db, 6379, 'TCP', DENY],
      [ext('172.17.2.5'), db, 6379, 'TCP', ALLOW], // in the ipBlock
      [ext('172.17.1.9'), db, 6379, 'TCP', DENY], // in its except
      [ext('192.168.0.1'), db, 6379, 'TCP', DENY],
      [db, fe, 5978, 'TCP', ALLOW], // egress to 10.0.0.0/24 on 5978; fe is not isolated
      [db, fe, 80, 'TCP', DENY],
      [db, mp, 5978, 'TCP', DENY], // 10.0.1.2 is outside 10.0.0.0/24
      [fe, stranger, 80, 'TCP', ALLOW], // neither is selected
    ]);
  });

  test('default deny ingress: an empty podSelector isolates every pod of its namespace, ingress only', () => {
    const w = world(knp('default', 'default-deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] }));
    expectAll(w, [
      [mp, db, 6379, 'TCP', DENY],
      [fe, db, 6379, 'TCP', DENY], // same namespace too
      [ext('1.2.3.4'), dc, 80, 'TCP', DENY],
      [db, mp, 80, 'TCP', ALLOW], // egress is not isolated; mp's namespace has no policy
      [client, stranger, 80, 'TCP', ALLOW],
    ]);
  });

  test('default deny ingress with policyTypes left to its default', () => {
    const w = world(knp('default', 'default-deny-ingress', { podSelector: {} }));
    expectAll(w, [
      [mp, db, 6379, 'TCP', DENY],
      [db, mp, 80, 'TCP', ALLOW],
    ]);
  });

  test('default deny egress isolates egress only', () => {
    const w = world(knp('default', 'default-deny-egress', { podSelector: {}, policyTypes: ['Egress'] }));
    expectAll(w, [
      [db, mp, 80, 'TCP', DENY],
      [db, ext('8.8.8.8'), 53, 'UDP', DENY],
      [fe, db, 6379, 'TCP', DENY], // fe's egress, inside the namespace
      [mp, db, 6379, 'TCP', ALLOW], // ingress is not isolated
    ]);
  });

  test('default deny of both directions', () => {
    const w = world(knp('default', 'default-deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }));
    expectAll(w, [
      [db, mp, 80, 'TCP', DENY],
      [mp, db, 6379, 'TCP', DENY],
      [mp, client, 80, 'TCP', ALLOW],
    ]);
  });

  test('allow all ingress: a rule with no from and no ports matches everything, even beside a deny', () => {
    const w = world(
      knp('default', 'deny', { podSelector: {} }),
      knp('default', 'allow-all', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{}] }),
    );
    expectAll(w, [
      [ext('8.8.8.8'), db, 1, 'UDP', ALLOW],
      [client, db, 6379, 'TCP', ALLOW],
      [client, fe, 6379, 'TCP', DENY], // fe is isolated by `deny` alone
    ]);
  });

  test('policies add up: the union of their rules', () => {
    const w = world(
      knp('default', 'from-frontend', {
        podSelector: { matchLabels: { role: 'db' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { role: 'frontend' } } }] }],
      }),
      knp('default', 'from-myproject', {
        podSelector: {},
        ingress: [
          { from: [{ namespaceSelector: { matchLabels: { project: 'myproject' } } }], ports: [{ port: 6379 }] },
        ],
      }),
    );
    expectAll(w, [
      [fe, db, 1, 'UDP', ALLOW], // first policy, any port
      [mp, db, 6379, 'TCP', ALLOW], // second policy
      [mp, db, 6380, 'TCP', DENY], // neither
      [dc, db, 6379, 'TCP', DENY],
      [mp, fe, 6379, 'TCP', ALLOW], // fe is selected by the second one only
      [db, fe, 6379, 'TCP', DENY],
    ]);
  });

  test('label selectors: matchLabels and matchExpressions, ANDed; empty selects all', () => {
    const labels = { app: 'web', tier: 'frontend' };
    const table: [object, boolean][] = [
      [{}, true],
      [{ matchLabels: { app: 'web' } }, true],
      [{ matchLabels: { app: 'web', tier: 'backend' } }, false],
      [{ matchExpressions: [{ key: 'app', operator: 'In', values: ['api', 'web'] }] }, true],
      [{ matchExpressions: [{ key: 'app', operator: 'In', values: ['api'] }] }, false],
      [{ matchExpressions: [{ key: 'role', operator: 'In', values: ['x'] }] }, false],
      [{ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['api'] }] }, true],
      [{ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, false],
      [{ matchExpressions: [{ key: 'role', operator: 'NotIn', values: ['x'] }] }, true], // the key is absent
      [{ matchExpressions: [{ key: 'app', operator: 'Exists' }] }, true],
      [{ matchExpressions: [{ key: 'role', operator: 'Exists' }] }, false],
      [{ matchExpressions: [{ key: 'role', operator: 'DoesNotExist' }] }, true],
      [{ matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, false],
      [
        { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['backend'] }] },
        false,
      ],
    ];
    for (const [sel, want] of table) assert.equal(labelSelectorMatches(sel, labels), want, JSON.stringify(sel));
  });

  test('matchExpressions in a policy: NotIn selects pods without the key', () => {
    const w = world(
      knp('default', 'p', {
        podSelector: {},
        ingress: [
          { from: [{ podSelector: { matchExpressions: [{ key: 'role', operator: 'NotIn', values: ['frontend'] }] } }] },
        ],
      }),
    );
    const nolabel: RefPod = { namespace: 'default', name: 'bare', labels: {}, ip: '10.0.0.9', ports: [] };
    const w2 = { ...w, pods: [...w.pods, nolabel] };
    expectAll(w2, [
      [fe, db, 6379, 'TCP', DENY],
      [dc, db, 6379, 'TCP', ALLOW],
      [nolabel, db, 6379, 'TCP', ALLOW],
    ]);
  });

  test('a podSelector alone means the policy namespace; with an empty namespaceSelector, every namespace', () => {
    const same = world(knp('default', 'p', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] }));
    expectAll(same, [
      [fe, db, 6379, 'TCP', ALLOW],
      [mp, db, 6379, 'TCP', DENY],
      [ext('10.9.9.9'), db, 6379, 'TCP', DENY],
    ]);
    const every = world(
      knp('default', 'p', { podSelector: {}, ingress: [{ from: [{ podSelector: {}, namespaceSelector: {} }] }] }),
    );
    expectAll(every, [
      [mp, db, 6379, 'TCP', ALLOW],
      [client, db, 6379, 'TCP', ALLOW],
      [ext('10.9.9.9'), db, 6379, 'TCP', DENY], // pods only: not a client outside the cluster
    ]);
    const allNs = world(knp('default', 'p', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] }));
    expectAll(allNs, [
      [client, db, 6379, 'TCP', ALLOW],
      [ext('10.9.9.9'), db, 6379, 'TCP', DENY],
    ]);
  });

  test('namespaces by name through the automatic kubernetes.io/metadata.name label', () => {
    const byName = (name: string) =>
      world(
        knp('default', 'p', {
          podSelector: {},
          ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': name } } }] }],
        }),
      );
    expectAll(byName('myproject'), [
      [mp, db, 6379, 'TCP', ALLOW],
      [client, db, 6379, 'TCP', DENY],
    ]);
    // `default` has no labels at all in the world: the evaluator adds the name label.
    expectAll(byName('default'), [
      [fe, db, 6379, 'TCP', ALLOW],
      [mp, db, 6379, 'TCP', DENY],
    ]);
    // A stale or forged value is overwritten, as the API server does.
    const forged = byName('other');
    forged.namespaces = forged.namespaces.map((n) =>
      n.name === 'myproject' ? { ...n, labels: { ...n.labels, 'kubernetes.io/metadata.name': 'other' } } : n,
    );
    expectAll(forged, [
      [mp, db, 6379, 'TCP', DENY],
      [client, db, 6379, 'TCP', ALLOW],
    ]);
  });

  test("pod and namespace selectors in one peer are ANDed; in two peers, ORed (the documentation's example)", () => {
    const and = world(
      knp('default', 'and', {
        podSelector: {},
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchLabels: { user: 'alice' } },
                podSelector: { matchLabels: { role: 'client' } },
              },
            ],
          },
        ],
      }),
    );
    expectAll(and, [
      [client, db, 6379, 'TCP', ALLOW], // alice's namespace and role=client
      [stranger, db, 6379, 'TCP', DENY], // alice's namespace only
      [dc, db, 6379, 'TCP', DENY], // role=client only
    ]);
    const or = world(
      knp('default', 'or', {
        podSelector: {},
        ingress: [
          {
            from: [
              { namespaceSelector: { matchLabels: { user: 'alice' } } },
              { podSelector: { matchLabels: { role: 'client' } } },
            ],
          },
        ],
      }),
    );
    expectAll(or, [
      [client, db, 6379, 'TCP', ALLOW],
      [stranger, db, 6379, 'TCP', ALLOW],
      [dc, db, 6379, 'TCP', ALLOW],
      [mp, db, 6379, 'TCP', DENY],
    ]);
  });

  test('ipBlock with except matches pod IPs as well as outside clients', () => {
    const w = world(
      knp('default', 'p', {
        podSelector: { matchLabels: { role: 'db' } },
        ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.1.0/24', '10.0.2.3/32'] } }] }],
      }),
    );
    expectAll(w, [
      [fe, db, 6379, 'TCP', ALLOW], // 10.0.0.2
      [mp, db, 6379, 'TCP', DENY], // 10.0.1.2, excepted /24
      [client, db, 6379, 'TCP', ALLOW], // 10.0.2.2
      [stranger, db, 6379, 'TCP', DENY], // 10.0.2.3, excepted /32
      [ext('10.0.200.1'), db, 6379, 'TCP', ALLOW],
      [ext('10.1.0.1'), db, 6379, 'TCP', DENY],
    ]);
  });

  test('an egress ipBlock matches destinations outside the cluster', () => {
    const w = world(
      knp('default', 'p', {
        podSelector: { matchLabels: { role: 'db' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '203.0.113.0/24' } }] }],
      }),
    );
    expectAll(w, [
      [db, ext('203.0.113.7'), 443, 'TCP', ALLOW],
      [db, ext('203.0.114.7'), 443, 'TCP', DENY],
      [db, fe, 80, 'TCP', DENY],
    ]);
  });

  test('selectors never match a client outside the cluster', () => {
    const w = world(
      knp('default', 'p', {
        podSelector: {},
        ingress: [{ from: [{ podSelector: {} }, { namespaceSelector: {} }] }],
      }),
    );
    expectAll(w, [[ext('10.0.0.77'), db, 6379, 'TCP', DENY]]);
  });

  test('numeric ports: the protocol defaults to TCP; a protocol alone means all its ports', () => {
    const tcp = world(knp('default', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 53 }] }] }));
    expectAll(tcp, [
      [mp, db, 53, 'TCP', ALLOW],
      [mp, db, 53, 'UDP', DENY],
      [mp, db, 54, 'TCP', DENY],
    ]);
    const udp = world(knp('default', 'p', { podSelector: {}, ingress: [{ ports: [{ protocol: 'UDP' }] }] }));
    expectAll(udp, [
      [mp, db, 53, 'UDP', ALLOW],
      [mp, db, 9999, 'UDP', ALLOW],
      [mp, db, 53, 'TCP', DENY],
    ]);
  });

  test('endPort: an inclusive range', () => {
    const w = world(
      knp('default', 'p', { podSelector: {}, ingress: [{ ports: [{ protocol: 'TCP', port: 6000, endPort: 6379 }] }] }),
    );
    expectAll(w, [
      [mp, db, 6000, 'TCP', ALLOW],
      [mp, db, 6379, 'TCP', ALLOW],
      [mp, db, 5999, 'TCP', DENY],
      [mp, db, 6380, 'TCP', DENY],
      [mp, db, 6100, 'UDP', DENY],
    ]);
  });

  test('named ports resolve on the destination pod, by name and protocol, in ingress', () => {
    const w = world(knp('default', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 'redis' }] }] }));
    expectAll(w, [
      [mp, db, 6379, 'TCP', ALLOW], // db's redis
      [mp, db, 6380, 'TCP', DENY], // fe's redis, and fe is not the destination
      [mp, fe, 6380, 'TCP', ALLOW], // fe's redis
      [mp, fe, 6379, 'TCP', DENY],
      [mp, dc, 6379, 'TCP', DENY], // dc has no port called redis
    ]);
    const proto = (protocol: 'TCP' | 'UDP') =>
      world(knp('default', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 'dns', protocol }] }] }));
    expectAll(proto('TCP'), [
      [mp, db, 53, 'TCP', DENY], // db's dns is UDP
      [mp, db, 53, 'UDP', DENY],
    ]);
    expectAll(proto('UDP'), [
      [mp, db, 53, 'UDP', ALLOW],
      [mp, db, 53, 'TCP', DENY],
    ]);
  });

  test('named ports in egress resolve on the destination pod too', () => {
    const w = world(
      knp('default', 'p', {
        podSelector: { matchLabels: { role: 'frontend' } },
        policyTypes: ['Egress'],
        egress: [{ ports: [{ port: 'redis' }] }],
      }),
    );
    expectAll(w, [
      [fe, db, 6379, 'TCP', ALLOW],
      [fe, db, 6380, 'TCP', DENY], // 6380 is the source's own redis
      [fe, mp, 7000, 'TCP', ALLOW], // mp's redis
      [fe, ext('1.1.1.1'), 6379, 'TCP', DENY], // no pod to resolve the name on
    ]);
  });

  test('policyTypes: Egress is implied by egress rules, which then also isolate ingress', () => {
    const w = world(
      knp('default', 'p', { podSelector: { matchLabels: { role: 'db' } }, egress: [{ to: [{ podSelector: {} }] }] }),
    );
    expectAll(w, [
      [db, fe, 80, 'TCP', ALLOW],
      [db, mp, 80, 'TCP', DENY],
      [fe, db, 6379, 'TCP', DENY], // Ingress is always implied, and there are no ingress rules
    ]);
  });

  test('policyTypes: explicit types ignore the rules of the other direction', () => {
    const spec = {
      podSelector: { matchLabels: { role: 'db' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { role: 'frontend' } } }] }],
      egress: [{ to: [{ podSelector: { matchLabels: { role: 'frontend' } } }] }],
    };
    const ingressOnly = world(knp('default', 'p', { ...spec, policyTypes: ['Ingress'] }));
    expectAll(ingressOnly, [
      [db, mp, 80, 'TCP', ALLOW], // the egress rules do nothing
      [dc, db, 6379, 'TCP', DENY],
      [fe, db, 6379, 'TCP', ALLOW],
    ]);
    const egressOnly = world(knp('default', 'p', { ...spec, policyTypes: ['Egress'] }));
    expectAll(egressOnly, [
      [dc, db, 6379, 'TCP', ALLOW], // the ingress rules do nothing
      [db, mp, 80, 'TCP', DENY],
      [db, fe, 80, 'TCP', ALLOW],
    ]);
  });

  test('policyTypes: an empty egress list does not imply Egress', () => {
    const w = world(knp('default', 'p', { podSelector: { matchLabels: { role: 'db' } }, egress: [] }));
    expectAll(w, [
      [db, mp, 80, 'TCP', ALLOW],
      [fe, db, 6379, 'TCP', DENY],
    ]);
  });

  test('a policy selects pods of its own namespace only', () => {
    const w = world(knp('myproject', 'deny', { podSelector: {} }));
    expectAll(w, [
      [fe, db, 6379, 'TCP', ALLOW],
      [fe, mp, 7000, 'TCP', DENY],
    ]);
  });

  test('egress of the source and ingress of the destination must both allow', () => {
    const egress = knp('default', 'egress', {
      podSelector: { matchLabels: { role: 'frontend' } },
      policyTypes: ['Egress'],
      egress: [{ to: [{ namespaceSelector: { matchLabels: { project: 'myproject' } } }] }],
    });
    const ingress = knp('myproject', 'ingress', {
      podSelector: {},
      ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'client' } } }] }],
    });
    expectAll(world(egress), [[fe, mp, 7000, 'TCP', ALLOW]]);
    expectAll(world(ingress), [[fe, mp, 7000, 'TCP', DENY]]);
    expectAll(world(egress, ingress), [
      [fe, mp, 7000, 'TCP', DENY], // egress allows, ingress does not
      [dc, mp, 7000, 'TCP', ALLOW], // dc's egress is not isolated
      [fe, db, 6379, 'TCP', DENY], // ingress of db is open, egress of fe is not
    ]);
  });

  test('rules without ports match every protocol, ICMP included; rules with ports never match ICMP', () => {
    const open = world(knp('default', 'p', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] }));
    assert.equal(allowed(open, { src: mp, dst: db, protocol: 'ICMP', icmpType: 8, icmpCode: 0 }), true);
    assert.equal(allowed(open, { src: mp, dst: db, protocol: 'SCTP', port: 9 }), true);
    const ported = world(
      knp('default', 'p', { podSelector: {}, ingress: [{ ports: [{ protocol: 'TCP', port: 1, endPort: 65535 }] }] }),
    );
    assert.equal(allowed(ported, { src: mp, dst: db, protocol: 'ICMP', icmpType: 8, icmpCode: 0 }), false);
  });

  test('labels are read from the world: a label change applies to stale pod objects too', () => {
    const w = world(
      knp('default', 'p', {
        podSelector: {},
        ingress: [{ from: [{ podSelector: { matchLabels: { role: 'frontend' } } }] }],
      }),
    );
    expectAll(w, [[dc, db, 6379, 'TCP', DENY]]);
    const relabelled = {
      ...w,
      pods: w.pods.map((p) => (p.name === 'dc' ? { ...p, labels: { role: 'frontend' } } : p)),
    };
    expectAll(relabelled, [[dc, db, 6379, 'TCP', ALLOW]]); // `dc` is the object from before the change
  });

  test('objects the API server rejects are refused rather than guessed at', () => {
    const bad = (spec: NetworkPolicySpec) => () => allowed(world(knp('default', 'p', spec)), conn(fe, db));
    assert.throws(bad({ podSelector: {}, ingress: [{ from: [{}] }] }), /at least one field/);
    assert.throws(
      bad({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }),
      /ipBlock/,
    );
    assert.throws(
      bad({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/24', except: ['10.0.1.0/24'] } }] }] }),
      /except/,
    );
    assert.throws(bad({ podSelector: {}, ingress: [{ ports: [{ port: 'redis', endPort: 7000 }] }] }), /endPort/);
    assert.throws(bad({ podSelector: {}, ingress: [{ ports: [{ port: 7000, endPort: 6000 }] }] }), /endPort/);
    assert.throws(() => allowed(world({ apiVersion: 'v1', kind: 'Pod' }), conn(fe, db)), /does not model/);
  });

  test('explain says which policy decided', () => {
    const w = world(knp('default', 'deny', { podSelector: {} }));
    const text = explain(w, conn(mp, db));
    assert.match(text, /^DENIED myproject\/mp -> default\/db TCP\/6379/);
    assert.match(text, /NetworkPolicy default\/deny/);
    assert.match(explain(world(), conn(mp, db)), /^ALLOWED .*no policy applies/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('Calico selectors', () => {
  const L = { app: 'web', tier: 'frontend', 'my-label': 'production', role: 'business' };
  const table: [string, boolean][] = [
    ['all()', true],
    ['', true],
    ["app == 'web'", true],
    ['app == "web"', true],
    ["app != 'web'", false],
    ["missing != 'x'", true],
    ["app in {'web', 'api'}", true],
    ['app in { "api" }', false],
    ['app in {}', false],
    ["app not in {'api'}", true],
    ["missing not in {'a'}", true],
    ['has(app)', true],
    ['!has(app)', false],
    ['has(missing)', false],
    ['! has(missing)', true],
    ["app == 'web' && tier == 'backend'", false],
    ["app == 'web' || tier == 'backend'", true],
    ["!app == 'web'", false], // ! applies to the whole match
    ["!(app == 'api' || tier == 'backend')", true],
    ["app == 'web' || app == 'api' && role == 'x'", true], // && binds tighter than ||
    ["(app == 'web' || app == 'api') && role == 'x'", false],
    ["my-label starts with 'prod'", true],
    ["my-label ends with 'tion'", true],
    ["my-label contains 'duct'", true],
    ["missing contains ''", false],
    ["! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}", true],
    ['!all()', false],
  ];
  for (const [expr, want] of table) {
    test(`${expr || '(empty)'} -> ${want}`, () =>
      assert.equal(selectorMatches(expr, L, { all: true, global: false }), want));
  }

  test("the documentation's precedence example", () => {
    const expr = "! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}";
    const sel = parseSelector(expr);
    const ctx = { all: true, global: false };
    assert.equal(sel({ role: 'x' }, ctx), true); // no my-label
    assert.equal(sel({ 'my-label': 'dev', role: 'business' }, ctx), false);
    assert.equal(sel({ 'my-label': 'prod-1', role: 'frontend' }, ctx), true);
    assert.equal(sel({ 'my-label': 'prod-1', role: 'x' }, ctx), false);
  });

  test('global() is true for non-namespaced resources only', () => {
    assert.equal(selectorMatches('global()', {}, { all: false, global: true }), true);
    assert.equal(selectorMatches('global()', {}, { all: true, global: false }), false);
  });

  test('syntax errors are errors', () => {
    for (const bad of [
      'app ==',
      "app = 'x'",
      "(app == 'x'",
      'has(app',
      "app in {'a' 'b'}",
      "app == 'x' &&",
      "app == 'x' junk",
    ]) {
      assert.throws(() => parseSelector(bad), /selector/, bad);
    }
  });
});

// ---------------------------------------------------------------------------------------------

function gnp(name: string, spec: object): object {
  return { apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkPolicy', metadata: { name }, spec };
}
function cnp(namespace: string, name: string, spec: object): object {
  return { apiVersion: 'projectcalico.org/v3', kind: 'NetworkPolicy', metadata: { name, namespace }, spec };
}
function tier(name: string, spec: object = {}): object {
  return { apiVersion: 'projectcalico.org/v3', kind: 'Tier', metadata: { name }, spec };
}
function netset(namespace: string | undefined, name: string, labels: object, nets: string[]): object {
  return namespace
    ? { apiVersion: 'projectcalico.org/v3', kind: 'NetworkSet', metadata: { name, namespace, labels }, spec: { nets } }
    : { apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkSet', metadata: { name, labels }, spec: { nets } };
}

// A Kubernetes policy isolating db, allowing TCP 6379 from role=frontend in its namespace.
const k8sDb = knp('default', 'db', {
  podSelector: { matchLabels: { role: 'db' } },
  ingress: [{ from: [{ podSelector: { matchLabels: { role: 'frontend' } } }], ports: [{ port: 6379 }] }],
});

describe('Calico tiers and order', () => {
  test('a Deny in an earlier tier overrides a Kubernetes allow in the default tier', () => {
    const w = world(
      k8sDb,
      tier('security', { order: 100 }),
      gnp('deny-frontend', {
        tier: 'security',
        selector: "role == 'db'",
        ingress: [{ action: 'Deny', source: { selector: "role == 'frontend'" } }, { action: 'Pass' }],
      }),
    );
    expectAll(w, [
      [fe, db, 6379, 'TCP', DENY],
      [dc, db, 6379, 'TCP', DENY], // passed on to the default tier, where k8sDb does not allow dc
    ]);
  });

  test('Pass goes on to the next tier', () => {
    const w = world(
      k8sDb,
      tier('security', { order: 100 }),
      gnp('pass', { tier: 'security', selector: 'all()', ingress: [{ action: 'Pass' }] }),
    );
    expectAll(w, [
      [fe, db, 6379, 'TCP', ALLOW],
      [fe, db, 80, 'TCP', DENY],
      [mp, fe, 80, 'TCP', ALLOW], // fe: passed by security, no policy in the default tier, so the profile allows
    ]);
  });

  test('a tier that applies but takes no action denies (its default action)', () => {
    const w = world(
      k8sDb,
      tier('security', { order: 100 }),
      gnp('backend-only', {
        tier: 'security',
        selector: "role == 'db'",
        ingress: [{ action: 'Allow', source: { selector: "role == 'backend'" } }],
      }),
    );
    expectAll(w, [
      [mp, db, 6379, 'TCP', ALLOW],
      [fe, db, 6379, 'TCP', DENY], // k8sDb would allow it, but security ends in a deny first
    ]);
  });

  test('a tier with defaultAction Pass passes what it does not decide', () => {
    const w = world(
      k8sDb,
      tier('security', { order: 100, defaultAction: 'Pass' }),
      gnp('backend-only', {
        tier: 'security',
        selector: "role == 'db'",
        ingress: [{ action: 'Allow', source: { selector: "role == 'backend'" } }],
      }),
    );
    expectAll(w, [
      [mp, db, 80, 'TCP', ALLOW], // allowed by security, whatever the default tier says
      [fe, db, 6379, 'TCP', ALLOW], // passed, then k8sDb
      [fe, db, 80, 'TCP', DENY],
    ]);
  });

  test('a tier with no policy for the endpoint is skipped, end-of-tier deny included', () => {
    const w = world(
      tier('security', { order: 100 }),
      gnp('frontends', { tier: 'security', selector: "role == 'frontend'", types: ['Ingress'] }),
    );
    expectAll(w, [
      [mp, db, 6379, 'TCP', ALLOW],
      [mp, fe, 80, 'TCP', DENY],
      [fe, mp, 80, 'TCP', ALLOW], // the policy is Ingress only: fe's egress is not affected
    ]);
  });

  test('tiers run by order, lowest first; a tier without order runs last, after default', () => {
    const twoTiers = (allowOrder: number, denyOrder: number) =>
      world(
        tier('allow', { order: allowOrder }),
        tier('deny', { order: denyOrder }),
        gnp('a', { tier: 'allow', selector: 'all()', ingress: [{ action: 'Allow' }] }),
        gnp('d', { tier: 'deny', selector: 'all()', ingress: [{ action: 'Deny' }] }),
      );
    expectAll(twoTiers(100, 200), [[mp, db, 1, 'TCP', ALLOW]]);
    expectAll(twoTiers(300, 200), [[mp, db, 1, 'TCP', DENY]]);
    const last = world(
      k8sDb,
      tier('last'),
      gnp('deny-all', { tier: 'last', selector: 'all()', ingress: [{ action: 'Deny' }] }),
    );
    expectAll(last, [
      [fe, db, 6379, 'TCP', ALLOW], // the default tier (1,000,000) decided first
      [mp, fe, 80, 'TCP', DENY], // nothing in default for fe; `last` denies
    ]);
  });

  test('policies in a tier run by order, then name; no order runs last', () => {
    const two = (a: object, b: object) => world(gnp('a', a), gnp('b', b));
    const allow = (order?: number) => ({ order, selector: 'all()', ingress: [{ action: 'Allow' }] });
    const deny = (order?: number) => ({ order, selector: 'all()', ingress: [{ action: 'Deny' }] });
    expectAll(two(allow(5), deny(10)), [[mp, db, 1, 'TCP', ALLOW]]);
    expectAll(two(allow(10), deny(5)), [[mp, db, 1, 'TCP', DENY]]);
    expectAll(two(allow(undefined), deny(2000)), [[mp, db, 1, 'TCP', DENY]]);
    expectAll(two(allow(7), deny(7)), [[mp, db, 1, 'TCP', ALLOW]]); // `a` before `b`
    expectAll(two(deny(7), allow(7)), [[mp, db, 1, 'TCP', DENY]]);
  });

  test('Log goes on to the next rule', () => {
    const w = (rules: object[]) => world(gnp('p', { selector: 'all()', ingress: rules }));
    expectAll(w([{ action: 'Log' }, { action: 'Allow' }]), [[mp, db, 1, 'TCP', ALLOW]]);
    expectAll(w([{ action: 'Log' }, { action: 'Deny' }]), [[mp, db, 1, 'TCP', DENY]]);
    expectAll(w([{ action: 'Log' }]), [[mp, db, 1, 'TCP', DENY]]); // then the end of the tier
  });

  test('default types: Ingress unless there are only egress rules', () => {
    const noRules = world(gnp('p', { selector: "role == 'db'" }));
    expectAll(noRules, [
      [mp, db, 1, 'TCP', DENY],
      [db, mp, 1, 'TCP', ALLOW],
    ]);
    const egressOnly = world(gnp('p', { selector: "role == 'db'", egress: [{ action: 'Deny' }] }));
    expectAll(egressOnly, [
      [mp, db, 1, 'TCP', ALLOW],
      [db, mp, 1, 'TCP', DENY],
    ]);
    const both = world(
      gnp('p', { selector: "role == 'db'", ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] }),
    );
    expectAll(both, [
      [mp, db, 1, 'TCP', ALLOW],
      [db, mp, 1, 'TCP', ALLOW],
      [mp, fe, 1, 'TCP', ALLOW],
    ]);
  });

  test('explicit types with no rules for a direction: the end of the tier decides', () => {
    const w = world(
      gnp('p', { selector: "role == 'db'", types: ['Ingress', 'Egress'], ingress: [{ action: 'Allow' }] }),
    );
    expectAll(w, [
      [mp, db, 1, 'TCP', ALLOW],
      [db, mp, 1, 'TCP', DENY],
    ]);
  });

  test('Kubernetes policies sit in the default tier at order 1000 and only allow', () => {
    const before = world(
      k8sDb,
      cnp('default', 'deny-first', { order: 500, selector: "role == 'db'", ingress: [{ action: 'Deny' }] }),
    );
    expectAll(before, [[fe, db, 6379, 'TCP', DENY]]);
    // What k8sDb does not allow falls through to the policies after it, not to a deny.
    const after = world(
      k8sDb,
      cnp('default', 'allow-after', {
        order: 2000,
        selector: "role == 'db'",
        ingress: [{ action: 'Allow', source: { selector: "role == 'client'" } }],
      }),
    );
    expectAll(after, [
      [fe, db, 6379, 'TCP', ALLOW],
      [dc, db, 80, 'TCP', ALLOW],
      [mp, db, 80, 'TCP', DENY],
    ]);
    const unordered = world(k8sDb, cnp('default', 'aaa', { selector: "role == 'db'", ingress: [{ action: 'Deny' }] }));
    expectAll(unordered, [[fe, db, 6379, 'TCP', ALLOW]]); // no order: after k8sDb, despite its name
  });

  test('Pass in the last tier leaves the decision to the profile, which allows', () => {
    const w = world(
      knp('default', 'deny', { podSelector: {} }),
      gnp('pass', { order: 100, selector: "role == 'db'", ingress: [{ action: 'Pass' }] }),
    );
    expectAll(w, [
      [mp, db, 1, 'TCP', ALLOW],
      [mp, fe, 1, 'TCP', DENY], // fe is not selected by `pass`
    ]);
  });

  test('a policy in a tier that does not exist is an error', () => {
    assert.throws(() => allowed(world(gnp('p', { tier: 'nope', selector: 'all()' })), conn(fe, db)), /does not exist/);
  });
});

describe('Calico rules', () => {
  const ingressTo = (rule: object, kind: 'global' | 'default' = 'global') =>
    world(
      kind === 'global'
        ? gnp('p', { selector: "role == 'db'", ingress: [rule] })
        : cnp('default', 'p', { selector: "role == 'db'", ingress: [rule] }),
    );

  test('nets and notNets', () => {
    expectAll(ingressTo({ action: 'Allow', source: { nets: ['10.0.0.0/24', '10.0.2.0/24'] } }), [
      [fe, db, 1, 'TCP', ALLOW],
      [client, db, 1, 'TCP', ALLOW],
      [mp, db, 1, 'TCP', DENY],
    ]);
    expectAll(ingressTo({ action: 'Allow', source: { nets: ['10.0.0.0/16'], notNets: ['10.0.1.0/24'] } }), [
      [fe, db, 1, 'TCP', ALLOW],
      [mp, db, 1, 'TCP', DENY],
      [ext('10.0.9.9'), db, 1, 'TCP', ALLOW],
    ]);
    expectAll(ingressTo({ action: 'Allow', destination: { nets: ['172.17.0.10/32'] } }), [[fe, db, 1, 'TCP', ALLOW]]);
  });

  test('a selector in a namespaced policy means its namespace; in a global policy, every namespace', () => {
    const rule = { action: 'Allow', source: { selector: "role == 'client'" } };
    expectAll(ingressTo(rule, 'default'), [
      [dc, db, 1, 'TCP', ALLOW],
      [client, db, 1, 'TCP', DENY],
    ]);
    expectAll(ingressTo(rule, 'global'), [
      [dc, db, 1, 'TCP', ALLOW],
      [client, db, 1, 'TCP', ALLOW],
      [ext('10.0.0.3'), db, 1, 'TCP', DENY], // a selector matches endpoints, not bare IPs
    ]);
  });

  test('a namespaceSelector sets the scope of the selector', () => {
    expectAll(
      ingressTo(
        { action: 'Allow', source: { namespaceSelector: "user == 'alice'", selector: "role == 'client'" } },
        'default',
      ),
      [
        [client, db, 1, 'TCP', ALLOW],
        [stranger, db, 1, 'TCP', DENY],
        [dc, db, 1, 'TCP', DENY],
      ],
    );
    expectAll(ingressTo({ action: 'Allow', source: { namespaceSelector: 'all()' } }, 'default'), [
      [client, db, 1, 'TCP', ALLOW],
      [mp, db, 1, 'TCP', ALLOW],
      [ext('10.0.0.3'), db, 1, 'TCP', DENY],
    ]);
    expectAll(ingressTo({ action: 'Allow', source: { namespaceSelector: "projectcalico.org/name == 'myproject'" } }), [
      [mp, db, 1, 'TCP', ALLOW],
      [fe, db, 1, 'TCP', DENY],
    ]);
    expectAll(
      ingressTo({ action: 'Allow', source: { namespaceSelector: "kubernetes.io/metadata.name == 'myproject'" } }),
      [[mp, db, 1, 'TCP', ALLOW]],
    );
  });

  test("Calico's automatic labels on pods", () => {
    expectAll(
      ingressTo({
        action: 'Allow',
        source: { selector: "projectcalico.org/namespace == 'other' && projectcalico.org/orchestrator == 'k8s'" },
      }),
      [
        [client, db, 1, 'TCP', ALLOW],
        [mp, db, 1, 'TCP', DENY],
      ],
    );
    expectAll(ingressTo({ action: 'Allow', source: { selector: "projectcalico.org/serviceaccount == 'api-sa'" } }), [
      [mp, db, 1, 'TCP', ALLOW],
      [fe, db, 1, 'TCP', DENY],
    ]);
  });

  test('notSelector: anything but; limited to the namespace in a namespaced policy', () => {
    const rule = { action: 'Allow', source: { notSelector: "role == 'frontend'" } };
    expectAll(ingressTo(rule, 'global'), [
      [fe, db, 1, 'TCP', DENY],
      [stranger, db, 1, 'TCP', DENY],
      [mp, db, 1, 'TCP', ALLOW],
      [ext('198.51.100.1'), db, 1, 'TCP', ALLOW], // outside the cluster too
    ]);
    expectAll(ingressTo(rule, 'default'), [
      [fe, db, 1, 'TCP', DENY],
      [dc, db, 1, 'TCP', ALLOW],
      [mp, db, 1, 'TCP', DENY], // another namespace
      [ext('198.51.100.1'), db, 1, 'TCP', DENY],
    ]);
  });

  test('network sets: a selector matches the IPs in their nets', () => {
    const outside = netset('default', 'partners', { kind: 'partner' }, ['203.0.113.0/24']);
    const global = netset(undefined, 'partners-global', { kind: 'partner' }, ['198.51.100.0/24']);
    const ns = (rule: object) =>
      world(outside, global, cnp('default', 'p', { selector: "role == 'db'", ingress: [rule] }));
    expectAll(ns({ action: 'Allow', source: { selector: "kind == 'partner'" } }), [
      [ext('203.0.113.5'), db, 1, 'TCP', ALLOW],
      [ext('198.51.100.5'), db, 1, 'TCP', DENY], // a global set is out of a namespaced policy's scope
      [fe, db, 1, 'TCP', DENY],
    ]);
    expectAll(ns({ action: 'Allow', source: { namespaceSelector: 'global()', selector: "kind == 'partner'" } }), [
      [ext('198.51.100.5'), db, 1, 'TCP', ALLOW],
      [ext('203.0.113.5'), db, 1, 'TCP', DENY],
    ]);
    const g = world(
      outside,
      global,
      gnp('p', { selector: "role == 'db'", ingress: [{ action: 'Allow', source: { selector: "kind == 'partner'" } }] }),
    );
    expectAll(g, [
      [ext('198.51.100.5'), db, 1, 'TCP', ALLOW],
      [ext('203.0.113.5'), db, 1, 'TCP', ALLOW],
    ]);
    // A network set's nets may hold pod IPs: the pod matches through the set, whatever its labels.
    const pods = world(
      netset('default', 'fe-net', { kind: 'partner' }, ['10.0.0.2/32']),
      cnp('default', 'p', {
        selector: "role == 'db'",
        ingress: [{ action: 'Allow', source: { selector: "kind == 'partner'" } }],
      }),
    );
    expectAll(pods, [
      [fe, db, 1, 'TCP', ALLOW], // fe is not kind=partner, but its IP is in the set
      [dc, db, 1, 'TCP', DENY],
    ]);
  });

  test('ports: numbers, ranges, named ports on the destination, notPorts', () => {
    expectAll(ingressTo({ action: 'Allow', protocol: 'TCP', destination: { ports: [6379, '8000:8080'] } }), [
      [fe, db, 6379, 'TCP', ALLOW],
      [fe, db, 8000, 'TCP', ALLOW],
      [fe, db, 8080, 'TCP', ALLOW],
      [fe, db, 8081, 'TCP', DENY],
      [fe, db, 6379, 'UDP', DENY],
    ]);
    expectAll(ingressTo({ action: 'Allow', protocol: 'TCP', destination: { ports: ['redis'] } }), [
      [fe, db, 6379, 'TCP', ALLOW],
      [fe, db, 6380, 'TCP', DENY], // the source's redis
    ]);
    expectAll(ingressTo({ action: 'Allow', protocol: 'UDP', destination: { ports: ['dns'] } }), [
      [fe, db, 53, 'UDP', ALLOW],
      [fe, db, 53, 'TCP', DENY],
    ]);
    expectAll(ingressTo({ action: 'Allow', protocol: 'TCP', destination: { notPorts: ['1:1024'] } }), [
      [fe, db, 6379, 'TCP', ALLOW],
      [fe, db, 80, 'TCP', DENY],
    ]);
    assert.throws(
      () => allowed(ingressTo({ action: 'Allow', destination: { ports: [80] } }), conn(fe, db, 80)),
      /protocol/,
    );
  });

  test('source ports need the connection to say its source port', () => {
    const w = ingressTo({ action: 'Allow', protocol: 'TCP', source: { ports: ['1024:65535'] } });
    assert.equal(allowed(w, { ...conn(fe, db), srcPort: 40000 }), true);
    assert.equal(allowed(w, { ...conn(fe, db), srcPort: 999 }), false);
    assert.throws(() => allowed(w, conn(fe, db)), /srcPort/);
  });

  test('protocol and notProtocol, by name or number', () => {
    expectAll(ingressTo({ action: 'Allow', protocol: 'UDP' }), [
      [fe, db, 53, 'UDP', ALLOW],
      [fe, db, 53, 'TCP', DENY],
    ]);
    expectAll(ingressTo({ action: 'Allow', protocol: 17 }), [[fe, db, 53, 'UDP', ALLOW]]);
    expectAll(ingressTo({ action: 'Allow', notProtocol: 'TCP' }), [
      [fe, db, 53, 'UDP', ALLOW],
      [fe, db, 53, 'TCP', DENY],
    ]);
  });

  test('ICMP type and code, and notICMP', () => {
    const icmp = (type: number, code: number): RefConnection => ({
      src: fe,
      dst: db,
      protocol: 'ICMP',
      icmpType: type,
      icmpCode: code,
    });
    const echo = ingressTo({ action: 'Allow', protocol: 'ICMP', icmp: { type: 8 } });
    assert.equal(allowed(echo, icmp(8, 0)), true);
    assert.equal(allowed(echo, icmp(0, 0)), false);
    const code = ingressTo({ action: 'Allow', protocol: 'ICMP', icmp: { type: 3, code: 4 } });
    assert.equal(allowed(code, icmp(3, 4)), true);
    assert.equal(allowed(code, icmp(3, 3)), false);
    const notEcho = ingressTo({ action: 'Allow', protocol: 'ICMP', notICMP: { type: 8, code: 0 } });
    assert.equal(allowed(notEcho, icmp(8, 0)), false);
    assert.equal(allowed(notEcho, icmp(8, 1)), true);
    assert.equal(allowed(notEcho, conn(fe, db)), false); // TCP is not ICMP
  });

  test('serviceAccounts by name and by label; serviceAccountSelector on the policy', () => {
    expectAll(ingressTo({ action: 'Allow', source: { serviceAccounts: { names: ['api-sa'] } } }), [
      [mp, db, 1, 'TCP', ALLOW],
      [fe, db, 1, 'TCP', DENY],
    ]);
    expectAll(ingressTo({ action: 'Allow', source: { serviceAccounts: { selector: "team == 'blue'" } } }), [
      [fe, db, 1, 'TCP', ALLOW],
      [mp, db, 1, 'TCP', DENY],
      [dc, db, 1, 'TCP', DENY], // the `default` service account has no labels
    ]);
    // In a namespaced policy, service accounts of its own namespace only.
    expectAll(ingressTo({ action: 'Allow', source: { serviceAccounts: { names: ['api-sa'] } } }, 'default'), [
      [mp, db, 1, 'TCP', DENY],
    ]);
    const bySa = world(
      gnp('p', { serviceAccountSelector: "projectcalico.org/name == 'web-sa'", ingress: [{ action: 'Deny' }] }),
    );
    expectAll(bySa, [
      [mp, fe, 1, 'TCP', DENY],
      [mp, db, 1, 'TCP', ALLOW],
    ]);
  });

  test("a global policy's namespaceSelector limits the endpoints it applies to", () => {
    const w = world(
      gnp('p', { namespaceSelector: "user == 'alice'", selector: 'all()', ingress: [{ action: 'Deny' }] }),
    );
    expectAll(w, [
      [fe, client, 1, 'TCP', DENY],
      [fe, mp, 1, 'TCP', ALLOW],
    ]);
  });

  test('a namespaced Calico policy applies to its own namespace only', () => {
    const w = world(cnp('myproject', 'p', { selector: 'all()', ingress: [{ action: 'Deny' }] }));
    expectAll(w, [
      [fe, mp, 1, 'TCP', DENY],
      [fe, db, 1, 'TCP', ALLOW],
    ]);
  });

  test('egress rules look at the destination', () => {
    const w = world(
      gnp('p', {
        selector: "role == 'frontend'",
        egress: [{ action: 'Deny', destination: { selector: "role == 'db'" } }, { action: 'Allow' }],
      }),
    );
    expectAll(w, [
      [fe, db, 6379, 'TCP', DENY],
      [fe, mp, 7000, 'TCP', ALLOW],
      [dc, db, 6379, 'TCP', ALLOW],
    ]);
  });
});

// ---------------------------------------------------------------------------------------------

/** Three nodes with a /24 each; pods spread so that no namespace lines up with a node. */
const LAB_IPS = Object.fromEntries(POD_NAMES.map((n, i) => [n, `10.244.${i % 3}.${10 + i}`]));
/** Everything in one /24. */
const FLAT_IPS = Object.fromEntries(POD_NAMES.map((n, i) => [n, `10.1.0.${20 + i}`]));

describe('conformance cases', () => {
  const labWorld = makeWorld(LAB_IPS);
  const cases = generateCases(labWorld, { seed: 1 });

  test('the world: 3 namespaces, 9 pods on TCP and UDP 80 and 81, named ports that differ', () => {
    assert.equal(labWorld.namespaces.length, 3);
    assert.equal(labWorld.pods.length, 9);
    for (const p of labWorld.pods) {
      const served = p.ports.map((x) => `${x.protocol}/${x.port}`).sort();
      assert.deepEqual(served, ['TCP/80', 'TCP/81', 'UDP/80', 'UDP/81']);
      const names = p.ports.flatMap((x) => (x.name ? [x.name] : []));
      assert.equal(new Set(names).size, names.length, `${p.name}: port names are unique`);
    }
    const httpPorts = new Set(labWorld.pods.map((p) => p.ports.find((x) => x.name === 'http')?.port));
    assert.deepEqual([...httpPorts].sort(), [80, 81]);
    assert.throws(() => makeWorld({}), /no IP/);
  });

  test('the probe matrix: every ordered pair of distinct pods, TCP and UDP, ports 80 and 81', () => {
    const probes = probeMatrix(labWorld);
    assert.equal(probes.length, 9 * 8 * 2 * 2);
    assert.equal(new Set(probes.map(probeKey)).size, probes.length);
    assert.ok(probes.every((p) => p.src !== p.dst));
  });

  test('deterministic for a seed, different across seeds', () => {
    assert.deepEqual(generateCases(labWorld, { seed: 1 }), cases);
    assert.notDeepEqual(generateCases(labWorld, { seed: 2, count: 30 }), cases.slice(0, 30));
    assert.deepEqual(generateCases(labWorld, { seed: 1, count: 30 }), cases.slice(0, 30));
  });

  test('at least 200 cases by default, every family', (t) => {
    assert.ok(cases.length >= 200, `${cases.length} cases`);
    assert.deepEqual(new Set(cases.map((c) => c.family)), new Set(FAMILY_NAMES));
    t.diagnostic(`${cases.length} cases, ${FAMILY_NAMES.length} families`);
  });

  test('each case has allowed and denied probes, unless uniform on purpose; mutations change something', () => {
    for (const c of cases) {
      const after = expected(labWorld, c);
      const n = after.filter((e) => e.allowed).length;
      if (c.uniform) assert.ok(n === 0 || n === after.length, c.name);
      else assert.ok(n > 0 && n < after.length, `${c.name}: ${n} of ${after.length} allowed`);
      if (c.mutations) {
        const before = expected(labWorld, c, { beforeMutations: true });
        assert.ok(
          before.some((b, i) => b.allowed !== after[i].allowed),
          `${c.name}: its mutation changes nothing`,
        );
      }
    }
  });

  test('every feature is covered by several cases', (t) => {
    const required = [
      'default-deny-ingress',
      'default-deny-egress',
      'default-deny-both',
      'uniform',
      'select-all-pods',
      'select-some-pods',
      'peer-pod-labels',
      'peer-all-pods-in-namespace',
      'match-In',
      'match-NotIn',
      'match-Exists',
      'match-DoesNotExist',
      'peer-namespace-labels',
      'peer-namespace-name',
      'peer-all-namespaces',
      'peer-pod-and-namespace',
      'peers-or',
      'ipblock',
      'ipblock-except',
      'port-named',
      'port-numeric',
      'port-range',
      'port-all-of-protocol',
      'protocol-tcp',
      'protocol-udp',
      'protocol-default-tcp',
      'rule-all-peers',
      'rule-all-ports',
      'types-explicit',
      'types-defaulted',
      'types-defaulted-egress',
      'types-ignore-rules',
      'ingress-rules',
      'egress-rules',
      'union',
      'egress-and-ingress',
      'mutation-pod-labels',
      'mutation-pod-enters',
      'mutation-pod-leaves',
      'mutation-namespace-labels',
      'mutation-namespace-enters',
      'mutation-namespace-leaves',
    ];
    const counts = new Map<string, number>();
    for (const c of cases) for (const f of caseFeatures(labWorld, c)) counts.set(f, (counts.get(f) ?? 0) + 1);
    t.diagnostic(
      [...counts]
        .sort()
        .map(([f, n]) => `${f}=${n}`)
        .join(' '),
    );
    for (const f of required) assert.ok((counts.get(f) ?? 0) >= 3, `${f}: ${counts.get(f) ?? 0} cases`);
  });

  test('well-formed wire objects: names unique per namespace, CIDRs from the pod IPs', () => {
    const ips = labWorld.pods.map((p) => p.ip);
    for (const c of cases) {
      assert.deepEqual(JSON.parse(JSON.stringify(c)), c, `${c.name} is plain JSON`);
      const names = c.policies.map((p) => `${p.metadata.namespace}/${p.metadata.name}`);
      assert.equal(new Set(names).size, names.length, c.name);
      for (const p of c.policies) {
        assert.equal(p.apiVersion, 'networking.k8s.io/v1');
        assert.equal(p.kind, 'NetworkPolicy');
        assert.match(p.metadata.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
        const peers = [
          ...(p.spec.ingress ?? []).flatMap((r) => r.from ?? []),
          ...(p.spec.egress ?? []).flatMap((r) => r.to ?? []),
        ];
        for (const peer of peers) {
          if (!peer.ipBlock) continue;
          const { cidr, except = [] } = peer.ipBlock;
          assert.ok(
            ips.some((ip) => cidrContainsText(cidr, ip)),
            `${c.name}: ${cidr} holds a pod`,
          );
          for (const e of except)
            assert.ok(
              ips.some((ip) => cidrContainsText(e, ip)),
              `${c.name}: except ${e} holds a pod`,
            );
        }
      }
    }
  });

  test('cases depend on the IPs only through ipBlocks', () => {
    const flat = generateCases(makeWorld(FLAT_IPS), { seed: 1 });
    assert.equal(flat.length, cases.length);
    let same = 0;
    for (let i = 0; i < cases.length; i++) {
      if (hasIpBlock(cases[i]) || hasIpBlock(flat[i])) continue;
      assert.deepEqual(flat[i], cases[i], cases[i].name);
      same++;
    }
    assert.ok(same > cases.length / 2);
  });
});

function hasIpBlock(c: Case): boolean {
  return JSON.stringify(c.policies).includes('ipBlock');
}

function cidrContainsText(cidr: string, ip: string): boolean {
  // Written out again so the check does not lean on the code it checks.
  const [base, bits] = cidr.split('/');
  const toBits = (a: string) =>
    a
      .split('.')
      .map((o) => Number(o).toString(2).padStart(8, '0'))
      .join('');
  return toBits(base).slice(0, Number(bits)) === toBits(ip).slice(0, Number(bits));
}
