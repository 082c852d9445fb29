// Where Sluice's files are, wherever it was installed or built from.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'bpf'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot find the Sluice package root (package.json beside bpf/)');
}

export const packageRoot = findRoot();

/** Built BPF objects: the committed ones, or SLUICE_BPF_OBJ_DIR (tests of a fresh rebuild). */
export function bpfObjectPath(name: string): string {
  const dir = process.env.SLUICE_BPF_OBJ_DIR ?? path.join(packageRoot, 'bpf', 'obj');
  return path.join(dir, name.endsWith('.o') ? name : `${name}.o`);
}

export const DEFAULT_BPFFS_ROOT = '/sys/fs/bpf/sluice';
