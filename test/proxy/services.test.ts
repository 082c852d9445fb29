// The calculation from Services and EndpointSlices to one node's frontends, one semantic per test,
// with hand-written objects. No kernel, no root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1EndpointSlice, V1Service, V1ServicePort, V1ServiceSpec } from '@kubernetes/client-node';
import { computeFrontends, parseCidr, type ComputeResult } from '../../src/proxy/services.js';
import {
  FrontendFlags,
  servicePortNameString,
  toNatFrontend,
  type DesiredFrontend,
  type JsonForm,
  type ProxyError,
} from '../../src/proxy/model.js';

const NODE = 'node-1';
const NODE_IP = '192.168.1.11';

interface SvcOpts {
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  lbIngress?: { ip?: string; hostname?: string; ipMode?: string }[];
  created?: string;
}

function svc(name: string, spec: Partial<V1ServiceSpec>, o: SvcOpts = {}): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace: o.namespace ?? 'default',
      labels: o.labels,
      annotations: o.annotations,
      resourceVersion: '1',
      creationTimestamp: o.created ? new Date(o.created) : undefined,
    },
    spec: { type: 'ClusterIP', ports: [{ name: 'http', port: 80, protocol: 'TCP' }], ...spec },
    status: o.lbIngress ? { loadBalancer: { ingress: o.lbIngress } } : {},
  };
}

interface Ep {
  ip: string;
  node?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

function slice(
  service: string,
  name: string,
  ports: [name: string, port: number, protocol?: string][],
  endpoints: Ep[],
  o: { namespace?: string; labels?: Record<string, string>; addressType?: string } = {},
): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: o.namespace ?? 'default',
      labels: { 'kubernetes.io/service-name': service, ...o.labels },
      resourceVersion: '1',
    },
    addressType: o.addressType ?? 'IPv4',
    ports: ports.map(([n, port, protocol]) => ({ name: n, port, protocol: protocol ?? 'TCP' })),
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      nodeName: e.node,
      conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating },
    })),
  };
}

const ready = (ip: string, node = 'node-2'): Ep => ({ ip, node, ready: true, serving: true, terminating: false });
const terminating = (ip: string, node = 'node-2', serving = true): Ep => ({
  ip,
  node,
  ready: false,
  serving,
  terminating: true,
});
const notReady = (ip: string, node = 'node-2'): Ep => ({ ip, node, ready: false, serving: false, terminating: false });

function compute(
  services: V1Service[],
  endpointSlices: V1EndpointSlice[] = [],
  o: { serviceProxyName?: string } = {},
): ComputeResult {
  return computeFrontends({ services, endpointSlices, nodeName: NODE, nodeIPs: [NODE_IP], ...o });
}

function fe(r: ComputeResult, key: string): DesiredFrontend {
  const f = r.frontends.find((x) => x.key === key);
  assert.ok(f, `frontend ${key} in ${JSON.stringify(r.frontends.map((x) => x.key))}`);
  return f;
}

const addrs = (f: DesiredFrontend) => f.backends.map((b) => `${b.addr}:${b.port}${b.local ? ' local' : ''}`);
const keys = (r: ComputeResult) => r.frontends.map((f) => f.key).sort();
const where = (errors: ProxyError[]) => errors.map((e) => `${e.object} ${e.field}`);

const web = (spec: Partial<V1ServiceSpec> = {}, o: SvcOpts = {}) => svc('web', { clusterIP: '10.96.0.10', ...spec }, o);
const webSlice = (eps: Ep[], name = 'web-abc', port = 8080) => slice('web', name, [['http', port]], eps);

