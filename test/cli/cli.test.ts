// The `sluice` command run as users run it (node bin/sluice.js ...): the foundation demo end to
// end with its cleanup, the feature probe's JSON, and error reporting; plus the pure helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../src/paths.js';
import { requirePrivileges } from '../../src/testing/netns.js';
import { formatJson, formatTable } from '../../src/cli/output.js';
import { judge, DEMO_PIN_DIR, type DemoCounters, type DemoTraffic } from '../../src/cli/demo.js';
import { formatCounters, nonZeroCounters } from '../../src/cli/bpf-commands.js';
import { counterNames, type CounterRow } from '../../src/datapath/counters.js';

const bin = path.join(packageRoot, 'bin', 'sluice.js');

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sluice(args: string[], timeoutMs = 120_000): Promise<CliResult> {
  const env = { ...process.env };
  delete env.SLUICE_DEBUG;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { timeout: timeoutMs, killSignal: 'SIGINT', encoding: 'utf8', env, cwd: packageRoot },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : null
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The demo's counters table: header line with `interface` and `hook`, rows until a blank line. */
function parseCountersTable(out: string): Array<Record<string, string>> {
  const lines = out.split('\n');
  const start = lines.findIndex((l) => /^\s*interface\s+ifindex\s+hook\s/.test(l));
  assert.ok(start >= 0, `the output has a counters table:\n${out}`);
  const header = lines[start].trim().split(/\s+/);
  const rows: Array<Record<string, string>> = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === '') break;
    // The last column ("client -> server") contains spaces: split off the fixed columns only.
    const cells = line.trim().split(/\s+/);
    rows.push(
      Object.fromEntries(header.map((h, i) => [h, i === header.length - 1 ? cells.slice(i).join(' ') : cells[i]])),
    );
  }
  return rows;
}

function demoNamespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith('sl-demo-'));
}

test('sluice demo: real ICMP, TCP and UDP counted on the right hooks, and nothing left behind', async (t) => {
  if (!requirePrivileges(t, ['ip', 'nsenter', 'ping'])) return;
  const r = await sluice(['demo']);
  assert.equal(r.code, 0, `demo exit code (stderr: ${r.stderr})\n${r.stdout}`);
  assert.match(r.stdout, /program id \d+/);
  assert.match(r.stdout, /^verdict: OK/m);
  const rows = parseCountersTable(r.stdout);
  const row = (iface: string, hook: string): Record<string, string> => {
    const found = rows.find((x) => x.interface === iface && x.hook === hook);
    assert.ok(found, `a row for ${iface} ${hook} in ${JSON.stringify(rows)}`);
    return found;
  };
  for (const [iface, hook] of [
    ['sl-demo-server/sl-srv0', 'tc-ingress'],
    ['sl-demo-server/sl-srv0', 'tc-egress'],
    ['sl-demo-client/sl-cli0', 'xdp'],
  ]) {
    const x = row(iface, hook);
    for (const proto of ['tcp', 'udp', 'icmp']) {
      assert.ok(Number(x[proto]) > 0, `${iface} ${hook} counted ${proto}: ${JSON.stringify(x)}`);
    }
    assert.equal(x.accepted, x.packets, `${hook}: every packet passed`);
  }
  // The demo pings five times: one request in at the server, one reply out, one reply at the client.
  assert.equal(row('sl-demo-server/sl-srv0', 'tc-ingress').icmp, '5');
  assert.equal(row('sl-demo-client/sl-cli0', 'xdp').icmp, '5');
  assert.deepEqual(demoNamespaces(), [], 'no demo namespace remains');
  assert.equal(existsSync(DEMO_PIN_DIR), false, `${DEMO_PIN_DIR} was removed`);
});

test('sluice demo --down with nothing set up says so and succeeds', async (t) => {
  if (!requirePrivileges(t, ['ip'])) return;
  const r = await sluice(['demo', '--down']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /nothing to remove/);
});

test('sluice bpf features -o json reports sched_cls supported', async (t) => {
  if (!requirePrivileges(t, [])) return;
  const r = await sluice(['bpf', 'features', '-o', 'json']);
  const report = JSON.parse(r.stdout) as {
    kernel: string;
    ok: boolean;
    probes: Array<{ name: string; status: string; required: boolean }>;
  };
  const schedCls = report.probes.find((p) => p.name === 'program type sched_cls');
  assert.ok(schedCls, 'probes include sched_cls');
  assert.equal(schedCls.status, 'supported');
  assert.equal(schedCls.required, true);
  assert.equal(r.code, report.ok ? 0 : 1, `exit code follows "ok" (stderr: ${r.stderr})`);
});

test('sluice bpf counters with no pinned map exits 1 naming the path, without a stack trace', async () => {
  const r = await sluice(['bpf', 'counters', '--pin-root', '/nonexistent']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^sluice: .*\/nonexistent\/sl_counters_v1/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.equal(r.stdout, '');
});

test('sluice version and unknown commands', async () => {
  const v = await sluice(['version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^sluice \d+\.\d+\.\d+/);
  const bad = await sluice(['no-such-command']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^sluice: unknown command/);
});

test('formatTable aligns columns, right-aligns numbers and leaves no trailing spaces', () => {
  const out = formatTable(
    ['name', 'n', 'note'],
    [
      ['a', 1, 'x'],
      ['longer', 12345, ''],
    ],
  );
  assert.equal(out, ['name        n  note', 'a           1  x', 'longer  12345'].join('\n'));
  assert.equal(formatJson({ big: 2n ** 70n, small: 3n }), '{\n  "big": "1180591620717411303424",\n  "small": 3\n}');
});

test('bpf counters table shows only counters that are non-zero somewhere', () => {
  const zero = Object.fromEntries(counterNames.map((n) => [n, 0])) as CounterRow['counters'];
  const rows: CounterRow[] = [
    { ifindex: 2, hook: 'tc-ingress', counters: { ...zero, packets: 3, bytes: 300, udp: 3, accepted: 3 } },
    { ifindex: 2, hook: 'xdp', counters: { ...zero, packets: 1, bytes: 60, icmp: 1, accepted: 1 } },
  ];
  assert.deepEqual(nonZeroCounters(rows), ['packets', 'bytes', 'udp', 'icmp', 'accepted']);
  const lines = formatCounters(rows).split('\n');
  assert.equal(lines[0], 'ifindex  hook        packets  bytes  udp  icmp  accepted');
  assert.equal(lines[1], '      2  tc-ingress        3    300    3     0         3');
});

test('the demo verdict catches counts that differ from the traffic sent', () => {
  const c = (tcp: number, udp: number, icmp: number) => {
    const zero = Object.fromEntries(counterNames.map((n) => [n, 0])) as CounterRow['counters'];
    const packets = tcp + udp + icmp;
    return { ...zero, tcp, udp, icmp, packets, accepted: packets };
  };
  const traffic: DemoTraffic = {
    pings: { sent: 5, received: 5 },
    tcp: { sent: 3, echoed: 3 },
    udp: { sent: 4, echoed: 4 },
  };
  const good: DemoCounters = { ingress: c(8, 4, 5), egress: c(6, 4, 5), xdp: c(6, 4, 5) };
  assert.deepEqual(judge(good, traffic), { ok: true, problems: [] });
  const lostUdp: DemoCounters = { ...good, xdp: c(6, 3, 5) };
  assert.deepEqual(judge(lostUdp, traffic).problems, ['xdp udp is 3, expected 4']);
  const noXdp: DemoCounters = { ingress: good.ingress, egress: good.egress };
  assert.equal(judge(noXdp, traffic).ok, false);
});
