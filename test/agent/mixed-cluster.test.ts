import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mixedClusterWarning, nodeModes } from '../../src/agent/mixed-cluster.js';

const felix = (name: string, spec: object) => ({
  apiVersion: 'crd.projectcalico.org/v1',
  kind: 'FelixConfiguration',
  metadata: { name },
  spec,
});

test("every node's mode from FelixConfiguration default and node.<name>", () => {
  const nodes = ['node3', 'node1', 'node2'];
  assert.deepEqual(nodeModes(nodes, [felix('default', { bpfEnabled: true })]), {
    ebpf: ['node1', 'node2', 'node3'],
    standard: [],
  });
  const mixed = nodeModes(nodes, [felix('default', { bpfEnabled: true }), felix('node.node2', { bpfEnabled: false })]);
  assert.deepEqual(mixed, { ebpf: ['node1', 'node3'], standard: ['node2'] });
  // a node's own object only: the others follow the default (false when absent)
  assert.deepEqual(nodeModes(nodes, [felix('node.node3', { bpfEnabled: true })]), {
    ebpf: ['node3'],
    standard: ['node1', 'node2'],
  });
  // an object for a node that is not in the cluster changes nothing
  assert.deepEqual(nodeModes(['node1'], [felix('node.gone', { bpfEnabled: true })]), { ebpf: [], standard: ['node1'] });
});

test('the warning names the nodes in the other mode and what does not work, from both sides', () => {
  const modes = { ebpf: ['node1', 'node3'], standard: ['node2'] };
  const fromEbpf = mixedClusterWarning('node1', true, modes);
  assert.match(fromEbpf ?? '', /^nodes in the standard dataplane: node2\. NodePort and LoadBalancer traffic/);
  assert.match(fromEbpf ?? '', /externalTrafficPolicy: Local/);
  const fromStandard = mixedClusterWarning('node2', false, modes);
  assert.match(fromStandard ?? '', /^nodes in eBPF mode: node1, node3\./);
  assert.equal(mixedClusterWarning('node1', true, { ebpf: ['node1', 'node3'], standard: [] }), undefined);
  // this node's own effective mode counts, not its entry (its kernel may have refused eBPF mode)
  assert.match(mixedClusterWarning('node1', false, { ebpf: ['node1', 'node3'], standard: [] }) ?? '', /node3/);
  assert.doesNotMatch(mixedClusterWarning('node1', false, { ebpf: ['node1', 'node3'], standard: [] }) ?? '', /node1/);
});
