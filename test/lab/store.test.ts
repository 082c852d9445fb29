// The lab datastore (no root needed): writes and revisions, transactions, watches with the
// initial list, resumption, a writer in another process, compaction while watching, a relist
// across a compaction gap, a writer killed mid-write, and a lock left by a dead process.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileStore, type KubeObject, type Service, type WatchEvent, type Kind } from '../../src/lab/store.js';

const dirs: string[] = [];

function tmpStore(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-store-'));
  dirs.push(d);
  return d;
}

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function svc(name: string, port = 80, ns = 'default'): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { ports: [{ port }] } };
}

function collect(store: FileStore, kinds: Kind[], opts: Parameters<FileStore['watch']>[2] = {}) {
  const events: WatchEvent[] = [];
  const w = store.watch(
    kinds,
    (e) => {
      events.push(e as WatchEvent);
    },
    opts,
  );
  return { events, w };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const brief = (e: WatchEvent): string => `${e.type} ${e.kind} ${e.object.metadata?.name}@${e.resourceVersion}`;

test('apply, get, list: revisions, uid, generation, unchanged writes', async () => {
  const s = await FileStore.open(tmpStore());
  const a = await s.apply(svc('a'));
  assert.equal(a.result, 'created');
  assert.equal(a.object.metadata?.resourceVersion, '1');
  assert.equal(a.object.metadata?.generation, 1);
  assert.match(a.object.metadata?.uid ?? '', /^[0-9a-f-]{36}$/);
  assert.ok(a.object.metadata?.creationTimestamp);
  const again = await s.apply(svc('a'));
  assert.equal(again.result, 'unchanged');
  assert.equal(s.revision, 1, 'an unchanged write makes no revision');
  const b = await s.apply(svc('a', 81));
  assert.equal(b.result, 'configured');
  assert.equal(b.object.metadata?.resourceVersion, '2');
  assert.equal(b.object.metadata?.generation, 2);
  assert.equal(b.object.metadata?.uid, a.object.metadata?.uid);
  await s.apply(svc('b', 80, 'other'));
  const list = await s.list('Service');
  assert.deepEqual(
    list.items.map((o) => `${o.metadata?.namespace}/${o.metadata?.name}`),
    ['default/a', 'other/b'],
  );
  assert.equal(list.resourceVersion, '3');
  assert.equal((await s.get('Service', 'default', 'a'))?.spec?.ports?.[0].port, 81);
  assert.equal(await s.get('Service', 'default', 'nope'), undefined);
  const gone = await s.delete('Service', 'default', 'a');
  assert.equal(gone?.metadata?.resourceVersion, '4');
  assert.equal(await s.delete('Service', 'default', 'a'), undefined);
  // another instance (another process would see the same) reads the same state
  const s2 = await FileStore.open(s.dir, { create: false });
  assert.equal(s2.revision, 4);
  assert.deepEqual(
    (await s2.list('Service')).items.map((o) => o.metadata?.name),
    ['b'],
  );
  await assert.rejects(
    s.apply({ kind: 'ConfigMap', metadata: { name: 'x' } } as unknown as Service),
    /cannot store kind/,
  );
  s.close();
  s2.close();
});

test('a transaction that throws writes nothing; cluster-scoped kinds have no namespace', async () => {
  const s = await FileStore.open(tmpStore());
  await assert.rejects(
    s.transaction((tx) => {
      tx.put(svc('x'));
      tx.put(svc('y'));
      throw new Error('refused');
    }),
    /refused/,
  );
  assert.equal(s.revision, 0);
  assert.deepEqual((await s.list('Service')).items, []);
  const r = await s.transaction((tx) => {
    tx.put(svc('x'));
    const seen = tx.get('Service', 'default', 'x');
    tx.put({ kind: 'Namespace', metadata: { name: 'team', namespace: 'ignored' } } as KubeObject);
    return seen?.metadata?.resourceVersion;
  });
  assert.equal(r, '1', 'a transaction reads its own writes');
  assert.equal((await s.get('Namespace', undefined, 'team'))?.metadata?.namespace, undefined);
  assert.equal(s.revision, 2);
  s.close();
});

test('watch: initial list, then changes in order with increasing resourceVersions, filtered by kind', async () => {
  const s = await FileStore.open(tmpStore());
  await s.apply(svc('a'));
  await s.apply({ kind: 'Namespace', metadata: { name: 'team' } } as KubeObject);
  await s.apply(svc('b'));
  let syncedAt = '';
  const { events, w } = collect(s, ['Service'], { onSynced: (rv) => (syncedAt = rv) });
  await w.synced;
  assert.equal(syncedAt, '3');
  assert.deepEqual(events.map(brief), ['ADDED Service a@1', 'ADDED Service b@3']);
  await s.apply(svc('a', 90));
  await s.apply({ kind: 'Namespace', metadata: { name: 'other' } } as KubeObject);
  await s.delete('Service', 'default', 'b');
  await w.waitFor(String(s.revision));
  assert.deepEqual(events.slice(2).map(brief), ['MODIFIED Service a@4', 'DELETED Service b@6']);
  assert.equal((events[3].object as Service).spec?.ports?.[0].port, 80, 'DELETED carries the last state');
  assert.equal(w.resourceVersion, '6');
  w.stop();
  s.close();
});

test('watch resumed from a resourceVersion delivers only what came after it', async () => {
  const s = await FileStore.open(tmpStore());
  await s.apply(svc('a'));
  await s.apply(svc('b'));
  await s.apply(svc('a', 81));
  await s.delete('Service', 'default', 'b');
  const { events, w } = collect(s, ['Service'], { resourceVersion: '2' });
  await w.synced;
  await w.waitFor('4');
  assert.deepEqual(events.map(brief), ['MODIFIED Service a@3', 'DELETED Service b@4']);
  w.stop();
  assert.throws(() => s.watch(['Service'], () => undefined, { resourceVersion: 'x' }), /not a resourceVersion/);
  s.close();
});

test('changes written by another process reach a watch', async () => {
  const s = await FileStore.open(tmpStore());
  const { events, w } = collect(s, ['Service']);
  await w.synced;
  const storeModule = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'lab', 'store.js');
  const script = `
    const { FileStore } = await import(${JSON.stringify(storeModule)});
    const s = await FileStore.open(${JSON.stringify(s.dir)});
    for (let i = 0; i < 20; i++) await s.apply({ kind: 'Service', metadata: { name: 'p' + i }, spec: { ports: [{ port: 80 }] } });
    await s.delete('Service', 'default', 'p3');
  `;
  // two writers at once: the lock serialises them, revisions stay unique
  const child = (): Promise<void> =>
    new Promise((resolve, reject) =>
      execFile(process.execPath, ['--input-type=module', '-e', script], (err) => (err ? reject(err) : resolve())),
    );
  await Promise.all([child(), child(), s.apply(svc('local'))]);
  await until(() => events.some((e) => e.object.metadata?.name === 'local') && events.length >= 21);
  s.refresh();
  await w.waitFor(String(s.revision));
  const rvs = events.map((e) => Number(e.resourceVersion));
  assert.deepEqual(
    rvs,
    [...rvs].sort((a, b) => a - b),
    'in revision order',
  );
  assert.equal(new Set(rvs).size, rvs.length, 'every revision once');
  assert.equal(events.length, s.revision, 'one event per revision (the store was empty when the watch began)');
  assert.deepEqual(
    (await s.list('Service')).items.map((o) => o.metadata?.name).sort(),
    ['local', ...Array.from({ length: 20 }, (_, i) => `p${i}`).filter((n) => n !== 'p3')].sort(),
  );
  w.stop();
  s.close();
});

