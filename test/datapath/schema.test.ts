// The C structs are the schema: every TypeScript codec in src/datapath must match the struct of
// the same name in the objects' BTF, field by field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadObjectFile } from '../../src/bpf/spec.js';
import { compareWithBtf } from '../../src/bpf/btf-check.js';
import { bpfObjectPath } from '../../src/paths.js';
import { countersKey, countersValue, COUNTERS_MAP } from '../../src/datapath/counters.js';

const schemas = [
  {
    object: 'tc_count',
    map: COUNTERS_MAP,
    key: ['sl_counters_key', countersKey],
    value: ['sl_counters', countersValue],
  },
] as const;

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
