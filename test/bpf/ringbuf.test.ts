// Kernel tests of the ring buffer reader: a test program reserves one record per test-run in
// its own 4 KiB ring (16 or 44 bytes, discarded when the packet length is odd); the reader must
// deliver every submitted record once and in order, skip discarded ones, read records that wrap
// around the end of the ring, and keep working after the ring filled up and the program's
// reserve failed.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { loadObjectFile, type ObjectSpec } from '../../src/bpf/spec.js';
import { Collection } from '../../src/bpf/collection.js';
import { BpfMap } from '../../src/bpf/map.js';
import { TypedMap } from '../../src/bpf/typed-map.js';
import { u32, u64 } from '../../src/bpf/codec.js';
import { BpfError } from '../../src/bpf/errors.js';
import type { Program } from '../../src/bpf/program.js';
import { RingBufReader } from '../../src/bpf/ringbuf.js';
import { bpfObjectPath } from '../../src/paths.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';

const TOOLS: string[] = []; // only bpf(2) and mmap(2)
const RING = 4096; // t_ringbuf's max_entries
const SUBMITTED = 0;
const DISCARDED = 1;
const RESERVE_FAILED = 2;

let spec: ObjectSpec;
before(() => {
  if (privilegeProblem(TOOLS)) return; // each test reports (skip, or fail under CI)
  spec = loadObjectFile(bpfObjectPath('test/ringbuf'));
});

interface Rec {
  seq: number;
  len: number;
  mark: number;
  big: boolean;
}

/** What the program writes: 16 bytes (u64 seq, u32 len, u32 mark), or with mark bit 0 set 44
 *  bytes (u32 seq, u32 len, u32 mark, 32 fill bytes (seq + i) & 0xff). */
function decode(b: Buffer): Rec {
  if (b.length === 16)
    return { seq: Number(b.readBigUInt64LE(0)), len: b.readUInt32LE(8), mark: b.readUInt32LE(12), big: false };
  assert.equal(b.length, 44, 'a record is 16 or 44 bytes');
  const seq = b.readUInt32LE(0);
  for (let i = 0; i < 32; i++) assert.equal(b[12 + i], (seq + i) & 0xff, `fill byte ${i} of record ${seq}`);
  return { seq, len: b.readUInt32LE(4), mark: b.readUInt32LE(8), big: true };
}

/** Bytes a record takes in the ring: 8-byte header, payload, rounded up to 8. */
const footprint = (big: boolean): number => (big ? 56 : 24);

const frames = new Map<number, Buffer>();
function frame(len: number): Buffer {
  let f = frames.get(len);
  if (!f) {
    f = Buffer.alloc(len);
    f.writeUInt16BE(0x0800, 12);
    frames.set(len, f);
  }
  return f;
}

function skbCtx(mark: number): Buffer {
  const ctx = Buffer.alloc(192); // struct __sk_buff; mark at offset 8
  ctx.writeUInt32LE(mark, 8);
  return ctx;
}

/** One run of the program: the packet length decides discard (odd), the mark the size. */
function emit(prog: Program, len: number, big: boolean, repeat = 1): number {
  return prog.testRun({ data: frame(len), ctx: skbCtx(big ? 1 : 0), repeat }).retval;
}

function load(maxEntries?: number): { coll: Collection; prog: Program; state: TypedMap<number, bigint> } {
  const coll = Collection.load(spec, maxEntries ? { maxEntries: { t_ringbuf: maxEntries } } : {});
  return { coll, prog: coll.program('t_ringbuf_emit'), state: new TypedMap(coll.map('t_rb_state'), u32, u64) };
}

test('every submitted record arrives once and in order, discarded ones skipped, across wraparound', (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const { coll, prog, state } = load();
  const reader = new RingBufReader(coll.map('t_ringbuf'));
  t.after(() => {
    reader.close();
    coll.close();
  });
  assert.equal(reader.size, RING);
  assert.equal(reader.available(), 0);
  assert.deepEqual(reader.poll(), [], 'an empty ring yields nothing');

  let seq = 0;
  let pos = 0; // the producer position as the test predicts it
  let straddling = 0; // records whose bytes run past the end of the data area
  let discarded = 0;
  const got: Rec[] = [];
  const want: Rec[] = [];
  // 40 rounds of 1-60 runs each, a poll after every round: about 10x the ring's size in total.
  for (let round = 0; round < 40; round++) {
    const runs = 1 + ((round * 37) % 60);
    let written = 0;
    for (let i = 0; i < runs; i++) {
      const big = (seq * 7) % 5 === 0;
      const len = 64 + (seq % 4 === 3 ? 1 : 0) + 2 * (seq % 11); // odd every 4th run
      assert.equal(emit(prog, len, big), len % 2 === 1 ? DISCARDED : SUBMITTED, `run ${seq}`);
      if (len % 2 === 1) discarded++;
      else want.push({ seq, len, mark: big ? 1 : 0, big });
      if ((pos % RING) + footprint(big) > RING) straddling++;
      pos += footprint(big);
      written += footprint(big);
      seq++;
    }
    assert.equal(reader.available(), written, `round ${round}: available() counts headers, padding and discards`);
    if (round % 3 === 0) {
      // In small batches: `max` counts delivered records, the rest stays for the next poll.
      for (;;) {
        const batch = reader.poll(2);
        assert.ok(batch.length <= 2);
        if (batch.length === 0) break;
        got.push(...batch.map(decode));
      }
    } else {
      got.push(...reader.poll().map(decode));
    }
    assert.equal(reader.available(), 0, `round ${round}: everything consumed`);
  }
  assert.ok(pos > 8 * RING, `${pos} bytes went through a ${RING}-byte ring`);
  assert.ok(straddling > 0, 'some records wrapped around the end of the data area');
  assert.ok(discarded > 0);
  assert.deepEqual(got, want);
  assert.equal(state.get(0), BigInt(seq), 'the program ran once per test-run');
  assert.equal(state.get(2), BigInt(discarded), 'the program discarded the odd-length ones');
  assert.equal(state.get(1), 0n, 'no reserve failed');
  t.diagnostic(`${seq} runs, ${want.length} records, ${discarded} discarded, ${straddling} wrapped, ${pos} bytes`);
});

