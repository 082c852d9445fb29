// Parsing a clang BPF object into a machine-independent spec: programs, BTF-defined maps and
// global data. Nothing here touches the kernel (spec, then object).
import { readFileSync } from 'node:fs';
import { Btf, BtfKind } from './btf.js';
import { ElfFile, SHT_NOBITS, SHT_PROGBITS, STT_FUNC, STT_OBJECT, STT_SECTION, type ElfSection } from './elf.js';
import { AttachType, MapType, ProgType } from './syscall.js';

export class SpecError extends Error {
  readonly code = 'ESPEC';
}

export interface MapSpec {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  /** libbpf's convention: 1 = pin by name under the collection's pin root. */
  pinning: number;
}

export interface DataVariable {
  offset: number;
  size: number;
}

/** A global data section (.rodata, .data, .bss) that becomes a one-element array map. */
export interface DataSectionSpec {
  name: string;
  data: Buffer;
  readonly: boolean;
  variables: Map<string, DataVariable>;
}

export type RelocationTarget =
  | { kind: 'map'; map: string }
  | { kind: 'data'; section: string; offset: number }
  | { kind: 'call'; textInsn: number }
  // The address of a .text function (a bpf_loop or bpf_for_each_map_elem callback).
  | { kind: 'func'; textInsn: number };

export interface InsnRelocation {
  /** Instruction index within the program. */
  insn: number;
  target: RelocationTarget;
}

export interface ProgramSpec {
  name: string;
  section: string;
  type: number;
  expectedAttachType: number;
  insns: Buffer;
  relocations: InsnRelocation[];
  license: string;
  /** The program's functions (itself first) and where each starts, for BTF func_info. */
  functions: { name: string; insn: number }[];
  /** Takes a function's address (a helper callback): the kernel then requires BTF func_info. */
  needsFuncInfo: boolean;
}

export interface ObjectSpec {
  source: string;
  programs: Map<string, ProgramSpec>;
  maps: Map<string, MapSpec>;
  data: Map<string, DataSectionSpec>;
  btf: Btf | undefined;
  /** The object's BTF ready for BPF_BTF_LOAD (DATASECs completed from the ELF). */
  kernelBtf: Buffer | undefined;
}

const INSN = 8;
const LD_IMM64 = 0x18;
const CALL = 0x85;

/** Program type and expected attach type from the section name, as libbpf names sections. */
export function programTypeFor(section: string): { type: number; attach: number } | undefined {
  const rules: [RegExp, number, number][] = [
    [/^(tc|tcx|classifier)(\/.*)?$/, ProgType.SCHED_CLS, 0],
    [/^xdp(\/.*)?$/, ProgType.XDP, AttachType.XDP],
    [/^cgroup\/connect4$/, ProgType.CGROUP_SOCK_ADDR, AttachType.CGROUP_INET4_CONNECT],
    [/^cgroup\/sendmsg4$/, ProgType.CGROUP_SOCK_ADDR, AttachType.CGROUP_UDP4_SENDMSG],
    [/^cgroup\/recvmsg4$/, ProgType.CGROUP_SOCK_ADDR, AttachType.CGROUP_UDP4_RECVMSG],
    [/^cgroup\/getpeername4$/, ProgType.CGROUP_SOCK_ADDR, AttachType.CGROUP_INET4_GETPEERNAME],
    [/^cgroup_skb\/ingress$/, ProgType.CGROUP_SKB, AttachType.CGROUP_INET_INGRESS],
    [/^cgroup_skb\/egress$/, ProgType.CGROUP_SKB, AttachType.CGROUP_INET_EGRESS],
    [/^socket(\/.*)?$/, ProgType.SOCKET_FILTER, 0],
  ];
  for (const [re, type, attach] of rules) if (re.test(section)) return { type, attach };
  return undefined;
}

const isDataSection = (name: string): boolean => /^\.(rodata|data|bss)(\..*)?$/.test(name);

