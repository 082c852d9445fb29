// A private pin directory per test, removed afterwards, so tests never touch the agent's pins.
import path from 'node:path';
import { ensureBpffs, ensurePinDir, removePinDir } from '../bpf/bpffs.js';

let counter = 0;

export interface TempPinRoot {
  path: string;
  cleanup(): void;
}

export function tempPinRoot(tag: string): TempPinRoot {
  const mount = ensureBpffs();
  const dir = path.join(mount, `sluice-test-${tag}-${process.pid}-${counter++}`);
  ensurePinDir(dir);
  return { path: dir, cleanup: () => removePinDir(dir) };
}
