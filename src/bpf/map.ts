// Kernel maps over raw bytes: create, open pinned (with a definition check), element and batch
// operations. Typed access lives in typed-map.ts.
import { readFileSync, rmSync } from 'node:fs';
import { BpfError, errnoName } from './errors.js';
import {
  bpf,
  bpfRaw,
  closeFd,
  Cmd,
  MapType,
  mapTypeNames,
  UpdateFlags,
  newAttr,
  objGet,
  objInfo,
  objPin,
  writeName,
  writePtr,
} from './syscall.js';

let cpus: number | undefined;
/** Number of possible CPUs: per-CPU values hold one slot per possible CPU, not per online one. */
export function possibleCpus(): number {
  if (cpus === undefined) {
    const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
    cpus = 0;
    for (const part of text.split(',')) {
      const [a, b] = part.split('-').map(Number);
      cpus += b === undefined ? 1 : b - a + 1;
    }
  }
  return cpus;
}

const PER_CPU = new Set<number>([MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH]);
export const isPerCpu = (type: number): boolean => PER_CPU.has(type);

const ENOENT = 2;
const ENOTSUPP = 524;
const EOPNOTSUPP = 95;
const EINVAL = 22;

/**
 * What to do when a pinned map's definition differs from the expected one: fail; replace it with
 * a new empty map; or, when only the size or flags differ, migrate: a new map of the new size
 * with every entry copied over (a map resized by configuration, such as bpfMapSizeConntrack).
 */
export type MismatchPolicy = 'error' | 'replace' | 'migrate';

export interface MapDefinition {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
}

function describe(d: MapDefinition): string {
  return `${mapTypeNames[d.type] ?? `type ${d.type}`} key ${d.keySize} value ${d.valueSize} max ${d.maxEntries} flags ${d.flags ?? 0}`;
}

export class BpfMap {
  /** Bytes of one value as userspace sees it (all CPUs' slots for per-CPU maps). */
  readonly userValueSize: number;
  /** Scratch buffers and a prepared attribute so single-element calls allocate nothing. */
  readonly scratchKey: Buffer;
  readonly scratchValue: Buffer;
  private readonly elemAttr: Buffer;
  /** DELETE_ELEM requires every field after `key` to be zero, so it has an attribute of its own. */
  private readonly deleteAttr: Buffer;
  private readonly nextKeyOut: Buffer;

  constructor(
    readonly fd: number,
    readonly def: Required<MapDefinition>,
    readonly pinnedAt?: string,
  ) {
    this.userValueSize = isPerCpu(def.type) ? Math.ceil(def.valueSize / 8) * 8 * possibleCpus() : def.valueSize;
    this.scratchKey = Buffer.alloc(Math.max(def.keySize, 1));
    this.scratchValue = Buffer.alloc(Math.max(this.userValueSize, 1));
    this.nextKeyOut = Buffer.alloc(Math.max(def.keySize, 1));
    this.elemAttr = newAttr();
    this.elemAttr.writeUInt32LE(fd, 0);
    writePtr(this.elemAttr, 8, this.scratchKey);
    writePtr(this.elemAttr, 16, this.scratchValue);
    this.deleteAttr = newAttr();
    this.deleteAttr.writeUInt32LE(fd, 0);
    writePtr(this.deleteAttr, 8, this.scratchKey);
  }

  get name(): string {
    return this.def.name;
  }

  static create(def: MapDefinition): BpfMap {
    const attr = newAttr();
    attr.writeUInt32LE(def.type, 0);
    attr.writeUInt32LE(def.keySize, 4);
    attr.writeUInt32LE(def.valueSize, 8);
    attr.writeUInt32LE(def.maxEntries, 12);
    attr.writeUInt32LE(def.flags ?? 0, 16);
    writeName(attr, 28, def.name);
    const fd = bpf(Cmd.MAP_CREATE, attr, 'BPF_MAP_CREATE', def.name);
    return new BpfMap(fd, { flags: 0, ...def });
  }