function readMaps(elf: ElfFile, btf: Btf | undefined, source: string): Map<string, MapSpec> {
  const maps = new Map<string, MapSpec>();
  const sec = elf.section('.maps');
  if (!sec) return maps;
  if (!btf) throw new SpecError(`${source}: has a .maps section but no .BTF to describe it`);
  const datasec = btf.byName('.maps', BtfKind.DATASEC);
  if (!datasec?.datasec) throw new SpecError(`${source}: .BTF has no DATASEC for .maps`);
  for (const v of datasec.datasec) {
    const variable = btf.type(v.type);
    const name = variable.name;
    const def = btf.resolve(variable.sizeOrType);
    if (def.kind !== BtfKind.STRUCT || !def.members) throw new SpecError(`${source}: map ${name} is not a struct`);
    const spec: MapSpec = { name, type: 0, keySize: 0, valueSize: 0, maxEntries: 0, flags: 0, pinning: 0 };
    for (const m of def.members) {
      // __uint(x, N) is `int (*x)[N]`; __type(x, T) is `T *x`.
      const ptr = btf.resolve(m.type);
      const pointee = ptr.kind === BtfKind.PTR ? btf.resolve(ptr.sizeOrType) : undefined;
      const uintValue = (): number => {
        if (!pointee || pointee.kind !== BtfKind.ARRAY) {
          throw new SpecError(`${source}: map ${name} field ${m.name} is not declared with __uint`);
        }
        return pointee.array!.nelems;
      };
      switch (m.name) {
        case 'type':
          spec.type = uintValue();
          break;
        case 'max_entries':
          spec.maxEntries = uintValue();
          break;
        case 'map_flags':
          spec.flags = uintValue();
          break;
        case 'pinning':
          spec.pinning = uintValue();
          break;
        case 'key_size':
          spec.keySize = uintValue();
          break;
        case 'value_size':
          spec.valueSize = uintValue();
          break;
        case 'key':
          spec.keySize = btf.sizeOf(ptr.sizeOrType);
          break;
        case 'value':
          spec.valueSize = btf.sizeOf(ptr.sizeOrType);
          break;
        default:
          throw new SpecError(`${source}: map ${name}: unsupported map attribute "${m.name}"`);
      }
    }
    if (spec.type === MapType.PROG_ARRAY && spec.valueSize === 0) spec.valueSize = 4;
    if (spec.type === 0) throw new SpecError(`${source}: map ${name} has no type`);
    maps.set(name, spec);
  }
  return maps;
}

function readData(elf: ElfFile): Map<string, DataSectionSpec> {
  const out = new Map<string, DataSectionSpec>();
  for (const s of elf.sections) {
    if (!isDataSection(s.name) || (s.type !== SHT_PROGBITS && s.type !== SHT_NOBITS) || s.size === 0) continue;
    const variables = new Map<string, DataVariable>();
    for (const sym of elf.symbolsIn(s.index, STT_OBJECT))
      variables.set(sym.name, { offset: sym.value, size: sym.size });
    out.set(s.name, {
      name: s.name,
      data: Buffer.from(s.data),
      readonly: s.name.startsWith('.rodata'),
      variables,
    });
  }
  return out;
}

/** A static function in .text: a BPF-to-BPF call target. Offsets in instructions. */
interface TextFunction {
  name: string;
  start: number;
  length: number;
}

interface TextSection {
  insns: Buffer;
  functions: TextFunction[];
  relocations: InsnRelocation[];
}

const BPF_PSEUDO_FUNC = 4;
const isPseudoCall = (insns: Buffer, i: number): boolean => insns[i * INSN] === CALL && insns[i * INSN + 1] >> 4 === 1;

