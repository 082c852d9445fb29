import os from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(os.constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}
// Kernel-internal codes that leak out of bpf(2) and are not in libc's table.
errnoNames.set(524, 'ENOTSUPP');

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

const hints: Record<string, string> = {
  EPERM: 'needs root (CAP_BPF/CAP_NET_ADMIN) and a high enough RLIMIT_MEMLOCK on old kernels',
  ENOENT: 'no such object (key, pin or interface)',
  E2BIG: 'too big: map full, or an attribute the kernel does not know',
  EEXIST: 'already exists',
  EINVAL: 'the kernel rejected an argument (wrong size, flag or attach type)',
  ENOTSUPP: 'not supported by this kernel for this object',
  EOPNOTSUPP: 'not supported by this kernel for this object',
  EBADF: 'bad file descriptor (object closed?)',
  EACCES: 'the verifier refused the program or the object is read-only',
};

export interface BpfErrorInit {
  op: string;
  object?: string;
  errno?: number;
  message?: string;
  log?: string;
  cause?: unknown;
}

/**
 * The single error type of the BPF runtime. `code` is the errno name (or a Sluice code such as
 * `ESCHEMA`) so callers branch on it; the message reads as colon-joined steps.
 */
export class BpfError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  readonly op: string;
  readonly object: string | undefined;
  /** Full verifier log, when a program load failed. */
  readonly log: string | undefined;

  constructor(code: string, init: BpfErrorInit) {
    const where = init.object ? ` "${init.object}"` : '';
    const hint = hints[code];
    const detail = init.message ?? (hint ? hint : '');
    super(`${code} from ${init.op}${where}${detail ? `: ${detail}` : ''}`, { cause: init.cause });
    this.name = 'BpfError';
    this.code = code;
    this.errno = init.errno;
    this.op = init.op;
    this.object = init.object;
    this.log = init.log;
  }

  static fromErrno(errno: number, op: string, object?: string, message?: string): BpfError {
    return new BpfError(errnoName(errno), { op, object, errno, message });
  }
}

export function isErrno(err: unknown, code: string): boolean {
  return err instanceof BpfError && err.code === code;
}
