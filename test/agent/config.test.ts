// The agent's configuration model: Calico's FelixConfiguration names and defaults, Felix's order of
// precedence (defaults < default < node.<name> < FELIX_* environment), validation that keeps the last
// good value and names source and field, and how each change applies (live or a restart).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  ConfigStore,
  DEFAULT_SOURCE,
  FIELD_NAMES,
  FIELDS,
  compileGoRegexp,
  datapathSettings,
  defaultConfig,
  formatConntrackTimeouts,
  formatDuration,
  formatValue,
  needsRestart,
  parseConntrackTimeoutsEnv,
  parseDuration,
  readNetfilterSysctl,
  resolveConntrackTimeouts,
  type Config,
  type ConfigUpdate,
  type FieldName,
} from '../../src/agent/config.js';

const NODE = 'node-1';

function fc(name: string, spec: Record<string, unknown>, apiVersion = 'projectcalico.org/v3'): object {
  return { apiVersion, kind: 'FelixConfiguration', metadata: { name }, spec };
}

function change(u: ConfigUpdate, name: FieldName) {
  return u.changed.find((c) => c.name === name);
}

function messages(u: ConfigUpdate): string[] {
  return u.errors.map((e) => e.message);
}

test('defaults are Calico’s', () => {
  const c = new ConfigStore(NODE).current();
  assert.equal(c.bpfEnabled, false);
  assert.equal(c.bpfDataIfacePattern.source, '^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan|bond).*)');
  assert.equal(c.bpfKubeProxyIptablesCleanupEnabled, true);
  assert.equal(c.bpfExternalServiceMode, 'Tunnel');
  assert.equal(c.bpfConnectTimeLoadBalancing, 'TCP');
  assert.equal(c.bpfConnectTimeLoadBalancingEnabled, null);
  assert.equal(c.bpfLogLevel, 'Off');
  assert.equal(c.bpfMapSizeNATFrontend, 65536);
  assert.equal(c.bpfMapSizeNATBackend, 262144);
  assert.equal(c.bpfMapSizeNATAffinity, 65536);
  assert.equal(c.bpfMapSizeConntrack, 512000);
  assert.equal(c.bpfMapSizeRoute, 262144);
  assert.deepEqual(c.bpfConntrackTimeouts, {
    creationGracePeriod: 10,
    tcpSynSent: 20,
    tcpEstablished: 3600,
    tcpFinsSeen: 'Auto',
    tcpResetSeen: 40,
    udpTimeout: 60,
    genericTimeout: 600,
    icmpTimeout: 5,
  });
  assert.equal(c.bpfKubeProxyHealthzPort, 10256);
  assert.equal(c.bpfEnforceRPF, 'Loose');
  assert.equal(c.vxlanEnabled, null);
  assert.equal(c.vxlanMTU, 0);
  assert.equal(c.vxlanPort, 4789);
  assert.equal(c.vxlanVNI, 4096);
  assert.equal(c.healthEnabled, false);
  assert.equal(c.healthPort, 9099);
  assert.equal(c.prometheusMetricsEnabled, false);
  assert.equal(c.prometheusMetricsPort, 9091);
  assert.equal(c.logSeverityScreen, 'Info');
  assert.ok(Object.isFrozen(c));
  for (const name of FIELD_NAMES) assert.equal(new ConfigStore(NODE).sourceOf(name), DEFAULT_SOURCE);
});

test('the default bpfDataIfacePattern matches host NICs (the lab’s eth0 included), not pods, loopback or tunnels', () => {
  const re = defaultConfig().bpfDataIfacePattern;
  for (const name of [
    'eth0',
    'eth1',
    'ens3',
    'enp0s3',
    'eno1',
    'enx0a1b2c3d4e5f',
    'enP1s1',
    'wlp2s0',
    'bond0',
    'ibp4s0',
  ]) {
    assert.ok(re.test(name), `${name} should match`);
  }
  for (const name of ['cali123', 'calia1b2c3', 'lo', 'vxlan.sl', 'vxlan.calico', 'tunl0', 'docker0', 'veth1', 'cni0']) {
    assert.ok(!re.test(name), `${name} should not match`);
  }
});

