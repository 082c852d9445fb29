// The BPF filesystem: pins keep maps and links alive across agent restarts.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, statfsSync } from 'node:fs';
import { BpfError } from './errors.js';

export const BPF_FS_MAGIC = 0xcafe4a11;
export const BPFFS_MOUNT = '/sys/fs/bpf';

export function isBpffs(dir: string): boolean {
  try {
    return statfsSync(dir).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/** Mounts bpffs at /sys/fs/bpf when it is not (as Calico's node agent does) and returns the mount. */
export function ensureBpffs(mount = BPFFS_MOUNT): string {
  if (isBpffs(mount)) return mount;
  try {
    mkdirSync(mount, { recursive: true });
    execFileSync('mount', ['-t', 'bpf', 'bpf', mount], { stdio: 'pipe' });
  } catch (err) {
    throw new BpfError('ENOBPFFS', {
      op: 'mount bpffs',
      object: mount,
      message: `the BPF filesystem is not mounted and could not be: run \`mount -t bpf bpf ${mount}\``,
      cause: err,
    });
  }
  return mount;
}

/** Creates a pin directory inside bpffs; refuses a directory outside it. */
export function ensurePinDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  if (!isBpffs(dir)) {
    throw new BpfError('ENOBPFFS', { op: 'pin directory', object: dir, message: 'not on a BPF filesystem' });
  }
  return dir;
}

/** Removes a pin directory and everything pinned below it. */
export function removePinDir(dir: string): void {
  if (isBpffs(dir)) rmSync(dir, { recursive: true, force: true });
}
