// rtnetlink client, legacy tc attach and withNetns. Kernel tests run as root inside their own
// network namespaces (sl-t-*); nothing is attached in the root namespace.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { BpfError } from '../../src/bpf/errors.js';
import {
  attrMap,
  attrString,
  buildMessage,
  decodeError,
  decodeIfinfomsg,
  encodeIfinfomsg,
  encodeTcmsg,
  NLM_F,
  NLMSG,
  parseAttrs,
  parseMessages,
  RTM,
  rtattrNested,
  rtattrString,
  rtattrU32,
  withRtnl,
} from '../../src/bpf/netlink.js';
import { currentNetnsId, ifindexIn, withNetns } from '../../src/bpf/netns.js';
import { Program } from '../../src/bpf/program.js';
import { ProgType } from '../../src/bpf/syscall.js';
import {
  attachTcLegacy,
  ensureClsact,
  listTcFilters,
  removeClsact,
  tcInfo,
  tcParent,
  type TcDirection,
  type TcFilter,
} from '../../src/bpf/tc-legacy.js';
import { NetnsFixture, privilegeProblem, requirePrivileges, sweepStaleNetns } from '../../src/testing/netns.js';

const TOOLS = ['ip', 'nsenter', 'ethtool', 'tc'];
/** mov r0, 0; exit */
const PASS = Buffer.from('b7000000000000009500000000000000', 'hex');
const IFLA_IFNAME = 3;

describe('rtnetlink messages (no kernel)', () => {
  it('pads attributes to 4 bytes and nests them', () => {
    const kind = rtattrString(1, 'clsact'); // 4 + 7 = 11 bytes, padded to 12
    assert.equal(kind.length, 12);
    assert.equal(kind.readUInt16LE(0), 11);
    assert.equal(kind.readUInt16LE(2), 1);
    const nest = rtattrNested(2, [rtattrU32(6, 42), rtattrString(7, 'ab')]);
    assert.equal(nest.readUInt16LE(0), 4 + 8 + 8);
    const inner = parseAttrs(nest.subarray(4, nest.readUInt16LE(0)));
    assert.deepEqual(
      inner.map((a) => a.type),
      [6, 7],
    );
    assert.equal(inner[0].data.readUInt32LE(0), 42);
    assert.equal(attrString(inner[1].data), 'ab');
  });

  it('builds a message with header, tcmsg and attributes', () => {
    const hdr = encodeTcmsg({
      ifindex: 5,
      handle: 1,
      parent: tcParent('egress'),
      info: tcInfo(7),
    });
    const msg = buildMessage(RTM.NEWTFILTER, NLM_F.REQUEST | NLM_F.ACK, 99, hdr, [rtattrString(1, 'bpf')]);
    assert.equal(msg.length, 16 + 20 + 8);
    assert.equal(msg.readUInt32LE(0), msg.length);
    const [m] = parseMessages(msg);
    assert.equal(m.type, RTM.NEWTFILTER);
    assert.equal(m.seq, 99);
    assert.equal(m.payload.readUInt32LE(12), 0xfffffff3);
    // priority 7 above, ETH_P_ALL in network byte order below: bytes 00 03
    assert.equal(m.payload.readUInt32LE(16), 0x00070300);
    assert.deepEqual([...m.payload.subarray(16, 18)], [0x00, 0x03]);
    assert.equal(attrString(attrMap(m.payload.subarray(20)).get(1)), 'bpf');
    assert.equal(tcParent('ingress'), 0xfffffff2);
  });

  it('decodes an NLMSG_ERROR with an extended-ACK message', () => {
    const payload = Buffer.concat([
      Buffer.from([0xed, 0xff, 0xff, 0xff]), // -19
      buildMessage(RTM.NEWQDISC, 0, 1, Buffer.alloc(0)), // capped echo of the request header
      rtattrString(1, 'Cannot find device'),
    ]);
    const err = decodeError({
      type: NLMSG.ERROR,
      flags: NLM_F.CAPPED | NLM_F.ACK_TLVS,
      seq: 1,
      pid: 0,
      payload,
    });
    assert.deepEqual(err, { error: -19, message: 'Cannot find device' });
  });
});