test('an empty update leaves the defaults; the same update twice changes nothing', () => {
  const s = new ConfigStore(NODE);
  assert.deepEqual(s.update([]).changed, []);
  const objs = [fc('default', { bpfEnabled: true })];
  assert.equal(s.update(objs).changed.length, 1);
  const again = s.update(objs);
  assert.deepEqual(again.changed, []);
  assert.deepEqual(again.errors, []);
});

test('precedence: defaults < default < node.<name> < FELIX_* environment', () => {
  const s = new ConfigStore(NODE, { FELIX_BPFEXTERNALSERVICEMODE: 'DSR' });
  assert.equal(s.current().bpfExternalServiceMode, 'DSR', 'the environment applies before the datastore answers');
  const u = s.update([
    fc('default', { bpfLogLevel: 'Info', vxlanPort: 4790, bpfExternalServiceMode: 'Tunnel', healthPort: 9100 }),
    fc(`node.${NODE}`, { bpfLogLevel: 'Debug', bpfExternalServiceMode: 'Tunnel' }),
    fc('node.other', { healthPort: 9200, bpfEnabled: true }),
  ]);
  assert.deepEqual(u.errors, []);
  const c = u.config;
  assert.equal(c.bpfLogLevel, 'Debug', 'node-specific beats default');
  assert.equal(c.vxlanPort, 4790, 'default beats the built-in default');
  assert.equal(c.healthPort, 9100, 'another node’s object is ignored');
  assert.equal(c.bpfEnabled, false);
  assert.equal(c.bpfExternalServiceMode, 'DSR', 'the environment beats both objects');
  assert.equal(s.sourceOf('bpfLogLevel'), `FelixConfiguration node.${NODE}`);
  assert.equal(s.sourceOf('vxlanPort'), 'FelixConfiguration default');
  assert.equal(s.sourceOf('bpfExternalServiceMode'), 'environment');
  assert.equal(s.sourceOf('bpfEnabled'), DEFAULT_SOURCE);
  assert.equal(change(u, 'bpfLogLevel')?.source, `FelixConfiguration node.${NODE}`);

  // Taking the node object away falls back to the default object; taking that away, to the defaults.
  const u2 = s.update([fc('default', { bpfLogLevel: 'Info' })]);
  assert.deepEqual(
    { old: change(u2, 'bpfLogLevel')?.old, new: change(u2, 'bpfLogLevel')?.new },
    { old: 'Debug', new: 'Info' },
  );
  assert.equal(change(u2, 'vxlanPort')?.new, 4789);
  assert.equal(s.update([]).config.bpfLogLevel, 'Off');
});

test('environment: FELIX_<FIELD> in any case, Felix’s booleans, hex integers; empty and unknown ignored', () => {
  const s = new ConfigStore(NODE, {
    FELIX_BPFENABLED: 'true',
    felix_bpfExternalServiceMode: 'dsr',
    FELIX_BpfKubeProxyIptablesCleanupEnabled: 'no',
    FELIX_VXLANENABLED: 'T',
    FELIX_BPFMAPSIZECONNTRACK: '0x100000',
    FELIX_HEALTHPORT: '',
    FELIX_IPINIPMTU: '1440',
    FELIX_LOGSEVERITYSCREEN: 'warning',
    FELIX_BPFDATAIFACEPATTERN: '^(eth|ens).*',
    PATH: '/usr/bin',
  });
  const c = s.current();
  assert.deepEqual(s.errors(), []);
  assert.equal(c.bpfEnabled, true);
  assert.equal(c.bpfExternalServiceMode, 'DSR', 'enums are case-insensitive and canonicalised');
  assert.equal(c.bpfKubeProxyIptablesCleanupEnabled, false);
  assert.equal(c.vxlanEnabled, true);
  assert.equal(c.bpfMapSizeConntrack, 0x100000);
  assert.equal(c.healthPort, 9099, 'an empty variable is not set');
  assert.equal(c.logSeverityScreen, 'Warning');
  assert.ok(c.bpfDataIfacePattern.test('ens5') && !c.bpfDataIfacePattern.test('wlan0'));
});