  /** The kernel's view of an open map. */
  static infoOf(fd: number, name: string): Required<MapDefinition> & { id: number } {
    const info = objInfo(fd, 104, 'BPF_OBJ_GET_INFO_BY_FD', name);
    const end = info.indexOf(0, 24);
    return {
      type: info.readUInt32LE(0),
      id: info.readUInt32LE(4),
      keySize: info.readUInt32LE(8),
      valueSize: info.readUInt32LE(12),
      maxEntries: info.readUInt32LE(16),
      flags: info.readUInt32LE(20),
      name: info.toString('latin1', 24, end < 0 || end > 40 ? 40 : end),
    };
  }

  /**
   * Opens a map pinned at `path` and checks it matches `expected`. A mismatch is an ESCHEMA
   * error, or with policy 'replace' the old pin is removed and a new empty map is made and pinned
   * (a defined migration for maps whose contents can be rebuilt, such as conntrack).
   */
  static openPinned(path: string, expected?: MapDefinition, onMismatch: MismatchPolicy = 'error'): BpfMap {
    const name = expected?.name ?? path;
    const fd = objGet(path, name);
    const got = BpfMap.infoOf(fd, name);
    if (expected) {
      const diffs: string[] = [];
      if (got.type !== expected.type)
        diffs.push(`type ${mapTypeNames[got.type] ?? got.type} != ${mapTypeNames[expected.type] ?? expected.type}`);
      if (got.keySize !== expected.keySize) diffs.push(`key size ${got.keySize} != ${expected.keySize}`);
      if (got.valueSize !== expected.valueSize) diffs.push(`value size ${got.valueSize} != ${expected.valueSize}`);
      if (got.maxEntries !== expected.maxEntries) diffs.push(`max entries ${got.maxEntries} != ${expected.maxEntries}`);
      if ((got.flags & ~0x80) !== ((expected.flags ?? 0) & ~0x80))
        diffs.push(`flags ${got.flags} != ${expected.flags ?? 0}`);
      if (diffs.length > 0) {
        const sameLayout =
          got.type === expected.type && got.keySize === expected.keySize && got.valueSize === expected.valueSize;
        if (onMismatch === 'migrate' && sameLayout) {
          const old = new BpfMap(fd, { ...got, name: expected.name }, path);
          try {
            const m = BpfMap.create(expected);
            m.copyFrom(old);
            BpfMap.unpin(path);
            m.pin(path);
            return m;
          } finally {
            old.close();
          }
        }
        closeFd(fd);
        if (onMismatch === 'replace' || onMismatch === 'migrate') {
          BpfMap.unpin(path);
          const m = BpfMap.create(expected);
          m.pin(path);
          return m;
        }
        throw new BpfError('ESCHEMA', {
          op: 'open pinned map',
          object: path,
          message: `pinned map does not match the definition (${diffs.join(', ')}); expected ${describe(expected)}`,
        });
      }
    }
    return new BpfMap(fd, { ...got, name: expected?.name ?? got.name }, path);
  }

  /** Removing the bpffs file drops the pin; the object lives on while fds reference it. */
  static unpin(path: string): void {
    rmSync(path, { force: true });
  }

  pin(path: string): void {
    objPin(this.fd, path, this.name);
    (this as { pinnedAt?: string }).pinnedAt = path;
  }

  freeze(): void {
    const attr = newAttr();
    attr.writeUInt32LE(this.fd, 0);
    bpf(Cmd.MAP_FREEZE, attr, 'BPF_MAP_FREEZE', this.name);
  }

  id(): number {
    return BpfMap.infoOf(this.fd, this.name).id;
  }

  // Single elements on the scratch buffers: callers encode into scratchKey/scratchValue first.

