// The C structs are the schema: every TypeScript codec in src/datapath must match the struct of
// the same name in the objects' BTF, field by field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadObjectFile } from '../../src/bpf/spec.js';
import { compareWithBtf } from '../../src/bpf/btf-check.js';
import { bpfObjectPath } from '../../src/paths.js';
import { countersKey, countersValue, COUNTERS_MAP } from '../../src/datapath/counters.js';
import { routeKey, routeValue, ROUTES_MAP } from '../../src/datapath/routes.js';
import * as nat from '../../src/datapath/nat.js';
import { ctKey, ctValue, CT_MAP } from '../../src/datapath/conntrack.js';
import * as pol from '../../src/datapath/policy.js';

type Schema = { object: string; map: string; key: [string, Codec]; value: [string, Codec] };
type Codec = { size: number; fields: readonly { name: string; offset: number; size: number }[] };

const schemas: Schema[] = [
  {
    object: 'tc_count',
    map: COUNTERS_MAP,
    key: ['sl_counters_key', countersKey],
    value: ['sl_counters', countersValue],
  },
  { object: 'tc', map: COUNTERS_MAP, key: ['sl_counters_key', countersKey], value: ['sl_counters', countersValue] },
  { object: 'tc', map: ROUTES_MAP, key: ['sl_route_key', routeKey], value: ['sl_route', routeValue] },
  { object: 'tc', map: nat.NAT_FE_MAP, key: ['sl_nat_fe_key', nat.feKey], value: ['sl_nat_fe', nat.feValue] },
  { object: 'tc', map: nat.NAT_BE_MAP, key: ['sl_nat_be_key', nat.beKey], value: ['sl_nat_be', nat.beValue] },
  { object: 'tc', map: nat.NAT_AFF_MAP, key: ['sl_nat_aff_key', nat.affKey], value: ['sl_nat_aff', nat.affValue] },
  { object: 'tc', map: CT_MAP, key: ['sl_ct_key', ctKey], value: ['sl_ct', ctValue] },
];

test('policy structs: endpoint, rule, IP set key and Log event codecs match the C structs', () => {
  const btf = loadObjectFile(bpfObjectPath('tc')).btf!;
  assert.deepEqual(compareWithBtf(btf, 'sl_ep', pol.epValue), []);
  assert.deepEqual(compareWithBtf(btf, 'sl_rule', pol.ruleValue), []);
  assert.deepEqual(compareWithBtf(btf, 'sl_ipset_key', pol.ipsetKey), []);
  // Only reached through the ring buffer, so clang keeps no BTF for it: C asserts its size.
  assert.equal(pol.logEvent.size, 32);
  const maps = loadObjectFile(bpfObjectPath('tc')).maps;
  assert.equal(maps.get(pol.RULES_MAP)!.valueSize, pol.ruleValue.size);
  assert.equal(maps.get(pol.EP_MAP)!.valueSize, pol.epValue.size);
});

for (const s of schemas) {
  test(`${s.map}: key and value codecs match the C structs in ${s.object}.o`, () => {
    const spec = loadObjectFile(bpfObjectPath(s.object));
    const btf = spec.btf!;
    const [kName, kCodec] = s.key;
    const [vName, vCodec] = s.value;
    assert.deepEqual(compareWithBtf(btf, kName, kCodec), []);
    assert.deepEqual(compareWithBtf(btf, vName, vCodec), []);
    const m = spec.maps.get(s.map)!;
    assert.equal(m.keySize, kCodec.size);
    assert.equal(m.valueSize, vCodec.size);
  });
}
