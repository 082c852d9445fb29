// Kernel tests of the runtime: every map kind created, pinned, reopened and used from
// TypeScript, with a program reading and writing them through BPF_PROG_TEST_RUN.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadObjectFile } from '../../src/bpf/spec.js';
import { Collection } from '../../src/bpf/collection.js';
import { BpfMap, possibleCpus } from '../../src/bpf/map.js';
import { TypedMap, sumPerCpu } from '../../src/bpf/typed-map.js';
import { ipv4, struct, u32, u64, pad, be32 } from '../../src/bpf/codec.js';
import { BpfError } from '../../src/bpf/errors.js';
import { MapType } from '../../src/bpf/syscall.js';
import { bpfObjectPath } from '../../src/paths.js';
import { tempPinRoot } from '../../src/testing/bpffs.js';
import { requirePrivileges } from '../../src/testing/netns.js';

const pair = struct('pair', { a: u32, b: u32, c: u64 });
const lpmKey = struct('lpm_v4_key', { prefixlen: u32, addr: ipv4 });
const frame = Buffer.alloc(64);
frame.writeUInt16BE(0x0800, 12);

const pins = tempPinRoot('maps');
after(() => pins.cleanup());

function skbCtx(mark: number): Buffer {
  // struct __sk_buff: mark is at offset 8; the rest stays zero.
  const ctx = Buffer.alloc(192);
  ctx.writeUInt32LE(mark, 8);
  return ctx;
}

test('every map kind: created from the object, written from TS, used by the program, read back', (t) => {
  if (!requirePrivileges(t)) return;
  const spec = loadObjectFile(bpfObjectPath('test/maps'));
  const types = Object.fromEntries([...spec.maps.values()].map((m) => [m.name, m.type]));
  assert.deepEqual(types, {
    t_hash: MapType.HASH,
    t_array: MapType.ARRAY,
    t_lru: MapType.LRU_HASH,
    t_lpm: MapType.LPM_TRIE,
    t_pcpu_array: MapType.PERCPU_ARRAY,
    t_pcpu_hash: MapType.PERCPU_HASH,
    t_lru_pcpu: MapType.LRU_PERCPU_HASH,
    t_progs: MapType.PROG_ARRAY,
    t_pinned: MapType.HASH,
  });
  const coll = Collection.load(spec, { pinRoot: pins.path });
  t.after(() => coll.close());
  const hash = new TypedMap(coll.map('t_hash'), u32, pair);
  const arr = new TypedMap(coll.map('t_array'), u32, u64);
  const lru = new TypedMap(coll.map('t_lru'), u32, u64);
  const lpm = new TypedMap(coll.map('t_lpm'), lpmKey, u32);
  const pcpuArr = new TypedMap(coll.map('t_pcpu_array'), u32, u64);
  const pcpuHash = new TypedMap(coll.map('t_pcpu_hash'), u32, u64);
  const lruPcpu = new TypedMap(coll.map('t_lru_pcpu'), u32, u64);
  const pinned = new TypedMap(coll.map('t_pinned'), u32, u64);

  hash.set(1, { a: 20, b: 22, c: 5n });
  lru.set(1, 1234n);
  lpm.setMany([
    [{ prefixlen: 8, addr: '10.0.0.0' }, 8],
    [{ prefixlen: 24, addr: '10.1.2.0' }, 24],
  ]);
  pinned.set(1, 99n);
  pcpuArr.set(0, 1000n);

  const prog = coll.program('t_touch_maps');
  // The mark carries the address to route; the program reads it as network-order bytes.
  const mark = Buffer.from([10, 1, 2, 3]).readUInt32LE(0);
  const r = prog.testRun({ data: frame, ctx: skbCtx(mark), repeat: 3 });
  assert.equal(r.retval, 0, 'TC_ACT_OK: the program array is still empty, so no tail call');

  assert.equal(arr.get(0), 42n, 'hash value read by the program');
  assert.deepEqual(hash.get(2), { a: 40, b: 44, c: 6n }, 'hash value written by the program');
  assert.equal(arr.get(1), 1234n, 'LRU value read');
  assert.equal(arr.get(2), 24n, 'LPM longest prefix');
  assert.equal(arr.get(3), 99n, 'pinned map value read');
  const perCpu = pcpuArr.getPerCpu(0)!;
  assert.equal(perCpu.length, possibleCpus());
  assert.equal(sumPerCpu(perCpu), 1000n * BigInt(possibleCpus()) + 3n, 'per-CPU array: 3 increments on top');
  assert.equal(sumPerCpu(pcpuHash.getPerCpu(1)!), 3n, 'per-CPU hash created then incremented');
  assert.equal(sumPerCpu(lruPcpu.getPerCpu(1)!), 21n, 'LRU per-CPU hash');

  // Iteration (batched for hashes, key walk for the trie), delete, batch delete.
  assert.deepEqual(
    [...hash.entries()].sort((x, y) => x[0] - y[0]).map(([k]) => k),
    [1, 2],
  );
  assert.equal([...lpm.keys()].length, 2);
  assert.equal(lpm.map.count(), 2, 'a trie has no batch lookup: counted by its keys');
  assert.equal(lpm.delete({ prefixlen: 8, addr: '10.0.0.0' }), true);
  assert.equal(lpm.delete({ prefixlen: 8, addr: '10.0.0.0' }), false);
  assert.equal(hash.deleteMany([1, 2, 3]), 2);
  assert.equal([...hash.keys()].length, 0);

  // Every kind pins, reopens from its pin (definition checked) and is the same live object.
  for (const [name, ms] of spec.maps) {
    const m = coll.map(name);
    const pin = path.join(pins.path, `every_${name}`);
    m.pin(pin);
    const again = BpfMap.openPinned(pin, ms);
    try {
      assert.equal(again.id(), m.id(), `${name}: the pin reopens the same map`);
      assert.equal(again.def.type, ms.type);
    } finally {
      again.close();
      BpfMap.unpin(pin);
    }
  }
  const reopenedHash = BpfMap.openPinned(path.join(pins.path, 't_pinned'), spec.maps.get('t_pinned'));
  assert.equal(
    new TypedMap(reopenedHash, u32, u64).get(1),
    99n,
    'a value written before pinning is read through the pin',
  );
  reopenedHash.close();
});

