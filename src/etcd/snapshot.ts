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
import { open, type FileHandle } from 'node:fs/promises';
import { BackupError } from '../errors.js';
import {
  BboltFormatError,
  BRANCH_PAGE,
  LEAF_PAGE,
  PGID_NO_FREELIST,
  checkMetaPage,
  chooseMeta,
  crc32c,
  parseBucketValue,
  readBranchChildren,
  readFreelistIds,
  readLeafElements,
  readPageHeader,
  revisionMain,
  type BucketRef,
  type Meta,
  type MetaCheck,
} from './bbolt.js';
import { PageReader } from './page-reader.js';

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

const SHA256_SIZE = 32;
const HASH_READ_BYTES = 4 * 1024 * 1024;
/** Deepest B+tree / bucket nesting we follow; real trees are a handful of levels deep. */
const MAX_DEPTH = 64;

/**
 * Whether the file carries etcd's sha256 trailer and whether it matches.
 * 'missing' is not corruption by itself: a raw bbolt file copied from
 * member/snap/db has none. Reads the file in fixed-size chunks.
 */
export async function verifySnapshotTrailer(path: string): Promise<TrailerVerdict> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (size % 512 !== SHA256_SIZE) return 'missing';
    const dataLen = size - SHA256_SIZE;
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(Math.min(HASH_READ_BYTES, Math.max(dataLen, SHA256_SIZE)));
    let off = 0;
    while (off < dataLen) {
      const want = Math.min(buf.length, dataLen - off);
      const { bytesRead } = await fh.read(buf, 0, want, off);
      if (bytesRead === 0) {
        throw new BackupError('snapshot-corrupt', `${path}: file shrank while its sha256 was being computed`);
      }
      hash.update(buf.subarray(0, bytesRead)); // synchronous: buf can be reused
      off += bytesRead;
    }
    const trailer = Buffer.alloc(SHA256_SIZE);
    const { bytesRead } = await fh.read(trailer, 0, SHA256_SIZE, dataLen);
    if (bytesRead !== SHA256_SIZE) {
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
export async function inspectSnapshot(path: string): Promise<SnapshotReport> {
  // The sha256 pass is sequential I/O plus hashing; the walk is mostly
  // positioned reads: running both at once overlaps them.
  const [trailer, status] = await Promise.allSettled([verifySnapshotTrailer(path), readSnapshotStatus(path)]);
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

async function readAt(fh: FileHandle, off: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(Math.max(0, len));
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, off + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

/**
 * Finds the page size the way bbolt's getPageSize does: from meta page 0
 * when it is valid, else by probing for a valid meta page 1 at 1 KiB << i.
 */
async function findPageSize(fh: FileHandle, dataLen: number): Promise<number> {
  const head = await readAt(fh, 0, Math.min(dataLen, 4096));
  const m0 = checkMetaPage(head, 0);
  if (m0.ok) return m0.meta.pageSize;
  for (let i = 0; i <= 14; i++) {
    const pos = 1024 << i;
    if (pos >= dataLen - 1024) break;
    const m1 = checkMetaPage(await readAt(fh, pos, Math.min(4096, dataLen - pos)), 1);
    if (m1.ok && m1.meta.pageSize === pos) return pos;
  }
  return corrupt(`no valid meta page: ${m0.reason}; no valid meta page 1 found either`);
}

async function readMeta(fh: FileHandle, pageSize: number, id: 0 | 1): Promise<MetaCheck> {
  const buf = await readAt(fh, id * pageSize, Math.min(pageSize, 4096));
  const m = checkMetaPage(buf, id);
  if (m.ok && m.meta.pageSize !== pageSize) {
    return { ok: false, reason: `meta page ${id}: page size ${m.meta.pageSize} differs from ${pageSize}` };
  }
  return m;
}

const REACHABLE = 1;
const FREE = 2;

class Walker {
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

  private markReachable(id: number, overflow: number, what: string): void {
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

  /**
   * Calls `fn` for each entry of a bucket in key order, checking every page
   * on the way. `fn` may return a promise (to descend into a nested bucket).
   */
  async forEach(
    bucket: BucketRef,
    where: string,
    depth: number,
    fn: (key: Buffer, value: Buffer, isBucket: boolean) => void | Promise<void>,
  ): Promise<void> {
    if (depth > MAX_DEPTH) corrupt(`${where}: buckets nested deeper than ${MAX_DEPTH}`);
    const order = { prev: undefined as Buffer | undefined };
    if (bucket.inline) {
      await this.leafEntries(bucket.inline, `${where} (inline)`, order, fn);
    } else {
      if (bucket.root < 2) corrupt(`${where}: root page id ${bucket.root} points at a meta page`);
      await this.walkPage(bucket.root, where, 0, order, fn);
    }
  }

  private async walkPage(
    id: number,
    where: string,
    depth: number,
    order: { prev: Buffer | undefined },
    fn: (key: Buffer, value: Buffer, isBucket: boolean) => void | Promise<void>,
  ): Promise<void> {
    if (depth > MAX_DEPTH) corrupt(`${where}: B+tree deeper than ${MAX_DEPTH} levels at page ${id}`);
    const buf = await this.reader.page(id); // borrowed: valid until the next page() call
    const hdr = readPageHeader(buf);
    this.markReachable(id, hdr.overflow, where);
    if (hdr.flags === BRANCH_PAGE) {
      for (const child of readBranchChildren(buf, id)) {
        await this.walkPage(child, where, depth + 1, order, fn);
      }
    } else if (hdr.flags === LEAF_PAGE) {
      await this.leafEntries(buf, `${where} page ${id}`, order, fn);
    } else {
      corrupt(`${where}: page ${id} has flags 0x${hdr.flags.toString(16)}, expected a branch or leaf page`);
    }
  }

  private async leafEntries(
    buf: Buffer,
    where: string,
    order: { prev: Buffer | undefined },
    fn: (key: Buffer, value: Buffer, isBucket: boolean) => void | Promise<void>,
  ): Promise<void> {
    let elements = readLeafElements(buf, where);
    // A nested bucket is walked (more page() calls) while this leaf's later
    // entries are still to come: keep a copy of a borrowed page that has one.
    if (elements.some((el) => el.isBucket)) elements = readLeafElements(Buffer.from(buf), where);
    for (const el of elements) {
      if (order.prev !== undefined && Buffer.compare(order.prev, el.key) >= 0) {
        corrupt(`${where}: keys out of order (${hexPreview(order.prev)} then ${hexPreview(el.key)})`);
      }
      order.prev = el.key;
      const r = fn(el.key, el.value, el.isBucket);
      if (r) await r;
    }
    // The next page compares against this page's last key: it must outlive the borrowed page.
    if (order.prev !== undefined) order.prev = Buffer.from(order.prev);
  }

  /** Checks a nested bucket and everything below it, hashing nothing (tx.Check recurses; Status does not). */
  async checkNested(value: Buffer, where: string, depth: number): Promise<void> {
    await this.forEach(parseBucketValue(value, where), where, depth, (k, v, isBucket) =>
      isBucket ? this.checkNested(v, `${where}/${printable(k)}`, depth + 1) : undefined,
    );
  }
}

async function readSnapshotStatus(path: string): Promise<SnapshotStatus> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const hasTrailer = size % 512 === SHA256_SIZE;
    const dataLen = hasTrailer ? size - SHA256_SIZE : size;
    if (dataLen < 1024) corrupt(`file of ${size} bytes is too small to hold a bbolt database`);

    const pageSize = await findPageSize(fh, dataLen);
    if (!hasTrailer && size % pageSize !== 0) {
      corrupt(
        `file size ${size} is neither a multiple of the ${pageSize}-byte page size (a raw bbolt file) ` +
          `nor 32 bytes over a multiple of 512 (a snapshot with its sha256 trailer): truncated or padded`,
      );
    }
    if (dataLen < 2 * pageSize) corrupt(`file of ${size} bytes is too small for two ${pageSize}-byte meta pages`);
    const meta: Meta = chooseMeta(await readMeta(fh, pageSize, 0), await readMeta(fh, pageSize, 1));

    const highWater = meta.pgid;
    if (!Number.isSafeInteger(highWater) || highWater < 3) {
      corrupt(`meta high-water mark ${highWater} is implausible`);
    }
    const totalSize = highWater * pageSize;
    if (totalSize > dataLen) {
      corrupt(
        `meta says the database has ${highWater} pages (${totalSize} bytes) but the file holds only ` +
          `${dataLen} bytes of data: truncated`,
      );
    }
    if (meta.root < 2 || meta.root >= highWater) {
      corrupt(`root bucket page ${meta.root} is outside [2, ${highWater})`);
    }

    const walker = new Walker(new PageReader(fh, pageSize, highWater, { borrowed: true }), highWater);
    walker.markMeta();
    const haveFreelist = meta.freelist !== PGID_NO_FREELIST;
    if (haveFreelist) await walker.loadFreelist(meta.freelist);

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
    if (haveFreelist) walker.checkAllAccountedFor();
    return { hash, revision, totalKey, totalSize };
  } finally {
    await fh.close();
  }
}

function printable(b: Buffer): string {
  const s = b.toString('utf8');
  return /^[\x20-\x7e]{1,64}$/.test(s) ? JSON.stringify(s) : `0x${hexPreview(b)}`;
}

function hexPreview(b: Buffer): string {
  return b.length > 24 ? `${b.subarray(0, 24).toString('hex')}...` : b.toString('hex');
}
