/**
 * Native verification and inspection of etcd snapshot files, without etcdctl.
 *
 * `etcdctl snapshot save` writes the backend's bbolt file followed by a
 * 32-byte sha256 of it, so that (size % 512 == 32). `inspectSnapshot`
 * checks that trailer (streamed: memory stays flat for multi-GiB files) and,
 * independently, walks the bbolt B+tree to compute exactly what
 * `etcdctl snapshot status` prints (etcd 3.4 clientv3/snapshot Status, the
 * same code as etcdutl/snapshot in 3.5):
 *
 *   - hash:      CRC-32C over, for each top-level bucket in key order, the
 *                bucket name then each key and value of that bucket
 *                (a nested bucket contributes its key only: bbolt's ForEach
 *                hands it over with a nil value);
 *   - revision:  bytesToRev(k).main of the last key of the "key" bucket;
 *   - totalKey:  number of entries over all top-level buckets;
 *   - totalSize: tx.Size() = meta.pgid (high-water mark) * page size.
 *
 * etcd's Status runs bbolt's tx.Check() first and refuses the file when it
 * reports anything; the walk performs the same checks (every page below the
 * high-water mark is reachable exactly once or free, no reachable page is
 * free, tree pages are branch/leaf pages) plus stricter structural ones
 * (page headers carry their own id, offsets and counts lie inside their
 * pages, keys within a bucket are strictly increasing). Anything wrong
 * becomes BackupError('snapshot-corrupt').
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { BackupError } from '../errors.js';
import { BboltFormatError, PGID_NO_FREELIST, crc32c, parseBucketValue, readFreelistIds, readPageHeader, revisionMain } from './bbolt.js';
import { PageReader } from './page-reader.js';
import { BucketWalker, SHA256_TRAILER_SIZE, openBbolt, printable } from './walker.js';

export type TrailerVerdict = 'ok' | 'missing' | 'mismatch';

export interface SnapshotStatus {
  hash: number;
  revision: number;
  totalKey: number;
  totalSize: number;
}

export interface SnapshotReport extends SnapshotStatus {
  trailer: TrailerVerdict;
}

const HASH_READ_BYTES = 4 * 1024 * 1024;

/**
 * Whether the file carries etcd's sha256 trailer and whether it matches.
 * 'missing' is not corruption by itself: a raw bbolt file copied from
 * member/snap/db has none. Reads the file in fixed-size chunks.
 */
export async function verifySnapshotTrailer(path: string, onProgress?: (bytes: number) => void): Promise<TrailerVerdict> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (size % 512 !== SHA256_TRAILER_SIZE) return 'missing';
    const dataLen = size - SHA256_TRAILER_SIZE;
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(Math.min(HASH_READ_BYTES, Math.max(dataLen, SHA256_TRAILER_SIZE)));
    let off = 0;
    while (off < dataLen) {
      const want = Math.min(buf.length, dataLen - off);
      const { bytesRead } = await fh.read(buf, 0, want, off);
      if (bytesRead === 0) {
        throw new BackupError('snapshot-corrupt', `${path}: file shrank while its sha256 was being computed`);
      }
      hash.update(buf.subarray(0, bytesRead)); // synchronous: buf can be reused
      off += bytesRead;
      onProgress?.(bytesRead);
    }
    const trailer = Buffer.alloc(SHA256_TRAILER_SIZE);
    const { bytesRead } = await fh.read(trailer, 0, SHA256_TRAILER_SIZE, dataLen);
    if (bytesRead !== SHA256_TRAILER_SIZE) {
      throw new BackupError('snapshot-corrupt', `${path}: file shrank while its sha256 trailer was being read`);
    }
    return hash.digest().equals(trailer) ? 'ok' : 'mismatch';
  } finally {
    await fh.close();
  }
}

/**
 * What `etcdctl snapshot status` reports, plus the trailer verdict.
 * Throws BackupError('snapshot-corrupt') when the bbolt structure is
 * damaged; a trailer 'mismatch' on an otherwise readable file is only
 * reported, the caller decides. File-system errors (ENOENT, EACCES, ...)
 * are passed through unchanged.
 */
