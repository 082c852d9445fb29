// Byte codecs for map keys and values. A struct codec lays fields out in order and refuses
// misaligned fields, because the C side declares explicit padding: the layouts then match
// byte for byte, which a test checks against the object's BTF.

export interface Codec<T> {
  readonly size: number;
  readonly align: number;
  encode(value: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset: number): T;
}

export type CodecValue<C> = C extends Codec<infer T> ? T : never;

export interface PadCodec extends Codec<undefined> {
  readonly pad: true;
}

export const u8: Codec<number> = {
  size: 1,
  align: 1,
  encode: (v, b, o) => void b.writeUInt8(v, o),
  decode: (b, o) => b.readUInt8(o),
};
export const u16: Codec<number> = {
  size: 2,
  align: 2,
  encode: (v, b, o) => void b.writeUInt16LE(v, o),
  decode: (b, o) => b.readUInt16LE(o),
};
export const u32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => void b.writeUInt32LE(v >>> 0, o),
  decode: (b, o) => b.readUInt32LE(o),
};
export const i32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => void b.writeInt32LE(v, o),
  decode: (b, o) => b.readInt32LE(o),
};
export const u64: Codec<bigint> = {
  size: 8,
  align: 8,
  encode: (v, b, o) => void b.writeBigUInt64LE(v, o),
  decode: (b, o) => b.readBigUInt64LE(o),
};
/** A u64 that userspace treats as a JS number (counters, nanosecond times below 2^53). */
export const u64n: Codec<number> = {
  size: 8,
  align: 8,
  encode: (v, b, o) => {
    b.writeUInt32LE(v % 0x100000000, o);
    b.writeUInt32LE(Math.floor(v / 0x100000000), o + 4);
  },
  decode: (b, o) => b.readUInt32LE(o) + b.readUInt32LE(o + 4) * 0x100000000,
};
/** Network byte order 16-bit (ports), host number in JS. */
export const be16: Codec<number> = {
  size: 2,
  align: 2,
  encode: (v, b, o) => void b.writeUInt16BE(v, o),
  decode: (b, o) => b.readUInt16BE(o),
};
export const be32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => void b.writeUInt32BE(v >>> 0, o),
  decode: (b, o) => b.readUInt32BE(o),
};

/** An IPv4 address in network byte order, dotted quad in JS. */
export const ipv4: Codec<string> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => {
    // Hand-rolled parse: bulk map writes encode millions of addresses and split() dominated.
    let part = 0;
    let acc = 0;
    let digits = 0;
    for (let i = 0; i <= v.length; i++) {
      const c = i < v.length ? v.charCodeAt(i) : 46;
      if (c === 46) {
        if (digits === 0 || acc > 255 || part > 3) throw new TypeError(`not an IPv4 address: ${v}`);
        b[o + part++] = acc;
        acc = 0;
        digits = 0;
      } else if (c >= 48 && c <= 57 && digits < 3) {
        acc = acc * 10 + (c - 48);
        digits++;
      } else {
        throw new TypeError(`not an IPv4 address: ${v}`);
      }
    }
    if (part !== 4) throw new TypeError(`not an IPv4 address: ${v}`);
  },
  decode: (b, o) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`,
};

/** An IPv4 address as a `.rodata` u32 constant: network-order bytes, read as the program loads them. */
export function ipv4Constant(ip: string): number {
  const b = Buffer.alloc(4);
  ipv4.encode(ip, b, 0);
  return b.readUInt32LE(0);
}

export function pad(size: number): PadCodec {
  return { size, align: 1, pad: true, encode: (_v, b, o) => void b.fill(0, o, o + size), decode: () => undefined };
}

export function bytes(size: number): Codec<Buffer> {
  return {
    size,
    align: 1,
    encode: (v, b, o) => {
      b.fill(0, o, o + size);
      v.copy(b, o, 0, Math.min(size, v.length));
    },
    decode: (b, o) => Buffer.from(b.subarray(o, o + size)),
  };
}

export function array<T>(item: Codec<T>, n: number): Codec<T[]> {
  return {
    size: item.size * n,
    align: item.align,
    encode: (v, b, o) => {
      for (let i = 0; i < n; i++) item.encode(v[i], b, o + i * item.size);
    },
    decode: (b, o) => Array.from({ length: n }, (_, i) => item.decode(b, o + i * item.size)),
  };
}

type Fields = Record<string, Codec<unknown>>;
type NonPadKeys<F extends Fields> = { [K in keyof F]: F[K] extends PadCodec ? never : K }[keyof F];
export type StructValue<F extends Fields> = { [K in NonPadKeys<F>]: CodecValue<F[K]> };

export interface StructCodec<F extends Fields> extends Codec<StructValue<F>> {
  readonly fields: { name: string; offset: number; size: number; pad: boolean }[];
}

export function struct<F extends Fields>(name: string, fields: F): StructCodec<F> {
  const layout: { name: string; offset: number; size: number; pad: boolean; codec: Codec<unknown> }[] = [];
  let offset = 0;
  let align = 1;
  for (const [fname, codec] of Object.entries(fields)) {
    if (offset % codec.align !== 0) {
      throw new TypeError(`${name}.${fname}: offset ${offset} is not ${codec.align}-aligned; add explicit padding`);
    }
    layout.push({ name: fname, offset, size: codec.size, pad: 'pad' in codec, codec });
    offset += codec.size;
    align = Math.max(align, codec.align);
  }
  if (offset % align !== 0)
    throw new TypeError(`${name}: size ${offset} is not a multiple of ${align}; add tail padding`);
  const live = layout.filter((f) => !f.pad);
  const pads = layout.filter((f) => f.pad);
  return {
    size: offset,
    align,
    fields: layout.map(({ name: n, offset: o, size, pad: p }) => ({ name: n, offset: o, size, pad: p })),
    encode: compileEncoder(name, live, pads),
    decode(b, o) {
      const out: Record<string, unknown> = {};
      for (const f of live) out[f.name] = f.codec.decode(b, o + f.offset);
      return out as StructValue<F>;
    },
  };
}

type LaidOut = { name: string; offset: number; size: number; codec: Codec<unknown> };

/**
 * Builds the encoder as straight-line code, one statement per field, so each field's codec call
 * is its own monomorphic call site: bulk writes of 100k map entries spend most of their time here.
 * Field names come from codec definitions in this repository, never from input data.
 */
function compileEncoder(name: string, live: LaidOut[], pads: LaidOut[]): (v: unknown, b: Buffer, o: number) => void {
  const lines: string[] = [];
  live.forEach((f, i) => {
    const prop = JSON.stringify(f.name);
    lines.push(`const f${i} = v[${prop}];`);
    lines.push(`if (f${i} === undefined) throw new TypeError(${JSON.stringify(`${name}.${f.name} is missing`)});`);
    lines.push(`c[${i}].encode(f${i}, b, o + ${f.offset});`);
  });
  for (const p of pads) lines.push(`b.fill(0, o + ${p.offset}, o + ${p.offset + p.size});`);
  const body = new Function('c', `return function encode(v, b, o) {\n${lines.join('\n')}\n};`);
  return body(live.map((f) => f.codec)) as (v: unknown, b: Buffer, o: number) => void;
}

export function encode<T>(codec: Codec<T>, value: T): Buffer {
  const b = Buffer.alloc(codec.size);
  codec.encode(value, b, 0);
  return b;
}
