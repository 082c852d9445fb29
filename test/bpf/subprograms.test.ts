// BPF-to-BPF calls: static functions in .text are linked after each program that calls them
// (only those reachable from it), with calls rewritten to their new offsets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadObjectFile } from '../../src/bpf/spec.js';
import { Collection } from '../../src/bpf/collection.js';
import { TypedMap } from '../../src/bpf/typed-map.js';
import { u32, u64 } from '../../src/bpf/codec.js';
import { bpfObjectPath } from '../../src/paths.js';
import { requirePrivileges } from '../../src/testing/netns.js';

test('a program calling static sub-programs (which call each other and use maps) runs', (t) => {
  if (!requirePrivileges(t)) return;
  const spec = loadObjectFile(bpfObjectPath('test/subprograms'));
  const prog = spec.programs.get('prog')!;
  // prog (6 insns) + helper (7) + helper2 (18): both reachable, each copied once.
  assert.equal(prog.insns.length / 8, 6 + 7 + 18);
  const coll = Collection.load(spec);
  t.after(() => coll.close());
  const r = coll.program('prog').testRun({ data: Buffer.alloc(64) });
  // helper(skb, 5) = helper2(6) + len = 18 + 64; helper2(2) = 6.
  assert.equal(r.retval, 88);
  assert.equal(new TypedMap(coll.map('m'), u32, u64).get(0), 8n, 'helper2 added 6 and 2 through the map');
});

test('the Service datapath object loads: each program gets only the sub-programs it reaches', (t) => {
  if (!requirePrivileges(t)) return;
  const spec = loadObjectFile(bpfObjectPath('tc'));
  const sizes = Object.fromEntries([...spec.programs.values()].map((p) => [p.name, p.insns.length / 8]));
  assert.ok(sizes.sl_to_wep < sizes.sl_from_wep, 'egress programs never reach the new-flow path');
  const coll = Collection.load(spec);
  coll.close();
});