test('a full ring makes the reserve fail without breaking the reader', (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const { coll, prog, state } = load();
  const reader = new RingBufReader(coll.map('t_ringbuf'));
  t.after(() => {
    reader.close();
    coll.close();
  });
  // Fill with 16-byte records (24 bytes in the ring) until the kernel refuses one.
  let accepted = 0;
  while (emit(prog, 64, false) === SUBMITTED) accepted++;
  assert.ok(accepted > 0 && accepted * 24 <= RING, `${accepted} records fit`);
  assert.equal(reader.available(), accepted * 24);
  assert.ok(reader.available() + 24 > RING - 1, 'the next record would not fit: the ring is full');
  for (let i = 0; i < 5; i++) assert.equal(emit(prog, 64, false), RESERVE_FAILED, 'still full');
  assert.equal(emit(prog, 65, true), RESERVE_FAILED, 'a bigger record does not fit either');
  assert.equal(state.get(1), 7n, 'the program counted 1 + 6 failed reserves');

  // The same program run `repeat` times in one test-run: the first ones fail too.
  assert.equal(emit(prog, 64, false, 10), RESERVE_FAILED);
  assert.equal(state.get(1), 17n);

  const first = reader.poll().map(decode);
  assert.deepEqual(
    first.map((r) => r.seq),
    Array.from({ length: accepted }, (_, i) => i),
    'the records that fit, in order; failed reserves left no trace',
  );
  assert.equal(reader.available(), 0);

  // The ring accepts records again; the first one starts where the full ring ended, so with
  // 24-byte records it wraps around the end of the data area when RING % 24 != 0.
  const nextSeq = accepted + 17;
  assert.equal(emit(prog, 80, true), SUBMITTED);
  assert.equal(emit(prog, 66, false), SUBMITTED);
  const again = reader.poll().map(decode);
  assert.deepEqual(again, [
    { seq: nextSeq, len: 80, mark: 1, big: true },
    { seq: nextSeq + 1, len: 66, mark: 0, big: false },
  ]);

  // Fill it once more with a single test-run (repeat), drain, and the ring keeps working.
  assert.equal(emit(prog, 64, false, 1000), RESERVE_FAILED);
  const burst = reader.poll();
  assert.ok(burst.length > 0 && burst.length * 24 <= RING);
  const seqs = burst.map((b) => decode(b).seq);
  assert.deepEqual(
    seqs,
    Array.from({ length: burst.length }, (_, i) => nextSeq + 2 + i),
  );
  assert.equal(emit(prog, 64, false), SUBMITTED);
  assert.equal(reader.poll().length, 1);
});

