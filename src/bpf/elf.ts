// A reader for the 64-bit little-endian relocatable ELF objects clang writes for BPF.
// Only what the loader needs: sections, the symbol table and REL relocations.

export const SHT_PROGBITS = 1;
export const SHT_SYMTAB = 2;
export const SHT_STRTAB = 3;
export const SHT_NOBITS = 8;
export const SHT_REL = 9;

export const STT_NOTYPE = 0;
export const STT_OBJECT = 1;
export const STT_FUNC = 2;
export const STT_SECTION = 3;

export interface ElfSection {
  index: number;
  name: string;
  type: number;
  flags: bigint;
  /** Section contents (zero-filled for NOBITS such as .bss). */
  data: Buffer;
  size: number;
  link: number;
  info: number;
}

export interface ElfSymbol {
  name: string;
  type: number;
  bind: number;
  sectionIndex: number;
  value: number;
  size: number;
}

export interface ElfRelocation {
  offset: number;
  symbol: ElfSymbol;
  type: number;
}

export class ElfError extends Error {
  readonly code = 'EELF';
}

export class ElfFile {
  readonly sections: ElfSection[] = [];
  readonly symbols: ElfSymbol[] = [];
  private readonly byName = new Map<string, ElfSection>();

  constructor(
    readonly buf: Buffer,
    readonly source = 'object',
  ) {
    if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new ElfError(`${source}: not an ELF file`);
    if (buf[4] !== 2 || buf[5] !== 1) throw new ElfError(`${source}: not a 64-bit little-endian ELF object`);
    const machine = buf.readUInt16LE(18);
    if (machine !== 247) throw new ElfError(`${source}: ELF machine ${machine} is not BPF (247)`);
    const shoff = Number(buf.readBigUInt64LE(0x28));
    const shentsize = buf.readUInt16LE(0x3a);
    const shnum = buf.readUInt16LE(0x3c);
    const shstrndx = buf.readUInt16LE(0x3e);
    const raw: {
      nameOff: number;
      type: number;
      flags: bigint;
      off: number;
      size: number;
      link: number;
      info: number;
    }[] = [];
    for (let i = 0; i < shnum; i++) {
      const o = shoff + i * shentsize;
      raw.push({
        nameOff: buf.readUInt32LE(o),
        type: buf.readUInt32LE(o + 4),
        flags: buf.readBigUInt64LE(o + 8),
        off: Number(buf.readBigUInt64LE(o + 24)),
        size: Number(buf.readBigUInt64LE(o + 32)),
        link: buf.readUInt32LE(o + 40),
        info: buf.readUInt32LE(o + 44),
      });
    }
    const shstr = raw[shstrndx];
    const strAt = (tableOff: number, off: number): string => {
      const start = tableOff + off;
      const end = buf.indexOf(0, start);
      return buf.toString('latin1', start, end);
    };
    raw.forEach((s, index) => {
      const name = strAt(shstr.off, s.nameOff);
      const data = s.type === SHT_NOBITS ? Buffer.alloc(s.size) : buf.subarray(s.off, s.off + s.size);
      const sec: ElfSection = {
        index,
        name,
        type: s.type,
        flags: s.flags,
        data,
        size: s.size,
        link: s.link,
        info: s.info,
      };
      this.sections.push(sec);
      this.byName.set(name, sec);
    });
    const symtab = this.sections.find((s) => s.type === SHT_SYMTAB);
    if (!symtab) throw new ElfError(`${source}: no symbol table`);
    const strtab = raw[symtab.link];
    for (let o = 0; o + 24 <= symtab.data.length; o += 24) {
      const d = symtab.data;
      const info = d[o + 4];
      this.symbols.push({
        name: strAt(strtab.off, d.readUInt32LE(o)),
        type: info & 0xf,
        bind: info >> 4,
        sectionIndex: d.readUInt16LE(o + 6),
        value: Number(d.readBigUInt64LE(o + 8)),
        size: Number(d.readBigUInt64LE(o + 16)),
      });
    }
  }

  section(name: string): ElfSection | undefined {
    return this.byName.get(name);
  }

  /** REL relocations that apply to the section with the given index. */
  relocationsFor(sectionIndex: number): ElfRelocation[] {
    const out: ElfRelocation[] = [];
    for (const s of this.sections) {
      if (s.type !== SHT_REL || s.info !== sectionIndex) continue;
      for (let o = 0; o + 16 <= s.data.length; o += 16) {
        const info = s.data.readBigUInt64LE(o + 8);
        out.push({
          offset: Number(s.data.readBigUInt64LE(o)),
          symbol: this.symbols[Number(info >> 32n)],
          type: Number(info & 0xffffffffn),
        });
      }
    }
    return out;
  }

  symbolsIn(sectionIndex: number, type?: number): ElfSymbol[] {
    return this.symbols.filter((s) => s.sectionIndex === sectionIndex && (type === undefined || s.type === type));
  }
}
