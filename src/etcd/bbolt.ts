/**
 * Pure parsing helpers for the bbolt on-disk format (etcd's backend store),
 * as written by go.etcd.io/bbolt 1.3.x on little-endian 64-bit machines.
 *
 * Everything here works on Buffers that the caller has already read, and
 * every offset and count taken from the file is checked against the buffer
 * before it is used: a damaged snapshot must turn into a clear
 * `BboltFormatError`, never a RangeError, a huge allocation or a loop.
 *
 * Layout reference (bbolt page.go / meta.go / bucket.go):
 *   page header (16 bytes): id u64 | flags u16 | count u16 | overflow u32
 *   meta (after the header): magic u32 | version u32 | pageSize u32 |
 *     flags u32 | root bucket {root pgid u64, sequence u64} | freelist u64 |
 *     pgid (high-water mark) u64 | txid u64 | checksum u64
 *   branch element (16 bytes): pos u32 | ksize u32 | pgid u64
 *   leaf element (16 bytes):   flags u32 | pos u32 | ksize u32 | vsize u32
 *   `pos` is relative to the element's own offset.
 *   bucket value: root pgid u64 | sequence u64, then, when root == 0 (an
 *   inline bucket), a whole leaf page embedded in the value.
 */
import CRC32C from 'crc-32/crc32c.js';

export const PAGE_HEADER_SIZE = 16;
export const ELEMENT_SIZE = 16; // branch and leaf elements are both 16 bytes
export const BUCKET_HEADER_SIZE = 16;
export const META_SIZE = 64; // meta struct including its checksum
/** The checksum covers the meta struct up to (not including) the checksum field. */
export const META_CHECKSUM_OFFSET = 56;

export const BRANCH_PAGE = 0x01;
export const LEAF_PAGE = 0x02;
export const META_PAGE = 0x04;
export const FREELIST_PAGE = 0x10;
export const BUCKET_LEAF_FLAG = 0x01;

export const MAGIC = 0xed0cdaed;
export const VERSION = 2;

/** bbolt writes this in meta.freelist when the freelist is not persisted (NoFreelistSync). */
export const PGID_NO_FREELIST = Number.POSITIVE_INFINITY;

/** Page sizes we accept: bbolt uses the OS page size (4 KiB, 16 KiB, 64 KiB); it probes up to 16 MiB. */
export const MIN_PAGE_SIZE = 512;
export const MAX_PAGE_SIZE = 1 << 24;

/** A structural problem in the file; the caller turns it into BackupError('snapshot-corrupt'). */
export class BboltFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BboltFormatError';
  }
}

function fail(message: string): never {
  throw new BboltFormatError(message);
}

/**
 * Reads a u64 page id as a JS number. Values above 2^53 lose precision, but
 * every page id is compared against a high-water mark bounded by the file
 * size, so an imprecise huge value is still (correctly) out of range.
 * The all-ones value is bbolt's "no freelist" marker and maps to Infinity.
 */
export function readPgid(buf: Buffer, off: number): number {
  const lo = buf.readUInt32LE(off);
  const hi = buf.readUInt32LE(off + 4);
  if (lo === 0xffffffff && hi === 0xffffffff) return PGID_NO_FREELIST;
  return hi * 0x1_0000_0000 + lo;
}

const FNV64_OFFSET = 0xcbf29ce484222325n;
const FNV64_PRIME = 0x100000001b3n;
const U64 = (1n << 64n) - 1n;

/** FNV-1a 64-bit (Go's hash/fnv New64a), used by bbolt for the meta checksum. */
export function fnv1a64(data: Uint8Array): bigint {
  let h = FNV64_OFFSET;
  for (let i = 0; i < data.length; i++) {
    h ^= BigInt(data[i]!);
    h = (h * FNV64_PRIME) & U64;
  }
  return h;
}