test('FELIX_BPFCONNTRACKTIMEOUTS uses Felix’s Key=value list; keys in any case, the rest default', () => {
  const s = new ConfigStore(NODE, { FELIX_BPFCONNTRACKTIMEOUTS: 'TCPEstablished=2h, udpTimeout=30s,TCPFinsSeen=45s' });
  assert.deepEqual(s.errors(), []);
  assert.deepEqual(s.current().bpfConntrackTimeouts, {
    creationGracePeriod: 10,
    tcpSynSent: 20,
    tcpEstablished: 7200,
    tcpFinsSeen: 45,
    tcpResetSeen: 40,
    udpTimeout: 30,
    genericTimeout: 600,
    icmpTimeout: 5,
  });
  assert.throws(() => parseConntrackTimeoutsEnv('TCPEstablished'), /"TCPEstablished" is not Key=value/);
});

test('both apiVersions are accepted; the v3 view wins when the same object comes through both', () => {
  for (const apiVersion of ['projectcalico.org/v3', 'crd.projectcalico.org/v1']) {
    const s = new ConfigStore(NODE);
    const u = s.update([
      fc('default', { bpfEnabled: true, bpfConntrackTimeouts: { udpTimeout: '2m' } }, apiVersion),
      fc(`node.${NODE}`, { bpfExternalServiceMode: 'DSR' }, apiVersion),
    ]);
    assert.deepEqual(u.errors, [], apiVersion);
    assert.equal(u.config.bpfEnabled, true, apiVersion);
    assert.equal(u.config.bpfExternalServiceMode, 'DSR', apiVersion);
    assert.equal(u.config.bpfConntrackTimeouts.udpTimeout, 120, apiVersion);
  }
  const s = new ConfigStore(NODE);
  const both = [
    fc('default', { bpfLogLevel: 'Info' }, 'projectcalico.org/v3'),
    fc('default', { bpfLogLevel: 'Debug' }, 'crd.projectcalico.org/v1'),
  ];
  assert.equal(s.update(both).config.bpfLogLevel, 'Info');
  assert.equal(s.update([...both].reverse()).config.bpfLogLevel, 'Info');
  // An object without apiVersion/kind (a local store's bare object) is read as v3.
  assert.equal(
    s.update([{ metadata: { name: 'default' }, spec: { bpfLogLevel: 'Debug' } }]).config.bpfLogLevel,
    'Debug',
  );
  // Objects without a name, or not objects at all, are not FelixConfigurations of ours.
  assert.deepEqual(s.update([null as unknown as object, { spec: { bpfEnabled: true } }]).errors, []);
});

test('an object of another API or kind is refused with the reason and changes nothing', () => {
  const s = new ConfigStore(NODE);
  s.update([fc('default', { bpfLogLevel: 'Info' })]);
  const u = s.update([fc('default', { bpfLogLevel: 'Debug' }, 'projectcalico.org/v2')]);
  assert.deepEqual(messages(u), [
    'FelixConfiguration default: apiVersion: "projectcalico.org/v2" is not one of projectcalico.org/v3, crd.projectcalico.org/v1; object ignored',
  ]);
  assert.equal(u.config.bpfLogLevel, 'Off', 'an ignored object is an absent object');
  const k = s.update([{ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'default' }, spec: {} }]);
  assert.match(k.errors[0].message, /^FelixConfiguration default: kind: "IPPool" is not FelixConfiguration/);
});

/** Each case: a good value first, then a bad one; the good value must stay and the error must name
 * the source and the field. */
