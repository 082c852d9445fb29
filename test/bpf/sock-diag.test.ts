// NETLINK_SOCK_DIAG: listing IPv4 sockets and destroying them with SOCK_DESTROY. Kernel tests
// run as root inside throwaway namespaces (sl-t-*); no socket of the root namespace is touched.
// The sockets belong to a small python3 helper started inside the namespace, which answers
// commands on stdin (and exits when stdin closes, so it cannot outlive the test process).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { BpfError } from '../../src/bpf/errors.js';
import { withNetns } from '../../src/bpf/netns.js';
import {
  decodeInetDiagMsg,
  decodeSockid,
  describeSocket,
  destroySocket,
  destroySockets,
  encodeInetDiagReq,
  encodeSockid,
  listInetSockets,
  NO_COOKIE,
  type SocketInfo,
} from '../../src/bpf/sock-diag.js';
import { NetnsFixture, privilegeProblem, requirePrivileges, sweepStaleNetns } from '../../src/testing/netns.js';

const TOOLS = ['ip', 'nsenter', 'python3'];

describe('sock_diag messages (no kernel)', () => {
  const id = {
    src: { addr: '10.1.2.3', port: 40000 },
    dst: { addr: '10.96.0.10', port: 53 },
    ifindex: 7,
    cookie: 0x0000_0102_0304_0506n,
  };

  it('encodes inet_diag_sockid with ports and addresses in network byte order', () => {
    const b = encodeSockid(id);
    assert.equal(b.length, 48);
    assert.deepEqual([...b.subarray(0, 4)], [0x9c, 0x40, 0x00, 0x35]); // 40000, 53 big-endian
    assert.deepEqual([...b.subarray(4, 8)], [10, 1, 2, 3]);
    assert.deepEqual([...b.subarray(8, 20)], new Array(12).fill(0));
    assert.deepEqual([...b.subarray(20, 24)], [10, 96, 0, 10]);
    assert.equal(b.readUInt32LE(36), 7);
    assert.equal(b.readUInt32LE(40), 0x03040506); // cookie[0]: the low half
    assert.equal(b.readUInt32LE(44), 0x0102);
    assert.deepEqual(decodeSockid(b), id);
    assert.equal(decodeSockid(encodeSockid({ ...id, cookie: NO_COOKIE })).cookie, 0xffff_ffff_ffff_ffffn);
  });

  it('encodes inet_diag_req_v2 and decodes inet_diag_msg', () => {
    const req = encodeInetDiagReq({ protocol: 'udp', states: ['ESTABLISHED', 'CLOSE'], id });
    assert.equal(req.length, 56);
    assert.deepEqual([...req.subarray(0, 4)], [2, 17, 0, 0]); // AF_INET, IPPROTO_UDP
    assert.equal(req.readUInt32LE(4), (1 << 1) | (1 << 7));
    assert.deepEqual(req.subarray(8), encodeSockid(id));
    const all = encodeInetDiagReq({ protocol: 'tcp' });
    assert.equal(all[1], 6);
    assert.equal(all.readUInt32LE(4), 0xffffffff);

    const msg = Buffer.alloc(72);
    msg.writeUInt8(2, 0);
    msg.writeUInt8(10, 1); // LISTEN
    encodeSockid(id).copy(msg, 4);
    msg.writeUInt32LE(1000, 64);
    msg.writeUInt32LE(123456, 68);
    assert.deepEqual(decodeInetDiagMsg(msg, 'tcp'), {
      family: 2,
      protocol: 'tcp',
      state: 'LISTEN',
      ...id,
      uid: 1000,
      inode: 123456,
    });
    msg.writeUInt8(99, 1);
    assert.equal(decodeInetDiagMsg(msg, 'tcp').state, 'STATE_99');
    assert.throws(() => decodeInetDiagMsg(msg.subarray(0, 71), 'tcp'), /EPROTO/);
    assert.equal(
      describeSocket({ protocol: 'udp', ...id }),
      'udp 10.1.2.3:40000 -> 10.96.0.10:53 cookie 1108152157446',
    );
  });

  it('refuses unsafe or malformed destroy requests before asking the kernel', () => {
    const einval = (e: unknown) => e instanceof BpfError && e.code === 'EINVAL' && e.op === 'SOCK_DESTROY';
    assert.throws(() => destroySockets({ protocol: 'udp', dst: { addr: '0.0.0.0' } }), einval);
    assert.throws(() => destroySockets({ protocol: 'udp', dst: { addr: '10.0.0.300', port: 53 } }), einval);
    assert.throws(() => destroySockets({ protocol: 'udp', dst: { addr: '::1' } }), einval);
    assert.throws(() => destroySockets({ protocol: 'udp' } as never), einval);
    assert.throws(
      () => listInetSockets({ protocol: 'sctp' as never }),
      (e: unknown) => e instanceof BpfError && e.code === 'EINVAL',
    );
    assert.throws(
      () => listInetSockets({ protocol: 'udp', dst: { port: 70000 } }),
      (e: unknown) => e instanceof BpfError && e.code === 'EINVAL' && e.op === 'SOCK_DIAG_BY_FAMILY',
    );
  });
});