/**
 * CRC-32C (Castagnoli) continuing from `seed` (the unsigned result of a
 * previous call, 0 to start), returned unsigned. Chaining calls over
 * consecutive pieces equals one call over their concatenation, which is how
 * Go's streaming hash/crc32 behaves in etcd's snapshot status.
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  return CRC32C.buf(data, seed | 0) >>> 0;
}

export interface PageHeader {
  id: number;
  flags: number;
  count: number;
  overflow: number;
}

export function readPageHeader(buf: Buffer, off = 0): PageHeader {
  if (off < 0 || off + PAGE_HEADER_SIZE > buf.length) {
    fail(`page header at offset ${off} lies beyond the ${buf.length}-byte buffer`);
  }
  return {
    id: readPgid(buf, off),
    flags: buf.readUInt16LE(off + 8),
    count: buf.readUInt16LE(off + 10),
    overflow: buf.readUInt32LE(off + 12),
  };
}

export interface Meta {
  pageSize: number;
  flags: number;
  /** Root page of the root bucket (the bucket holding etcd's top-level buckets). */
  root: number;
  sequence: bigint;
  /** Freelist page id, or PGID_NO_FREELIST. */
  freelist: number;
  /** High-water mark: the number of pages in use; tx.Size() = pgid * pageSize. */
  pgid: number;
  txid: bigint;
  checksum: bigint;
}

export type MetaCheck = { ok: true; meta: Meta } | { ok: false; reason: string };

/**
 * Validates the meta page `expectedId` (0 or 1) whose first byte is at `off`.
 * bbolt's Meta.Validate checks magic, version and checksum; we additionally
 * require the page header to say "meta page `expectedId`" and a sane page
 * size, which every file written by bbolt satisfies (WriteTo and writeMeta
 * build the page from a zeroed buffer with exactly those values).
 */
export function checkMetaPage(buf: Buffer, expectedId: number, off = 0): MetaCheck {
  if (off < 0 || off + PAGE_HEADER_SIZE + META_SIZE > buf.length) {
    return { ok: false, reason: `meta page ${expectedId} is cut short (file too small)` };
  }
  const hdr = readPageHeader(buf, off);
  const m = off + PAGE_HEADER_SIZE;
  const magic = buf.readUInt32LE(m);
  if (magic !== MAGIC) {
    return { ok: false, reason: `meta page ${expectedId}: bad magic 0x${magic.toString(16)}` };
  }
  const version = buf.readUInt32LE(m + 4);
  if (version !== VERSION) {
    return { ok: false, reason: `meta page ${expectedId}: unsupported version ${version}` };
  }
  const checksum = buf.readBigUInt64LE(m + META_CHECKSUM_OFFSET);
  const sum = fnv1a64(buf.subarray(m, m + META_CHECKSUM_OFFSET));
  if (checksum !== sum) {
    return {
      ok: false,
      reason: `meta page ${expectedId}: checksum mismatch (stored 0x${checksum.toString(16)}, computed 0x${sum.toString(16)})`,
    };
  }
  if (hdr.flags !== META_PAGE) {
    return { ok: false, reason: `meta page ${expectedId}: page flags 0x${hdr.flags.toString(16)} are not 0x04` };
  }
  if (hdr.id !== expectedId) {
    return { ok: false, reason: `meta page ${expectedId}: page header says id ${hdr.id}` };
  }
  const pageSize = buf.readUInt32LE(m + 8);
  if (pageSize < MIN_PAGE_SIZE || pageSize > MAX_PAGE_SIZE || (pageSize & (pageSize - 1)) !== 0) {
    return { ok: false, reason: `meta page ${expectedId}: implausible page size ${pageSize}` };
  }
  return {
    ok: true,
    meta: {
      pageSize,
      flags: buf.readUInt32LE(m + 12),
      root: readPgid(buf, m + 16),
      sequence: buf.readBigUInt64LE(m + 24),
      freelist: readPgid(buf, m + 32),
      pgid: readPgid(buf, m + 40),
      txid: buf.readBigUInt64LE(m + 48),
      checksum,
    },
  };
}

/**
 * bbolt's db.meta(): the valid meta with the higher txid; the other one is
 * the previous transaction (or, in a `snapshot save` file, the same state
 * with txid - 1). Throws when neither is valid.
 */
export function chooseMeta(m0: MetaCheck, m1: MetaCheck): Meta {
  if (m0.ok && m1.ok) return m1.meta.txid > m0.meta.txid ? m1.meta : m0.meta;
  if (m0.ok) return m0.meta;
  if (m1.ok) return m1.meta;
  return fail(`both meta pages are invalid: ${m0.reason}; ${m1.reason}`);
}

/**
 * Page ids listed in a freelist page `buf` (header at offset 0, overflow
 * pages included). count == 0xFFFF means the real count is the first u64.
 */
