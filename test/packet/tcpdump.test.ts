// Optional cross-check against tcpdump's own checksum verification; skipped
// when tcpdump is not installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkChecksums, eth, frame, icmp, ipv4, payload, tcp, toPcap, udp, vxlan } from '../../src/packet/index.js';

const hasTcpdump = !spawnSync('tcpdump', ['--version']).error;

/** tcpdump -vv output for the frames, one string per frame. */
function tcpdump(frames: Buffer[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-pcap-'));
  try {
    const file = join(dir, 'frames.pcap');
    writeFileSync(file, toPcap(frames));
    const res = spawnSync('tcpdump', ['-nn', '-vv', '-r', file], { encoding: 'utf8' });
    assert.equal(res.status, 0, res.stderr);
    // Each packet starts with a timestamp at the beginning of a line.
    return res.stdout.split(/^(?=\d\d:\d\d:\d\d\.\d+ )/m).filter((s) => s.length > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test(
  'tcpdump agrees that built frames have correct checksums',
  { skip: !hasTcpdump && 'tcpdump not installed' },
  () => {
    const frames = [
      frame(
        eth(),
        ipv4({ src: '192.168.1.10', dst: '10.96.0.1', df: true }),
        tcp({ flags: 'S', options: Buffer.from('020405b4', 'hex') }),
      ),
      frame(eth(), ipv4({ options: Buffer.from([0x94, 4, 0, 0]) }), tcp({ flags: 'PA' }), payload(333)),
      frame(eth(), ipv4(), udp({ dport: 5000 }), payload('hello')),
      frame(eth(), ipv4(), udp(), vxlan({ vni: 4096 }), eth(), ipv4(), tcp({ flags: 'SA' }), payload(7)),
    ];
    const out = tcpdump(frames);
    assert.equal(out.length, frames.length);
    for (const text of out) assert.doesNotMatch(text, /bad|incorrect|wrong/, text);
    assert.match(out[0], /cksum 0x[0-9a-f]{4} \(correct\)/);
    assert.match(out[1], /options \(RA\)/);
    assert.match(out[1], /cksum 0x[0-9a-f]{4} \(correct\)/);
    assert.match(out[2], /\[udp sum ok\]/);
    assert.match(out[3], /\[udp sum ok\] VXLAN, flags \[I\] \(0x08\), vni 4096/);
    assert.match(out[3], /Flags \[S\.\], cksum 0x[0-9a-f]{4} \(correct\)/);
  },
);

test(
  'tcpdump flags deliberately bad checksums with the same expected values',
  { skip: !hasTcpdump && 'tcpdump not installed' },
  () => {
    const badIpTcp = frame(eth(), ipv4({ checksum: 'bad' }), tcp({ checksum: 'bad' }), payload('x'));
    const badUdp = frame(eth(), ipv4(), udp({ dport: 5000, checksum: 'bad' }), payload('x'));
    const badIcmp = frame(eth(), ipv4(), icmp({ checksum: 'bad' }), payload('x'));
    const [ipTcpOut, udpOut, icmpOut] = tcpdump([badIpTcp, badUdp, badIcmp]);
    const expected = (f: Buffer, layer: string): string => {
      const p = checkChecksums(f).find((q) => q.layer === layer);
      assert.ok(p?.expected !== undefined, layer);
      return p.expected.toString(16);
    };
    // tcpdump prints its own recomputation after "->"; it must match ours.
    assert.match(ipTcpOut, new RegExp(`bad cksum [0-9a-f]+ \\(->0*${expected(badIpTcp, 'ipv4')}\\)!`));
    assert.match(ipTcpOut, new RegExp(`incorrect -> 0x0*${expected(badIpTcp, 'tcp')}\\)`));
    assert.match(udpOut, new RegExp(`bad udp cksum 0x[0-9a-f]+ -> 0x0*${expected(badUdp, 'udp')}!`));
    assert.match(icmpOut, new RegExp(`wrong icmp cksum [0-9a-f]+ \\(->0*${expected(badIcmp, 'icmp')}\\)!`));
  },
);