function resolveRelocations(
  elf: ElfFile,
  sec: ElfSection,
  from: number,
  insns: Buffer,
  maps: Map<string, MapSpec>,
  data: Map<string, DataSectionSpec>,
  where: string,
  relocations: InsnRelocation[],
): boolean {
  let usesText = false;
  for (const r of elf.relocationsFor(sec.index)) {
    if (r.offset < from || r.offset >= from + insns.length) continue;
    const off = r.offset - from;
    const insn = off / INSN;
    const opcode = insns[off];
    const target = elf.sections[r.symbol.sectionIndex];
    const at = `${where} insn ${insn}`;
    if (opcode === CALL) {
      if (target?.name !== '.text') throw new SpecError(`${at}: call into unsupported section ${target?.name}`);
      // A section symbol carries the callee in the immediate (imm + 1 instructions in); a
      // function symbol in its value with imm = -1. One formula covers both.
      const callee = r.symbol.value / INSN + insns.readInt32LE(off + 4) + 1;
      relocations.push({ insn, target: { kind: 'call', textInsn: callee } });
      usesText = true;
    } else if (opcode !== LD_IMM64) {
      throw new SpecError(`${at}: relocation on opcode 0x${opcode.toString(16)}`);
    } else if (target?.name === '.text') {
      const base = r.symbol.type === STT_SECTION ? 0 : r.symbol.value;
      relocations.push({ insn, target: { kind: 'func', textInsn: (base + insns.readInt32LE(off + 4)) / INSN } });
      usesText = true;
    } else if (target?.name === '.maps') {
      if (!maps.has(r.symbol.name)) throw new SpecError(`${at}: unknown map ${r.symbol.name}`);
      relocations.push({ insn, target: { kind: 'map', map: r.symbol.name } });
    } else if (target && data.has(target.name)) {
      // A section symbol carries the offset in the instruction; a variable symbol in st_value.
      const base = r.symbol.type === STT_SECTION ? 0 : r.symbol.value;
      const offset = base + insns.readInt32LE(off + 4);
      relocations.push({ insn, target: { kind: 'data', section: target.name, offset } });
    } else {
      throw new SpecError(`${at}: relocation against ${r.symbol.name} in unsupported section ${target?.name}`);
    }
  }
  return usesText;
}

function readText(
  elf: ElfFile,
  maps: Map<string, MapSpec>,
  data: Map<string, DataSectionSpec>,
  source: string,
): TextSection | undefined {
  const sec = elf.section('.text');
  if (!sec || sec.size === 0) return undefined;
  const insns = Buffer.from(sec.data);
  const relocations: InsnRelocation[] = [];
  resolveRelocations(elf, sec, 0, insns, maps, data, `${source}: .text`, relocations);
  const functions = elf
    .symbolsIn(sec.index, STT_FUNC)
    .map((f) => ({ name: f.name, start: f.value / INSN, length: f.size / INSN }))
    .sort((a, b) => a.start - b.start);
  return { insns, functions, relocations };
}

/**
 * Appends the .text functions a program calls, directly or through each other, and rewrites
 * every call to its new relative offset. Only reachable functions are copied: the verifier
 * refuses unreachable instructions.
 */
function linkSubprograms(
  prog: Buffer,
  relocations: InsnRelocation[],
  text: TextSection,
  where: string,
): { insns: Buffer; functions: { name: string; insn: number }[] } {
  const fnAt = (insn: number): TextFunction => {
    const f = text.functions.find((fn) => insn >= fn.start && insn < fn.start + fn.length);
    if (!f || f.start !== insn)
      throw new SpecError(`${where}: call to .text instruction ${insn}, not a function start`);
    return f;
  };
  // A call inside .text is pc-relative, except to a global function: that one is relocated.
  const textCallTarget = new Map<number, number>();
  for (const r of text.relocations) if (r.target.kind === 'call') textCallTarget.set(r.insn, r.target.textInsn);
  const calleeAt = (i: number) => textCallTarget.get(i) ?? i + text.insns.readInt32LE(i * INSN + 4) + 1;
  const order: TextFunction[] = [];
  const refersTo = (r: InsnRelocation) =>
    r.target.kind === 'call' || r.target.kind === 'func' ? [fnAt(r.target.textInsn)] : [];
  const queue = relocations.flatMap(refersTo);
  while (queue.length > 0) {
    const f = queue.shift()!;
    if (order.includes(f)) continue;
    order.push(f);
    for (let i = f.start; i < f.start + f.length; i++) {
      if (isPseudoCall(text.insns, i)) queue.push(fnAt(calleeAt(i)));
    }
    for (const r of text.relocations) if (r.insn >= f.start && r.insn < f.start + f.length) queue.push(...refersTo(r));
  }
  const base = prog.length / INSN;
  const newStart = new Map<TextFunction, number>();
  let next = base;
  for (const f of order) {
    newStart.set(f, next);
    next += f.length;
  }
  const out = Buffer.concat([
    prog,
    ...order.map((f) => text.insns.subarray(f.start * INSN, (f.start + f.length) * INSN)),
  ]);
  for (const r of relocations) {
    if (r.target.kind !== 'call') continue;
    out.writeInt32LE(newStart.get(fnAt(r.target.textInsn))! - (r.insn + 1), r.insn * INSN + 4);
  }
  for (const f of order) {
    const at = newStart.get(f)!;
    for (let i = 0; i < f.length; i++) {
      const src = f.start + i;
      if (isPseudoCall(text.insns, src)) {
        const callee = fnAt(calleeAt(src));
        out.writeInt32LE(newStart.get(callee)! - (at + i + 1), (at + i) * INSN + 4);
      }
    }
    for (const r of text.relocations) {
      if (r.insn >= f.start && r.insn < f.start + f.length && r.target.kind !== 'call')
        relocations.push({ insn: at + r.insn - f.start, target: r.target });
    }
  }
  // Function addresses become BPF_PSEUDO_FUNC loads of the callee's relative offset.
  for (const r of relocations) {
    if (r.target.kind !== 'func') continue;
    const at = r.insn * INSN;
    out[at + 1] = (out[at + 1] & 0x0f) | (BPF_PSEUDO_FUNC << 4);
    out.writeInt32LE(newStart.get(fnAt(r.target.textInsn))! - (r.insn + 1), at + 4);
  }
  return { insns: out, functions: order.map((f) => ({ name: f.name, insn: newStart.get(f)! })) };
}

