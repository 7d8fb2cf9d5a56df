/**
 * Reading a bbolt file's B+tree: finding its page size and meta page, then
 * walking its buckets in key order, checking every page on the way. Shared
 * by the snapshot check (snapshot.ts: what `etcdctl snapshot status` prints,
 * with bbolt's tx.Check page accounting on top) and the keyspace reading
 * (keyspace.ts: what a restored etcd must serve).
 */
import type { FileHandle } from 'node:fs/promises';
import {
  BboltFormatError,
  BRANCH_PAGE,
  LEAF_PAGE,
  checkMetaPage,
  chooseMeta,
  parseBucketValue,
  readBranchChildren,
  readLeafElements,
  readPageHeader,
  type BucketRef,
  type Meta,
  type MetaCheck,
} from './bbolt.js';
import type { PageReader } from './page-reader.js';

/** `etcdctl snapshot save` appends a sha256 of the bbolt file, so that (size % 512 == 32). */
export const SHA256_TRAILER_SIZE = 32;
/** Deepest B+tree / bucket nesting we follow; real trees are a handful of levels deep. */
const MAX_DEPTH = 64;

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

/** Where a bbolt file's tree starts, from its meta pages. */
export interface BboltFile {
  pageSize: number;
  /** The meta bbolt would use (db.meta()). */
  meta: Meta;
  /** Pages [0, highWater) exist (meta.pgid). */
  highWater: number;
  /** tx.Size(): highWater * pageSize. */
  totalSize: number;
}

/**
 * Finds the page size and the current meta page of a bbolt file (a snapshot
 * with or without its sha256 trailer) and checks that the file holds every
 * page the meta says it has. Throws BboltFormatError.
 */
export async function openBbolt(fh: FileHandle): Promise<BboltFile> {
  const { size } = await fh.stat();
  const hasTrailer = size % 512 === SHA256_TRAILER_SIZE;
  const dataLen = hasTrailer ? size - SHA256_TRAILER_SIZE : size;
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
  return { pageSize, meta, highWater, totalSize };
}

export type EntryFn = (key: Buffer, value: Buffer, isBucket: boolean) => void | Promise<void>;

export interface WalkerOptions {
  /** Called for every tree page reached, before its entries (snapshot.ts accounts for pages with it). */
  onPage?: (id: number, overflow: number, where: string) => void;
  /** Looked at every 256 pages: a walk nobody waits for any more stops with Error('aborted'). */
  signal?: AbortSignal;
}

/**
 * Walks buckets through a PageReader, which may hand out borrowed pages: the
 * keys and values given to `fn` are valid only until `fn` returns (or the
 * promise it returns settles); a caller that keeps one copies it.
 */
export class BucketWalker {
  private pages = 0;

  constructor(
    private readonly reader: PageReader,
    private readonly opts: WalkerOptions = {},
  ) {}

  /**
   * Calls `fn` for each entry of a bucket in key order, checking every page
   * on the way. `fn` may return a promise (to descend into a nested bucket).
   */
  async forEach(bucket: BucketRef, where: string, depth: number, fn: EntryFn): Promise<void> {
    if (depth > MAX_DEPTH) corrupt(`${where}: buckets nested deeper than ${MAX_DEPTH}`);
    const order = { prev: undefined as Buffer | undefined };
    if (bucket.inline) {
      await this.leafEntries(bucket.inline, `${where} (inline)`, order, fn);
    } else {
      if (bucket.root < 2) corrupt(`${where}: root page id ${bucket.root} points at a meta page`);
      await this.walkPage(bucket.root, where, 0, order, fn);
    }
  }

  private async walkPage(id: number, where: string, depth: number, order: { prev: Buffer | undefined }, fn: EntryFn): Promise<void> {
    if (depth > MAX_DEPTH) corrupt(`${where}: B+tree deeper than ${MAX_DEPTH} levels at page ${id}`);
    if ((++this.pages & 0xff) === 0 && this.opts.signal?.aborted) throw new Error('aborted');
    const buf = await this.reader.page(id); // borrowed: valid until the next page() call
    const hdr = readPageHeader(buf);
    this.opts.onPage?.(id, hdr.overflow, where);
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

  private async leafEntries(buf: Buffer, where: string, order: { prev: Buffer | undefined }, fn: EntryFn): Promise<void> {
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

/** A bucket or key name for a message: quoted when printable, else (a prefix of) its hex. */
export function printable(b: Buffer): string {
  const s = b.toString('utf8');
  return /^[\x20-\x7e]{1,64}$/.test(s) ? JSON.stringify(s) : `0x${hexPreview(b)}`;
}

function hexPreview(b: Buffer): string {
  return b.length > 24 ? `${b.subarray(0, 24).toString('hex')}...` : b.toString('hex');
}