// The helper: two connected UDP sockets (a -> 127.0.0.5:9999, b -> 127.0.0.6:9999) with a
// receiver bound to each destination (so sends draw no ICMP port unreachable, which would
// leave ECONNREFUSED on the sender), a TCP listener on 127.0.0.1:7777 and one connection to it.
const HELPER = String.raw`
import errno, json, os, socket, sys
SO_COOKIE = 57
def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if getattr(e, 'errno', None) else type(e).__name__
def ident(s):
    cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), 'little')
    return {'local': list(s.getsockname()), 'inode': os.fstat(s.fileno()).st_ino, 'cookie': str(cookie)}
def so_error(s):
    return errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
rx, tx = {}, {}
for name, ip in (('a', '127.0.0.5'), ('b', '127.0.0.6')):
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind((ip, 9999))
    r.settimeout(2)
    rx[name] = r
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((ip, 9999))
    tx[name] = s
lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lis.bind(('127.0.0.1', 7777))
lis.listen(8)
cli = socket.create_connection(('127.0.0.1', 7777))
srv, _ = lis.accept()
srv.settimeout(2)
print(json.dumps({'uid': os.getuid(), 'tx': {n: ident(s) for n, s in tx.items()},
                  'rx': {n: ident(s) for n, s in rx.items()},
                  'listener': ident(lis), 'client': ident(cli), 'server': ident(srv)}), flush=True)
for line in sys.stdin:
    cmd = line.split()
    out = {}
    if cmd[0] == 'udp':
        s = tx[cmd[1]]
        out['soError'] = so_error(s)
        try:
            out['peer'] = list(s.getpeername())
        except OSError as e:
            out['peer'] = ename(e)
        try:
            s.send(b'ping')
            out['send'] = 'ok'
        except OSError as e:
            out['send'] = ename(e)
        if out['send'] == 'ok':
            try:
                out['received'] = rx[cmd[1]].recv(64).decode()
            except OSError as e:
                out['received'] = ename(e)
    elif cmd[0] == 'tcp':
        out['soError'] = so_error(cli)
        try:
            cli.send(b'x', socket.MSG_NOSIGNAL)
            out['send'] = 'ok'
        except OSError as e:
            out['send'] = ename(e)
        try:
            d = srv.recv(64)
            out['peerRecv'] = d.decode() if d else 'eof'
        except OSError as e:
            out['peerRecv'] = ename(e)
    print(json.dumps(out), flush=True)
`;

interface Ident {
  local: [string, number];
  inode: number;
  cookie: string;
}

interface HelperHello {
  uid: number;
  tx: { a: Ident; b: Ident };
  rx: { a: Ident; b: Ident };
  listener: Ident;
  client: Ident;
  server: Ident;
}

/** The helper process and a request/answer exchange over its stdin and stdout, one JSON line each. */
class Helper {
  private readonly waiting: Array<(line: string) => void> = [];
  private readonly lines: string[] = [];
  private stderr = '';
  private exited = false;

