// The README's first command: `sluice lab up --demo` brings up the demo lab and its live check
// (pod to pod, node to pod, ClusterIP, NodePort from outside, with policy enforced) all pass.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { labDown, labUp } from '../../src/lab/lab.js';
import { privilegeProblem, requirePrivileges } from '../../src/testing/netns.js';

const LAB = 'tdemo';
after(async () => {
  if (!privilegeProblem()) await labDown(LAB, { out: () => undefined, err: () => undefined });
});

test('lab up --demo: the demo lab comes up and every line of its live check passes', async (t) => {
  if (!requirePrivileges(t)) return;
  const lines: string[] = [];
  const code = await labUp({
    name: LAB,
    demo: true,
    out: { out: (l: string) => lines.push(l), err: (l: string) => lines.push(l) },
  });
  t.diagnostic(lines.filter((l) => /\[(ok|FAILED)\]/.test(l)).join('\n'));
  assert.equal(code, 0, lines.join('\n'));
  const checks = lines.filter((l) => /\[(ok|FAILED)\]/.test(l));
  assert.ok(checks.length >= 5, 'pod->pod TCP and UDP, node->pod, ClusterIP, NodePort');
  assert.deepEqual(
    checks.filter((l) => l.includes('[FAILED]')),
    [],
  );
});
