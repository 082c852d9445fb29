// A reader for BTF (BPF Type Format), enough to read BTF-defined maps from clang's objects,
// to compare the TypeScript codecs with the C structs, and to probe the kernel's own types.

export const BtfKind = {
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

export interface BtfMember {
  name: string;
  type: number;
  /** Offset in bits from the start of the struct. */
  bitOffset: number;
  bitSize: number;
}

export interface BtfType {
  id: number;
  kind: number;
  name: string;
  /** size for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT; referenced type id for PTR/TYPEDEF/CONST/VAR/... */
  sizeOrType: number;
  members?: BtfMember[];
  array?: { type: number; indexType: number; nelems: number };
  enumValues?: { name: string; value: bigint }[];
  datasec?: { type: number; offset: number; size: number }[];
}

export class BtfError extends Error {
  readonly code = 'EBTF';
}

const MODIFIERS = new Set<number>([
  BtfKind.TYPEDEF,
  BtfKind.VOLATILE,
  BtfKind.CONST,
  BtfKind.RESTRICT,
  BtfKind.TYPE_TAG,
]);

export class Btf {
  /** Index = type id; id 0 is void. */
  readonly types: BtfType[] = [{ id: 0, kind: 0, name: 'void', sizeOrType: 0 }];
  private nameIndex: Map<string, BtfType[]> | undefined;
  /** Byte offset of each DATASEC's header in the raw data, for kernelData(). */
  private readonly datasecAt = new Map<number, number>();

  constructor(private readonly raw: Buffer) {
    const buf = raw;
    if (buf.length < 24 || buf.readUInt16LE(0) !== 0xeb9f) throw new BtfError('not BTF data (bad magic)');
    const hdrLen = buf.readUInt32LE(4);
    const typeOff = hdrLen + buf.readUInt32LE(8);
    const typeLen = buf.readUInt32LE(12);
    const strOff = hdrLen + buf.readUInt32LE(16);
    const strLen = buf.readUInt32LE(20);
    const str = (off: number): string => {
      if (off === 0) return '';
      const start = strOff + off;
      const end = buf.indexOf(0, start);
      return buf.toString('latin1', start, end < 0 || end > strOff + strLen ? strOff + strLen : end);
    };
    let o = typeOff;
    const end = typeOff + typeLen;
    while (o < end) {
      const nameOff = buf.readUInt32LE(o);
      const info = buf.readUInt32LE(o + 4);
      const sizeOrType = buf.readUInt32LE(o + 8);
      o += 12;
      const vlen = info & 0xffff;
      const kind = (info >>> 24) & 0x1f;
      const kindFlag = info >>> 31 === 1;
      const t: BtfType = { id: this.types.length, kind, name: str(nameOff), sizeOrType };
      switch (kind) {
        case BtfKind.INT:
        case BtfKind.VAR:
        case BtfKind.DECL_TAG:
          o += 4;
          break;
        case BtfKind.ARRAY:
          t.array = { type: buf.readUInt32LE(o), indexType: buf.readUInt32LE(o + 4), nelems: buf.readUInt32LE(o + 8) };
          o += 12;
          break;
        case BtfKind.STRUCT:
        case BtfKind.UNION:
          t.members = [];
          for (let i = 0; i < vlen; i++, o += 12) {
            const off = buf.readUInt32LE(o + 8);
            t.members.push({
              name: str(buf.readUInt32LE(o)),
              type: buf.readUInt32LE(o + 4),
              bitOffset: kindFlag ? off & 0xffffff : off,
              bitSize: kindFlag ? off >>> 24 : 0,
            });
          }
          break;
        case BtfKind.ENUM:
          t.enumValues = [];
          for (let i = 0; i < vlen; i++, o += 8) {
            t.enumValues.push({ name: str(buf.readUInt32LE(o)), value: BigInt(buf.readInt32LE(o + 4)) });
          }
          break;
        case BtfKind.ENUM64:
          t.enumValues = [];
          for (let i = 0; i < vlen; i++, o += 12) {
            const v = (BigInt(buf.readUInt32LE(o + 8)) << 32n) | BigInt(buf.readUInt32LE(o + 4));
            t.enumValues.push({ name: str(buf.readUInt32LE(o)), value: v });
          }
          break;
        case BtfKind.FUNC_PROTO:
          o += 8 * vlen;
          break;
        case BtfKind.DATASEC:
          this.datasecAt.set(t.id, o - 12);
          t.datasec = [];
          for (let i = 0; i < vlen; i++, o += 12) {
            t.datasec.push({
              type: buf.readUInt32LE(o),
              offset: buf.readUInt32LE(o + 4),
              size: buf.readUInt32LE(o + 8),
            });
          }
          break;
        default:
          break;
      }
      this.types.push(t);
    }
  }

  /**
   * The BTF as the kernel accepts it: the compiler leaves DATASEC sizes and variable offsets at
   * zero (it cannot know them), so they are filled in from the ELF sections and symbols.
   */
  kernelData(
    sectionSize: (name: string) => number | undefined,
    symbolOffset: (name: string) => number | undefined,
  ): Buffer {
    const out = Buffer.from(this.raw);
    for (const [id, at] of this.datasecAt) {
      const t = this.types[id]!;
      out.writeUInt32LE(sectionSize(t.name) ?? t.sizeOrType, at + 8);
      t.datasec!.forEach((v, i) => {
        const off = symbolOffset(this.types[v.type]!.name);
        if (off !== undefined) out.writeUInt32LE(off, at + 12 + i * 12 + 4);
      });
    }
    return out;
  }

  type(id: number): BtfType {
    const t = this.types[id];
    if (!t) throw new BtfError(`no BTF type with id ${id}`);
    return t;
  }

  /** Follows typedefs and qualifiers to the underlying type. */
  resolve(id: number): BtfType {
    let t = this.type(id);
    for (let guard = 0; MODIFIERS.has(t.kind); guard++) {
      if (guard > 64) throw new BtfError(`BTF type ${id}: modifier chain too long`);
      t = this.type(t.sizeOrType);
    }
    return t;
  }

  sizeOf(id: number): number {
    const t = this.resolve(id);
    switch (t.kind) {
      case BtfKind.INT:
      case BtfKind.STRUCT:
      case BtfKind.UNION:
      case BtfKind.ENUM:
      case BtfKind.ENUM64:
      case BtfKind.FLOAT:
      case BtfKind.DATASEC:
        return t.sizeOrType;
      case BtfKind.PTR:
        return 8;
      case BtfKind.ARRAY:
        return t.array!.nelems * this.sizeOf(t.array!.type);
      default:
        throw new BtfError(`BTF type ${t.id} "${t.name}" (kind ${t.kind}) has no size`);
    }
  }

  byName(name: string, kind?: number): BtfType | undefined {
    if (!this.nameIndex) {
      this.nameIndex = new Map();
      for (const t of this.types) {
        if (!t.name) continue;
        const list = this.nameIndex.get(t.name);
        if (list) list.push(t);
        else this.nameIndex.set(t.name, [t]);
      }
    }
    return this.nameIndex.get(name)?.find((t) => kind === undefined || t.kind === kind);
  }

  /** Size and byte offsets of a struct's members: what a TypeScript codec must match. */
  structLayout(name: string): { size: number; fields: { name: string; offset: number; size: number }[] } {
    const t = this.byName(name, BtfKind.STRUCT);
    if (!t) throw new BtfError(`no struct ${name} in BTF`);
    return {
      size: t.sizeOrType,
      fields: t.members!.map((m) => ({ name: m.name, offset: m.bitOffset / 8, size: this.sizeOf(m.type) })),
    };
  }

  enumValue(enumName: string, valueName: string): bigint | undefined {
    const t = this.byName(enumName, BtfKind.ENUM) ?? this.byName(enumName, BtfKind.ENUM64);
    return t?.enumValues?.find((v) => v.name === valueName)?.value;
  }
}
