// A map with a codec for its keys and values: what the rest of Sluice uses.
import { BpfError } from './errors.js';
import { BpfMap, isPerCpu, possibleCpus } from './map.js';
import type { Codec } from './codec.js';

export class TypedMap<K, V> {
  private readonly perCpu: boolean;
  private readonly slot: number;

  constructor(
    readonly map: BpfMap,
    readonly key: Codec<K>,
    readonly value: Codec<V>,
  ) {
    this.perCpu = isPerCpu(map.def.type);
    this.slot = Math.ceil(map.def.valueSize / 8) * 8;
    const problems: string[] = [];
    if (key.size !== map.def.keySize) problems.push(`key codec is ${key.size} bytes, map key is ${map.def.keySize}`);
    if (value.size !== map.def.valueSize)
      problems.push(`value codec is ${value.size} bytes, map value is ${map.def.valueSize}`);
    if (problems.length) {
      throw new BpfError('ESCHEMA', { op: 'bind codec', object: map.name, message: problems.join('; ') });
    }
  }

  get name(): string {
    return this.map.name;
  }

  /** For per-CPU maps, the sum over CPUs is not defined here; use getPerCpu. */
  get(k: K): V | undefined {
    this.key.encode(k, this.map.scratchKey, 0);
    if (!this.map.lookupScratch()) return undefined;
    return this.value.decode(this.map.scratchValue, 0);
  }

  getPerCpu(k: K): V[] | undefined {
    this.key.encode(k, this.map.scratchKey, 0);
    if (!this.map.lookupScratch()) return undefined;
    return this.splitCpus(this.map.scratchValue);
  }

  set(k: K, v: V, flags = 0): void {
    this.key.encode(k, this.map.scratchKey, 0);
    this.encodeValue(v, this.map.scratchValue, 0);
    this.map.updateScratch(flags);
  }

  delete(k: K): boolean {
    this.key.encode(k, this.map.scratchKey, 0);
    return this.map.deleteScratch();
  }

  /** Writes many entries with batch calls of `chunk` elements. */
  setMany(entries: Iterable<[K, V]>, chunk = 4096): number {
    const ks = this.key.size;
    const vs = this.map.userValueSize;
    const keys = Buffer.alloc(ks * chunk);
    const values = Buffer.alloc(vs * chunk);
    let n = 0;
    let total = 0;
    for (const [k, v] of entries) {
      this.key.encode(k, keys, n * ks);
      this.encodeValue(v, values, n * vs);
      if (++n === chunk) {
        total += this.map.updateBatch(keys, values, n);
        n = 0;
      }
    }
    if (n > 0) total += this.map.updateBatch(keys, values, n);
    return total;
  }

  deleteMany(keys: Iterable<K>, chunk = 4096): number {
    const ks = this.key.size;
    const buf = Buffer.alloc(ks * chunk);
    let n = 0;
    let existed = 0;
    for (const k of keys) {
      this.key.encode(k, buf, n * ks);
      if (++n === chunk) {
        existed += this.map.deleteBatch(buf, n);
        n = 0;
      }
    }
    if (n > 0) existed += this.map.deleteBatch(buf, n);
    return existed;
  }

  *entries(): Generator<[K, V]> {
    for (const [k, v] of this.map.entries()) {
      yield [this.key.decode(k, 0), this.perCpu ? this.splitCpus(v)[0] : this.value.decode(v, 0)];
    }
  }

  *entriesPerCpu(): Generator<[K, V[]]> {
    for (const [k, v] of this.map.entries()) yield [this.key.decode(k, 0), this.splitCpus(v)];
  }

  *keys(): Generator<K> {
    for (const k of this.map.keys()) yield this.key.decode(k, 0);
  }

  clear(): void {
    this.map.clear();
  }

  private encodeValue(v: V, buf: Buffer, off: number): void {
    if (!this.perCpu) {
      this.value.encode(v, buf, off);
      return;
    }
    // Writing a per-CPU map from userspace sets every CPU's slot to the same value.
    for (let c = 0, n = possibleCpus(); c < n; c++) this.value.encode(v, buf, off + c * this.slot);
  }

  private splitCpus(buf: Buffer): V[] {
    const n = this.perCpu ? possibleCpus() : 1;
    return Array.from({ length: n }, (_, c) => this.value.decode(buf, c * this.slot));
  }
}

/** Sums per-CPU values field by field (numbers and bigints); other fields come from CPU 0. */
export function sumPerCpu<V>(values: V[]): V {
  if (values.length === 0) throw new TypeError('no per-CPU values to sum');
  const first = values[0];
  if (typeof first === 'number') return values.reduce((a, b) => ((a as number) + (b as number)) as V);
  if (typeof first === 'bigint') return values.reduce((a, b) => ((a as bigint) + (b as bigint)) as V);
  const out: Record<string, unknown> = { ...(first as Record<string, unknown>) };
  for (const key of Object.keys(out)) {
    const fv = out[key];
    if (typeof fv === 'number' || typeof fv === 'bigint') {
      out[key] = sumPerCpu(values.map((v) => (v as Record<string, unknown>)[key]));
    }
  }
  return out as V;
}
