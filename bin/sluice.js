#!/usr/bin/env node
// The `sluice` command. The TypeScript build must exist (scripts/setup.sh or npm run build).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const main = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'src', 'cli', 'main.js');
if (!existsSync(main)) {
  console.error('sluice: not built yet; run `scripts/setup.sh` (or `npm run build`) first');
  process.exit(1);
}
await import(main);