const invalid: { name: FieldName; good: unknown; bad: unknown; message: string }[] = [
  {
    name: 'bpfExternalServiceMode',
    good: 'DSR',
    bad: 'Direct',
    message: 'spec.bpfExternalServiceMode: "Direct" is not one of Tunnel, DSR',
  },
  {
    name: 'bpfDataIfacePattern',
    good: '^eth.*',
    bad: '^(eth',
    message: 'spec.bpfDataIfacePattern: "^(eth" is not a valid regular expression: Unterminated group',
  },
  {
    name: 'bpfDataIfacePattern',
    good: '^eth.*',
    bad: '^(?=eth)',
    message:
      'spec.bpfDataIfacePattern: "^(?=eth)" is not a valid regular expression: lookaround assertions are not supported (Go regular expressions have none)',
  },
  {
    name: 'bpfMapSizeConntrack',
    good: 1000000,
    bad: 0,
    message: 'spec.bpfMapSizeConntrack: 0 is out of range: a map size must be 1 to 16777216',
  },
  {
    name: 'bpfMapSizeNATFrontend',
    good: 1024,
    bad: -5,
    message: 'spec.bpfMapSizeNATFrontend: -5 is out of range: a map size must be 1 to 16777216',
  },
  {
    name: 'bpfMapSizeNATBackend',
    good: 1024,
    bad: 4_000_000_000,
    message: 'spec.bpfMapSizeNATBackend: 4000000000 is out of range: a map size must be 1 to 16777216',
  },
  {
    name: 'bpfMapSizeRoute',
    good: 1024,
    bad: 1.5,
    message: 'spec.bpfMapSizeRoute: expected an integer, got number 1.5',
  },
  {
    name: 'bpfMapSizeNATAffinity',
    good: 1024,
    bad: '1024',
    message: 'spec.bpfMapSizeNATAffinity: expected an integer, got string "1024"',
  },
  {
    name: 'bpfConntrackTimeouts',
    good: { tcpEstablished: '2h' },
    bad: { tcpEstablished: '1 hour' },
    message: 'spec.bpfConntrackTimeouts.tcpEstablished: "1 hour" is not a duration (e.g. "30s", "1h", or "Auto")',
  },
  {
    name: 'bpfConntrackTimeouts',
    good: { udpTimeout: '30s' },
    bad: { udpTimeout: '30' },
    message: 'spec.bpfConntrackTimeouts.udpTimeout: "30" is not a duration (e.g. "30s", "1h", or "Auto")',
  },
  {
    name: 'bpfConntrackTimeouts',
    good: { udpTimeout: '30s' },
    bad: { udpTimeout: '-5s' },
    message: 'spec.bpfConntrackTimeouts.udpTimeout: "-5s" is negative',
  },
  {
    name: 'bpfConntrackTimeouts',
    good: { udpTimeout: '30s' },
    bad: { udpTimeOut: '30s' },
    message:
      'spec.bpfConntrackTimeouts: unknown timeout "udpTimeOut" (known: creationGracePeriod, tcpSynSent, tcpEstablished, tcpFinsSeen, tcpResetSeen, udpTimeout, genericTimeout, icmpTimeout)',
  },
  {
    name: 'bpfKubeProxyHealthzPort',
    good: 10257,
    bad: 70000,
    message: 'spec.bpfKubeProxyHealthzPort: 70000 is out of range: a port must be 1 to 65535',
  },
  { name: 'healthPort', good: 9100, bad: 0, message: 'spec.healthPort: 0 is out of range: a port must be 1 to 65535' },
  {
    name: 'vxlanPort',
    good: 4790,
    bad: 65536,
    message: 'spec.vxlanPort: 65536 is out of range: a port must be 1 to 65535',
  },
  {
    name: 'vxlanVNI',
    good: 4097,
    bad: 1473,
    message: "spec.vxlanVNI: 1473 is reserved: it is the VNI of Sluice's NodePort tunnel",
  },
  {
    name: 'vxlanVNI',
    good: 4097,
    bad: 1 << 24,
    message: 'spec.vxlanVNI: 16777216 is out of range: a VNI must be 1 to 16777215',
  },
  {
    name: 'vxlanMTU',
    good: 1400,
    bad: 50,
    message: 'spec.vxlanMTU: 50 is out of range: an MTU must be 0 (automatic) or 68 to 65535',
  },
  {
    name: 'bpfEnforceRPF',
    good: 'Strict',
    bad: 'Relaxed',
    message: 'spec.bpfEnforceRPF: "Relaxed" is not one of Disabled, Strict, Loose',
  },
  {
    name: 'bpfConnectTimeLoadBalancing',
    good: 'Enabled',
    bad: 'UDP',
    message: 'spec.bpfConnectTimeLoadBalancing: "UDP" is not one of TCP, Enabled, Disabled',
  },
  {
    name: 'bpfLogLevel',
    good: 'Debug',
    bad: 'Verbose',
    message: 'spec.bpfLogLevel: "Verbose" is not one of Off, Info, Debug',
  },
  {
    name: 'logSeverityScreen',
    good: 'Debug',
    bad: 'Loud',
    message: 'spec.logSeverityScreen: "Loud" is not one of Trace, Debug, Info, Warning, Error, Fatal',
  },
  { name: 'bpfEnabled', good: true, bad: 'yes', message: 'spec.bpfEnabled: expected a boolean, got string "yes"' },
  {
    name: 'prometheusMetricsEnabled',
    good: true,
    bad: 1,
    message: 'spec.prometheusMetricsEnabled: expected a boolean, got number 1',
  },
];