function readPrograms(
  elf: ElfFile,
  sec: ElfSection,
  license: string,
  maps: Map<string, MapSpec>,
  data: Map<string, DataSectionSpec>,
  text: TextSection | undefined,
  source: string,
): ProgramSpec[] {
  const kind = programTypeFor(sec.name);
  if (!kind) return [];
  const funcs = elf.symbolsIn(sec.index, STT_FUNC).filter((s) => s.size > 0);
  return funcs.map((fn) => {
    let insns: Buffer = Buffer.from(sec.data.subarray(fn.value, fn.value + fn.size));
    const relocations: InsnRelocation[] = [];
    const where = `${source}: program ${fn.name}`;
    const functions = [{ name: fn.name, insn: 0 }];
    if (resolveRelocations(elf, sec, fn.value, insns, maps, data, where, relocations)) {
      if (!text) throw new SpecError(`${where}: calls into .text, which is empty`);
      const linked = linkSubprograms(insns, relocations, text, where);
      insns = linked.insns;
      functions.push(...linked.functions);
    }
    const needsFuncInfo = relocations.some((r) => r.target.kind === 'func');
    return {
      name: fn.name,
      section: sec.name,
      type: kind.type,
      expectedAttachType: kind.attach,
      insns,
      relocations: relocations.filter((r) => r.target.kind !== 'call' && r.target.kind !== 'func'),
      license,
      functions,
      needsFuncInfo,
    };
  });
}

export function parseObject(buf: Buffer, source = 'object'): ObjectSpec {
  const elf = new ElfFile(buf, source);
  const btfSec = elf.section('.BTF');
  const btf = btfSec ? new Btf(btfSec.data) : undefined;
  const licSec = elf.section('license');
  const license = licSec ? licSec.data.toString('latin1').replace(/\0.*$/s, '') : 'GPL';
  const maps = readMaps(elf, btf, source);
  const data = readData(elf);
  const programs = new Map<string, ProgramSpec>();
  const text = readText(elf, maps, data, source);
  for (const sec of elf.sections) {
    if (sec.type !== SHT_PROGBITS || (sec.flags & 0x4n) === 0n) continue; // SHF_EXECINSTR
    for (const p of readPrograms(elf, sec, license, maps, data, text, source)) programs.set(p.name, p);
  }
  const symbolValue = new Map(elf.symbols.filter((y) => y.type === STT_OBJECT).map((y) => [y.name, y.value]));
  const kernelBtf = btf?.kernelData(
    (name) => elf.section(name)?.size,
    (name) => symbolValue.get(name),
  );
  return { source, programs, maps, data, btf, kernelBtf };
}

export function loadObjectFile(path: string): ObjectSpec {
  return parseObject(readFileSync(path), path);
}