  /** Looks up scratchKey into scratchValue. False when absent. */
  lookupScratch(): boolean {
    // The flags field is shared with updates (BPF_EXIST there is EINVAL here).
    this.elemAttr.writeBigUInt64LE(0n, 24);
    const r = bpfRaw(Cmd.MAP_LOOKUP_ELEM, this.elemAttr);
    if (r === -ENOENT) return false;
    if (r < 0) throw BpfError.fromErrno(-r, 'BPF_MAP_LOOKUP_ELEM', this.name);
    return true;
  }

  updateScratch(flags = 0): void {
    this.elemAttr.writeBigUInt64LE(BigInt(flags), 24);
    const r = bpfRaw(Cmd.MAP_UPDATE_ELEM, this.elemAttr);
    if (r < 0) throw BpfError.fromErrno(-r, 'BPF_MAP_UPDATE_ELEM', this.name);
  }

  deleteScratch(): boolean {
    const r = bpfRaw(Cmd.MAP_DELETE_ELEM, this.deleteAttr);
    if (r === -ENOENT) return false;
    if (r < 0) throw BpfError.fromErrno(-r, 'BPF_MAP_DELETE_ELEM', this.name);
    return true;
  }

  // Byte-level convenience API.

  lookup(key: Buffer): Buffer | undefined {
    key.copy(this.scratchKey);
    return this.lookupScratch() ? Buffer.from(this.scratchValue.subarray(0, this.userValueSize)) : undefined;
  }

  update(key: Buffer, value: Buffer, flags = 0): void {
    this.checkSizes(key, value);
    key.copy(this.scratchKey);
    value.copy(this.scratchValue);
    this.updateScratch(flags);
  }

  delete(key: Buffer): boolean {
    key.copy(this.scratchKey);
    return this.deleteScratch();
  }

  /** Next key after `key` (or the first key when null); undefined at the end. */
  nextKey(key: Buffer | null): Buffer | undefined {
    const attr = newAttr();
    attr.writeUInt32LE(this.fd, 0);
    writePtr(attr, 8, key);
    writePtr(attr, 16, this.nextKeyOut);
    const r = bpfRaw(Cmd.MAP_GET_NEXT_KEY, attr);
    if (r === -ENOENT) return undefined;
    if (r < 0) throw BpfError.fromErrno(-r, 'BPF_MAP_GET_NEXT_KEY', this.name);
    return Buffer.from(this.nextKeyOut.subarray(0, this.def.keySize));
  }

  /** All keys, by walking GET_NEXT_KEY. Entries deleted meanwhile restart nothing: the kernel
   *  continues from the first key when the cursor key is gone, so a set dedupes. */
  *keys(): Generator<Buffer> {
    let k = this.nextKey(null);
    const seen = new Set<string>();
    while (k) {
      const hex = k.toString('hex');
      if (!seen.has(hex)) {
        seen.add(hex);
        yield k;
      }
      k = this.nextKey(k);
    }
  }

  private checkSizes(key: Buffer, value?: Buffer): void {
    if (key.length !== this.def.keySize) {
      throw new BpfError('ESCHEMA', {
        op: 'encode key',
        object: this.name,
        message: `key is ${key.length} bytes, map has ${this.def.keySize}`,
      });
    }
    if (value && value.length !== this.userValueSize) {
      throw new BpfError('ESCHEMA', {
        op: 'encode value',
        object: this.name,
        message: `value is ${value.length} bytes, map has ${this.userValueSize}`,
      });
    }
  }

