// A reader for BPF_MAP_TYPE_RINGBUF maps (the datapath's sl_log_v1 Log events): the kernel's
// ring mapped into this process, records copied out with no system call per record.
//
// Layout (kernel/bpf/ringbuf.c, libbpf's ringbuf.c): page 0 of the map fd holds consumer_pos
// (the only page userspace may map writable), page 1 producer_pos, and from page 2 the data area
// of max_entries bytes (a power of two, a multiple of the page size), mapped twice in a row so a
// record that wraps around the end reads as contiguous memory. Positions are 64-bit byte counters
// that only grow; a position's place in the data area is `pos % max_entries`. Each record starts
// with an 8-byte header: u32 len whose bit 31 is BUSY (reserved, not yet submitted or discarded)
// and bit 30 DISCARD (skip it), the low 30 bits the payload length; then u32 pg_off (the kernel's
// own use). Records are 8-byte aligned: a record takes round_up(len + 8, 8) bytes. The reader
// stops at the first BUSY record even if later ones are complete (they were reserved after it),
// as libbpf does.
//
// Polling is the caller's: the agent calls poll() from a timer, no busy loop and no epoll.
import { BpfError } from './errors.js';
import {
  errno,
  MAP_FAILED,
  MAP_SHARED,
  memoryView,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
  SC_PAGESIZE,
  sysconf,
} from './libc.js';
import { BpfMap } from './map.js';
import { MapType, mapTypeNames } from './syscall.js';

export const RINGBUF_BUSY_BIT = 0x80000000;
export const RINGBUF_DISCARD_BIT = 0x40000000;
export const RINGBUF_LEN_MASK = 0x3fffffff;
export const RINGBUF_HDR_SZ = 8;

let pageSize: number | undefined;
function systemPageSize(): number {
  pageSize ??= sysconf(SC_PAGESIZE);
  return pageSize;
}

/** A ring buffer map known only by its fd; its type and size are read from the kernel. */
export interface RingBufFd {
  fd: number;
  /** Checked against the kernel's when given. */
  maxEntries?: number;
  name?: string;
}

interface Mapping {
  consumerAddr: bigint;
  producerAddr: bigint;
  producerLen: number;
  /** consumer_pos, read-write. */
  consumerPos: BigUint64Array;
  /** producer_pos, read-only. */
  producerPos: BigUint64Array;
  /** The data area twice over (2 * size bytes), read-only: as headers and as bytes. */
  headers: Uint32Array;
  data: Buffer;
}

/**
 * Consumes one BPF ring buffer. One consumer per ring: two readers of the same map would each
 * advance consumer_pos over the other's records.
 */
export class RingBufReader {
  /** Bytes of the data area (the map's max_entries). */
  readonly size: number;
  readonly name: string;
  private m: Mapping | undefined;
  private reading = false;
  private closeRequested = false;