for (const { name, good, bad, message } of invalid) {
  test(`validation: ${name} = ${JSON.stringify(bad)} is refused, the last good value kept, the rest applied`, () => {
    const s = new ConfigStore(NODE);
    const first = s.update([fc('default', { [name]: good })]);
    assert.deepEqual(first.errors, []);
    const goodValue = first.config[name];
    assert.ok(
      !FIELDS[name].equal(goodValue as never, FIELDS[name].default as never),
      'the good value is not the default',
    );

    const u = s.update([fc('default', { [name]: bad, prometheusMetricsPort: 9092 })]);
    assert.deepEqual(messages(u), [`FelixConfiguration default: ${message}`]);
    assert.equal(u.errors[0].source, 'FelixConfiguration default');
    assert.equal(u.errors[0].name, name);
    assert.deepEqual(u.errors[0].value, bad);
    assert.ok(FIELDS[name].equal(u.config[name] as never, goodValue as never), 'the last good value is kept');
    assert.equal(change(u, name), undefined, 'a refused value is not a change');
    assert.equal(u.config.prometheusMetricsPort, 9092, 'the rest of the update applies');
    assert.deepEqual(s.errors(), u.errors);
  });
}

test('validation: a bad value in the first update keeps the default; fixing it applies the fix', () => {
  const s = new ConfigStore(NODE);
  const u = s.update([fc(`node.${NODE}`, { bpfExternalServiceMode: 'Direct' })]);
  assert.deepEqual(messages(u), [
    `FelixConfiguration node.${NODE}: spec.bpfExternalServiceMode: "Direct" is not one of Tunnel, DSR`,
  ]);
  assert.equal(u.config.bpfExternalServiceMode, 'Tunnel');
  const fixed = s.update([fc(`node.${NODE}`, { bpfExternalServiceMode: 'DSR' })]);
  assert.deepEqual(fixed.errors, []);
  assert.equal(change(fixed, 'bpfExternalServiceMode')?.new, 'DSR');
});

test('validation: a bad value in the top source keeps the current value rather than falling to a lower source', () => {
  const s = new ConfigStore(NODE);
  s.update([
    fc('default', { bpfExternalServiceMode: 'Tunnel' }),
    fc(`node.${NODE}`, { bpfExternalServiceMode: 'DSR' }),
  ]);
  const u = s.update([
    fc('default', { bpfExternalServiceMode: 'Tunnel' }),
    fc(`node.${NODE}`, { bpfExternalServiceMode: 'Direct' }),
  ]);
  assert.equal(u.config.bpfExternalServiceMode, 'DSR');
  assert.equal(s.sourceOf('bpfExternalServiceMode'), `FelixConfiguration node.${NODE}`);
  assert.equal(u.errors.length, 1);
});

test('validation: a bad value in a source that is overridden is still reported; the override applies', () => {
  const s = new ConfigStore(NODE);
  const u = s.update([
    fc('default', { bpfMapSizeRoute: 0, vxlanPort: 'x' }),
    fc(`node.${NODE}`, { bpfMapSizeRoute: 1024 }),
  ]);
  assert.deepEqual(messages(u), [
    'FelixConfiguration default: spec.bpfMapSizeRoute: 0 is out of range: a map size must be 1 to 16777216',
    'FelixConfiguration default: spec.vxlanPort: expected an integer, got string "x"',
  ]);
  assert.equal(u.config.bpfMapSizeRoute, 1024);
  assert.equal(u.config.vxlanPort, 4789);
});

