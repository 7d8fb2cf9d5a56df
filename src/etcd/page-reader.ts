/**
 * Positioned, bounded-memory page access to a bbolt file.
 *
 * Snapshots are 1-10 GiB, so the file is never read whole: pages come from
 * fixed-size blocks read with FileHandle.read at an offset and kept in a
 * small LRU cache. bbolt (and especially a defragmented or freshly written
 * snapshot) lays sibling leaves out close together, so one block read
 * usually serves many pages; with a random layout each page costs one
 * block read, which is still fast for data in the OS page cache.
 * Memory is bounded by the cache (blockSize * maxBlocks) plus the largest
 * single page span (a leaf holding a big value, with its overflow pages).
 *
 * Two modes. By default every page is the caller's to keep (a view into a
 * block nobody else writes). With `borrowed: true` the reader allocates its
 * blocks and one span buffer once and reuses them, so walking a 10 GiB file
 * allocates a few MiB instead of 10 GiB of short-lived buffers (which V8
 * collects only after tens of MiB of them pile up: the backup's peak RSS).
 * A borrowed page is valid until the next `page()` call on the same reader;
 * a caller that needs bytes longer copies them, and calls are sequential.
 */
import type { FileHandle } from 'node:fs/promises';
import { BboltFormatError, readPageHeader } from './bbolt.js';

const DEFAULT_BLOCK_BYTES = 64 * 1024;
const DEFAULT_MAX_BLOCKS = 256; // 16 MiB of cache with 64 KiB blocks
const BORROWED_MAX_BLOCKS = 64; // 4 MiB, allocated once
const SPAN_GROWTH = 1024 * 1024;

export interface PageReaderOptions {
  /** Blocks kept (default 256, 64 when borrowed). */
  maxBlocks?: number;
  /** Reuse buffers: a page is valid only until the next page() call (see above). */
  borrowed?: boolean;
}

/** One cached block: its read (settled or in flight) and, when borrowed, the slot it fills. */
interface CachedBlock {
  read: Promise<Buffer>;
  slot: number;
}

export class PageReader {
  private readonly blockSize: number;
  /** LRU of block reads (settled or in flight), keyed by block number. */
  private readonly cache = new Map<number, CachedBlock>();
  private readonly dataEnd: number;
  private readonly maxBlocks: number;
  private readonly borrowed: boolean;
  private lastMiss = -2;
  /** Borrowed mode: block buffers by slot, the last read into each slot, and the slots no block holds. */
  private readonly slots: Buffer[] = [];
  private readonly slotReads: Promise<unknown>[] = [];
  private readonly freeSlots: number[] = [];
  /** Borrowed mode: the buffer multi-block spans are read into. */
  private spanBuffer = Buffer.alloc(0);

  /**
   * @param highWater pages [0, highWater) exist; any reference beyond is corruption.
   *   The caller has already checked highWater * pageSize <= the file's data length.
   */
  constructor(
    private readonly fh: FileHandle,
    private readonly pageSize: number,
    private readonly highWater: number,
    opts: PageReaderOptions = {},
  ) {
    this.blockSize = Math.max(pageSize, Math.floor(DEFAULT_BLOCK_BYTES / pageSize) * pageSize);
    this.dataEnd = highWater * pageSize;
    this.borrowed = opts.borrowed ?? false;
    // Read-ahead must never evict the block just handed out: at least 3 blocks.
    this.maxBlocks = Math.max(3, opts.maxBlocks ?? (this.borrowed ? BORROWED_MAX_BLOCKS : DEFAULT_MAX_BLOCKS));
  }

  /**
   * The page `id` with its overflow pages: a buffer of (1 + overflow) * pageSize
   * bytes. Checks that the page and its overflow lie below the high-water
   * mark and that the header names the page itself (a pointer to the wrong
   * page, or garbage, does not carry its own id).
   */
  async page(id: number): Promise<Buffer> {
    if (!Number.isSafeInteger(id) || id < 0 || id >= this.highWater) {
      throw new BboltFormatError(`page id ${id} is beyond the high-water mark ${this.highWater}`);
    }
    const first = await this.span(id * this.pageSize, this.pageSize);
    const hdr = readPageHeader(first);
    if (hdr.id !== id) {
      throw new BboltFormatError(`page ${id}: header says it is page ${hdr.id}`);
    }
    if (hdr.overflow === 0) return first;
    if (id + hdr.overflow >= this.highWater) {
      throw new BboltFormatError(
        `page ${id}: ${hdr.overflow} overflow pages run past the high-water mark ${this.highWater}`,
      );
    }
    return this.span(id * this.pageSize, (1 + hdr.overflow) * this.pageSize);
  }

