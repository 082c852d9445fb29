// Tests of the echo workload: the servers and clients in-process on 127.0.0.1 (no privileges),
// the command line, and the namespace helpers (server spawned in a lab pod, clients run in other
// lab namespaces through nsenter).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import {
  askHttp,
  askTcp,
  askUdp,
  httpAsk,
  startEcho,
  startEchoServer,
  tcpAsk,
  udpAsk,
  waitEchoReady,
  type EchoServer,
} from '../../src/lab/echo.js';
import { echoMain, parseClientArgs, parseServerArgs } from '../../src/lab/echo-main.js';
import { Topology } from '../../src/lab/topology.js';
import { requirePrivileges } from '../../src/testing/netns.js';

const LO = '127.0.0.1';
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(): Promise<EchoServer> {
  const s = await startEchoServer({ name: 'srv', tcp: 0, udp: 0, http: 0, host: LO });
  cleanups.push(() => s.close());
  return s;
}

test('TCP, UDP and HTTP answer with the server name and the client address', async () => {
  const s = await server();
  assert.ok(s.ports.tcp && s.ports.udp && s.ports.http);
  for (const r of [await askTcp(LO, s.ports.tcp), await askUdp(LO, s.ports.udp), await askHttp(LO, s.ports.http)]) {
    assert.ok(r.ok, `${r.proto}: ${r.error}`);
    assert.equal(r.name, 'srv');
    assert.match(r.client ?? '', /^127\.0\.0\.1:\d+$/);
    assert.equal(r.client, r.local);
  }
  const bound = await askTcp(LO, s.ports.tcp, { localPort: 45_123 });
  assert.equal(bound.client, '127.0.0.1:45123');
});

test('TCP answers every line of a connection', async () => {
  const s = await server();
  const sock = net.connect(s.ports.tcp ?? 0, LO);
  await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
  const who = `srv ${LO}:${sock.localPort}\n`;
  let got = '';
  sock.setEncoding('utf8');
  sock.on('data', (c: string) => (got += c));
  sock.write('one\ntwo\nthr');
  sock.write('ee\n');
  const deadline = Date.now() + 3000;
  while (got.length < who.length * 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  sock.destroy();
  assert.equal(got, who.repeat(3));
});

test('raw UDP datagram reply format', async () => {
  const s = await server();
  const sock = dgram.createSocket('udp4');
  const reply = new Promise<string>((resolve) => sock.once('message', (m) => resolve(m.toString())));
  await new Promise<void>((resolve) => sock.bind(0, LO, () => resolve()));
  sock.send('x', s.ports.udp, LO);
  assert.equal(await reply, `srv ${LO}:${sock.address().port}`);
  sock.close();
});

test('clients fail with a code instead of hanging: refused and timed out', async () => {
  // a port nobody listens on
  const tmp = net.createServer();
  await new Promise<void>((resolve) => tmp.listen(0, LO, () => resolve()));
  const closed = (tmp.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => tmp.close(() => resolve()));
  assert.equal((await askTcp(LO, closed)).error, 'ECONNREFUSED');
  assert.equal((await askHttp(LO, closed)).error, 'ECONNREFUSED');
  assert.equal((await askUdp(LO, closed)).error, 'ECONNREFUSED');

  // servers that accept but never answer
  const silent = net.createServer(() => undefined);
  const held: net.Socket[] = [];
  silent.on('connection', (c) => held.push(c));
  await new Promise<void>((resolve) => silent.listen(0, LO, () => resolve()));
  const silentUdp = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => silentUdp.bind(0, LO, () => resolve()));
  cleanups.push(
    () => new Promise<void>((resolve) => silentUdp.close(() => resolve())),
    () =>
      new Promise<void>((resolve) => {
        for (const c of held) c.destroy();
        silent.close(() => resolve());
      }),
  );
  const port = (silent.address() as net.AddressInfo).port;
  for (const r of [
    await askTcp(LO, port, { timeoutMs: 300 }),
    await askHttp(LO, port, { timeoutMs: 300 }),
    await askUdp(LO, silentUdp.address().port, { timeoutMs: 300 }),
  ]) {
    assert.equal(r.ok, false);
    assert.equal(r.error, 'ETIMEDOUT', r.proto);
    assert.ok(r.ms >= 290 && r.ms < 2000, `${r.proto} took ${r.ms} ms`);
  }
});

