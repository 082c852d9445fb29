// Comparing a TypeScript struct codec with the C struct in an object's BTF, so the two sides
// cannot drift apart silently.
import type { Btf } from './btf.js';

/** Differences between the codec and the C struct; empty when they match byte for byte. */
export function compareWithBtf(
  btf: Btf,
  cName: string,
  codec: { size: number; fields: readonly { name: string; offset: number; size: number }[] },
): string[] {
  const layout = btf.structLayout(cName);
  const out: string[] = [];
  if (layout.size !== codec.size) out.push(`struct ${cName}: C size ${layout.size}, codec size ${codec.size}`);
  const codecFields = codec.fields;
  // C says addr_a, TypeScript addrA: names match once underscores and case are set aside.
  const norm = (n: string) => n.replace(/_/g, '').toLowerCase();
  for (const f of layout.fields) {
    const c = codecFields.find((x) => norm(x.name) === norm(f.name));
    if (!c) {
      out.push(`struct ${cName}: field ${f.name} (offset ${f.offset}) missing from the codec`);
      continue;
    }
    if (c.offset !== f.offset) out.push(`struct ${cName}.${f.name}: C offset ${f.offset}, codec ${c.offset}`);
    if (c.size !== f.size) out.push(`struct ${cName}.${f.name}: C size ${f.size}, codec ${c.size}`);
  }
  for (const c of codecFields) {
    if (!layout.fields.some((f) => norm(f.name) === norm(c.name)))
      out.push(`struct ${cName}: codec field ${c.name} is not in C`);
  }
  return out;
}