  /**
   * Updates `count` elements whose keys and values are packed back to back. Uses
   * BPF_MAP_UPDATE_BATCH, falling back to one call per element for map types without batch
   * support (LPM trie, program array). Returns how many were written.
   */
  updateBatch(keys: Buffer, values: Buffer, count: number, elemFlags = 0): number {
    if (count === 0) return 0;
    const attr = newAttr();
    writePtr(attr, 16, keys);
    writePtr(attr, 24, values);
    attr.writeUInt32LE(count, 32);
    attr.writeUInt32LE(this.fd, 36);
    attr.writeBigUInt64LE(BigInt(elemFlags), 40);
    const r = bpfRaw(Cmd.MAP_UPDATE_BATCH, attr);
    if (r >= 0) return count;
    if (r === -ENOTSUPP || r === -EOPNOTSUPP || r === -EINVAL) {
      const done = attr.readUInt32LE(32);
      if (r === -EINVAL && done > 0) throw BpfError.fromErrno(-r, 'BPF_MAP_UPDATE_BATCH', this.name);
      return this.updateLoop(keys, values, count, elemFlags);
    }
    throw BpfError.fromErrno(
      -r,
      'BPF_MAP_UPDATE_BATCH',
      this.name,
      `${errnoName(-r)} after ${attr.readUInt32LE(32)} of ${count} elements`,
    );
  }

  private updateLoop(keys: Buffer, values: Buffer, count: number, flags: number): number {
    const ks = this.def.keySize;
    const vs = this.userValueSize;
    for (let i = 0; i < count; i++) {
      keys.copy(this.scratchKey, 0, i * ks, (i + 1) * ks);
      values.copy(this.scratchValue, 0, i * vs, (i + 1) * vs);
      this.updateScratch(flags);
    }
    return count;
  }

  /** Deletes `count` packed keys; absent keys are not an error. Returns how many existed. */
  deleteBatch(keys: Buffer, count: number): number {
    if (count === 0) return 0;
    const attr = newAttr();
    writePtr(attr, 16, keys);
    attr.writeUInt32LE(count, 32);
    attr.writeUInt32LE(this.fd, 36);
    const r = bpfRaw(Cmd.MAP_DELETE_BATCH, attr);
    if (r >= 0) return count;
    // ENOENT stops the batch at the first absent key; continue element by element from there.
    if (r === -ENOENT || r === -ENOTSUPP || r === -EOPNOTSUPP || r === -EINVAL) {
      const ks = this.def.keySize;
      let done = r === -ENOENT ? attr.readUInt32LE(32) : 0;
      let existed = done;
      for (; done < count; done++) {
        keys.copy(this.scratchKey, 0, done * ks, (done + 1) * ks);
        if (this.deleteScratch()) existed++;
      }
      return existed;
    }
    throw BpfError.fromErrno(-r, 'BPF_MAP_DELETE_BATCH', this.name);
  }

  /**
   * Reads every element. Hash-like maps use BPF_MAP_LOOKUP_BATCH; others walk keys.
   * Yields [key, value] copies.
   */
  *entries(chunk = 256): Generator<[Buffer, Buffer]> {
    const ks = this.def.keySize;
    const vs = this.userValueSize;
    for (const batch of this.batches(chunk)) {
      if (!batch) {
        yield* this.entriesByKey();
        return;
      }
      const { keys, values, n } = batch;
      for (let i = 0; i < n; i++) {
        yield [Buffer.from(keys.subarray(i * ks, (i + 1) * ks)), Buffer.from(values.subarray(i * vs, (i + 1) * vs))];
      }
    }
  }

  /** How many elements the map holds, read in batches without copying them out one by one. */
  count(chunk = 4096): number {
    let n = 0;
    for (const batch of this.batches(chunk)) {
      if (!batch) {
        for (const _ of this.keys()) n++;
        return n;
      }
      n += batch.n;
    }
    return n;
  }

