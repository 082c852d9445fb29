// Loading an ObjectSpec into the kernel: maps (created, or adopted from pins), global data with
// per-load constants, relocations, then programs.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { BpfError } from './errors.js';
import { BpfMap, type MismatchPolicy } from './map.js';
import { loadBtf, Program } from './program.js';
import { closeFd, MapType } from './syscall.js';
import { BtfKind } from './btf.js';
import type { DataSectionSpec, ObjectSpec, ProgramSpec } from './spec.js';

export type ConstantValue = number | bigint | boolean | Buffer | string;

export interface LoadOptions {
  /** Directory in bpffs for maps declared with pinning (LIBBPF_PIN_BY_NAME). */
  pinRoot?: string;
  /** Values for `.rodata` variables (`const volatile` globals), set before load. */
  constants?: Record<string, ConstantValue>;
  /** Use these already-open maps instead of creating the named ones (sharing between objects). */
  maps?: Record<string, BpfMap>;
  /** What to do when a pinned map's definition differs from the object's. */
  onPinMismatch?: MismatchPolicy;
  /** Override max_entries per map name (bpfMapSize* settings). */
  maxEntries?: Record<string, number>;
  /** Only load these programs (all by default). */
  programs?: string[];
}

const PSEUDO_MAP_FD = 1;
const PSEUDO_MAP_VALUE = 2;

function writeConstant(section: DataSectionSpec, name: string, value: ConstantValue, source: string): void {
  const v = section.variables.get(name);
  if (!v)
    throw new BpfError('ENOENT', {
      op: 'set constant',
      object: name,
      message: `${source} has no global "${name}" in ${section.name}`,
    });
  const buf = section.data;
  if (Buffer.isBuffer(value) || typeof value === 'string') {
    const b = Buffer.isBuffer(value) ? value : Buffer.from(value + '\0');
    if (b.length > v.size)
      throw new BpfError('E2BIG', {
        op: 'set constant',
        object: name,
        message: `${b.length} bytes do not fit in ${v.size}`,
      });
    buf.fill(0, v.offset, v.offset + v.size);
    b.copy(buf, v.offset);
    return;
  }
  const n = typeof value === 'boolean' ? (value ? 1n : 0n) : BigInt(value);
  switch (v.size) {
    case 1:
      buf.writeUInt8(Number(BigInt.asUintN(8, n)), v.offset);
      break;
    case 2:
      buf.writeUInt16LE(Number(BigInt.asUintN(16, n)), v.offset);
      break;
    case 4:
      buf.writeUInt32LE(Number(BigInt.asUintN(32, n)), v.offset);
      break;
    case 8:
      buf.writeBigUInt64LE(BigInt.asUintN(64, n), v.offset);
      break;
    default:
      throw new BpfError('EINVAL', {
        op: 'set constant',
        object: name,
        message: `a number cannot be written to a ${v.size}-byte global`,
      });
  }
}

export class Collection {
  private constructor(
    readonly spec: ObjectSpec,
    readonly maps: Map<string, BpfMap>,
    readonly programs: Map<string, Program>,
    private readonly owned: Set<BpfMap>,
  ) {}

  static load(spec: ObjectSpec, opts: LoadOptions = {}): Collection {
    let btfFd: number | undefined;
    const maps = new Map<string, BpfMap>();
    const owned = new Set<BpfMap>();
    const programs = new Map<string, Program>();
    try {
      for (const [name, ms] of spec.maps) {
        const given = opts.maps?.[name];
        if (given) {
          maps.set(name, given);
          continue;
        }
        const def = { ...ms, maxEntries: opts.maxEntries?.[name] ?? ms.maxEntries };
        let m: BpfMap;
        if (ms.pinning === 1 && opts.pinRoot) {
          mkdirSync(opts.pinRoot, { recursive: true });
          const p = path.join(opts.pinRoot, name);
          try {
            m = BpfMap.openPinned(p, def, opts.onPinMismatch ?? 'error');
          } catch (err) {
            if (!(err instanceof BpfError) || err.code !== 'ENOENT') throw err;
            m = BpfMap.create(def);
            m.pin(p);
          }
        } else {
          m = BpfMap.create(def);
        }
        maps.set(name, m);
        owned.add(m);
      }
      for (const [name, ds] of spec.data) {
        const data = Buffer.from(ds.data);
        const section = { ...ds, data };
        for (const [k, v] of Object.entries(opts.constants ?? {})) {
          if (ds.variables.has(k)) writeConstant(section, k, v, spec.source);
        }
        const m = BpfMap.create({
          name: name.slice(0, 15),
          type: MapType.ARRAY,
          keySize: 4,
          valueSize: data.length,
          maxEntries: 1,
        });
        owned.add(m);
        maps.set(name, m);
        const key = Buffer.alloc(4);
        m.update(key, data);
        // Frozen read-only data lets the verifier treat the constants as known values and
        // prune branches, so per-attach configuration costs nothing per packet.
        if (ds.readonly) m.freeze();
      }
      for (const k of Object.keys(opts.constants ?? {})) {
        if (![...spec.data.values()].some((d) => d.variables.has(k))) {
          throw new BpfError('ENOENT', {
            op: 'set constant',
            object: k,
            message: `${spec.source} has no global "${k}"`,
          });
        }
      }
      for (const [name, ps] of spec.programs) {
        if (opts.programs && !opts.programs.includes(name)) continue;
        if (ps.needsFuncInfo && btfFd === undefined) btfFd = loadBtf(requireBtf(spec), spec.source);
        programs.set(
          name,
          Program.load({
            name,
            type: ps.type,
            insns: relocate(ps, maps),
            license: ps.license,
            expectedAttachType: ps.expectedAttachType,
            ...(ps.needsFuncInfo ? { btfFd, funcInfo: funcInfo(spec, ps) } : {}),
          }),
        );
      }
    } catch (err) {
      for (const p of programs.values()) p.close();
      for (const m of owned) m.close();
      throw err;
    } finally {
      // Loaded programs hold their own reference to the BTF.
      if (btfFd !== undefined) closeFd(btfFd);
    }
    return new Collection(spec, maps, programs, owned);
  }

