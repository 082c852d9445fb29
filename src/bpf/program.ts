// Loaded programs: BPF_PROG_LOAD with verifier-log retry, test-run, pinning.
import { BpfError } from './errors.js';
import { bpf, closeFd, Cmd, newAttr, objGet, objInfo, objPin, writeName, writePtr } from './syscall.js';

export interface ProgramLoadSpec {
  name: string;
  type: number;
  insns: Buffer;
  license?: string;
  expectedAttachType?: number;
  /** BTF fd and func/line info make verifier logs show source lines; optional. */
  btfFd?: number;
  funcInfo?: Buffer;
  lineInfo?: Buffer;
}

/** A log buffer that is too small fails the load by itself, so the retry uses a big one. */
const VERIFIER_LOG_SIZE = 16 * 1024 * 1024;

function loadAttempt(spec: ProgramLoadSpec, log: Buffer | null): number {
  const license = Buffer.from((spec.license ?? 'GPL') + '\0');
  const attr = newAttr();
  attr.writeUInt32LE(spec.type, 0);
  attr.writeUInt32LE(spec.insns.length / 8, 4);
  writePtr(attr, 8, spec.insns);
  writePtr(attr, 16, license);
  if (log) {
    attr.writeUInt32LE(1, 24); // log_level
    attr.writeUInt32LE(log.length, 28);
    writePtr(attr, 32, log);
  }
  writeName(attr, 48, spec.name);
  attr.writeUInt32LE(spec.expectedAttachType ?? 0, 68);
  if (spec.btfFd !== undefined && spec.funcInfo) {
    attr.writeUInt32LE(spec.btfFd, 72);
    attr.writeUInt32LE(8, 76);
    writePtr(attr, 80, spec.funcInfo);
    attr.writeUInt32LE(spec.funcInfo.length / 8, 88);
    if (spec.lineInfo) {
      attr.writeUInt32LE(16, 92);
      writePtr(attr, 96, spec.lineInfo);
      attr.writeUInt32LE(spec.lineInfo.length / 16, 104);
    }
  }
  // A signal that interrupts the verifier makes the load fail with EAGAIN; libbpf retries too.
  for (let i = 0; ; i++) {
    try {
      return bpf(Cmd.PROG_LOAD, attr, 'BPF_PROG_LOAD', spec.name);
    } catch (err) {
      if (!(err instanceof BpfError) || err.code !== 'EAGAIN' || i >= 4) throw err;
    }
  }
}

/** BPF_BTF_LOAD; on failure the kernel's BTF log is in the error. */
export function loadBtf(data: Buffer, source: string): number {
  const attr = newAttr();
  writePtr(attr, 0, data);
  attr.writeUInt32LE(data.length, 16);
  try {
    return bpf(Cmd.BTF_LOAD, attr, 'BPF_BTF_LOAD', source);
  } catch (err) {
    if (!(err instanceof BpfError)) throw err;
    const log = Buffer.alloc(1 << 20);
    writePtr(attr, 8, log);
    attr.writeUInt32LE(log.length, 20);
    attr.writeUInt32LE(1, 24);
    try {
      return bpf(Cmd.BTF_LOAD, attr, 'BPF_BTF_LOAD', source);
    } catch (err2) {
      if (!(err2 instanceof BpfError)) throw err2;
      const text = logText(log);
      throw new BpfError(err2.code, {
        op: 'BPF_BTF_LOAD',
        object: source,
        errno: err2.errno,
        message: `the kernel refused the BTF:\n${summariseVerifierLog(text)}`,
        log: text,
      });
    }
  }
}

/** A kernel log buffer's text, up to its terminating NUL. */
function logText(log: Buffer): string {
  const end = log.indexOf(0);
  return log.toString('utf8', 0, end < 0 ? log.length : end);
}

/** The last lines of a verifier log, where the reason for a rejection is. */
export function summariseVerifierLog(log: string, lines = 8): string {
  const all = log.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}

export function loadProgramFd(spec: ProgramLoadSpec): number {
  try {
    return loadAttempt(spec, null);
  } catch (err) {
    if (!(err instanceof BpfError) || (err.code !== 'EACCES' && err.code !== 'EINVAL')) throw err;
    const log = Buffer.alloc(VERIFIER_LOG_SIZE);
    try {
      const fd = loadAttempt(spec, log);
      return fd; // loads with a log but not without: should not happen, but the fd is good
    } catch (err2) {
      if (!(err2 instanceof BpfError)) throw err2;
      const text = logText(log);
      throw new BpfError(err2.code, {
        op: 'BPF_PROG_LOAD',
        object: spec.name,
        errno: err2.errno,
        message: `verifier rejected the program:\n${summariseVerifierLog(text)}`,
        log: text,
      });
    }
  }
}

export interface TestRunOptions {
  /** Packet bytes (an Ethernet frame for tc and XDP). */
  data: Buffer;
  repeat?: number;
  /** Input context (struct __sk_buff for tc, struct xdp_md for XDP). */
  ctx?: Buffer;
  /** Room for the output packet; defaults to input size + 256 (encapsulation grows packets). */
  dataOutSize?: number;
  ctxOutSize?: number;
}

export interface TestRunResult {
  retval: number;
  data: Buffer;
  ctx: Buffer | undefined;
  /** Mean duration of one run in nanoseconds, as the kernel measured it. */
  durationNs: number;
}

export class Program {
  constructor(
    readonly fd: number,
    readonly name: string,
    readonly type: number,
  ) {}

  static load(spec: ProgramLoadSpec): Program {
    return new Program(loadProgramFd(spec), spec.name, spec.type);
  }

  static openPinned(path: string, name = path): Program {
    const fd = objGet(path, name);
    const info = objInfo(fd, 232, 'BPF_OBJ_GET_INFO_BY_FD', name);
    return new Program(fd, name, info.readUInt32LE(0));
  }

  /** The kernel's id for this program (what bpftool shows). */
  id(): number {
    return objInfo(this.fd, 232, 'BPF_OBJ_GET_INFO_BY_FD', this.name).readUInt32LE(4);
  }

  pin(path: string): void {
    objPin(this.fd, path, this.name);
  }

  testRun(opts: TestRunOptions): TestRunResult {
    const dataOut = Buffer.alloc(opts.dataOutSize ?? opts.data.length + 256);
    const ctxOut = opts.ctx ? Buffer.alloc(opts.ctxOutSize ?? opts.ctx.length) : null;
    const attr = newAttr();
    attr.writeUInt32LE(this.fd, 0);
    attr.writeUInt32LE(opts.data.length, 8);
    attr.writeUInt32LE(dataOut.length, 12);
    writePtr(attr, 16, opts.data);
    writePtr(attr, 24, dataOut);
    attr.writeUInt32LE(opts.repeat ?? 1, 32);
    if (opts.ctx && ctxOut) {
      attr.writeUInt32LE(opts.ctx.length, 40);
      attr.writeUInt32LE(ctxOut.length, 44);
      writePtr(attr, 48, opts.ctx);
      writePtr(attr, 56, ctxOut);
    }
    bpf(Cmd.PROG_TEST_RUN, attr, 'BPF_PROG_TEST_RUN', this.name);
    const outSize = attr.readUInt32LE(12);
    return {
      retval: attr.readUInt32LE(4),
      data: dataOut.subarray(0, outSize),
      ctx: ctxOut ? ctxOut.subarray(0, attr.readUInt32LE(44)) : undefined,
      durationNs: attr.readUInt32LE(36),
    };
  }

  close(): void {
    closeFd(this.fd);
    (this as { fd: number }).fd = -1;
  }
}