  /**
   * BPF_MAP_LOOKUP_BATCH over the whole map; the buffers are reused between batches. Yields
   * `undefined` once, first, where the map type has no batch lookup.
   */
  private *batches(chunk: number): Generator<{ keys: Buffer; values: Buffer; n: number } | undefined> {
    const keys = Buffer.alloc(this.def.keySize * chunk);
    const values = Buffer.alloc(this.userValueSize * chunk);
    // The batch cursor is opaque and sized like a key for hash maps (u32 for arrays).
    const batchSize = Math.max(this.def.keySize, 4);
    let inBatch: Buffer | null = null;
    const outBatch = Buffer.alloc(batchSize);
    for (;;) {
      const attr = newAttr();
      writePtr(attr, 0, inBatch);
      writePtr(attr, 8, outBatch);
      writePtr(attr, 16, keys);
      writePtr(attr, 24, values);
      attr.writeUInt32LE(chunk, 32);
      attr.writeUInt32LE(this.fd, 36);
      const r = bpfRaw(Cmd.MAP_LOOKUP_BATCH, attr);
      const n = attr.readUInt32LE(32);
      if (r < 0 && r !== -ENOENT) {
        if (inBatch === null && (r === -ENOTSUPP || r === -EOPNOTSUPP || r === -EINVAL)) {
          yield undefined;
          return;
        }
        throw BpfError.fromErrno(-r, 'BPF_MAP_LOOKUP_BATCH', this.name);
      }
      yield { keys, values, n };
      if (r === -ENOENT) return;
      inBatch = Buffer.from(outBatch);
    }
  }

  private *entriesByKey(): Generator<[Buffer, Buffer]> {
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) yield [k, v];
    }
  }

  /**
   * Copies the entries of `other` (same key and value layout) into this map, in batches; with
   * `onlyMissing`, entries this map already has are kept. Returns how many were written; entries
   * that do not fit (a smaller map) are left out.
   */
  copyFrom(other: BpfMap, onlyMissing = false, chunk = 4096): number {
    const ks = this.def.keySize;
    const vs = this.userValueSize;
    const keys = Buffer.alloc(ks * chunk);
    const values = Buffer.alloc(vs * chunk);
    let n = 0;
    let written = 0;
    const flush = () => {
      if (n === 0) return;
      try {
        written += this.updateBatch(keys, values, n, onlyMissing ? UpdateFlags.NOEXIST : UpdateFlags.ANY);
      } catch (err) {
        // NOEXIST stops a batch at the first existing key, a full map at the first new one (E2BIG,
        // or EINVAL once part of the batch is in: seen copying into a smaller map); finish one by
        // one, skipping those.
        if (!(err instanceof BpfError) || !['EEXIST', 'E2BIG', 'EINVAL'].includes(err.code)) throw err;
        for (let i = 0; i < n; i++) {
          keys.copy(this.scratchKey, 0, i * ks, (i + 1) * ks);
          values.copy(this.scratchValue, 0, i * vs, (i + 1) * vs);
          try {
            this.updateScratch(onlyMissing ? UpdateFlags.NOEXIST : UpdateFlags.ANY);
            written++;
          } catch (e) {
            if (!(e instanceof BpfError) || (e.code !== 'EEXIST' && e.code !== 'E2BIG')) throw e;
          }
        }
      }
      n = 0;
    };
    for (const [k, v] of other.entries()) {
      k.copy(keys, n * ks);
      v.copy(values, n * vs);
      if (++n === chunk) flush();
    }
    flush();
    return written;
  }

  /** Removes every element (array maps cannot delete; they are zeroed instead). */
  clear(): void {
    if (
      this.def.type === MapType.ARRAY ||
      this.def.type === MapType.PERCPU_ARRAY ||
      this.def.type === MapType.PROG_ARRAY
    ) {
      const zero = Buffer.alloc(this.userValueSize);
      for (let i = 0; i < this.def.maxEntries; i++) {
        this.scratchKey.writeUInt32LE(i, 0);
        if (this.def.type === MapType.PROG_ARRAY) this.deleteScratch();
        else {
          zero.copy(this.scratchValue);
          this.updateScratch();
        }
      }
      return;
    }
    const all = [...this.keys()];
    const packed = Buffer.concat(all);
    this.deleteBatch(packed, all.length);
  }

  close(): void {
    closeFd(this.fd);
    (this as { fd: number }).fd = -1;
  }
}
