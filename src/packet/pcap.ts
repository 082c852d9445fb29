// Minimal classic-pcap writer, so a failing test can dump frames for
// tcpdump/Wireshark without extra dependencies.

const LINKTYPE_ETHERNET = 1;

/** Serialize Ethernet frames into a pcap file image (microsecond timestamps, all zero). */
export function toPcap(frames: readonly Uint8Array[]): Buffer {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4); // version 2.4
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(0x40000, 16); // snaplen: larger than any frame we build
  header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  const parts: Uint8Array[] = [header];
  for (const f of frames) {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(f.length, 8); // captured length
    rec.writeUInt32LE(f.length, 12); // original length
    parts.push(rec, f);
  }
  return Buffer.concat(parts);
}
