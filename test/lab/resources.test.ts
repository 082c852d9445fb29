// Lab resources without root: YAML reading, validation errors that name object, field and reason,
// API-server defaults, allocation of ClusterIPs / NodePorts / LoadBalancer IPs and what updates
// keep, one bad object not blocking the others, and EndpointSlice derivation (conditions,
// terminating pods, publishNotReadyAddresses, named ports resolved per pod, slicing, stability).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  admit,
  defaultClusterConfig,
  loadSchemas,
  ObjectError,
  parseManifests,
  readManifests,
  requestDelete,
  validateFelixSpec,
  validateObject,
  type ClusterConfig,
} from '../../src/lab/resources.js';
import {
  desiredEndpoints,
  MAX_ENDPOINTS_PER_SLICE,
  reconcileSlices,
  SERVICE_NAME_LABEL,
} from '../../src/lab/endpointslices.js';
import { FileStore, type EndpointSlice, type FelixConfiguration, type Pod, type Service } from '../../src/lab/store.js';

const CFG: ClusterConfig = defaultClusterConfig(['node1', 'node2', 'node3'], '192.168.77.0/24', [
  '192.168.77.11',
  '192.168.77.12',
  '192.168.77.13',
  '192.168.77.200',
]);

before(async () => {
  assert.ok(await loadSchemas(), 'client-node models load (unknown-field checks)');
});

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ObjectError, `an ObjectError, not ${String(err)}`);
    return err.message;
  }
  assert.fail('no error');
}

const yamlObj = (text: string): unknown => {
  const r = parseManifests(text);
  assert.deepEqual(r.errors, []);
  return r.manifests[0].value;
};

const dirs: string[] = [];

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function newStore(): Promise<FileStore> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-res-'));
  dirs.push(dir);
  const s = await FileStore.open(dir);
  await s.transaction((tx) => {
    for (const name of ['default', 'team']) tx.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  });
  return s;
}

function service(name: string, spec: Record<string, unknown>, ns = 'default'): unknown {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec };
}

// ---------------------------------------------------------------------------------------------

test('manifests: several documents, empty ones, Lists, YAML errors with their place', () => {
  const r = parseManifests(
    [
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: a}',
      '',
      'apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: c}}',
      'kind: [unclosed',
    ].join('\n---\n'),
    'x.yaml',
  );
  assert.deepEqual(
    r.manifests.map((m) => [m.source, (m.value as { metadata: { name: string } }).metadata.name]),
    [
      ['x.yaml, document 1', 'a'],
      ['x.yaml, document 3, item 0', 'b'],
      ['x.yaml, document 3, item 1', 'c'],
    ],
  );
  assert.equal(r.errors.length, 1);
  assert.match(r.errors[0].source, /x\.yaml, document 4/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-yaml-'));
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'b.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: second}\n');
  fs.writeFileSync(path.join(dir, 'a.yml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: first}\n');
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'ignored');
  const d = readManifests([dir, path.join(dir, 'missing.yaml')]);
  assert.deepEqual(
    d.manifests.map((m) => (m.value as { metadata: { name: string } }).metadata.name),
    ['first', 'second'],
  );
  assert.match(d.errors[0].message, /no such file/);
});