test('validation: a bad environment variable is reported on every evaluation and pins the field', () => {
  const s = new ConfigStore(NODE, { FELIX_BPFEXTERNALSERVICEMODE: 'Direct', FELIX_HEALTHPORT: 'ninety' });
  assert.deepEqual(
    s.errors().map((e) => e.message),
    [
      'environment: FELIX_BPFEXTERNALSERVICEMODE: "Direct" is not one of Tunnel, DSR',
      'environment: FELIX_HEALTHPORT: "ninety" is not an integer',
    ],
  );
  assert.equal(s.errors()[0].field, 'FELIX_BPFEXTERNALSERVICEMODE');
  const u = s.update([fc('default', { bpfExternalServiceMode: 'DSR', healthPort: 9100, bpfEnabled: true })]);
  assert.equal(u.errors.length, 2);
  assert.equal(u.config.bpfExternalServiceMode, 'Tunnel', 'the environment overrides; its value is unusable');
  assert.equal(u.config.healthPort, 9099);
  assert.equal(u.config.bpfEnabled, true);
  const env = new ConfigStore(NODE, { FELIX_BPFCONNTRACKTIMEOUTS: 'TCPEstablished=2h,UDPTimeout=bad' });
  assert.deepEqual(
    env.errors().map((e) => e.message),
    ['environment: FELIX_BPFCONNTRACKTIMEOUTS: UDPTimeout: "bad" is not a duration (e.g. "30s", "1h", or "Auto")'],
  );
  assert.equal(env.current().bpfConntrackTimeouts.tcpEstablished, 3600, 'the whole field is refused');
});

test('validation: a near miss of a field name is reported, not silently ignored', () => {
  const u = new ConfigStore(NODE).update([fc('default', { BPFEnabled: true, someOtherFelixField: 1 })]);
  assert.deepEqual(messages(u), [
    'FelixConfiguration default: spec.BPFEnabled: unknown field; did you mean bpfEnabled?',
  ]);
  assert.equal(u.config.bpfEnabled, false);
});

test('empty strings and nulls are not set (Felix ignores empty values)', () => {
  const s = new ConfigStore(NODE);
  const u = s.update([
    fc('default', { bpfExternalServiceMode: 'DSR', bpfLogLevel: 'Info' }),
    fc(`node.${NODE}`, { bpfExternalServiceMode: '', bpfLogLevel: null }),
  ]);
  assert.deepEqual(u.errors, []);
  assert.equal(u.config.bpfExternalServiceMode, 'DSR');
  assert.equal(u.config.bpfLogLevel, 'Info');
});

test('changes are classified: live, program reload (live), restart, dataplane switch', () => {
  const s = new ConfigStore(NODE);
  const u = s.update([
    fc('default', {
      bpfEnabled: true,
      bpfExternalServiceMode: 'DSR',
      bpfMapSizeConntrack: 1 << 20,
      bpfConntrackTimeouts: { tcpEstablished: '2h' },
      bpfDataIfacePattern: '^eth0$',
      healthPort: 9100,
      vxlanMTU: 1400,
    }),
  ]);
  const got = Object.fromEntries(u.changed.map((c) => [c.name, { live: c.live, apply: c.apply }]));
  assert.deepEqual(got, {
    bpfEnabled: { live: false, apply: 'switch' },
    bpfDataIfacePattern: { live: true, apply: 'live' },
    bpfExternalServiceMode: { live: true, apply: 'reload' },
    bpfMapSizeConntrack: { live: false, apply: 'restart' },
    bpfConntrackTimeouts: { live: true, apply: 'live' },
    healthPort: { live: true, apply: 'live' },
    vxlanMTU: { live: true, apply: 'reload' },
  });
  assert.ok(needsRestart(u.changed));
  const dsr = change(u, 'bpfExternalServiceMode')!;
  assert.deepEqual([dsr.old, dsr.new, dsr.source], ['Tunnel', 'DSR', 'FelixConfiguration default']);
  assert.match(dsr.how, /reloaded/);

  // Back to Tunnel: live; nothing here needs a restart.
  const back = s.update([
    fc('default', {
      bpfEnabled: true,
      bpfMapSizeConntrack: 1 << 20,
      bpfConntrackTimeouts: { tcpEstablished: '2h' },
      bpfDataIfacePattern: '^eth0$',
      healthPort: 9100,
      vxlanMTU: 1400,
    }),
  ]);
  assert.deepEqual(
    back.changed.map((c) => [c.name, c.old, c.new, c.live]),
    [['bpfExternalServiceMode', 'DSR', 'Tunnel', true]],
  );
  assert.ok(!needsRestart(back.changed));

  // Every map size needs a restart; nothing else but bpfEnabled does.
  for (const name of FIELD_NAMES) {
    const restart = name.startsWith('bpfMapSize') || name === 'bpfEnabled';
    assert.equal(FIELDS[name].apply === 'restart' || FIELDS[name].apply === 'switch', restart, name);
  }
});

