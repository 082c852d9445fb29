// The committed BPF objects (bpf/obj) are what users without clang run. This rebuilds every
// object from source and requires the result to be byte-identical, so the committed objects
// are exactly the sources under test: the other kernel tests then cover both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../src/paths.js';
import { loadObjectFile } from '../../src/bpf/spec.js';

function objects(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...objects(p, base));
    else if (name.endsWith('.o')) out.push(path.relative(base, p));
  }
  return out.sort();
}

function haveClang(): boolean {
  try {
    execFileSync('clang', ['--version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

test('committed BPF objects are byte-identical to a rebuild from source', (t) => {
  if (!haveClang()) {
    if (process.env.CI === 'true') assert.fail('clang is required under CI to rebuild the BPF objects');
    t.skip('clang not installed');
    return;
  }
  const out = mkdtempSync(path.join(os.tmpdir(), 'sluice-bpf-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  execFileSync('make', ['-s', '-C', path.join(packageRoot, 'bpf'), `OUT=${out}`], { stdio: 'pipe' });
  const committedDir = path.join(packageRoot, 'bpf', 'obj');
  assert.deepEqual(objects(committedDir), objects(out), 'the same set of objects (none stale, none missing)');
  const differ = objects(out).filter(
    (o) => !readFileSync(path.join(out, o)).equals(readFileSync(path.join(committedDir, o))),
  );
  assert.deepEqual(differ, [], 'rebuilt objects differ from bpf/obj: run `make -C bpf` and commit bpf/obj');
});

test('every committed object parses into programs and maps', () => {
  const dir = path.join(packageRoot, 'bpf', 'obj');
  for (const o of objects(dir)) {
    const spec = loadObjectFile(path.join(dir, o));
    assert.ok(spec.programs.size > 0, `${o} has programs`);
  }
});
