// How the agent's Node.js process is started. Its live state is small (about 110 MB of heap at
// 10,000 Services x 10 endpoints) but a full sync allocates in bursts, and V8's default young
// generation then holds on to tens of megabytes: a small one keeps the resident size near the
// live size at a few percent of sync time.
const BASE_FLAGS = ['--max-semi-space-size=2'];

/**
 * The flags for an agent the lab starts. `SLUICE_AGENT_NODE_FLAGS` adds more (space-separated),
 * for profiling a lab's agents: Node refuses `--cpu-prof` in NODE_OPTIONS.
 */
export function agentNodeFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const extra = env.SLUICE_AGENT_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? [];
  return [...BASE_FLAGS, ...extra];
}