  /** Bytes [off, off + len); served from one cached block when it fits in one. */
  private async span(off: number, len: number): Promise<Buffer> {
    const blockNo = Math.floor(off / this.blockSize);
    const inBlock = off - blockNo * this.blockSize;
    if (inBlock + len <= this.blockSize) {
      const block = await this.block(blockNo);
      if (inBlock + len > block.length) {
        throw new BboltFormatError(`bytes [${off}, +${len}) lie beyond the end of the file`);
      }
      return block.subarray(inBlock, inBlock + len);
    }
    // Multi-page span crossing a block edge (large values): read it directly, uncached.
    if (!this.borrowed) return this.readExactly(off, len, Buffer.allocUnsafe(len));
    if (this.spanBuffer.length < len) {
      this.spanBuffer = Buffer.allocUnsafeSlow(Math.ceil(len / SPAN_GROWTH) * SPAN_GROWTH);
    }
    return this.readExactly(off, len, this.spanBuffer);
  }

  private block(blockNo: number): Promise<Buffer> {
    const hit = this.cache.get(blockNo);
    if (hit) {
      // Move to the most-recently-used end.
      this.cache.delete(blockNo);
      this.cache.set(blockNo, hit);
      return hit.read;
    }
    const p = this.load(blockNo);
    // Sequential access (the common case: bbolt spills sibling leaves into
    // consecutive pages) gets one block of read-ahead, so the next read is
    // under way while this block is parsed and hashed.
    if (blockNo === this.lastMiss + 1 && (blockNo + 1) * this.blockSize < this.dataEnd && !this.cache.has(blockNo + 1)) {
      this.load(blockNo + 1).catch(() => undefined); // a failure resurfaces when the block is used
    }
    this.lastMiss = blockNo;
    return p;
  }

  private load(blockNo: number): Promise<Buffer> {
    const start = blockNo * this.blockSize;
    const len = Math.min(this.blockSize, this.dataEnd - start);
    if (this.cache.size >= this.maxBlocks) {
      const oldest = this.cache.entries().next();
      if (!oldest.done) {
        const [evicted, block] = oldest.value;
        this.cache.delete(evicted);
        if (this.borrowed) this.freeSlots.push(block.slot);
      }
    }
    let read: Promise<Buffer>;
    let slot = -1;
    if (!this.borrowed) {
      read = this.readExactly(start, len, Buffer.allocUnsafe(len));
    } else {
      slot = this.freeSlots.pop() ?? this.slots.push(Buffer.allocUnsafeSlow(this.blockSize)) - 1;
      // An evicted read-ahead may still be filling this slot: start after it.
      const before = this.slotReads[slot] ?? Promise.resolve();
      const buf = this.slots[slot];
      read = before.then(
        () => this.readExactly(start, len, buf),
        () => this.readExactly(start, len, buf),
      );
      this.slotReads[slot] = read.catch(() => undefined);
    }
    this.cache.set(blockNo, { read, slot });
    return read;
  }

  /** Reads [off, off + len) into the start of `buf` (at least len bytes); a view of exactly len bytes. */
  private async readExactly(off: number, len: number, buf: Buffer): Promise<Buffer> {
    let done = 0;
    while (done < len) {
      const { bytesRead } = await this.fh.read(buf, done, len - done, off + done);
      if (bytesRead === 0) {
        throw new BboltFormatError(
          `unexpected end of file reading bytes [${off}, +${len}) (the file is shorter than its pages say)`,
        );
      }
      done += bytesRead;
    }
    return buf.length === len ? buf : buf.subarray(0, len);
  }
}