test('batch update and delete of many entries, and iteration over them', (t) => {
  if (!requirePrivileges(t)) return;
  const coll = Collection.load(loadObjectFile(bpfObjectPath('test/maps')), { programs: [] });
  t.after(() => coll.close());
  const hash = new TypedMap(coll.map('t_hash'), u32, pair);
  const n = 50_000;
  const written = hash.setMany(
    (function* () {
      for (let i = 0; i < n; i++)
        yield [i, { a: i, b: i * 2, c: BigInt(i) * 3n }] as [number, { a: number; b: number; c: bigint }];
    })(),
  );
  assert.equal(written, n);
  let count = 0;
  for (const [k, v] of hash.entries()) {
    assert.equal(v.b, k * 2);
    count++;
  }
  assert.equal(count, n);
  assert.equal(hash.map.count(), n, 'counted in batches');
  assert.equal(hash.map.count(1000), n, 'counted in smaller batches');
  assert.equal(hash.deleteMany(Array.from({ length: n / 2 }, (_, i) => i * 2)), n / 2);
  assert.equal([...hash.keys()].length, n / 2);
  assert.equal(hash.map.count(), n / 2);
  assert.equal(hash.get(1)?.c, 3n);
  assert.equal(hash.get(2), undefined);
});

test('pinned maps: reopened by a second load, and a mismatched definition fails clearly', (t) => {
  if (!requirePrivileges(t)) return;
  const spec = loadObjectFile(bpfObjectPath('test/maps'));
  const first = Collection.load(spec, { pinRoot: pins.path, programs: [] });
  new TypedMap(first.map('t_pinned'), u32, u64).set(7, 7777n);
  first.close();

  // The pin kept the map alive; a second load adopts it with its contents.
  const second = Collection.load(spec, { pinRoot: pins.path, programs: [] });
  t.after(() => second.close());
  assert.equal(new TypedMap(second.map('t_pinned'), u32, u64).get(7), 7777n);
  const reopened = BpfMap.openPinned(path.join(pins.path, 't_pinned'), spec.maps.get('t_pinned'));
  assert.equal(reopened.id(), second.map('t_pinned').id(), 'same kernel object');
  reopened.close();

  const wrong = { ...spec.maps.get('t_pinned')!, valueSize: 16, maxEntries: 32 };
  assert.throws(
    () => BpfMap.openPinned(path.join(pins.path, 't_pinned'), wrong),
    (err: unknown) => {
      assert.ok(err instanceof BpfError);
      assert.equal(err.code, 'ESCHEMA');
      assert.match(err.message, /t_pinned/);
      assert.match(err.message, /value size 8 != 16/);
      assert.match(err.message, /max entries 16 != 32/);
      return true;
    },
  );
  // Loading an object whose map changed shape: an error by default...
  const changed = { ...spec, maps: new Map(spec.maps) };
  changed.maps.set('t_pinned', wrong);
  assert.throws(() => Collection.load(changed, { pinRoot: pins.path, programs: [] }), /ESCHEMA/);
  // ...or, when asked, the defined migration: a fresh empty map replaces the old pin.
  const migrated = Collection.load(changed, { pinRoot: pins.path, programs: [], onPinMismatch: 'replace' });
  t.after(() => migrated.close());
  assert.equal(migrated.map('t_pinned').def.valueSize, 16);
  assert.equal([...migrated.map('t_pinned').keys()].length, 0);
});