test('durations: Go’s syntax into seconds, and back', () => {
  const cases: [string, number][] = [
    ['30s', 30],
    ['1h', 3600],
    ['10m', 600],
    ['1h30m', 5400],
    ['1.5s', 1.5],
    ['500ms', 0.5],
    ['250us', 0.00025],
    ['2h45m30s', 9930],
    ['.5h', 1800],
    ['0', 0],
  ];
  for (const [s, secs] of cases) assert.equal(parseDuration(s), secs, s);
  for (const s of ['', '10', '1 hour', '1x', 'h', '1h-5m', 's1', '1.h.s']) {
    assert.throws(() => parseDuration(s), /is not a duration/, s);
  }
  assert.equal(parseDuration('-5s'), -5);
  assert.equal(formatDuration(3600), '1h');
  assert.equal(formatDuration(5400), '1h30m');
  assert.equal(formatDuration(90.5), '1m30.5s');
  assert.equal(formatDuration(0.5), '500ms');
  assert.equal(formatDuration(0), '0s');
  for (const [, secs] of cases) assert.equal(parseDuration(formatDuration(secs)), secs);
});

test('bpfConntrackTimeouts: Calico’s structure; keys not given take Calico’s defaults; Auto kept', () => {
  const s = new ConfigStore(NODE);
  const u = s.update([
    fc('default', {
      bpfConntrackTimeouts: {
        creationGracePeriod: '5s',
        tcpSynSent: 'Auto',
        tcpEstablished: '30m',
        tcpFinsSeen: '1m',
        tcpResetSeen: '10s',
        udpTimeout: '1m30s',
        genericTimeout: '5m',
        icmpTimeout: '2s',
      },
    }),
  ]);
  assert.deepEqual(u.errors, []);
  assert.deepEqual(u.config.bpfConntrackTimeouts, {
    creationGracePeriod: 5,
    tcpSynSent: 'Auto',
    tcpEstablished: 1800,
    tcpFinsSeen: 60,
    tcpResetSeen: 10,
    udpTimeout: 90,
    genericTimeout: 300,
    icmpTimeout: 2,
  });
  assert.equal(
    formatConntrackTimeouts(u.config.bpfConntrackTimeouts),
    'creationGracePeriod=5s,tcpSynSent=Auto,tcpEstablished=30m,tcpFinsSeen=1m,tcpResetSeen=10s,udpTimeout=1m30s,genericTimeout=5m,icmpTimeout=2s',
  );
  // The node's object replaces the field as a whole (Felix's rule): its one timeout, the rest default.
  const node = s.update([
    fc('default', { bpfConntrackTimeouts: { tcpEstablished: '30m', udpTimeout: '90s' } }),
    fc(`node.${NODE}`, { bpfConntrackTimeouts: { udpTimeout: '10s' } }),
  ]);
  assert.equal(node.config.bpfConntrackTimeouts.udpTimeout, 10);
  assert.equal(node.config.bpfConntrackTimeouts.tcpEstablished, 3600);
  assert.equal(
    formatValue('bpfConntrackTimeouts', node.config.bpfConntrackTimeouts).split(',')[2],
    'tcpEstablished=1h',
  );
});