test('compaction: a running watch misses nothing; a resumed watch across the gap relists the difference', async () => {
  const s = await FileStore.open(tmpStore(), { compactMinEvents: 10 });
  await s.apply(svc('keep'));
  await s.apply(svc('drop'));
  await s.apply(svc('change'));
  const oldRv = String(s.revision); // 3
  const known = (await s.list('Service')).items;
  const { events, w } = collect(s, ['Service']);
  await w.synced;
  for (let i = 0; i < 12; i++) await s.apply(svc('churn', 1000 + i));
  await s.delete('Service', 'default', 'drop');
  await s.apply(svc('change', 99));
  await s.delete('Service', 'default', 'churn');
  assert.ok(s.generation > 0, 'the log was compacted');
  await w.waitFor(String(s.revision));
  // the live watch: the initial list, then every single change
  assert.equal(events.filter((e) => e.object.metadata?.name === 'churn').length, 13);
  assert.deepEqual(
    events.slice(-3).map((e) => `${e.type} ${e.object.metadata?.name}`),
    ['DELETED drop', 'MODIFIED change', 'DELETED churn'],
  );
  // resumed from before the compaction: the history is gone, so it gets the difference to what
  // it knew (then the events after the snapshot); applied to `known`, that is the current state
  const r = collect(s, ['Service'], { resourceVersion: oldRv, known });
  await r.w.synced;
  await r.w.waitFor(String(s.revision));
  const state = new Map(known.map((o) => [o.metadata?.name, o.metadata?.resourceVersion]));
  for (const e of r.events) {
    if (e.type === 'DELETED')
      assert.ok(state.delete(e.object.metadata?.name), `DELETED ${e.object.metadata?.name} was known`);
    else {
      assert.equal(state.has(e.object.metadata?.name), e.type === 'MODIFIED', `${e.type} ${e.object.metadata?.name}`);
      state.set(e.object.metadata?.name, e.object.metadata?.resourceVersion);
    }
  }
  const now = (await s.list('Service')).items;
  assert.deepEqual(state, new Map(now.map((o) => [o.metadata?.name, o.metadata?.resourceVersion])));
  assert.ok(r.events.some((e) => e.type === 'DELETED' && e.object.metadata?.name === 'drop'));
  assert.ok(!r.events.some((e) => e.object.metadata?.name === 'keep'), 'nothing for an object that did not change');
  w.stop();
  r.w.stop();
  s.close();
});

test("a writer killed mid-write leaves a partial line that everyone skips; a dead writer's lock is broken", async () => {
  const s = await FileStore.open(tmpStore());
  await s.apply(svc('a'));
  const { events, w } = collect(s, ['Service']);
  await w.synced;
  fs.appendFileSync(path.join(s.dir, 'log-0.jsonl'), '{"op":"event","rev":2,"type":"ADDED","obj');
  // a lock held by a process that no longer exists (pid 1's start time never matches this one)
  fs.writeFileSync(path.join(s.dir, 'lock'), JSON.stringify({ pid: 999999999, starttime: '1' }));
  const b = await s.apply(svc('b'));
  assert.equal(b.object.metadata?.resourceVersion, '2');
  await w.waitFor('2');
  assert.deepEqual(events.map(brief), ['ADDED Service a@1', 'ADDED Service b@2']);
  const fresh = await FileStore.open(s.dir);
  assert.deepEqual(
    (await fresh.list('Service')).items.map((o) => o.metadata?.name),
    ['a', 'b'],
  );
  w.stop();
  s.close();
  fresh.close();
});