test('reader opened by fd resumes where another left off; closing; wrong maps refused', (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  const { coll, prog } = load();
  t.after(() => coll.close());
  const map = coll.map('t_ringbuf');
  for (let i = 0; i < 10; i++) assert.equal(emit(prog, 64, false), SUBMITTED);

  const r1 = new RingBufReader(map);
  assert.deepEqual(
    r1.poll(4).map((b) => decode(b).seq),
    [0, 1, 2, 3],
  );
  r1.close();
  r1.close(); // idempotent
  assert.equal(r1.closed, true);
  assert.throws(
    () => r1.poll(),
    (e: unknown) => e instanceof BpfError && e.code === 'EBADF',
  );
  assert.throws(
    () => r1.available(),
    (e: unknown) => e instanceof BpfError && e.code === 'EBADF',
  );

  // consumer_pos lives in the kernel's page: a new reader continues after the first one's reads.
  const r2 = new RingBufReader({ fd: map.fd, maxEntries: RING });
  t.after(() => r2.close());
  assert.equal(r2.name, 't_ringbuf', 'the name comes from the kernel');
  assert.equal(r2.available(), 6 * 24);
  assert.deepEqual(
    r2.poll().map((b) => decode(b).seq),
    [4, 5, 6, 7, 8, 9],
  );

  // consume(): the payload in place, read through (data, offset, length).
  for (let i = 0; i < 6; i++) assert.equal(emit(prog, 64 + (i % 2), i === 4), i % 2 ? DISCARDED : SUBMITTED);
  const seen: number[] = [];
  assert.equal(
    r2.consume((data, offset, length) => {
      assert.equal(length, seen.length === 2 ? 44 : 16);
      seen.push(length === 16 ? Number(data.readBigUInt64LE(offset)) : data.readUInt32LE(offset));
    }, 2),
    2,
  );
  assert.deepEqual(seen, [10, 12], 'max counts delivered records; discarded 11 skipped');
  assert.equal(
    r2.consume(() => seen.push(-1), 0),
    0,
    'max 0 reads nothing',
  );
  assert.throws(
    () =>
      r2.consume(() => {
        r2.poll();
      }),
    (e: unknown) => e instanceof BpfError && e.code === 'EBUSY',
    'no reentrant reads',
  );
  // A record whose callback threw (seq 14 above, 16 here) counts as consumed, as in libbpf.
  assert.equal(emit(prog, 64, false), SUBMITTED); // seq 16
  assert.throws(
    () =>
      r2.consume(() => {
        throw new Error('callback failed');
      }),
    /callback failed/,
  );
  assert.equal(r2.available(), 0);
  assert.equal(emit(prog, 64, false), SUBMITTED); // seq 17
  assert.equal(emit(prog, 64, false), SUBMITTED); // seq 18
  const late: number[] = [];
  assert.equal(
    r2.consume((data, offset) => {
      late.push(Number(data.readBigUInt64LE(offset)));
      r2.close(); // takes effect when consume() returns
      assert.equal(r2.closed, true);
    }),
    2,
    'the rest of this call still reads from the mapping',
  );
  assert.deepEqual(late, [17, 18]);
  assert.throws(
    () => r2.poll(),
    (e: unknown) => e instanceof BpfError && e.code === 'EBADF',
  );
  const r3 = new RingBufReader(map);
  t.after(() => r3.close());
  assert.equal(r3.available(), 0, 'the records read before close() were released');

  assert.throws(
    () => new RingBufReader({ fd: map.fd, maxEntries: 2 * RING }),
    (e: unknown) => e instanceof BpfError && e.code === 'ESCHEMA',
  );
  assert.throws(
    () => new RingBufReader(coll.map('t_rb_state')),
    (e: unknown) => e instanceof BpfError && e.code === 'EINVAL' && /not a ring buffer/.test(e.message),
  );
  assert.throws(
    () => new RingBufReader({ fd: coll.map('t_rb_state').fd }),
    (e: unknown) => e instanceof BpfError && e.code === 'EINVAL',
  );

  // The datapath's Log ring (sl_log_v1, 256 KiB) maps the same way.
  const logSpec = loadObjectFile(bpfObjectPath('tc')).maps.get('sl_log_v1');
  assert.ok(logSpec);
  const log = BpfMap.create({ ...logSpec, name: 'sl_log_v1' });
  const logReader = new RingBufReader(log);
  try {
    assert.equal(logReader.size, 256 * 1024);
    assert.equal(logReader.available(), 0);
    assert.deepEqual(logReader.poll(), []);
  } finally {
    logReader.close();
    log.close();
  }
});

test('per-record cost of poll() and consume()', (t) => {
  if (!requirePrivileges(t, TOOLS)) return;
  // Batches of 20k records, what a 100 ms timer sees at 200k events/s; 2 MiB holds one batch.
  const n = 20_000;
  const { coll, prog } = load(1 << 21);
  const reader = new RingBufReader(coll.map('t_ringbuf'));
  t.after(() => {
    reader.close();
    coll.close();
  });
  const measure = (label: string, big: boolean, read: () => number): void => {
    const us: number[] = [];
    for (let rep = 0; rep < 15; rep++) {
      assert.equal(emit(prog, 64, big, n), SUBMITTED, 'one test-run fills the batch');
      const t0 = performance.now();
      assert.equal(read(), n);
      us.push(((performance.now() - t0) * 1000) / n);
    }
    us.sort((a, b) => a - b);
    t.diagnostic(`${label}: median ${us[7].toFixed(3)} us/record, min ${us[0].toFixed(3)} (batches of ${n})`);
  };
  measure('poll(), 16-byte records', false, () => reader.poll().length);
  measure('poll(), 44-byte records', true, () => reader.poll().length);
  let sum = 0;
  measure('poll() + decode of 3 fields', false, () => {
    const recs = reader.poll();
    for (const b of recs) sum += b.readUInt32LE(8) + b.readUInt32LE(12) + Number(b.readBigUInt64LE(0) & 1n);
    return recs.length;
  });
  measure('consume() + read of 3 fields, no copy', false, () =>
    reader.consume((data, offset) => {
      sum += data.readUInt32LE(offset + 8) + data.readUInt32LE(offset + 12) + Number(data.readBigUInt64LE(offset) & 1n);
    }),
  );
  assert.ok(sum > 0);
  assert.equal(reader.available(), 0);
});
