// `sluice check`: the verdict and advice on this machine and on simulated unsupported nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bpffsCheck, kernelVerdict } from '../../src/cli/check.js';
import { packageRoot } from '../../src/paths.js';
import { requirePrivileges } from '../../src/testing/netns.js';

const sluice = path.join(packageRoot, 'bin', 'sluice.js');
const check = (...args: string[]) => spawnSync(process.execPath, [sluice, 'check', ...args], { encoding: 'utf8' });

test('the kernel rule: mainline 5.17 or later (bpf_loop); Red Hat 8 from 4.18.0-193 (judged by probes)', () => {
  assert.equal(kernelVerdict('6.18.44-fc-v782').status, 'ok');
  assert.equal(kernelVerdict('5.17.0-1-generic').status, 'ok');
  assert.equal(kernelVerdict('5.15.0-91-generic').status, 'fail');
  assert.equal(kernelVerdict('5.10.0-21-amd64').status, 'fail');
  assert.equal(kernelVerdict('4.18.0-193.el8.x86_64').status, 'ok');
  assert.equal(kernelVerdict('4.18.0-147.el8.x86_64').status, 'fail');
});

test('an unmounted BPF filesystem fails with the mount command and a systemd unit', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-nobpffs-'));
  try {
    const c = bpffsCheck(dir);
    assert.equal(c.status, 'fail');
    assert.match(c.advice!, new RegExp(`mount -t bpf bpf ${dir}`));
    assert.match(c.advice!, /Type=bpf/);
    assert.match(bpffsCheck('/sys/fs/bpf').advice ?? 'sys-fs-bpf.mount', /sys-fs-bpf\.mount/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('sluice check: this node passes; a simulated old kernel or missing bpffs fails with exit 1', (t) => {
  if (!requirePrivileges(t)) return;
  const here = check('-o', 'json');
  assert.equal(here.status, 0, here.stdout + here.stderr);
  const j = JSON.parse(here.stdout) as { ok: boolean; items: { name: string; status: string }[] };
  assert.equal(j.ok, true);
  assert.equal(j.items.find((i) => i.name === 'datapath features')?.status, 'ok');

  const old = check('--kernel-release', '4.19.0-21-amd64');
  assert.equal(old.status, 1);
  assert.match(old.stdout, /kernel\s+fail\s+4\.19\.0-21-amd64: older than 5\.17/);
  assert.match(old.stdout, /eBPF mode cannot run on this node/);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-nobpffs-'));
  try {
    const nofs = check('--bpffs', dir);
    assert.equal(nofs.status, 1);
    assert.match(nofs.stdout, new RegExp(`mount -t bpf bpf ${dir}`));
  } finally {
    rmSync(dir, { recursive: true });
  }
});