test('conntrack timeouts resolved to seconds: Auto reads the documented sysctl, else Calico’s value', () => {
  const c = new ConfigStore(NODE, {
    FELIX_BPFCONNTRACKTIMEOUTS: 'TCPSynSent=Auto,TCPFinsSeen=Auto,UDPTimeout=Auto',
  }).current();
  const sysctls: Record<string, number> = { nf_conntrack_tcp_timeout_syn_sent: 120, nf_conntrack_udp_timeout: 30 };
  const t = resolveConntrackTimeouts(c, (name) => sysctls[name]);
  assert.equal(t.tcpSynSent, 120, 'from nf_conntrack_tcp_timeout_syn_sent');
  assert.equal(t.tcpFinsSeen, 30, 'time_wait sysctl unreadable: Calico’s 30s');
  assert.equal(t.udpTimeout, 60, 'Calico documents no sysctl for UDP: its own value');
  assert.equal(t.tcpEstablished, 3600);

  const dir = mkdtempSync(path.join(tmpdir(), 'sl-sysctl-'));
  try {
    writeFileSync(path.join(dir, 'nf_conntrack_tcp_timeout_time_wait'), '120\n');
    assert.equal(readNetfilterSysctl('nf_conntrack_tcp_timeout_time_wait', dir), 120);
    assert.equal(readNetfilterSysctl('nf_conntrack_missing', dir), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bpfConnectTimeLoadBalancingEnabled (deprecated) maps onto bpfConnectTimeLoadBalancing', () => {
  const s = new ConfigStore(NODE);
  let u = s.update([fc('default', { bpfConnectTimeLoadBalancingEnabled: false })]);
  assert.equal(u.config.bpfConnectTimeLoadBalancing, 'Disabled');
  assert.equal(u.config.bpfConnectTimeLoadBalancingEnabled, false);
  u = s.update([fc('default', { bpfConnectTimeLoadBalancingEnabled: true })]);
  assert.equal(u.config.bpfConnectTimeLoadBalancing, 'Enabled');
  // The newer field wins within a source...
  u = s.update([fc('default', { bpfConnectTimeLoadBalancingEnabled: false, bpfConnectTimeLoadBalancing: 'TCP' })]);
  assert.equal(u.config.bpfConnectTimeLoadBalancing, 'TCP');
  // ...and the more specific source wins across them.
  u = s.update([
    fc('default', { bpfConnectTimeLoadBalancing: 'TCP' }),
    fc(`node.${NODE}`, { bpfConnectTimeLoadBalancingEnabled: false }),
  ]);
  assert.equal(u.config.bpfConnectTimeLoadBalancing, 'Disabled');
  u = new ConfigStore(NODE, { FELIX_BPFCONNECTTIMELOADBALANCINGENABLED: 'false' }).update([
    fc('default', { bpfConnectTimeLoadBalancing: 'Enabled' }),
  ]);
  assert.equal(u.config.bpfConnectTimeLoadBalancing, 'Disabled');
});

test('Go regular expressions: translated where they mean the same, refused where they would not', () => {
  assert.ok(compileGoRegexp('(?i)^ETH').test('eth0'));
  assert.ok(compileGoRegexp('^eth[[:digit:]]+$').test('eth12'));
  assert.ok(!compileGoRegexp('^eth[[:digit:]]+$').test('ethx'));
  assert.ok(compileGoRegexp('^[]a]$').test(']'), 'a leading ] in a class is a literal in Go');
  assert.ok(compileGoRegexp('^(?P<kind>en|eth)').test('ens3'));
  assert.ok(compileGoRegexp('\\Aeth0\\z').test('eth0'));
  for (const [p, why] of [
    ['(?=eth)', /lookaround/],
    ['(e)\\1', /backreferences/],
    ['^a(?i)b', /inline flags/],
    ['(?U)a+', /flag U/],
    ['\\pL', /Unicode classes/],
    ['[[:nope:]]', /unknown character class/],
    ['*eth', /not a valid regular expression/],
  ] as const) {
    assert.throws(() => compileGoRegexp(p), why, p);
  }
});

test('datapath settings: DSR, tunnel port and MTU (0 = automatic), map sizes by map name', () => {
  const s = new ConfigStore(NODE);
  let c: Config = s.update([fc('default', { bpfExternalServiceMode: 'DSR', bpfMapSizeConntrack: 1 << 20 })]).config;
  assert.deepEqual(datapathSettings(c), {
    vxlanPort: 4789,
    tunnelMtu: 1450,
    dsr: true,
    maxEntries: {
      sl_nat_fe_v1: 65536,
      sl_nat_be_v1: 262144,
      sl_nat_aff_v1: 65536,
      sl_ct_v1: 1 << 20,
      sl_routes_v1: 262144,
    },
  });
  assert.equal(datapathSettings(c, 9000).tunnelMtu, 8950, 'automatic: host MTU minus 50');
  c = s.update([fc('default', { vxlanMTU: 1400, vxlanPort: 8472 })]).config;
  assert.equal(datapathSettings(c, 9000).tunnelMtu, 1400);
  assert.equal(datapathSettings(c).vxlanPort, 8472);
  assert.equal(datapathSettings(c).dsr, false);
});
