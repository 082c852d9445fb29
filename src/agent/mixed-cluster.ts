// Mixed clusters: nodes in eBPF mode beside nodes in the standard dataplane (a per-node
// FelixConfiguration `node.<name>` with bpfEnabled: false, or a node whose kernel cannot run eBPF
// mode). Pod-to-pod traffic and Services with a backend on the node that receives them work
// between the two; NodePort and LoadBalancer traffic an eBPF node forwards to a backend on a
// standard node does not: it goes in Sluice's tunnel, which a standard node does not terminate (the
// seed says the same of Calico). The agent works out every node's mode from the FelixConfiguration
// objects it already watches, and says which nodes are in the other mode and what that means,
// once per change, instead of letting the connections time out unexplained.
import { ConfigStore } from './config.js';

export interface NodeModes {
  ebpf: string[];
  standard: string[];
}

/** Each node's bpfEnabled from FelixConfiguration `default` and `node.<name>` (not their environment). */
export function nodeModes(nodes: Iterable<string>, felixConfigs: readonly object[]): NodeModes {
  const enabled = (node: string): boolean => {
    const cfg = new ConfigStore(node, {});
    cfg.update(felixConfigs);
    return cfg.current().bpfEnabled;
  };
  // Only nodes with their own FelixConfiguration can differ from the default: one evaluation each
  // (a cluster of thousands of nodes has few of those).
  const own = new Set<string>();
  for (const o of felixConfigs) {
    const name = (o as { metadata?: { name?: unknown } }).metadata?.name;
    if (typeof name === 'string' && name.startsWith('node.')) own.add(name.slice('node.'.length));
  }
  const byDefault = enabled('');
  const out: NodeModes = { ebpf: [], standard: [] };
  for (const name of [...nodes].sort()) {
    const on = own.has(name) ? enabled(name) : byDefault;
    (on ? out.ebpf : out.standard).push(name);
  }
  return out;
}

/**
 * What this node should say about the others, or undefined when all are in its mode. `self` is
 * this node's effective mode (its environment and kernel included).
 */
export function mixedClusterWarning(self: string, selfEbpf: boolean, modes: NodeModes): string | undefined {
  const others = (selfEbpf ? modes.standard : modes.ebpf).filter((n) => n !== self);
  if (others.length === 0) return undefined;
  const list = others.join(', ');
  return selfEbpf
    ? `nodes in the standard dataplane: ${list}. NodePort and LoadBalancer traffic this node forwards to a backend ` +
        'there is not delivered (it travels in the eBPF tunnel, which a standard node does not terminate); ' +
        'pod-to-pod traffic and Services whose backend is on the receiving node work. ' +
        'Set bpfEnabled the same on every node, or use externalTrafficPolicy: Local'
    : `nodes in eBPF mode: ${list}. NodePort and LoadBalancer traffic they forward to backends on this node is ` +
        'not delivered (this node does not terminate their tunnel); pod-to-pod traffic works';
}
