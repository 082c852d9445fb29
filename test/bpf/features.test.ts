// Feature probes ask the kernel; these check the three outcomes on this kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  kernelVersion,
  probeAll,
  probeHelper,
  probeMapType,
  probeTcx,
  versionAtLeast,
} from '../../src/bpf/features.js';
import { ProgType } from '../../src/bpf/syscall.js';
import { requirePrivileges } from '../../src/testing/netns.js';

test('kernel version strings parse, including distribution suffixes', () => {
  assert.deepEqual(kernelVersion('6.18.44-fc-v782'), [6, 18, 44]);
  assert.deepEqual(kernelVersion('4.18.0-193.el8.x86_64'), [4, 18, 0]);
  assert.deepEqual(kernelVersion('5.10'), [5, 10, 0]);
  assert.equal(versionAtLeast([5, 10, 0], [5, 3, 0]), true);
  assert.equal(versionAtLeast([4, 18, 0], [5, 3, 0]), false);
});

test('probes: what the datapath needs is supported here; a helper that does not exist is not', (t) => {
  if (!requirePrivileges(t)) return;
  const report = probeAll();
  const byName = new Map(report.probes.map((p) => [p.name, p.status]));
  for (const name of [
    'program type sched_cls',
    'program type xdp',
    'map type lpm_trie',
    'helper bpf_fib_lookup',
    'helper bpf_tail_call',
  ]) {
    assert.equal(byName.get(name), 'supported', name);
  }
  assert.equal(probeHelper('no such helper', 99999, 'never').status, 'unsupported');
  // A real helper that this program type may not call: XDP cannot use the skb checksum helpers.
  assert.equal(probeHelper('bpf_l4_csum_replace', 11, '4.1', ProgType.XDP).status, 'unsupported');
  assert.equal(probeMapType('type 9999', 9999, 'never').status, 'unsupported');
  // tcx arrived in 6.6: the BTF answer must agree with the version.
  assert.equal(probeTcx().status === 'supported', versionAtLeast(kernelVersion(), [6, 6, 0]));
});