  program(name: string): Program {
    const p = this.programs.get(name);
    if (!p)
      throw new BpfError('ENOENT', {
        op: 'find program',
        object: name,
        message: `${this.spec.source} has no program "${name}"`,
      });
    return p;
  }

  map(name: string): BpfMap {
    const m = this.maps.get(name);
    if (!m)
      throw new BpfError('ENOENT', {
        op: 'find map',
        object: name,
        message: `${this.spec.source} has no map "${name}"`,
      });
    return m;
  }

  /**
   * Writes a global of `.data` or `.bss` while the programs run (a u32; `.rodata` is frozen).
   * The programs see it on their next read: a switch that costs an array access, no lookup.
   */
  setGlobal(name: string, value: number): void {
    for (const [section, ds] of this.spec.data) {
      const v = ds.variables.get(name);
      if (!v || ds.readonly) continue;
      const m = this.map(section);
      const key = Buffer.alloc(4);
      const cur = m.lookup(key) ?? Buffer.alloc(ds.data.length);
      cur.writeUInt32LE(value >>> 0, v.offset);
      m.update(key, cur);
      return;
    }
    throw new BpfError('ENOENT', {
      op: 'set global',
      object: name,
      message: `${this.spec.source} has no writable global "${name}"`,
    });
  }

  /** Closes programs and the maps this collection created (pinned ones stay in bpffs). */
  close(): void {
    for (const p of this.programs.values()) p.close();
    for (const m of this.owned) m.close();
  }
}

function relocate(ps: ProgramSpec, maps: Map<string, BpfMap>): Buffer {
  const insns = Buffer.from(ps.insns);
  for (const r of ps.relocations) {
    const o = r.insn * 8;
    const regs = insns[o + 1] & 0x0f;
    if (r.target.kind === 'call' || r.target.kind === 'func') continue; // resolved in the spec
    if (r.target.kind === 'map') {
      insns[o + 1] = regs | (PSEUDO_MAP_FD << 4);
      insns.writeInt32LE(maps.get(r.target.map)!.fd, o + 4);
      insns.writeInt32LE(0, o + 12);
    } else {
      insns[o + 1] = regs | (PSEUDO_MAP_VALUE << 4);
      insns.writeInt32LE(maps.get(r.target.section)!.fd, o + 4);
      insns.writeInt32LE(r.target.offset, o + 12);
    }
  }
  return insns;
}

function requireBtf(spec: ObjectSpec): Buffer {
  if (!spec.kernelBtf)
    throw new BpfError('EINVAL', {
      op: 'BPF_BTF_LOAD',
      object: spec.source,
      message: 'the object has no .BTF section',
    });
  return spec.kernelBtf;
}

/** bpf_func_info records: where each function of the program starts, and its BTF FUNC type. */
function funcInfo(spec: ObjectSpec, ps: ProgramSpec): Buffer {
  const out = Buffer.alloc(8 * ps.functions.length);
  ps.functions.forEach((f, i) => {
    const t = spec.btf?.byName(f.name, BtfKind.FUNC);
    if (!t)
      throw new BpfError('ENOENT', { op: 'BPF_PROG_LOAD', object: ps.name, message: `no BTF FUNC for ${f.name}` });
    out.writeUInt32LE(f.insn, i * 8);
    out.writeUInt32LE(t.id, i * 8 + 4);
  });
  return out;
}