  constructor(readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const w = this.waiting.shift();
      if (w) w(line);
      else this.lines.push(line);
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.once('exit', () => (this.exited = true));
  }

  next<T>(timeoutMs = 15_000): Promise<T> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(JSON.parse(queued) as T);
    return new Promise<T>((resolve, reject) => {
      const onExit = () => fail(new Error(`helper exited: ${this.stderr.trim()}`));
      const timer = setTimeout(() => fail(new Error(`no answer from the helper: ${this.stderr.trim()}`)), timeoutMs);
      const fail = (e: Error) => {
        clearTimeout(timer);
        this.child.off('exit', onExit);
        const i = this.waiting.indexOf(take);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(e);
      };
      const take = (line: string) => {
        clearTimeout(timer);
        this.child.off('exit', onExit);
        resolve(JSON.parse(line) as T);
      };
      if (this.exited) return onExit();
      this.child.once('exit', onExit);
      this.waiting.push(take);
    });
  }

  ask<T>(cmd: string): Promise<T> {
    this.child.stdin!.write(`${cmd}\n`);
    return this.next<T>();
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGKILL');
    await gone;
  }
}

interface UdpReport {
  soError: string | null;
  peer: [string, number] | string;
  send: string;
  received?: string;
}

interface TcpReport {
  soError: string | null;
  send: string;
  peerRecv: string;
}