export async function inspectSnapshot(path: string, opts: { /** Bytes of the sha256 pass (the whole file): a live progress line. */ onProgress?: (bytes: number) => void } = {}): Promise<SnapshotReport> {
  // The sha256 pass is sequential I/O plus hashing; the walk is mostly
  // positioned reads: running both at once overlaps them.
  const [trailer, status] = await Promise.allSettled([verifySnapshotTrailer(path, opts.onProgress), readSnapshotStatus(path)]);
  if (status.status === 'rejected') throw asCorrupt(path, status.reason);
  if (trailer.status === 'rejected') throw asCorrupt(path, trailer.reason);
  return { ...status.value, trailer: trailer.value };
}

function asCorrupt(path: string, err: unknown): unknown {
  if (err instanceof BboltFormatError) {
    return new BackupError('snapshot-corrupt', `snapshot ${path} is corrupt: ${err.message}`, { cause: err });
  }
  return err;
}

function corrupt(message: string): never {
  throw new BboltFormatError(message);
}

const REACHABLE = 1;
const FREE = 2;

/** bbolt's tx.Check bookkeeping: every page below the high-water mark is reachable exactly once or free. */
class PageAccounting {
  /** Per page below the high-water mark: REACHABLE and/or FREE bits. */
  private readonly state: Uint8Array;

  constructor(
    private readonly reader: PageReader,
    private readonly highWater: number,
  ) {
    this.state = new Uint8Array(highWater);
  }

  markMeta(): void {
    this.state[0] |= REACHABLE;
    this.state[1] |= REACHABLE;
  }

  /** Loads the freelist page (bbolt's tx.Check "already freed" and freelist reachability). */
  async loadFreelist(freelist: number): Promise<void> {
    if (freelist < 2 || freelist >= this.highWater) {
      corrupt(`freelist page id ${freelist} is outside [2, ${this.highWater})`);
    }
    const buf = await this.reader.page(freelist);
    const ids = readFreelistIds(buf, freelist);
    this.markReachable(freelist, readPageHeader(buf).overflow, 'the freelist');
    for (const id of ids) {
      // bbolt ignores ids at or beyond the high-water mark; so do we.
      if (!(id < this.highWater)) continue;
      if (this.state[id] & FREE) corrupt(`page ${id} is on the freelist twice`);
      this.state[id] |= FREE;
    }
  }

  markReachable(id: number, overflow: number, what: string): void {
    for (let i = 0; i <= overflow; i++) {
      const p = id + i;
      const s = this.state[p];
      if (s & REACHABLE) corrupt(`page ${p} (${what}) is referenced more than once (a cycle or a shared page)`);
      if (s & FREE) corrupt(`page ${p} (${what}) is in use but also on the freelist`);
      this.state[p] = s | REACHABLE;
    }
  }

  /** bbolt's final check: every page below the high-water mark is reachable or free. */
  checkAllAccountedFor(): void {
    for (let i = 0; i < this.highWater; i++) {
      if (this.state[i] === 0) corrupt(`page ${i} is neither reachable nor on the freelist`);
    }
  }
}

async function readSnapshotStatus(path: string): Promise<SnapshotStatus> {
  const fh = await open(path, 'r');
  try {
    const { pageSize, meta, highWater, totalSize } = await openBbolt(fh);
    const reader = new PageReader(fh, pageSize, highWater, { borrowed: true });
    const pages = new PageAccounting(reader, highWater);
    const walker = new BucketWalker(reader, { onPage: (id, overflow, where) => pages.markReachable(id, overflow, where) });
    pages.markMeta();
    const haveFreelist = meta.freelist !== PGID_NO_FREELIST;
    if (haveFreelist) await pages.loadFreelist(meta.freelist);

    let hash = 0;
    let revision = 0;
    let totalKey = 0;
    await walker.forEach({ root: meta.root }, 'root bucket', 0, async (name, value, isBucket) => {
      if (!isBucket) corrupt(`top-level key ${printable(name)} is not a bucket`);
      const where = `bucket ${printable(name)}`;
      hash = crc32c(name, hash);
      const isKeyBucket = name.length === 3 && name.toString('latin1') === 'key';
      await walker.forEach(parseBucketValue(value, where), where, 1, (k, v, isSub) => {
        hash = crc32c(k, hash);
        totalKey++;
        if (isKeyBucket) revision = revisionMain(k);
        if (isSub) return walker.checkNested(v, `${where}/${printable(k)}`, 2);
        hash = crc32c(v, hash);
        return undefined;
      });
    });
    // Without a persisted freelist bbolt rebuilds it as "every unreachable
    // page", so there is nothing left to cross-check.
    if (haveFreelist) pages.checkAllAccountedFor();
    return { hash, revision, totalKey, totalSize };
  } finally {
    await fh.close();
  }
}