export function readFreelistIds(buf: Buffer, pgid: number): number[] {
  const hdr = readPageHeader(buf);
  if (hdr.flags !== FREELIST_PAGE) {
    fail(`page ${pgid} should be the freelist but has flags 0x${hdr.flags.toString(16)}`);
  }
  let idx = 0;
  let count = hdr.count;
  if (count === 0xffff) {
    if (PAGE_HEADER_SIZE + 8 > buf.length) fail(`freelist page ${pgid}: count word beyond the page`);
    count = readPgid(buf, PAGE_HEADER_SIZE);
    idx = 1;
  }
  const end = PAGE_HEADER_SIZE + (idx + count) * 8;
  if (!Number.isFinite(end) || end > buf.length) {
    fail(`freelist page ${pgid}: ${count} ids do not fit in its ${buf.length} bytes`);
  }
  const ids = new Array<number>(count);
  for (let i = 0; i < count; i++) ids[i] = readPgid(buf, PAGE_HEADER_SIZE + (idx + i) * 8);
  return ids;
}

/** Children of a branch page, bounds-checked. */
export function readBranchChildren(buf: Buffer, pgid: number): number[] {
  const hdr = readPageHeader(buf);
  if (PAGE_HEADER_SIZE + hdr.count * ELEMENT_SIZE > buf.length) {
    fail(`branch page ${pgid}: ${hdr.count} elements do not fit in ${buf.length} bytes`);
  }
  const out = new Array<number>(hdr.count);
  for (let i = 0; i < hdr.count; i++) {
    const e = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
    const pos = buf.readUInt32LE(e);
    const ksize = buf.readUInt32LE(e + 4);
    if (e + pos + ksize > buf.length) {
      fail(`branch page ${pgid}: element ${i} key [${e + pos}, +${ksize}) lies outside the page`);
    }
    out[i] = readPgid(buf, e + 8);
  }
  return out;
}

export interface LeafElement {
  isBucket: boolean;
  key: Buffer;
  value: Buffer;
}

/**
 * Elements of a leaf page (a real page, or the page embedded in an inline
 * bucket's value), bounds-checked. Keys and values are views into `buf`.
 * Empty keys are rejected: bbolt's Put and CreateBucket refuse them.
 */
export function readLeafElements(buf: Buffer, where: string): LeafElement[] {
  const hdr = readPageHeader(buf);
  if (PAGE_HEADER_SIZE + hdr.count * ELEMENT_SIZE > buf.length) {
    fail(`${where}: ${hdr.count} leaf elements do not fit in ${buf.length} bytes`);
  }
  const out = new Array<LeafElement>(hdr.count);
  for (let i = 0; i < hdr.count; i++) {
    const e = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
    const flags = buf.readUInt32LE(e);
    const pos = buf.readUInt32LE(e + 4);
    const ksize = buf.readUInt32LE(e + 8);
    const vsize = buf.readUInt32LE(e + 12);
    if (flags !== 0 && flags !== BUCKET_LEAF_FLAG) {
      fail(`${where}: element ${i} has unknown flags 0x${flags.toString(16)}`);
    }
    if (ksize === 0) fail(`${where}: element ${i} has an empty key`);
    const k = e + pos;
    if (k + ksize + vsize > buf.length) {
      fail(`${where}: element ${i} key/value [${k}, +${ksize}+${vsize}) lies outside the ${buf.length}-byte page`);
    }
    out[i] = {
      isBucket: flags === BUCKET_LEAF_FLAG,
      key: buf.subarray(k, k + ksize),
      value: buf.subarray(k + ksize, k + ksize + vsize),
    };
  }
  return out;
}

/** A bucket value: either a root page id, or (root == 0) an inline leaf page. */
export type BucketRef = { root: number; inline?: undefined } | { root: 0; inline: Buffer };

export function parseBucketValue(value: Buffer, where: string): BucketRef {
  if (value.length < BUCKET_HEADER_SIZE) {
    fail(`${where}: bucket value is ${value.length} bytes, shorter than the 16-byte bucket header`);
  }
  const root = readPgid(value, 0);
  if (root !== 0) return { root };
  const inline = value.subarray(BUCKET_HEADER_SIZE);
  if (inline.length < PAGE_HEADER_SIZE) fail(`${where}: inline bucket has no room for its page header`);
  const flags = inline.readUInt16LE(8);
  if (flags !== LEAF_PAGE) fail(`${where}: inline bucket page has flags 0x${flags.toString(16)}, not leaf`);
  return { root: 0, inline };
}

/** etcd's bytesToRev(k).main: the first 8 bytes of a "key" bucket key, big-endian int64. */
export function revisionMain(key: Buffer): number {
  if (key.length < 8) fail(`key bucket key of ${key.length} bytes is too short for a revision`);
  return Number(key.readBigInt64BE(0));
}
