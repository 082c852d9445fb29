#!/usr/bin/env node
// Runs every compiled test file with Node's test runner. Node 20's --test takes no globs, so the
// files are listed here. Arguments narrow the run to paths containing any of them.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const testDir = path.join(root, 'dist', 'test');
const filters = process.argv.slice(2);

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const files = walk(testDir).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files found under dist/test (did the build run?)');
  process.exit(1);
}
/** Labs on this machine (their state directories under /run/sluice). */
function labs() {
  try {
    return readdirSync('/run/sluice').flatMap((d) => {
      const m = /^lab-([a-z0-9]{1,8})$/.exec(d);
      return m && existsSync(path.join('/run/sluice', d, 'state.json')) ? [m[1]] : [];
    });
  } catch {
    return [];
  }
}

// A test removes its lab in its own `after` hook; a run that is interrupted (a signal, a CI
// timeout) or a hook that fails leaves it. Every lab the run made goes when the run ends, however
// it ends, through `sluice lab down` (it kills the lab's recorded processes and removes its pins).
// Labs that were there before the run are not touched.
const before = new Set(labs());
function removeLabsOfThisRun() {
  for (const name of labs().filter((n) => !before.has(n))) {
    console.error(`run-tests: removing lab ${name}, left by a test`);
    spawnSync(process.execPath, [path.join(root, 'bin', 'sluice.js'), 'lab', 'down', '--name', name], {
      stdio: 'inherit',
    });
  }
}

// Kernel tests build namespaces and load programs; running files one at a time keeps their
// timing honest on a 2-core machine and their failures readable.
const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit', cwd: root });
let signalled;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    signalled = sig;
    child.kill(sig);
  });
}
child.on('exit', (code) => {
  removeLabsOfThisRun();
  process.exit(signalled ? 1 : (code ?? 1));
});