test('ClusterIP: one frontend per port, backends at the target port, local ones first', () => {
  const r = compute([web()], [webSlice([ready('10.65.2.5'), ready('10.65.1.3', NODE), ready('10.65.2.4')])]);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(keys(r), ['default/web:http/TCP@10.96.0.10:80']);
  const f = r.frontends[0];
  assert.deepEqual(
    { addr: f.addr, port: f.port, proto: f.proto, kind: f.kind, flags: f.flags, aff: f.affinityTimeoutSeconds },
    { addr: '10.96.0.10', port: 80, proto: 6, kind: 'clusterIP', flags: 0, aff: 0 },
  );
  assert.deepEqual(f.servicePort, { namespace: 'default', name: 'web', port: 'http', protocol: 'TCP' });
  assert.equal(servicePortNameString(f.servicePort), 'default/web:http/TCP');
  assert.equal(f.group, 'default/web:http/TCP');
  assert.equal(f.sourceRanges, undefined);
  assert.deepEqual(addrs(f), ['10.65.1.3:8080 local', '10.65.2.4:8080', '10.65.2.5:8080']);
  assert.deepEqual(f.backends[0], {
    addr: '10.65.1.3',
    port: 8080,
    nodeName: NODE,
    local: true,
    ready: true,
    serving: true,
    terminating: false,
  });
  assert.deepEqual(r.healthCheckNodePorts, []);
});

test('clusterIPs: IPv4 entries only; IPv6 ones and IPv6-only Services are ignored without an error', () => {
  const dual = web({ clusterIP: 'fd00::10', clusterIPs: ['fd00::10', '10.96.0.10'], ipFamilies: ['IPv6', 'IPv4'] });
  const v6 = svc('v6only', { clusterIP: 'fd00::20', clusterIPs: ['fd00::20'], type: 'NodePort' });
  const r = compute([dual, v6], [webSlice([ready('10.65.2.4')])]);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(keys(r), ['default/web:http/TCP@10.96.0.10:80']);
});