test('command line: argument parsing, usage errors, server until stopped', async () => {
  assert.deepEqual(parseServerArgs(['--name', 'a', '--tcp', '80', '--udp', '53', '--http', '8080']), {
    name: 'a',
    tcp: 80,
    udp: 53,
    http: 8080,
  });
  assert.throws(() => parseServerArgs(['--tcp', '80']), /--name/);
  assert.throws(() => parseServerArgs(['--name', 'a']), /at least one/);
  assert.throws(() => parseServerArgs(['--name', 'a', '--tcp', '70000']), /port/);
  assert.deepEqual(parseClientArgs(['--udp', '10.0.0.1:53', '--timeout', '500', '--local-port', '4000']), {
    requests: [{ proto: 'udp', host: '10.0.0.1', port: 53 }],
    timeoutMs: 500,
    localPort: 4000,
  });
  assert.throws(() => parseClientArgs(['--tcp', '10.0.0.1']), /HOST:PORT/);

  const lines: string[] = [];
  const errs: string[] = [];
  const io = { out: (l: string) => lines.push(l), err: (l: string) => errs.push(l) };
  assert.equal(await echoMain(['bogus'], io), 2);
  assert.match(errs.join('\n'), /unknown mode bogus[\s\S]*usage/);

  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const running = echoMain(['server', '--name', 'cli', '--tcp', '0', '--udp', '0', '--host', LO], io, stopped);
  const deadline = Date.now() + 3000;
  while (lines.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const ready = JSON.parse(lines[0]) as { event: string; name: string; tcp: number; udp: number; http?: number };
  assert.equal(ready.event, 'ready');
  assert.equal(ready.name, 'cli');
  assert.equal(ready.http, undefined);
  lines.length = 0;
  assert.equal(await echoMain(['client', '--tcp', `${LO}:${ready.tcp}`, '--udp', `${LO}:${ready.udp}`], io), 0);
  const replies = lines.map((l) => JSON.parse(l) as { ok: boolean; name: string; proto: string });
  assert.deepEqual(
    replies.map((r) => [r.proto, r.ok, r.name]),
    [
      ['tcp', true, 'cli'],
      ['udp', true, 'cli'],
    ],
  );
  stop();
  assert.equal(await running, 0);
  assert.equal(await echoMain(['client', '--tcp', `${LO}:${ready.tcp}`, '--timeout', '500'], io), 1);
});

test('in lab namespaces: server spawned in a pod, clients from the node and another pod', async (t) => {
  if (!requirePrivileges(t, ['ip', 'bridge', 'nsenter', 'ethtool', 'sh'])) return;
  const name = 'techo';
  await Topology.sweep(name);
  const topo = new Topology({
    name,
    nodes: 1,
    external: false,
    pods: [
      { node: 1, name: 'srv' },
      { node: 1, name: 'cli' },
    ],
  });
  cleanups.push(async () => {
    await topo.down();
  });
  await topo.up();
  const srv = topo.pod('srv');
  const cli = topo.pod('cli');
  const node = topo.node(1);
  const e = await startEcho(topo, 'srv', { name: 'srv', tcp: 0, udp: 0, http: 0 });
  assert.ok(e.ports.tcp && e.ports.udp && e.ports.http);
  for (const r of [
    await tcpAsk(cli.ns, srv.ip, e.ports.tcp),
    await udpAsk(cli.ns, srv.ip, e.ports.udp),
    await httpAsk(cli.ns, srv.ip, e.ports.http),
  ]) {
    assert.ok(r.ok, `${r.proto}: ${r.error}`);
    assert.equal(r.client?.split(':')[0], cli.ip);
    assert.equal(r.client, r.local);
  }
  const fromNode = await tcpAsk(node.ns, srv.ip, e.ports.tcp, { localPort: 40_404 });
  assert.equal(fromNode.client, `${node.ip}:40404`);
  const refused = await udpAsk(cli.ns, srv.ip, 9);
  assert.equal(refused.error, 'ECONNREFUSED');

  const exited = new Promise<number | null>((resolve) => e.child.once('exit', (code) => resolve(code)));
  await e.stop();
  assert.equal(await exited, 0, 'SIGTERM stops the server cleanly');

  // a server that cannot start: the ready wait fails with its stderr
  const bad = topo.spawn('srv', process.execPath, [
    new URL('../../src/lab/echo-main.js', import.meta.url).pathname,
    'server',
    '--name',
    'x',
  ]);
  await assert.rejects(waitEchoReady(bad, 5000), /did not start: exited \(2\).*at least one/s);
});