test('a pinned map resized by configuration is migrated: new size, same entries', (t) => {
  if (!requirePrivileges(t)) return;
  const def = { name: 'sl_resize_t', type: MapType.LRU_HASH, keySize: 4, valueSize: 8, maxEntries: 1000 };
  const pin = path.join(pins.path, 'sl_resize_t');
  const small = BpfMap.create(def);
  small.pin(pin);
  const typed = new TypedMap(small, u32, u64);
  typed.setMany(Array.from({ length: 600 }, (_, i) => [i, BigInt(i) * 7n] as [number, bigint]));
  small.close();
  const big = BpfMap.openPinned(pin, { ...def, maxEntries: 5000 }, 'migrate');
  t.after(() => big.close());
  assert.equal(big.def.maxEntries, 5000);
  const after = new TypedMap(big, u32, u64);
  assert.equal([...after.keys()].length, 600);
  assert.equal(after.get(599), 599n * 7n);
  assert.equal(BpfMap.openPinned(pin).def.maxEntries, 5000, 'the pin now holds the new map');
  // A different layout cannot be migrated: replaced empty instead.
  const other = BpfMap.openPinned(pin, { ...def, valueSize: 16 }, 'migrate');
  assert.equal([...other.keys()].length, 0);
  other.close();
});

test('a codec whose size differs from the map is refused', (t) => {
  if (!requirePrivileges(t)) return;
  const coll = Collection.load(loadObjectFile(bpfObjectPath('test/maps')), { programs: [] });
  t.after(() => coll.close());
  assert.throws(
    () => new TypedMap(coll.map('t_hash'), u32, u64),
    /ESCHEMA.*t_hash.*value codec is 8 bytes, map value is 16/,
  );
});

test('tail calls: a three-stage chain through a program array runs to the end', (t) => {
  if (!requirePrivileges(t)) return;
  const coll = Collection.load(loadObjectFile(bpfObjectPath('test/tail_calls')));
  t.after(() => coll.close());
  const chain = new TypedMap(coll.map('chain'), u32, u32);
  const visits = new TypedMap(coll.map('visits'), u32, u64);
  const entry = coll.program('chain_entry');
  assert.equal(entry.testRun({ data: frame }).retval, 100, 'empty array: the tail call falls through');
  chain.set(1, coll.program('chain_stage1').fd);
  assert.equal(entry.testRun({ data: frame }).retval, 101, 'stage 2 missing');
  chain.set(2, coll.program('chain_stage2').fd);
  assert.equal(entry.testRun({ data: frame }).retval, 42);
  assert.deepEqual(
    [0, 1, 2].map((i) => visits.get(i)),
    [3n, 2n, 1n],
  );
});

test('.rodata constants set before load change what the program does', (t) => {
  if (!requirePrivileges(t)) return;
  const spec = loadObjectFile(bpfObjectPath('test/rodata'));
  const udp = Buffer.alloc(64);
  udp.writeUInt16BE(0x0800, 12);
  udp[14] = 0x45;
  udp[23] = 17;
  const run = (constants: Record<string, number | bigint>) => {
    const c = Collection.load(spec, { constants });
    try {
      return c.program('ro_verdict').testRun({ data: udp }).retval;
    } finally {
      c.close();
    }
  };
  assert.equal(run({}), 0, 'defaults: TC_ACT_OK');
  assert.equal(run({ verdict: 2 }), 2);
  assert.equal(run({ drop_udp: 1 }), 2, 'TC_ACT_SHOT for UDP');
  assert.equal(run({ magic: 0x5111cen }), 77);
  assert.throws(() => run({ no_such_global: 1 }), /no global "no_such_global"/);
});

test('a verifier rejection carries the operation, the program and the log', (t) => {
  if (!requirePrivileges(t)) return;
  assert.throws(
    () => Collection.load(loadObjectFile(bpfObjectPath('test/reject'))),
    (err: unknown) => {
      assert.ok(err instanceof BpfError);
      assert.equal(err.code, 'EACCES');
      assert.equal(err.op, 'BPF_PROG_LOAD');
      assert.match(err.message, /^EACCES from BPF_PROG_LOAD "bad_unchecked_read": verifier rejected/);
      assert.match(err.message, /invalid access to packet/);
      assert.ok(err.log && err.log.split('\n').length > 3, 'the full log is kept');
      return true;
    },
  );
});

test('struct codecs refuse implicit padding', () => {
  assert.throws(() => struct('bad', { a: u32, b: u64 }), /bad\.b: offset 4 is not 8-aligned/);
  const ok = struct('ok', { a: be32, _pad: pad(4), b: u64 });
  assert.equal(ok.size, 16);
});

test('copyFrom into a smaller map copies what fits and skips the rest, also for only-missing copies', (t) => {
  if (!requirePrivileges(t)) return;
  const def = { name: 't_copy_big', type: MapType.HASH, keySize: 8, valueSize: 8, maxEntries: 64 };
  const big = BpfMap.create(def);
  const small = BpfMap.create({ ...def, name: 't_copy_small', maxEntries: 4 });
  try {
    const keys = Buffer.alloc(8 * 20);
    const values = Buffer.alloc(8 * 20);
    for (let i = 0; i < 20; i++) {
      keys.writeUInt32LE(i + 1, i * 8);
      values.writeUInt32LE(i * 7, i * 8);
    }
    assert.equal(big.updateBatch(keys, values, 20), 20);
    // the agent's resize: a migrating copy, then an only-missing copy of what the old programs added
    assert.equal(small.copyFrom(big), 4);
    assert.equal(small.copyFrom(big, true), 0);
    assert.equal(small.count(), 4);
  } finally {
    big.close();
    small.close();
  }
});