  constructor(source: BpfMap | RingBufFd) {
    let fd: number;
    let type: number;
    if (source instanceof BpfMap) {
      fd = source.fd;
      type = source.def.type;
      this.size = source.def.maxEntries;
      this.name = source.name;
    } else {
      fd = source.fd;
      const info = BpfMap.infoOf(fd, source.name ?? `fd ${fd}`);
      type = info.type;
      this.size = info.maxEntries;
      this.name = source.name ?? info.name;
      if (source.maxEntries !== undefined && source.maxEntries !== info.maxEntries) {
        throw new BpfError('ESCHEMA', {
          op: 'open ring buffer',
          object: this.name,
          message: `max_entries ${info.maxEntries} != ${source.maxEntries}`,
        });
      }
    }
    const page = systemPageSize();
    if (type !== MapType.RINGBUF) {
      throw new BpfError('EINVAL', {
        op: 'open ring buffer',
        object: this.name,
        message: `not a ring buffer map (${mapTypeNames[type] ?? `type ${type}`})`,
      });
    }
    if (this.size <= 0 || (this.size & (this.size - 1)) !== 0 || this.size % page !== 0) {
      throw new BpfError('EINVAL', {
        op: 'open ring buffer',
        object: this.name,
        message: `max_entries ${this.size} is not a power of two multiple of the page size ${page}`,
      });
    }

    const consumerAddr = mmap(null, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (consumerAddr === MAP_FAILED) throw BpfError.fromErrno(errno(), 'mmap ring buffer consumer page', this.name);
    const producerLen = page + 2 * this.size;
    const producerAddr = mmap(null, producerLen, PROT_READ, MAP_SHARED, fd, page);
    if (producerAddr === MAP_FAILED) {
      const e = errno();
      munmap(consumerAddr, page);
      throw BpfError.fromErrno(e, 'mmap ring buffer data', this.name);
    }
    let consumerView: ArrayBuffer;
    let producerView: ArrayBuffer;
    try {
      consumerView = memoryView(consumerAddr, page);
      producerView = memoryView(producerAddr, producerLen);
    } catch (err) {
      // A runtime without external ArrayBuffers (koffi says so by throwing).
      munmap(consumerAddr, page);
      munmap(producerAddr, producerLen);
      throw err;
    }
    this.m = {
      consumerAddr,
      producerAddr,
      producerLen,
      consumerPos: new BigUint64Array(consumerView, 0, 1),
      producerPos: new BigUint64Array(producerView, 0, 1),
      headers: new Uint32Array(producerView, page, (2 * this.size) / 4),
      data: Buffer.from(producerView, page, 2 * this.size),
    };
  }

  get closed(): boolean {
    return this.m === undefined || this.closeRequested;
  }

  private mapping(op: string): Mapping {
    if (!this.m) throw new BpfError('EBADF', { op, object: this.name, message: 'the ring buffer reader is closed' });
    return this.m;
  }

  /** Bytes between the consumer and producer positions: records not yet read (submitted,
   *  discarded or still being written), headers and padding included. */
  available(): number {
    const m = this.mapping('ring buffer available');
    return Number(Atomics.load(m.producerPos, 0) - Atomics.load(m.consumerPos, 0));
  }

  /**
   * Reads the records that are ready, oldest first, at most `max` of them (discarded records
   * are skipped and do not count), as copies; then frees their space for the producer.
   */
  poll(max = Infinity): Buffer[] {
    const out: Buffer[] = [];
    this.consume((data, offset, length) => {
      const rec = Buffer.allocUnsafe(length);
      data.copy(rec, 0, offset, offset + length);
      out.push(rec);
    }, max);
    return out;
  }

  /**
   * Like poll() without copies or allocation: calls `onRecord(data, offset, length)` for each
   * record, its payload being `data[offset, offset + length)`, which fits a codec's
   * `decode(buf, offset)`. `data` is the kernel's memory, mapped read-only: it is valid only
   * during the call, and writing to it kills the process (SIGSEGV). The callback must not poll
   * or consume this reader again (EBUSY); close() from inside takes effect on return. A record
   * whose callback throws counts as consumed, as in libbpf. Returns the number of records.
   */
  consume(onRecord: (data: Buffer, offset: number, length: number) => void, max = Infinity): number {
    const m = this.mapping('ring buffer consume');
    if (this.reading) {
      throw new BpfError('EBUSY', {
        op: 'ring buffer consume',
        object: this.name,
        message: 'called again from inside a record callback',
      });
    }
    this.reading = true;
    const { data, headers } = m;
    const size = this.size;
    // Acquire loads: producer_pos before the headers it covers, each header before its payload.
    // Atomics are sequentially consistent, which is at least that.
    const start = Number(Atomics.load(m.consumerPos, 0));
    const prod = Number(Atomics.load(m.producerPos, 0));
    let cons = start;
    let n = 0;
    try {
      while (cons < prod && n < max) {
        const off = cons % size;
        const hdr = Atomics.load(headers, off >>> 2);
        if ((hdr & RINGBUF_BUSY_BIT) !== 0) break;
        const len = hdr & RINGBUF_LEN_MASK;
        cons += (len + RINGBUF_HDR_SZ + 7) & ~7;
        if ((hdr & RINGBUF_DISCARD_BIT) === 0) {
          n++;
          onRecord(data, off + RINGBUF_HDR_SZ, len);
        }
      }
    } finally {
      // Release store: the records are read before the producer may reuse their space.
      if (cons !== start) Atomics.store(m.consumerPos, 0, BigInt(cons));
      this.reading = false;
      if (this.closeRequested) this.close();
    }
    return n;
  }

  /** Unmaps the ring. The map itself (and its fd) stays with its owner. Idempotent. */
  close(): void {
    const m = this.m;
    if (!m) return;
    if (this.reading) {
      this.closeRequested = true; // consume() is still reading the mapping
      return;
    }
    // Drop every view first: touching one after munmap would crash the process.
    this.m = undefined;
    munmap(m.consumerAddr, systemPageSize());
    munmap(m.producerAddr, m.producerLen);
  }
}