test('validation errors name the object, the field and the reason', () => {
  assert.equal(
    errorOf(() => validateObject(service('web', { ports: [{ port: 70000 }] }))),
    'Service default/web: spec.ports[0].port: 70000 is not a valid port (1-65535)',
  );
  const cases: Array<[unknown, RegExp]> = [
    [
      service('web', { ports: [{ port: 80, targetport: 8080 }] }),
      /^Service default\/web: spec\.ports\[0\]\.targetport: unknown field$/,
    ],
    [
      service('web', { ports: [{ port: 80 }, { port: 81 }] }),
      /spec\.ports\[0\]\.name: required when a Service has more than one port/,
    ],
    [
      service('web', {
        ports: [
          { name: 'a', port: 80 },
          { name: 'a', port: 81 },
        ],
      }),
      /spec\.ports\[1\]\.name: duplicate port name "a"/,
    ],
    [
      service('web', { ports: [{ port: 80, nodePort: 30001 }] }),
      /spec\.ports\[0\]\.nodePort: may not be set for type ClusterIP/,
    ],
    [
      service('web', { type: 'NodePort', ports: [{ port: 80, nodePort: 80 }] }),
      /nodePort: 80 is not a valid node port \(30000-32767\)/,
    ],
    [
      service('web', { ports: [{ port: 80 }], externalTrafficPolicy: 'Local' }),
      /spec\.externalTrafficPolicy: may only be set for externally accessible/,
    ],
    [
      service('web', { ports: [{ port: 80 }], sessionAffinity: 'Sticky' }),
      /spec\.sessionAffinity: "Sticky" is not supported: one of "None", "ClientIP"/,
    ],
    [
      service('web', { type: 'ExternalName', externalName: 'bad name!' }),
      /spec\.externalName: "bad name!" must be a DNS name/,
    ],
    [
      service('web', { ports: [{ port: 80, targetPort: 'this-name-is-far-too-long' }] }),
      /spec\.ports\[0\]\.targetPort: "this-name-is-far-too-long" is not a valid port name/,
    ],
    [service('Web', { ports: [{ port: 80 }] }), /^Service default\/Web: metadata\.name: "Web" is not a valid name/],
    [
      service('web', { ports: [{ port: 80 }], clusterIP: '10.96.300.1' }),
      /spec\.clusterIP: "10\.96\.300\.1" is not a valid IPv4 address/,
    ],
    [
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } },
      /^ConfigMap default\/x: kind: kind ConfigMap is not supported by the lab/,
    ],
    [
      { apiVersion: 'apps/v1', kind: 'Service', metadata: { name: 'x' }, spec: {} },
      /apiVersion: "apps\/v1" is not an API version of Service: use "v1"/,
    ],
    [{ apiVersion: 'v1', metadata: { name: 'x' } }, /^\(no kind\) default\/x: kind: required/],
    [
      yamlObj(`apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: team}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: c, command: [sleep, '1']}]}`),
      /^Deployment team\/d: spec\.template\.metadata\.labels: `selector` does not match template `labels`$/,
    ],
    [
      yamlObj(`apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: nginx
    ports: [{name: web, containerPort: 80}]
    readinessProbe: {tcpSocket: {port: http}}`),
      /^Pod default\/p: spec\.containers\[0\]\.command: required in the lab .*; spec\.containers\[0\]\.readinessProbe\.tcpSocket\.port: port name "http" is not a named port of this container$/,
    ],
    [
      yamlObj(`apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {nodeName: node9, containers: [{name: c, command: [sleep, '1'], env: [{name: N, value: 3}]}]}`),
      /spec\.containers\[0\]\.env\[0\]\.value: must be a string, not 3 \(quote it in YAML\); spec\.nodeName: "node9" is not a node of the lab \(node1, node2, node3\)/,
    ],
    [
      yamlObj(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]
    ports: [{port: 80, endPort: 70}]`),
      /spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except\[0\]: "192\.168\.0\.0\/16" must be strictly within 10\.0\.0\.0\/8; spec\.ingress\[0\]\.ports\[0\]\.endPort: must be greater than or equal to port \(80\)/,
    ],
    [
      {
        apiVersion: 'crd.projectcalico.org/v1',
        kind: 'FelixConfiguration',
        metadata: { name: 'default' },
        spec: { bpfDataIfacePattern: '^(eth', bpfExternalServiceMode: 'Direct', bpfMapSizeConntrack: 0 },
      },
      /^FelixConfiguration default: spec\.bpfDataIfacePattern: "\^\(eth" is not a valid regular expression: .*; spec\.bpfExternalServiceMode: "Direct" is not supported: one of "Tunnel", "DSR"; spec\.bpfMapSizeConntrack: 0 is not a valid bpfMapSizeConntrack \(1-2147483647\)$/,
    ],
  ];
  for (const [obj, re] of cases)
    assert.match(
      errorOf(() => validateObject(obj, { nodes: CFG.nodes })),
      re,
    );
});

test('defaults as the API server fills them in', () => {
  const s = validateObject(
    service('web', { type: 'NodePort', ports: [{ port: 80 }], sessionAffinity: 'ClientIP' }),
  ) as Service;
  assert.equal(s.spec?.ports?.[0].protocol, 'TCP');
  assert.equal(s.spec?.ports?.[0].targetPort, 80);
  assert.equal(s.spec?.externalTrafficPolicy, 'Cluster');
  assert.equal(s.spec?.internalTrafficPolicy, 'Cluster');
  assert.equal(s.spec?.sessionAffinityConfig?.clientIP?.timeoutSeconds, 10800);
  assert.deepEqual(s.spec?.ipFamilies, ['IPv4']);
  const d = validateObject(
    yamlObj(`apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec: {containers: [{name: c, command: [sleep, '1'], readinessProbe: {httpGet: {port: 80}}}]}`),
  ) as { metadata: { namespace: string }; spec: { replicas: number; template: { spec: Pod['spec'] } } };
  assert.equal(d.metadata.namespace, 'default');
  assert.equal(d.spec.replicas, 1);
  assert.equal(d.spec.template.spec?.restartPolicy, 'Always');
  assert.equal(d.spec.template.spec?.containers[0].readinessProbe?.periodSeconds, 10);
  assert.equal(d.spec.template.spec?.containers[0].readinessProbe?.httpGet?.path, '/');
  const f = validateObject({
    apiVersion: 'crd.projectcalico.org/v1',
    kind: 'FelixConfiguration',
    metadata: { name: 'default', namespace: 'x' },
    spec: { bpfEnabled: true, someCalicoField: 1 },
  });
  assert.equal(f.apiVersion, 'projectcalico.org/v3');
  assert.equal(f.metadata?.namespace, undefined);
  assert.deepEqual(
    (f as FelixConfiguration).spec,
    { bpfEnabled: true, someCalicoField: 1 },
    "Calico's other fields are kept",
  );
  assert.deepEqual(validateFelixSpec({ bpfConntrackTimeouts: { tcpEstablished: '1h', udpTimeout: 'soon' } }), [
    { field: 'spec.bpfConntrackTimeouts.udpTimeout', reason: '"soon" is not a duration (e.g. "30s", "1h5m")' },
  ]);
  const ns = validateObject({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team' } });
  assert.equal(ns.metadata?.labels?.['kubernetes.io/metadata.name'], 'team');
});

test('allocation: ClusterIPs, NodePorts, health-check node ports, LoadBalancer IPs; updates keep them', async () => {
  const s = await newStore();
  const put = (obj: unknown): Promise<Service> => s.transaction((tx) => admit(tx, obj, CFG).object as Service);
  const a = await put(service('a', { ports: [{ port: 80 }] }));
  assert.equal(a.spec?.clusterIP, '10.96.1.1', 'dynamic addresses start above the static band');
  assert.deepEqual(a.spec?.clusterIPs, ['10.96.1.1']);
  const b = await put(service('b', { ports: [{ port: 80 }], clusterIP: '10.96.0.10' }));
  assert.equal(b.spec?.clusterIP, '10.96.0.10');
  await assert.rejects(
    put(service('c', { ports: [{ port: 80 }], clusterIP: '10.96.0.10' })),
    /spec\.clusterIP: "10\.96\.0\.10" is already allocated to default\/b/,
  );
  await assert.rejects(
    put(service('c', { ports: [{ port: 80 }], clusterIP: '10.96.0.1' })),
    /reserved for default\/kubernetes/,
  );
  await assert.rejects(
    put(service('c', { ports: [{ port: 80 }], clusterIP: '10.0.0.1' })),
    /not in the service range 10\.96\.0\.0\/12/,
  );
  const h = await put(service('h', { clusterIP: 'None', selector: { app: 'x' } }));
  assert.equal(h.spec?.clusterIP, 'None');
  const x = await put(service('x', { type: 'ExternalName', externalName: 'example.com' }));
  assert.equal(x.spec?.clusterIP, undefined);

  const np = await put(
    service('np', {
      type: 'NodePort',
      ports: [
        { name: 'a', port: 80 },
        { name: 'b', port: 81, nodePort: 30080 },
      ],
    }),
  );
  assert.deepEqual(
    np.spec?.ports?.map((p) => p.nodePort),
    [30086, 30080],
  );
  await assert.rejects(
    put(service('np2', { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] })),
    /nodePort: 30080 is already allocated to default\/np/,
  );
  const lb = await put(service('lb', { type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ port: 443 }] }));
  assert.deepEqual(lb.status?.loadBalancer?.ingress, [{ ip: '192.168.77.65', ipMode: 'VIP' }]);
  assert.equal(lb.spec?.ports?.[0].nodePort, 30087);
  assert.equal(lb.spec?.healthCheckNodePort, 30088);
  const lb2 = await put(
    service('lb2', { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, ports: [{ port: 443 }] }),
  );
  assert.equal(lb2.status?.loadBalancer?.ingress?.[0].ip, '192.168.77.66');
  assert.equal(lb2.spec?.ports?.[0].nodePort, undefined);
  await assert.rejects(
    put(service('lb3', { type: 'LoadBalancer', loadBalancerIP: '192.168.77.66', ports: [{ port: 1 }] })),
    /loadBalancerIP: "192\.168\.77\.66" is already used by default\/lb2/,
  );

  // updates: what was allocated stays, by port name for node ports
  const np2 = await put(
    service('np', {
      type: 'NodePort',
      ports: [
        { name: 'b', port: 81 },
        { name: 'a', port: 8080 },
        { name: 'c', port: 82 },
      ],
    }),
  );
  assert.equal(np2.spec?.clusterIP, np.spec?.clusterIP);
  assert.deepEqual(
    np2.spec?.ports?.map((p) => p.nodePort),
    [30080, 30086, 30089],
  );
  const lbAgain = await put(
    service('lb', { type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ port: 443 }] }),
  );
  assert.equal(lbAgain.status?.loadBalancer?.ingress?.[0].ip, '192.168.77.65');
  assert.equal(lbAgain.spec?.healthCheckNodePort, 30088);
  assert.equal(lbAgain.metadata?.resourceVersion, lb.metadata?.resourceVersion, 'an identical apply changes nothing');
  await assert.rejects(
    put(service('a', { ports: [{ port: 80 }], clusterIP: '10.96.5.5' })),
    /spec\.clusterIP: field is immutable/,
  );
  // NodePort -> ClusterIP releases the node ports
  const back = await put(service('np', { ports: [{ port: 80 }] }));
  assert.equal(back.spec?.ports?.[0].nodePort, undefined);
  await put(service('np3', { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] }));
  s.close();
});

test('one bad object does not block the others, and a bad update loses nothing', async () => {
  const s = await newStore();
  const { manifests } = parseManifests(
    `apiVersion: v1
kind: Service
metadata: {name: good1}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 70000}]}
---
apiVersion: v1
kind: Service
metadata: {name: lost, namespace: nowhere}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: good2}
spec: {type: NodePort, ports: [{port: 80}]}`,
    'app.yaml',
  );
  const results: string[] = [];
  for (const m of manifests) {
    try {
      const r = await s.transaction((tx) => admit(tx, m.value, CFG, m.source));
      results.push(`${r.object.metadata?.name} ${r.result}`);
    } catch (err) {
      assert.ok(err instanceof ObjectError);
      results.push(`${err.source}: ${err.message}`);
    }
  }
  assert.deepEqual(results, [
    'good1 created',
    'app.yaml, document 2: Service default/web: spec.ports[0].port: 70000 is not a valid port (1-65535)',
    'app.yaml, document 3: Service nowhere/lost: metadata.namespace: namespace "nowhere" does not exist (create it first, e.g. earlier in the same file)',
    'good2 created',
  ]);
  const before = await s.get('Service', 'default', 'good2');
  await assert.rejects(
    s.transaction((tx) => admit(tx, service('good2', { type: 'NodePort', ports: [{ port: 80, nodePort: 5 }] }), CFG)),
    /good2: spec\.ports\[0\]\.nodePort: 5 is not a valid node port/,
  );
  assert.deepEqual(await s.get('Service', 'default', 'good2'), before);
  assert.deepEqual(
    (await s.list('Service')).items.map((o) => o.metadata?.name),
    ['good1', 'good2'],
  );
  // deletion: pods are marked (the kubelet finishes them), the rest goes at once
  await s.transaction((tx) =>
    admit(
      tx,
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'p' },
        spec: { containers: [{ name: 'c', command: ['sleep', '9'] }] },
      },
      CFG,
    ),
  );
  const marked = (await s.transaction((tx) => requestDelete(tx, 'Pod', 'default', 'p'))) as Pod;
  assert.ok(marked.metadata?.deletionTimestamp);
  assert.equal(marked.metadata?.deletionGracePeriodSeconds, 30);
  await assert.rejects(
    s.transaction((tx) =>
      admit(
        tx,
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'p' },
          spec: { containers: [{ name: 'c', command: ['sleep', '9'] }] },
        },
        CFG,
      ),
    ),
    /Pod default\/p is being deleted/,
  );
  assert.equal((await s.transaction((tx) => requestDelete(tx, 'Service', 'default', 'good1'))) !== undefined, true);
  assert.equal(await s.get('Service', 'default', 'good1'), undefined);
  s.close();
});

// ---------------------------------------------------------------------------------------------
// EndpointSlices

interface PodOpts {
  ready?: boolean;
  phase?: string;
  ip?: string | null;
  deleting?: boolean;
  labels?: Record<string, string>;
  ports?: Array<{ name: string; containerPort: number; protocol?: string }>;
  node?: string;
  ns?: string;
}

function pod(name: string, o: PodOpts = {}): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: o.ns ?? 'default',
      uid: `uid-${name}`,
      labels: o.labels ?? { app: 'web' },
      ...(o.deleting ? { deletionTimestamp: '2024-01-01T00:00:00Z' } : {}),
    },
    spec: {
      nodeName: o.node ?? 'node1',
      containers: [{ name: 'c', command: ['x'], ports: o.ports ?? [{ name: 'http', containerPort: 8080 }] }],
    },
    status: {
      phase: o.phase ?? 'Running',
      ...(o.ip === null ? {} : { podIP: o.ip ?? `10.65.1.${name.length + (name.charCodeAt(name.length - 1) % 200)}` }),
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
    },
  };
}

function svcObj(spec: Service['spec'], name = 'web'): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default', uid: 'svc-uid', labels: { team: 'a' } },
    spec,
  };
}

const cond = (e: EndpointSlice['endpoints'][number]): string =>
  `${e.targetRef?.name} ready=${e.conditions?.ready} serving=${e.conditions?.serving} terminating=${e.conditions?.terminating}`;

test('endpoints: conditions from readiness and deletion, publishNotReadyAddresses, who is left out', () => {
  const s = svcObj({
    selector: { app: 'web' },
    ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }],
  });
  const pods = [
    pod('a'),
    pod('b', { ready: false }),
    pod('c', { deleting: true }), // terminating but still serving: the fallback data
    pod('d', { deleting: true, ready: false }),
    pod('e', { phase: 'Succeeded' }),
    pod('f', { ip: null }),
    pod('g', { labels: { app: 'other' } }),
    pod('h', { ns: 'team' }),
  ];
  const groups = desiredEndpoints(s, pods);
  assert.equal(groups.length, 1);
  assert.deepEqual(groups[0].ports, [{ name: 'http', port: 8080, protocol: 'TCP' }]);
  assert.deepEqual(groups[0].endpoints.map(cond), [
    'a ready=true serving=true terminating=false',
    'b ready=false serving=false terminating=false',
    'c ready=false serving=true terminating=true',
    'd ready=false serving=false terminating=true',
  ]);
  const a = groups[0].endpoints[0];
  assert.equal(a.nodeName, 'node1');
  assert.deepEqual(a.targetRef, { kind: 'Pod', namespace: 'default', name: 'a', uid: 'uid-a' });
  const pub = desiredEndpoints({ ...s, spec: { ...s.spec, publishNotReadyAddresses: true } }, pods);
  assert.deepEqual(
    pub[0].endpoints.map((e) => e.conditions?.ready),
    [true, true, true, true],
  );
  assert.deepEqual(
    pub[0].endpoints.map((e) => e.conditions?.serving),
    [true, false, true, false],
  );
  // no slices at all for these
  assert.deepEqual(desiredEndpoints(svcObj({ clusterIP: 'None', ports: [{ port: 80 }] }), pods), []);
  assert.deepEqual(
    desiredEndpoints(svcObj({ type: 'ExternalName', externalName: 'x.example', selector: { app: 'web' } }), pods),
    [],
  );
  assert.deepEqual(reconcileSlices(svcObj({ clusterIP: 'None' }), [], []), { create: [], update: [], delete: [] });
});

test('endpoints: named target ports resolve per pod (name and protocol), numbers as they are', () => {
  const s = svcObj({
    selector: { app: 'web' },
    ports: [
      { name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' },
      { name: 'dns', port: 53, targetPort: 'dns', protocol: 'UDP' },
      { name: 'admin', port: 9000, targetPort: 9090, protocol: 'TCP' },
    ],
  });
  const pods = [
    pod('a', {
      ports: [
        { name: 'http', containerPort: 8080 },
        { name: 'dns', containerPort: 5353, protocol: 'UDP' },
      ],
    }),
    pod('bb', {
      ports: [
        { name: 'http', containerPort: 8080 },
        { name: 'dns', containerPort: 5353, protocol: 'UDP' },
      ],
    }),
    pod('ccc', {
      ports: [
        { name: 'http', containerPort: 9999 },
        { name: 'dns', containerPort: 53, protocol: 'TCP' },
      ],
    }),
  ];
  const groups = desiredEndpoints(s, pods);
  const summary = groups.map((g) => [
    g.ports.map((p) => `${p.name}:${p.port}/${p.protocol}`).join(','),
    g.endpoints.map((e) => e.targetRef?.name).join(','),
  ]);
  assert.deepEqual(summary.sort(), [
    ['http:8080/TCP,dns:5353/UDP,admin:9090/TCP', 'a,bb'],
    ['http:9999/TCP,admin:9090/TCP', 'ccc'], // "dns" is TCP in this pod: the UDP port does not resolve
  ]);
  const ch = reconcileSlices(s, groups, []);
  assert.equal(ch.create.length, 2);
  for (const slice of ch.create) {
    assert.equal(slice.addressType, 'IPv4');
    assert.equal(slice.metadata?.labels?.[SERVICE_NAME_LABEL], 'web');
    assert.equal(slice.metadata?.labels?.['endpointslice.kubernetes.io/managed-by'], 'endpointslice-controller.k8s.io');
    assert.equal(slice.metadata?.labels?.team, 'a', "the Service's labels are copied");
    assert.match(slice.metadata?.name ?? '', /^web-[a-z0-9]{5}$/);
    assert.deepEqual(slice.metadata?.ownerReferences?.[0], {
      apiVersion: 'v1',
      kind: 'Service',
      name: 'web',
      uid: 'svc-uid',
      controller: true,
      blockOwnerDeletion: true,
    });
  }
});

test('slices: at most 100 endpoints each, changes touch only the slice concerned, a placeholder when empty', () => {
  const s = svcObj({ selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] });
  const many = Array.from({ length: 250 }, (_, i) =>
    pod(`p${String(i).padStart(3, '0')}`, { ip: `10.65.${1 + Math.floor(i / 200)}.${(i % 200) + 2}` }),
  );
  const first = reconcileSlices(s, desiredEndpoints(s, many), []);
  assert.deepEqual(
    first.create.map((x) => x.endpoints.length),
    [100, 100, 50],
  );
  assert.ok(first.create.every((x) => x.endpoints.length <= MAX_ENDPOINTS_PER_SLICE));
  const stored = first.create;
  // nothing changed: nothing to write
  assert.deepEqual(reconcileSlices(s, desiredEndpoints(s, many), stored), { create: [], update: [], delete: [] });
  // one pod becomes unready: exactly its slice is rewritten
  const changed = many.map((p, i) =>
    i === 120 ? pod(p.metadata?.name ?? '', { ready: false, ip: p.status?.podIP }) : p,
  );
  const ch = reconcileSlices(s, desiredEndpoints(s, changed), stored);
  assert.equal(ch.create.length + ch.delete.length, 0);
  assert.equal(ch.update.length, 1);
  assert.ok(ch.update[0].endpoints.some((e) => e.targetRef?.name === 'p120' && e.conditions?.ready === false));
  // a new pod fills the slice with room instead of making a new one
  const added = reconcileSlices(s, desiredEndpoints(s, [...many, pod('p999', { ip: '10.65.3.9' })]), stored);
  assert.equal(added.create.length, 0);
  assert.equal(added.update.length, 1);
  assert.equal(added.update[0].endpoints.length, 51);
  // no pods left: one empty placeholder slice stays, the others go
  const empty = reconcileSlices(s, desiredEndpoints(s, []), stored);
  assert.equal(empty.delete.length, 2);
  assert.equal(empty.update.length, 1);
  assert.deepEqual([empty.update[0].endpoints, empty.update[0].ports], [[], []]);
  const none = reconcileSlices(s, [], []);
  assert.equal(none.create.length, 1);
  assert.deepEqual(none.create[0].endpoints, []);
});