describe('socket listing and destruction over NETLINK_SOCK_DIAG (kernel)', () => {
  let fixture: NetnsFixture | undefined;
  let helper: Helper | undefined;
  let hello: HelperHello;
  let nsA = '';
  let nsB = '';
  const made: string[] = [];

  before(async () => {
    if (privilegeProblem(TOOLS)) return; // each test reports (skip, or fail under CI)
    sweepStaleNetns();
    fixture = new NetnsFixture('sockdiag');
    nsA = await fixture.addNetns();
    nsB = await fixture.addNetns();
    made.push(nsA, nsB);
    const child = spawn('nsenter', [`--net=${NetnsFixture.nsPath(nsA)}`, '--', 'python3', '-c', HELPER], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    helper = new Helper(child);
    hello = await helper.next<HelperHello>();
  });

  after(async () => {
    await helper?.stop();
    await fixture?.cleanup();
    for (const ns of made) assert.equal(fs.existsSync(`/run/netns/${ns}`), false, `${ns} left behind`);
  });

  const inA = <T>(fn: () => T): T => withNetns(nsA, fn);
  const byCookie = (list: SocketInfo[], who: Ident) => list.find((s) => s.cookie === BigInt(who.cookie));

  it('lists the UDP and TCP sockets of the namespace it runs in', (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const udp = inA(() => listInetSockets({ protocol: 'udp' }));
    assert.equal(
      udp.length,
      4,
      JSON.stringify(udp, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)),
    );
    for (const [name, addr] of [
      ['a', '127.0.0.5'],
      ['b', '127.0.0.6'],
    ] as const) {
      const tx = hello.tx[name];
      assert.deepEqual(byCookie(udp, tx), {
        protocol: 'udp',
        src: { addr: tx.local[0], port: tx.local[1] },
        dst: { addr, port: 9999 },
        ifindex: 0,
        cookie: BigInt(tx.cookie),
        state: 'ESTABLISHED',
        uid: hello.uid,
        inode: tx.inode,
      });
      const rx = byCookie(udp, hello.rx[name]);
      assert.deepEqual(
        [rx?.state, rx?.src, rx?.dst, rx?.inode],
        ['CLOSE', { addr, port: 9999 }, { addr: '0.0.0.0', port: 0 }, hello.rx[name].inode],
      );
    }

    // Filters: remote end, remote port only, local end, states.
    const cookies = (list: SocketInfo[]) => list.map((s) => s.cookie).sort();
    const toA = inA(() => listInetSockets({ protocol: 'udp', dst: { addr: '127.0.0.5', port: 9999 } }));
    assert.deepEqual(cookies(toA), [BigInt(hello.tx.a.cookie)]);
    const to9999 = inA(() => listInetSockets({ protocol: 'udp', dst: { port: 9999 } }));
    assert.deepEqual(cookies(to9999), cookies([byCookie(udp, hello.tx.a)!, byCookie(udp, hello.tx.b)!]));
    const on9999 = inA(() => listInetSockets({ protocol: 'udp', src: { port: 9999 } }));
    assert.deepEqual(cookies(on9999), cookies([byCookie(udp, hello.rx.a)!, byCookie(udp, hello.rx.b)!]));
    assert.deepEqual(
      cookies(inA(() => listInetSockets({ protocol: 'udp', states: ['ESTABLISHED'] }))),
      cookies(to9999),
    );
    assert.deepEqual(
      inA(() => listInetSockets({ protocol: 'udp', dst: { addr: '127.0.0.7' } })),
      [],
    );
    // The netns option does the same as withNetns.
    assert.deepEqual(listInetSockets({ protocol: 'udp', dst: { addr: '127.0.0.5' }, netns: nsA }), toA);

    const tcp = inA(() => listInetSockets({ protocol: 'tcp' }));
    const listener = byCookie(tcp, hello.listener);
    assert.deepEqual(
      [listener?.state, listener?.src, listener?.dst, listener?.inode],
      ['LISTEN', { addr: '127.0.0.1', port: 7777 }, { addr: '0.0.0.0', port: 0 }, hello.listener.inode],
    );
    const client = byCookie(tcp, hello.client);
    assert.deepEqual(
      [client?.state, client?.dst, client?.inode],
      ['ESTABLISHED', { addr: '127.0.0.1', port: 7777 }, hello.client.inode],
    );
    assert.equal(byCookie(tcp, hello.server)?.inode, hello.server.inode);
    assert.deepEqual(cookies(inA(() => listInetSockets({ protocol: 'tcp', states: ['LISTEN'] }))), [
      BigInt(hello.listener.cookie),
    ]);
  });

  it('does not see the sockets of another namespace', (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    assert.deepEqual(
      withNetns(nsB, () => listInetSockets({ protocol: 'udp' })),
      [],
    );
    assert.deepEqual(
      withNetns(nsB, () => listInetSockets({ protocol: 'tcp' })),
      [],
    );
    assert.deepEqual(listInetSockets({ protocol: 'udp', dst: { addr: '127.0.0.5' }, netns: nsB }), []);
    // ... nor can it destroy them from there.
    assert.equal(
      withNetns(nsB, () => destroySockets({ protocol: 'udp', dst: { addr: '127.0.0.5', port: 9999 } })),
      0,
    );
    assert.equal(inA(() => listInetSockets({ protocol: 'udp', states: ['ESTABLISHED'] })).length, 2);
  });

  it('reports a refused SOCK_DESTROY as a BpfError naming the socket', async (t) => {
    if (!requirePrivileges(t, [...TOOLS, 'setpriv'])) return;
    // Root without CAP_NET_ADMIN may dump sockets but not destroy them: the kernel says EPERM.
    const mod = new URL('../../src/bpf/sock-diag.js', import.meta.url).href;
    const script = `
      const { destroySockets } = await import(${JSON.stringify(mod)});
      try {
        console.log(JSON.stringify({ destroyed: destroySockets({ protocol: 'udp', dst: { addr: '127.0.0.5', port: 9999 } }) }));
      } catch (e) {
        console.log(JSON.stringify({ name: e.name, code: e.code, op: e.op, object: e.object, message: e.message }));
      }`;
    const drop = ['--bounding-set', '-net_admin', '--inh-caps', '-net_admin'];
    const out = await fixture!.mustExec(nsA, 'setpriv', [
      ...drop,
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ]);
    const a = hello.tx.a;
    const object = `udp ${a.local[0]}:${a.local[1]} -> 127.0.0.5:9999 cookie ${a.cookie}`;
    const err = JSON.parse(out) as Record<string, string>;
    assert.deepEqual([err.name, err.code, err.op, err.object], ['BpfError', 'EPERM', 'SOCK_DESTROY', object]);
    assert.ok(err.message.startsWith(`EPERM from SOCK_DESTROY "${object}"`), err.message);
    const still = inA(() => listInetSockets({ protocol: 'udp', dst: { addr: '127.0.0.5', port: 9999 } }));
    assert.deepEqual(
      still.map((s) => [s.cookie, s.state]),
      [[BigInt(a.cookie), 'ESTABLISHED']],
    );
  });

  it('destroys the connected UDP sockets to one backend and leaves the others alone', async (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const h = helper!;
    const live: UdpReport = { soError: null, peer: ['127.0.0.5', 9999], send: 'ok', received: 'ping' };
    assert.deepEqual(await h.ask<UdpReport>('udp a'), live);
    assert.deepEqual(await h.ask<UdpReport>('udp b'), { ...live, peer: ['127.0.0.6', 9999] });
    const before = inA(() => listInetSockets({ protocol: 'udp' }));
    const staleA = byCookie(before, hello.tx.a)!;
    const b = byCookie(before, hello.tx.b)!;

    assert.equal(
      inA(() => destroySockets({ protocol: 'udp', dst: { addr: '127.0.0.5', port: 9999 } })),
      1,
    );
    // The owner sees the abort once, and the socket is no longer connected.
    assert.deepEqual(await h.ask<UdpReport>('udp a'), {
      soError: 'ECONNABORTED',
      peer: 'ENOTCONN',
      send: 'EDESTADDRREQ',
    });
    assert.deepEqual(await h.ask<UdpReport>('udp b'), { ...live, peer: ['127.0.0.6', 9999] });
    assert.equal(
      inA(() => destroySockets({ protocol: 'udp', dst: { addr: '127.0.0.5', port: 9999 } })),
      0,
    );
    const after = inA(() => listInetSockets({ protocol: 'udp' }));
    // Disconnected: the kernel may keep it bound to its local port, but it has no peer any more.
    const a = byCookie(after, hello.tx.a);
    if (a) assert.deepEqual([a.state, a.dst], ['CLOSE', { addr: '0.0.0.0', port: 0 }]);
    assert.ok(byCookie(after, hello.rx.a), 'the receiver bound to 127.0.0.5:9999 is untouched');

    // A socket that is gone, or a cookie that is not the socket's, is "nothing destroyed".
    assert.equal(destroySocket(staleA, { netns: nsA }), false);
    assert.equal(destroySocket({ ...b, cookie: b.cookie + 1n }, { netns: nsA }), false);
    assert.equal(
      inA(() => destroySockets({ protocol: 'udp', dst: { addr: '127.0.0.6', port: 9998 } })),
      0,
    );
    assert.deepEqual(await h.ask<UdpReport>('udp b'), { ...live, peer: ['127.0.0.6', 9999] });

    // Without a port, every socket to the address goes.
    assert.equal(
      inA(() => destroySockets({ protocol: 'udp', dst: { addr: '127.0.0.6' } })),
      1,
    );
    assert.equal((await h.ask<UdpReport>('udp b')).send, 'EDESTADDRREQ');
    assert.deepEqual(
      inA(() => listInetSockets({ protocol: 'udp', states: ['ESTABLISHED'] })),
      [],
    );
  });

  it('destroys a TCP connection, resetting it, and leaves the listener', async (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const h = helper!;
    assert.equal(
      inA(() => destroySockets({ protocol: 'tcp', dst: { addr: '127.0.0.1', port: 7777 } })),
      1,
    );
    assert.deepEqual(await h.ask<TcpReport>('tcp'), {
      soError: 'ECONNABORTED',
      send: 'EPIPE',
      peerRecv: 'ECONNRESET',
    });
    const tcp = inA(() => listInetSockets({ protocol: 'tcp' }));
    assert.equal(byCookie(tcp, hello.client), undefined);
    assert.equal(byCookie(tcp, hello.listener)?.state, 'LISTEN');
    assert.equal(
      inA(() => destroySockets({ protocol: 'tcp', dst: { addr: '127.0.0.1', port: 7777 } })),
      0,
    );
  });
});
