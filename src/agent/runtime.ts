// How the agent's Node.js process is started. Its live state is small (about 110 MB of heap at
// 10,000 Services x 10 endpoints) but a full sync allocates in bursts, and V8's default young
// generation then holds on to tens of megabytes: a small one keeps the resident size near the
// live size at a few percent of sync time.
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];
