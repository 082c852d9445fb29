// The agent's HTTP endpoints: liveness/readiness, kube-proxy's /healthz, Prometheus metrics,
// and health-check node ports for externalTrafficPolicy Local Services.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HealthServers } from '../../src/agent/health.js';
import { AgentMetrics } from '../../src/agent/metrics.js';

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

test('readiness and kube-proxy healthz follow the sync state; metrics are served', async () => {
  const state = { ready: false, lastSyncMs: 0, stale: () => false };
  const metrics = new AgentMetrics();
  const hs = new HealthServers(state, metrics, '127.0.0.1');
  await hs.start({ healthPort: 0, healthzPort: 0, metricsPort: 0 });
  try {
    const [health, healthz, prom] = [hs.port(0), hs.port(1), hs.port(2)];
    assert.equal((await get(health, '/liveness')).status, 200);
    assert.equal((await get(health, '/readiness')).status, 503, 'not ready before the first sync');
    assert.equal((await get(healthz, '/healthz')).status, 503);
    state.ready = true;
    state.lastSyncMs = Date.now();
    assert.equal((await get(health, '/readiness')).status, 200);
    const hz = await get(healthz, '/healthz');
    assert.equal(hz.status, 200);
    assert.ok(JSON.parse(hz.body).lastUpdated);
    state.stale = () => true;
    assert.equal(
      (await get(healthz, '/healthz')).status,
      503,
      'an overdue update makes healthz fail, as kube-proxy does',
    );
    metrics.syncSeconds.observe(0.004);
    metrics.mapEntries.set({ map: 'sl_ct_v1' }, 12);
    // The map counts are read when scraped, not on a timer.
    let reads = 0;
    metrics.readMapEntries = () => metrics.mapEntries.set({ map: 'sl_nat_fe_v1' }, 100 + ++reads);
    const m = await get(prom, '/metrics');
    assert.match(m.body, /sluice_sync_duration_seconds_count 1/);
    assert.match(m.body, /sluice_map_entries\{map="sl_ct_v1"\} 12/);
    assert.match(m.body, /sluice_map_entries\{map="sl_nat_fe_v1"\} 101/);
    assert.match((await get(prom, '/metrics')).body, /sluice_map_entries\{map="sl_nat_fe_v1"\} 102/);
    assert.equal(reads, 2, 'one read per scrape');
  } finally {
    await hs.stop();
  }
});

test('health-check node ports answer 200 with local endpoints, 503 without', async () => {
  const hs = new HealthServers(
    { ready: true, lastSyncMs: Date.now(), stale: () => false },
    new AgentMetrics(),
    '127.0.0.1',
  );
  // An unprivileged free port: ask the OS for one, then use it as the health-check node port.
  const net = await import('node:net');
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  try {
    await hs.setHealthChecks(new Map([[port, { namespace: 'default', name: 'web', localEndpoints: 2 }]]));
    const ok = await get(port, '/');
    assert.equal(ok.status, 200);
    assert.deepEqual(JSON.parse(ok.body), { service: { namespace: 'default', name: 'web' }, localEndpoints: 2 });
    await hs.setHealthChecks(new Map([[port, { namespace: 'default', name: 'web', localEndpoints: 0 }]]));
    assert.equal((await get(port, '/')).status, 503);
    await hs.setHealthChecks(new Map());
    await assert.rejects(get(port, '/'), 'the server is gone with the Service');
  } finally {
    await hs.stop();
  }
});

test("kube-proxy's health port taken: the agent starts anyway and serves /healthz once it is free", async () => {
  const net = await import('node:net');
  const holder = net.createServer();
  const port = await new Promise<number>((resolve) =>
    holder.listen(0, '127.0.0.1', () => resolve((holder.address() as { port: number }).port)),
  );
  const busy: number[] = [];
  const hs = new HealthServers(
    { ready: true, lastSyncMs: Date.now(), stale: () => false },
    new AgentMetrics(),
    '127.0.0.1',
    (p) => busy.push(p),
    50,
  );
  try {
    await hs.start({ healthzPort: port });
    assert.deepEqual(busy, [port], 'told that the port is busy');
    await new Promise<void>((r) => holder.close(() => r()));
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 20));
      status = await get(port, '/healthz').then(
        (x) => x.status,
        () => 0,
      );
    }
    assert.equal(status, 200, 'serves /healthz after kube-proxy let go of the port');
  } finally {
    await hs.stop();
  }
});
