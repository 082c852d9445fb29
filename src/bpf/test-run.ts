// The packet harness: run one frame through a loaded program with BPF_PROG_TEST_RUN and report
// the return code, the output frame (parsed, with every checksum verified) and what changed in
// the maps the caller watches.
import { checkChecksums, parseFrame, type ChecksumProblem, type ParsedFrame } from '../packet/index.js';
import type { BpfMap } from './map.js';
import type { Program } from './program.js';

/** Fields of struct __sk_buff that BPF_PROG_TEST_RUN accepts as input for tc programs. */
export interface SkbContext {
  mark?: number;
  priority?: number;
  /** The device the packet arrives on; it must exist in the calling thread's namespace. */
  ifindex?: number;
  ingressIfindex?: number;
  cb?: number[];
}

export const SKB_CTX_SIZE = 192;

export function skbContext(c: SkbContext): Buffer {
  const b = Buffer.alloc(SKB_CTX_SIZE);
  b.writeUInt32LE(c.mark ?? 0, 8);
  b.writeUInt32LE(c.priority ?? 0, 32);
  b.writeUInt32LE(c.ingressIfindex ?? 0, 36);
  b.writeUInt32LE(c.ifindex ?? 0, 40);
  (c.cb ?? []).slice(0, 5).forEach((v, i) => b.writeUInt32LE(v >>> 0, 48 + i * 4));
  return b;
}

export interface MapChange {
  map: string;
  key: Buffer;
  before: Buffer | undefined;
  after: Buffer | undefined;
}

export interface PacketRun {
  retval: number;
  /** The frame as the program left it. */
  out: Buffer;
  parsed: ParsedFrame | undefined;
  /** Checksum problems in the output frame, empty when every checksum is right. */
  checksumProblems: ChecksumProblem[];
  mapChanges: MapChange[];
  ctx: Buffer | undefined;
  durationNs: number;
}

function snapshot(map: BpfMap): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [k, v] of map.entries()) out.set(k.toString('hex'), v);
  return out;
}

function diff(name: string, before: Map<string, Buffer>, after: Map<string, Buffer>): MapChange[] {
  const changes: MapChange[] = [];
  for (const [k, v] of after) {
    const old = before.get(k);
    if (!old || !old.equals(v)) changes.push({ map: name, key: Buffer.from(k, 'hex'), before: old, after: v });
  }
  for (const [k, v] of before) {
    if (!after.has(k)) changes.push({ map: name, key: Buffer.from(k, 'hex'), before: v, after: undefined });
  }
  return changes;
}

export interface RunPacketOptions {
  ctx?: SkbContext | Buffer;
  /** Maps whose changes are reported. */
  watch?: BpfMap[];
  repeat?: number;
  /** UDP ports parsed as VXLAN in the output. */
  vxlanPorts?: number[];
}

export function runPacket(prog: Program, frame: Buffer, opts: RunPacketOptions = {}): PacketRun {
  const watched = (opts.watch ?? []).map((m) => [m, snapshot(m)] as const);
  const ctx = opts.ctx === undefined ? undefined : Buffer.isBuffer(opts.ctx) ? opts.ctx : skbContext(opts.ctx);
  const r = prog.testRun({ data: frame, ctx, repeat: opts.repeat });
  const out = Buffer.from(r.data);
  const parseOpts = opts.vxlanPorts ? { vxlanPorts: opts.vxlanPorts } : undefined;
  let parsed: ParsedFrame | undefined;
  try {
    parsed = parseFrame(out, parseOpts);
  } catch {
    parsed = undefined;
  }
  return {
    retval: r.retval,
    out,
    parsed,
    checksumProblems: parsed ? checkChecksums(out, parseOpts) : [],
    mapChanges: watched.flatMap(([m, before]) => diff(m.name, before, snapshot(m))),
    ctx: r.ctx,
    durationNs: r.durationNs,
  };
}

/** tc return codes by name, for readable assertions. */
export const TcAct = { UNSPEC: -1 >>> 0, OK: 0, SHOT: 2, REDIRECT: 7 } as const;
export const XdpAct = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