describe('legacy tc attach over rtnetlink (kernel)', () => {
  let fixture: NetnsFixture | undefined;
  let nsA = '';
  let nsB = '';
  const made: string[] = [];

  before(async () => {
    if (privilegeProblem(TOOLS)) return; // each test reports (skip, or fail under CI)
    sweepStaleNetns();
    fixture = new NetnsFixture('netlink');
    nsA = await fixture.addNetns();
    nsB = await fixture.addNetns();
    made.push(nsA, nsB);
    // one pair across two namespaces, one pair inside nsA
    await fixture.addVeth({
      ns: nsA,
      name: 'sl0',
      peerNs: nsB,
      peerName: 'sl1',
      addr: '10.201.0.1/24',
      peerAddr: '10.201.0.2/24',
    });
    await fixture.addVeth({ ns: nsA, name: 'sl2', peerName: 'sl3' });
  });

  after(async () => {
    await fixture?.cleanup();
    await fixture?.cleanup(); // idempotent
    for (const ns of made) assert.equal(fs.existsSync(`/run/netns/${ns}`), false, `${ns} left behind`);
  });

  it('sets up the namespaces as asked', async (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const f = fixture!;
    // A netlink socket opened inside withNetns sees that namespace's links only.
    const links = withNetns(nsA, () =>
      withRtnl((nl) => nl.dump(RTM.GETLINK, encodeIfinfomsg({ index: 0 }))).map((m) => {
        const l = decodeIfinfomsg(m.payload);
        return attrString(attrMap(l.attrs).get(IFLA_IFNAME));
      }),
    );
    assert.deepEqual(links.sort(), ['lo', 'sl0', 'sl2', 'sl3']);
    const offloads = await f.mustExec(nsA, 'ethtool', ['-k', 'sl0']);
    assert.match(offloads, /tx-checksumming: off/);
    assert.match(offloads, /rx-checksumming: off/);
    const r = await f.exec(nsB, 'ip', ['-o', '-4', 'addr', 'show', 'dev', 'sl1']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /10\.201\.0\.2\/24/);
    const bad = await f.exec(nsB, 'sh', ['-c', 'echo oops >&2; exit 3']);
    assert.deepEqual([bad.code, bad.stderr.trim(), bad.timedOut], [3, 'oops', false]);
    const slow = await f.exec(nsB, 'sleep', ['5'], { timeoutMs: 200 });
    assert.equal(slow.timedOut, true);
  });

  it('attaches, lists, replaces and detaches on ingress and egress', async (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const f = fixture!;
    const ifindex = ifindexIn(nsA, 'sl0');
    const target = { ifindex, ifname: 'sl0', netns: nsA };
    const p1 = Program.load({
      name: 'sl_t_pass1',
      type: ProgType.SCHED_CLS,
      insns: PASS,
    });
    const p2 = Program.load({
      name: 'sl_t_pass2',
      type: ProgType.SCHED_CLS,
      insns: PASS,
    });
    const filters: TcFilter[] = [];
    try {
      const id1 = p1.id();
      const id2 = p2.id();
      assert.notEqual(id1, id2);
      const tcShow = (dir: TcDirection) => f.mustExec(nsA, 'tc', ['filter', 'show', 'dev', 'sl0', dir]);

      for (const direction of ['ingress', 'egress'] as const) {
        const filter = attachTcLegacy({
          ...target,
          direction,
          progFd: p1.fd,
          name: 'sl_first',
          priority: 7,
          handle: 3,
        });
        filters.push(filter);
        const listed = listTcFilters(target, direction);
        assert.equal(listed.length, 1);
        assert.deepEqual(listed[0], {
          ifindex,
          direction,
          priority: 7,
          handle: 3,
          protocol: 3,
          kind: 'bpf',
          chain: 0,
          name: 'sl_first',
          progId: id1,
          tag: listed[0].tag,
          directAction: true,
        });
        assert.match(listed[0].tag ?? '', /^[0-9a-f]{16}$/);
        const shown = await tcShow(direction);
        assert.match(shown, /pref 7 bpf/);
        assert.match(shown, /handle 0x3 sl_first direct-action/);
        assert.match(shown, new RegExp(`\\bid ${id1}\\b`));

        filter.replace(p2.fd, 'sl_second');
        assert.equal(filter.name, 'sl_second');
        const after = filter.info();
        assert.equal(after?.progId, id2);
        assert.equal(after?.name, 'sl_second');
        assert.equal(listTcFilters(target, direction).length, 1);
        const shown2 = await tcShow(direction);
        assert.match(shown2, new RegExp(`\\bid ${id2}\\b`));
        assert.doesNotMatch(shown2, new RegExp(`\\bid ${id1}\\b`));
      }

      // The other end of the pair, in another namespace, has nothing.
      assert.deepEqual(listTcFilters({ ifindex: ifindexIn(nsB, 'sl1'), netns: nsB }, 'ingress'), []);
      // The same priority and handle cannot be taken twice; the clsact qdisc is reused.
      assert.throws(
        () =>
          attachTcLegacy({
            ...target,
            direction: 'ingress',
            progFd: p1.fd,
            name: 'dup',
            priority: 7,
            handle: 3,
          }),
        (e: unknown) => e instanceof BpfError && e.code === 'EEXIST' && e.op === 'RTM_NEWTFILTER',
      );
      assert.equal(ensureClsact(target), false);

      for (const filter of filters) {
        assert.equal(filter.detach(), true);
        assert.equal(filter.detach(), false);
        assert.deepEqual(listTcFilters(target, filter.direction), []);
        assert.equal((await tcShow(filter.direction)).trim(), '');
      }
      assert.match(await f.mustExec(nsA, 'tc', ['qdisc', 'show', 'dev', 'sl0']), /qdisc clsact ffff:/);
      assert.equal(removeClsact(target), true);
      assert.equal(removeClsact(target), false);
      assert.doesNotMatch(await f.mustExec(nsA, 'tc', ['qdisc', 'show', 'dev', 'sl0']), /clsact/);
      assert.deepEqual(listTcFilters(target, 'ingress'), []);
      // A filter whose qdisc is gone is already detached, and cannot be replaced.
      assert.equal(filters[0].detach(), false);
      assert.throws(
        () => filters[0].replace(p1.fd),
        (e: unknown) => e instanceof BpfError && e.op === 'RTM_NEWTFILTER',
      );
    } finally {
      for (const filter of filters) {
        try {
          filter.detach();
        } catch {
          // the namespace goes away in `after` anyway
        }
      }
      try {
        removeClsact(target);
      } catch {
        // as above
      }
      p1.close();
      p2.close();
    }
  });

  it('does not take over an ingress qdisc', async (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const f = fixture!;
    await f.mustExec(nsA, 'tc', ['qdisc', 'add', 'dev', 'sl2', 'ingress']);
    try {
      const target = {
        ifindex: ifindexIn(nsA, 'sl2'),
        ifname: 'sl2',
        netns: nsA,
      };
      assert.throws(
        () => ensureClsact(target),
        (e: unknown) => e instanceof BpfError && e.code === 'EEXIST' && /kind ingress/.test(e.message),
      );
      assert.equal(removeClsact(target), false);
      assert.match(await f.mustExec(nsA, 'tc', ['qdisc', 'show', 'dev', 'sl2']), /qdisc ingress ffff:/);
    } finally {
      await f.exec(nsA, 'tc', ['qdisc', 'del', 'dev', 'sl2', 'ingress']);
    }
  });

  it('reports the operation and the interface when the interface does not exist', (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const p = Program.load({
      name: 'sl_t_pass3',
      type: ProgType.SCHED_CLS,
      insns: PASS,
    });
    try {
      const missing = 999_999;
      const check = (op: string, direction: string) => (e: unknown) => {
        assert.ok(e instanceof BpfError, String(e));
        assert.equal(e.code, 'ENODEV');
        assert.equal(e.op, op);
        assert.equal(e.object, `ifindex 999999${direction} in netns ${nsA}`);
        assert.match(e.message, new RegExp(`^ENODEV from ${op} "`));
        return true;
      };
      const opts = {
        ifindex: missing,
        netns: nsA,
        direction: 'ingress' as const,
        progFd: p.fd,
        name: 'x',
      };
      assert.throws(() => attachTcLegacy(opts), check('RTM_NEWQDISC', ''));
      assert.throws(() => attachTcLegacy({ ...opts, ensureClsact: false }), check('RTM_NEWTFILTER', ' ingress'));
      assert.throws(
        () => ifindexIn(nsA, 'sl-none'),
        (e: unknown) => e instanceof BpfError && e.code === 'ENODEV' && e.op === 'if_nametoindex',
      );
    } finally {
      p.close();
    }
  });

  it('withNetns restores the original namespace, also when fn throws', (t) => {
    if (!requirePrivileges(t, TOOLS)) return;
    const original = currentNetnsId();
    const statId = (p: string) => {
      const st = fs.statSync(p);
      return `${st.dev}:${st.ino}`;
    };
    const idA = statId(`/run/netns/${nsA}`);
    const idB = statId(`/run/netns/${nsB}`);
    assert.notEqual(idA, original);

    let seen = '';
    assert.throws(
      () =>
        withNetns(nsA, () => {
          seen = currentNetnsId();
          throw new Error('boom');
        }),
      /boom/,
    );
    assert.equal(seen, idA);
    assert.equal(currentNetnsId(), original);

    // nesting returns step by step
    const trail = withNetns(nsA, () => {
      const inner = withNetns({ path: `/run/netns/${nsB}` }, () => currentNetnsId());
      return [inner, currentNetnsId()];
    });
    assert.deepEqual(trail, [idB, idA]);
    assert.equal(currentNetnsId(), original);

    // a missing namespace fails before switching
    assert.throws(
      () => withNetns('sl-t-does-not-exist', () => 1),
      (e: unknown) => e instanceof BpfError && e.code === 'ENOENT' && e.op === 'open',
    );
    // asynchronous fn is refused, after switching back
    assert.throws(
      () => withNetns(nsA, async () => 1),
      (e: unknown) => e instanceof BpfError && e.code === 'EINVAL' && e.op === 'withNetns',
    );
    assert.equal(currentNetnsId(), original);
  });
});