test('NodePort: a wildcard frontend (0.0.0.0, every node address) with the NODEPORT flag', () => {
  const s = web({ type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
  const r = compute([s], [webSlice([ready('10.65.2.4')])]);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(keys(r), ['default/web:http/TCP@*:30080', 'default/web:http/TCP@10.96.0.10:80']);
  const np = fe(r, 'default/web:http/TCP@*:30080');
  assert.deepEqual([np.addr, np.port, np.kind, np.flags], ['0.0.0.0', 30080, 'nodePort', FrontendFlags.NODEPORT]);
  assert.equal(np.group, fe(r, 'default/web:http/TCP@10.96.0.10:80').group, 'one backend set for the service port');
  assert.deepEqual(addrs(np), ['10.65.2.4:8080']);
});

test('LoadBalancer: status.loadBalancer.ingress IPs (not hostnames, not ipMode Proxy), flagged EXTERNAL', () => {
  const s = web(
    { type: 'LoadBalancer', ports: [{ name: 'http', port: 80, nodePort: 30080 }] },
    { lbIngress: [{ ip: '203.0.113.7' }, { hostname: 'lb.example.com' }, { ip: '203.0.113.8', ipMode: 'Proxy' }] },
  );
  const r = compute([s], [webSlice([ready('10.65.2.4')])]);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(keys(r), [
    'default/web:http/TCP@*:30080',
    'default/web:http/TCP@10.96.0.10:80',
    'default/web:http/TCP@203.0.113.7:80',
  ]);
  const lb = fe(r, 'default/web:http/TCP@203.0.113.7:80');
  assert.deepEqual([lb.kind, lb.flags, lb.sourceRanges], ['loadBalancer', FrontendFlags.EXTERNAL, undefined]);
  // A ClusterIP Service with a stale ingress status gets no LoadBalancer frontend.
  const stale = compute([web({}, { lbIngress: [{ ip: '203.0.113.7' }] })]);
  assert.deepEqual(keys(stale), ['default/web:http/TCP@10.96.0.10:80']);
});

test('externalIPs: one EXTERNAL frontend each; IPv6 ignored; an invalid one is reported, the rest programmed', () => {
  const s = web({ externalIPs: ['198.51.100.1', '2001:db8::1', 'not-an-ip', '198.51.100.2'] });
  const r = compute([s], [webSlice([ready('10.65.2.4')])]);
  assert.deepEqual(where(r.errors), ['Service default/web spec.externalIPs[2]']);
  assert.match(r.errors[0].reason, /"not-an-ip" is not an IP address/);
  assert.deepEqual(keys(r), [
    'default/web:http/TCP@10.96.0.10:80',
    'default/web:http/TCP@198.51.100.1:80',
    'default/web:http/TCP@198.51.100.2:80',
  ]);
  const x = fe(r, 'default/web:http/TCP@198.51.100.1:80');
  assert.deepEqual([x.kind, x.flags], ['externalIP', FrontendFlags.EXTERNAL]);
});

test('multi-port Services and named target ports: each port takes the slice port of the same name and protocol', () => {
  const ports: V1ServicePort[] = [
    { name: 'http', port: 80, targetPort: 'web' },
    { name: 'metrics', port: 9090, targetPort: 'prom' },
    { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
    { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5353 },
  ];
  const s = web({ ports });
  const sl = slice(
    'web',
    'web-abc',
    [
      ['http', 8080],
      ['metrics', 9100],
      ['dns', 5353, 'UDP'],
      ['dns-tcp', 5354, 'TCP'],
    ],
    [ready('10.65.2.4')],
  );
  const r = compute([s], [sl]);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(addrs(fe(r, 'default/web:http/TCP@10.96.0.10:80')), ['10.65.2.4:8080']);
  assert.deepEqual(addrs(fe(r, 'default/web:metrics/TCP@10.96.0.10:9090')), ['10.65.2.4:9100']);
  const udp = fe(r, 'default/web:dns/UDP@10.96.0.10:53');
  const tcp = fe(r, 'default/web:dns-tcp/TCP@10.96.0.10:53');
  assert.deepEqual([udp.proto, addrs(udp)], [17, ['10.65.2.4:5353']]);
  assert.deepEqual([tcp.proto, addrs(tcp)], [6, ['10.65.2.4:5354']]);

  // A single unnamed port matches the slice's unnamed port.
  const one = svc('one', { clusterIP: '10.96.0.11', ports: [{ port: 80, targetPort: 8080 }] });
  const r1 = compute([one], [slice('one', 'one-x', [['', 8080]], [ready('10.65.2.9')])]);
  assert.deepEqual(addrs(fe(r1, 'default/one/TCP@10.96.0.11:80')), ['10.65.2.9:8080']);
});

test('SCTP: that port is reported as not supported yet, the rest of the Service is programmed', () => {
  const s = web({
    ports: [
      { name: 'http', port: 80 },
      { name: 'sig', port: 3868, protocol: 'SCTP' },
    ],
  });
  const r = compute([s], [webSlice([ready('10.65.2.4')])]);
  assert.deepEqual(where(r.errors), ['Service default/web spec.ports[1].protocol']);
  assert.match(r.errors[0].reason, /SCTP is not supported yet; port "sig" 3868\/SCTP not programmed/);
  assert.deepEqual(keys(r), ['default/web:http/TCP@10.96.0.10:80']);
});

test('sessionAffinity ClientIP: the configured timeout, 10800 s by default; None: 0', () => {
  const r = compute([
    svc('a', { clusterIP: '10.96.0.1', sessionAffinity: 'ClientIP' }),
    svc('b', {
      clusterIP: '10.96.0.2',
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
    }),
    svc('c', { clusterIP: '10.96.0.3', sessionAffinity: 'None' }),
    svc('d', {
      clusterIP: '10.96.0.4',
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } },
    }),
  ]);
  const t = (k: string) => fe(r, k).affinityTimeoutSeconds;
  assert.equal(t('default/a:http/TCP@10.96.0.1:80'), 10800);
  assert.equal(t('default/b:http/TCP@10.96.0.2:80'), 60);
  assert.equal(t('default/c:http/TCP@10.96.0.3:80'), 0);
  assert.equal(t('default/d:http/TCP@10.96.0.4:80'), 10800);
  assert.deepEqual(where(r.errors), ['Service default/d spec.sessionAffinityConfig.clientIP.timeoutSeconds']);
});

test('externalTrafficPolicy Local: EXT_LOCAL on NodePort, LoadBalancer and externalIP frontends, and a health-check node port', () => {
  const s = web(
    {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32000,
      externalIPs: ['198.51.100.1'],
      ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    },
    { lbIngress: [{ ip: '203.0.113.7' }] },
  );
  const eps = [ready('10.65.1.3', NODE), ready('10.65.1.4', NODE), ready('10.65.2.4'), notReady('10.65.1.5', NODE)];
  const r = compute([s], [webSlice(eps)]);
  assert.deepEqual(r.errors, []);
  const flags = (k: string) => fe(r, k).flags;
  assert.equal(flags('default/web:http/TCP@10.96.0.10:80'), 0);
  assert.equal(flags('default/web:http/TCP@*:30080'), FrontendFlags.NODEPORT | FrontendFlags.EXT_LOCAL);
  assert.equal(flags('default/web:http/TCP@203.0.113.7:80'), FrontendFlags.EXTERNAL | FrontendFlags.EXT_LOCAL);
  assert.equal(flags('default/web:http/TCP@198.51.100.1:80'), FrontendFlags.EXTERNAL | FrontendFlags.EXT_LOCAL);
  assert.deepEqual(addrs(fe(r, 'default/web:http/TCP@*:30080')), [
    '10.65.1.3:8080 local',
    '10.65.1.4:8080 local',
    '10.65.2.4:8080',
  ]);
  assert.deepEqual(r.healthCheckNodePorts, [
    { port: 32000, service: { namespace: 'default', name: 'web' }, localEndpoints: 2 },
  ]);

  // NodePort type: EXT_LOCAL, but a health check is for load balancers only.
  const np = compute([
    web({ type: 'NodePort', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }),
  ]);
  assert.equal(fe(np, 'default/web:http/TCP@*:30080').flags, FrontendFlags.NODEPORT | FrontendFlags.EXT_LOCAL);
  assert.deepEqual(np.healthCheckNodePorts, []);
});

test('internalTrafficPolicy Local: INT_LOCAL on ClusterIP frontends only', () => {
  const s = web({
    type: 'NodePort',
    internalTrafficPolicy: 'Local',
    ports: [{ name: 'http', port: 80, nodePort: 30080 }],
  });
  const r = compute([s], [webSlice([ready('10.65.1.3', NODE), ready('10.65.2.4')])]);
  assert.equal(fe(r, 'default/web:http/TCP@10.96.0.10:80').flags, FrontendFlags.INT_LOCAL);
  assert.equal(fe(r, 'default/web:http/TCP@*:30080').flags, FrontendFlags.NODEPORT);
  assert.deepEqual(addrs(fe(r, 'default/web:http/TCP@10.96.0.10:80')), ['10.65.1.3:8080 local', '10.65.2.4:8080']);
});

test('endpoint conditions: ready ones only; with none ready, the serving terminating ones (KEP-1669)', () => {
  const key = 'default/web:http/TCP@10.96.0.10:80';
  const some = compute([web()], [webSlice([ready('10.65.2.4'), terminating('10.65.2.5'), notReady('10.65.2.6')])]);
  assert.deepEqual(addrs(fe(some, key)), ['10.65.2.4:8080']);

  const none = compute(
    [web()],
    [webSlice([terminating('10.65.2.5'), terminating('10.65.2.7', 'node-2', false), notReady('10.65.2.6')])],
  );
  const f = fe(none, key);
  assert.deepEqual(addrs(f), ['10.65.2.5:8080'], 'serving terminating only');
  assert.deepEqual([f.backends[0].ready, f.backends[0].serving, f.backends[0].terminating], [false, true, true]);

  const nothing = compute([web()], [webSlice([notReady('10.65.2.6'), terminating('10.65.2.7', 'node-2', false)])]);
  assert.deepEqual(addrs(fe(nothing, key)), [], 'a frontend without backends: the datapath rejects');

  // Unset conditions: ready (and serving) unless terminating.
  const unset = compute(
    [web()],
    [webSlice([{ ip: '10.65.2.8' }, { ip: '10.65.2.9', terminating: true }, { ip: '10.65.2.10', ready: false }])],
  );
  assert.deepEqual(addrs(fe(unset, key)), ['10.65.2.8:8080']);
});

test('Local policies fall back on their own: local serving terminating endpoints while remote ones are ready', () => {
  const s = web({
    type: 'NodePort',
    externalTrafficPolicy: 'Local',
    ports: [{ name: 'http', port: 80, nodePort: 30080 }],
  });
  const r = compute([s], [webSlice([ready('10.65.2.4'), terminating('10.65.1.3', NODE)])]);
  const cip = fe(r, 'default/web:http/TCP@10.96.0.10:80');
  const np = fe(r, 'default/web:http/TCP@*:30080');
  assert.deepEqual(addrs(cip), ['10.65.2.4:8080'], 'cluster-wide: the ready one');
  assert.deepEqual(addrs(np), ['10.65.1.3:8080 local', '10.65.2.4:8080'], 'Local: the local terminating one first');
  assert.equal(np.group, 'default/web:http/TCP|local', 'a backend set of its own');
  assert.equal(cip.group, 'default/web:http/TCP');
});

test('publishNotReadyAddresses: every endpoint counts as ready', () => {
  const r = compute([web({ publishNotReadyAddresses: true })], [webSlice([notReady('10.65.2.6'), ready('10.65.2.4')])]);
  const f = fe(r, 'default/web:http/TCP@10.96.0.10:80');
  assert.deepEqual(addrs(f), ['10.65.2.4:8080', '10.65.2.6:8080']);
  assert.ok(f.backends.every((b) => b.ready));
});

test('service-proxy-name: a labelled Service is skipped unless the label names this proxy', () => {
  const label = (v: string) => ({ labels: { 'service.kubernetes.io/service-proxy-name': v } });
  const services = [
    svc('mine', { clusterIP: '10.96.0.1' }, label('sluice')),
    svc('theirs', { clusterIP: '10.96.0.2' }, label('other-proxy')),
    svc('plain', { clusterIP: '10.96.0.3' }),
  ];
  assert.deepEqual(keys(compute(services, [], { serviceProxyName: 'sluice' })), [
    'default/mine:http/TCP@10.96.0.1:80',
    'default/plain:http/TCP@10.96.0.3:80',
  ]);
  assert.deepEqual(
    keys(compute(services)),
    ['default/plain:http/TCP@10.96.0.3:80'],
    'no proxy name: labelled ones skipped',
  );
});

test('headless (label or clusterIP None) and ExternalName Services are skipped without errors', () => {
  const r = compute(
    [
      svc('h1', { clusterIP: 'None' }),
      svc('h2', { clusterIP: '10.96.0.2' }, { labels: { 'service.kubernetes.io/headless': '' } }),
      svc('ext', { type: 'ExternalName', externalName: 'db.example.com', clusterIP: undefined }),
      svc('ok', { clusterIP: '10.96.0.4' }),
    ],
    [slice('h1', 'h1-x', [['http', 80]], [ready('10.65.2.4')])],
  );
  assert.deepEqual(r.errors, []);
  assert.deepEqual(keys(r), ['default/ok:http/TCP@10.96.0.4:80']);
});

test('loadBalancerSourceRanges: normalised on LoadBalancer frontends only; bad ranges reported and left out', () => {
  const ranges = ['10.0.0.0/8', ' 192.168.1.0/24 ', '10.1.2.3/16', 'bogus', '2001:db8::/32', '010.0.0.0/8'];
  const s = web(
    { type: 'LoadBalancer', loadBalancerSourceRanges: ranges, ports: [{ name: 'http', port: 80, nodePort: 30080 }] },
    { lbIngress: [{ ip: '203.0.113.7' }] },
  );
  const r = compute([s]);
  const lb = fe(r, 'default/web:http/TCP@203.0.113.7:80');
  assert.deepEqual(lb.sourceRanges, ['10.0.0.0/8', '192.168.1.0/24']);
  assert.equal(lb.flags, FrontendFlags.EXTERNAL);
  assert.equal(fe(r, 'default/web:http/TCP@*:30080').sourceRanges, undefined);
  assert.equal(fe(r, 'default/web:http/TCP@10.96.0.10:80').sourceRanges, undefined);
  assert.deepEqual(where(r.errors), [
    'Service default/web spec.loadBalancerSourceRanges[2]',
    'Service default/web spec.loadBalancerSourceRanges[3]',
  ]);
  assert.match(r.errors[0].reason, /host bits set \(the network is 10\.1\.0\.0\/16\)/);

  // Nothing usable: fail closed (every source denied), and say so.
  const closed = compute([
    web({ type: 'LoadBalancer', loadBalancerSourceRanges: ['10.1.2.3/8'] }, { lbIngress: [{ ip: '203.0.113.7' }] }),
  ]);
  const c = fe(closed, 'default/web:http/TCP@203.0.113.7:80');
  assert.deepEqual([c.sourceRanges, c.flags], [[], FrontendFlags.EXTERNAL | FrontendFlags.SRC_DENIED]);
  assert.match(closed.errors.at(-1)!.reason, /deny every IPv4 source/);

  // 0.0.0.0/0 allows everyone: no ranges at all.
  const open = compute([
    web(
      { type: 'LoadBalancer', loadBalancerSourceRanges: ['10.0.0.0/8', '0.0.0.0/0'] },
      { lbIngress: [{ ip: '203.0.113.7' }] },
    ),
  ]);
  assert.equal(fe(open, 'default/web:http/TCP@203.0.113.7:80').sourceRanges, undefined);

  // The beta annotation when the field is empty.
  const ann = compute([
    web(
      { type: 'LoadBalancer' },
      {
        lbIngress: [{ ip: '203.0.113.7' }],
        annotations: { 'service.beta.kubernetes.io/load-balancer-source-ranges': '172.16.0.0/12, 10.0.0.0/8' },
      },
    ),
  ]);
  assert.deepEqual(fe(ann, 'default/web:http/TCP@203.0.113.7:80').sourceRanges, ['10.0.0.0/8', '172.16.0.0/12']);

  assert.deepEqual(parseCidr('1.2.3.4/32'), { v4: '1.2.3.4/32' });
  assert.ok('invalid' in (parseCidr('1.2.3.4/33') as object));
  assert.ok('invalid' in (parseCidr('1.2.3.4') as object));
});

test('the same endpoint in two slices is one backend (the ready copy wins)', () => {
  const r = compute(
    [web()],
    [webSlice([notReady('10.65.2.4'), ready('10.65.2.5')], 'web-a'), webSlice([ready('10.65.2.4')], 'web-b')],
  );
  const f = fe(r, 'default/web:http/TCP@10.96.0.10:80');
  assert.deepEqual(addrs(f), ['10.65.2.4:8080', '10.65.2.5:8080']);
  assert.ok(f.backends.every((b) => b.ready));
});

test('local endpoints: by nodeName, else (host network, no nodeName) by a node address', () => {
  const r = compute([web()], [webSlice([ready('10.65.2.4'), ready('10.65.1.3', NODE), { ip: NODE_IP }])]);
  assert.deepEqual(addrs(fe(r, 'default/web:http/TCP@10.96.0.10:80')), [
    '10.65.1.3:8080 local',
    '192.168.1.11:8080 local',
    '10.65.2.4:8080',
  ]);
});

test('slices that are not IPv4, not labelled with a Service, or of another namespace are not used', () => {
  const r = compute(
    [web()],
    [
      slice('web', 'web-v6', [['http', 8080]], [ready('fd00::4')], { addressType: 'IPv6' }),
      { ...webSlice([ready('10.65.2.9')], 'web-nolabel'), metadata: { name: 'web-nolabel', namespace: 'default' } },
      slice('web', 'web-other-ns', [['http', 8080]], [ready('10.65.2.8')], { namespace: 'other' }),
      webSlice([ready('10.65.2.4')]),
    ],
  );
  assert.deepEqual(r.errors, []);
  assert.deepEqual(addrs(fe(r, 'default/web:http/TCP@10.96.0.10:80')), ['10.65.2.4:8080']);
});

test('invalid data: errors name the object and field; the rest of that Service and other Services still come out', () => {
  const services = [
    web({
      type: 'NodePort',
      ports: [
        { name: 'bad', port: 70000 },
        { name: 'http', port: 80, nodePort: 99999 },
        { name: 'odd', port: 81, protocol: 'ICMP' },
      ],
    }),
    svc('badip', { clusterIP: '10.0.0.300' }),
    svc('good', { clusterIP: '10.96.0.20' }),
    svc('noip', { clusterIP: '' }),
    svc('', { clusterIP: '10.96.0.21' }),
  ];
  const slices = [
    slice(
      'web',
      'web-abc',
      [
        ['http', 8080],
        ['bad', 0],
      ],
      [ready('10.65.2.4'), ready('10.65.2.999')],
    ),
    slice('good', 'good-x', [['http', 8080]], [ready('10.65.2.7')]),
  ];
  const r = compute(services, slices);
  assert.deepEqual(where(r.errors).sort(), [
    'EndpointSlice default/web-abc endpoints[1].addresses[0]',
    'EndpointSlice default/web-abc ports[1].port',
    'Service default/ metadata.name',
    'Service default/badip spec.clusterIP',
    'Service default/noip spec.clusterIP',
    'Service default/web spec.ports[0].port',
    'Service default/web spec.ports[1].nodePort',
    'Service default/web spec.ports[2].protocol',
  ]);
  assert.match(
    r.errors.find((e) => e.field === 'spec.clusterIP' && e.object.endsWith('badip'))!.reason,
    /not an IP address; Service not programmed/,
  );
  assert.deepEqual(keys(r), ['default/good:http/TCP@10.96.0.20:80', 'default/web:http/TCP@10.96.0.10:80']);
  assert.deepEqual(addrs(fe(r, 'default/web:http/TCP@10.96.0.10:80')), ['10.65.2.4:8080']);
});

test('two Services claiming one address: the cluster IP keeps it, then the older Service; the loser is reported', () => {
  const a = svc('a', { clusterIP: '10.96.0.1' }, { created: '2026-01-01T00:00:00Z' });
  const hijack = svc(
    'hijack',
    { clusterIP: '10.96.0.2', externalIPs: ['10.96.0.1'] },
    { created: '2025-01-01T00:00:00Z' },
  );
  const old = svc(
    'old',
    { clusterIP: '10.96.0.3', externalIPs: ['198.51.100.1'] },
    { created: '2025-01-01T00:00:00Z' },
  );
  const young = svc(
    'young',
    { clusterIP: '10.96.0.4', externalIPs: ['198.51.100.1'] },
    { created: '2026-06-01T00:00:00Z' },
  );
  const r = compute([young, hijack, a, old]);
  assert.deepEqual(keys(r), [
    'default/a:http/TCP@10.96.0.1:80',
    'default/hijack:http/TCP@10.96.0.2:80',
    'default/old:http/TCP@10.96.0.3:80',
    'default/old:http/TCP@198.51.100.1:80',
    'default/young:http/TCP@10.96.0.4:80',
  ]);
  assert.deepEqual(where(r.errors).sort(), [
    'Service default/hijack spec.externalIPs[0]',
    'Service default/young spec.externalIPs[0]',
  ]);
  assert.match(
    r.errors.find((e) => e.object.endsWith('hijack'))!.reason,
    /already the clusterIP frontend of default\/a:http\/TCP/,
  );
});

test('objects in JSON wire form (timestamps as strings) are accepted; toNatFrontend maps for the NAT writer', () => {
  const wire: JsonForm<V1Service> = JSON.parse(JSON.stringify(web({}, { created: '2026-01-01T00:00:00Z' })));
  const r = computeFrontends({ services: [wire], endpointSlices: [], nodeName: NODE, nodeIPs: [] });
  const f = fe(r, 'default/web:http/TCP@10.96.0.10:80');
  assert.deepEqual(
    toNatFrontend({
      ...f,
      affinityTimeoutSeconds: 30,
      backends: [{ addr: '1.2.3.4', port: 1, local: true, ready: true, serving: true, terminating: false }],
    }),
    {
      key: f.key,
      group: 'default/web:http/TCP',
      addr: '10.96.0.10',
      port: 80,
      proto: 6,
      flags: 0,
      affinityTimeout: 30,
      sourceRanges: undefined,
      backends: [{ addr: '1.2.3.4', port: 1, local: true }],
    },
  );
});
