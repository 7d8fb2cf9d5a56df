/**
 * What an etcd restored from a snapshot serves, read natively from the
 * snapshot file: its revision, the number of keys a client sees, and the
 * answer of HashKV (`etcdctl endpoint hashkv --rev R`, a CRC-32C over the
 * "key" bucket entries that survive at revision R). The restore drill
 * (src/drill/) compares a restored etcd against it.
 *
 * The walk is the snapshot check's (walker.ts) through borrowed pages: keys
 * and values are valid only during the callback, so everything kept across
 * callbacks is a copy (strings, numbers, copied bucket refs).
 */
import { open } from 'node:fs/promises';
import { BboltFormatError, crc32c, parseBucketValue, revisionMain, type BucketRef } from './bbolt.js';
import { PageReader } from './page-reader.js';
import { BucketWalker, openBbolt } from './walker.js';

/** What the snapshot says a restored etcd must serve. */
export interface KeyspaceSummary {
  /** Entries per top-level bucket; they sum to `snapshot status` totalKey. */
  buckets: Record<string, number>;
  /** Main revision of the last key bucket entry (= `snapshot status` revision; 0 for an empty store). */
  lastRevision: number;
  /** From the meta bucket; -1 when there is none (never compacted: etcd's own convention). */
  finishedCompactRevision: number;
  scheduledCompactRevision: number;
  /** The revision etcd serves after a restore: max(1, lastRevision, finished compaction). */
  servedRevision: number;
  /** etcd's compaction revision after a restore (a scheduled, unfinished compaction is resumed); -1: never compacted. */
  compactRevision: number;
  /** Keys a client sees at servedRevision. */
  liveKeys: number;
  /** What HashKV at servedRevision answers (CRC-32C over "key" and the entries that survive). */
  hashKV: number;
}

const TOMBSTONE = 0x74; // 't'
/** HashKV starts with the key bucket's name. */
const KEY_BUCKET = Buffer.from('key');

export function isTombstone(revKey: Buffer): boolean {
  return revKey.length === 18 && revKey[17] === TOMBSTONE;
}

/**
 * Walks the fields of an mvccpb.KeyValue, bounds-checked: a varint field's
 * number, or a length-delimited field's bytes (the only wire types that
 * occur). `visit` returns true to stop early.
 */
export function walkKeyValueFields(v: Buffer, visit: (field: number, value: number | Buffer) => boolean | void): void {
  let i = 0;
  const varint = (): number => {
    let r = 0;
    let mul = 1;
    for (let n = 0; n < 10; n++) {
      if (i >= v.length) throw new BboltFormatError('mvccpb.KeyValue: truncated varint');
      const b = v[i++]!;
      r += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return r;
      mul *= 128;
    }
    throw new BboltFormatError('mvccpb.KeyValue: varint longer than 10 bytes');
  };
  while (i < v.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      if (visit(field, varint())) return;
    } else if (wire === 2) {
      const n = varint();
      if (i + n > v.length) throw new BboltFormatError('mvccpb.KeyValue: field runs past the value');
      const bytes = v.subarray(i, i + n);
      i += n;
      if (visit(field, bytes)) return;
    } else {
      throw new BboltFormatError(`mvccpb.KeyValue: unexpected wire type ${wire} for field ${field}`);
    }
  }
}

/** Field 1 (`key`) of an mvccpb.KeyValue. */
export function keyOfKeyValue(v: Buffer): Buffer {
  let key: Buffer | undefined;
  walkKeyValueFields(v, (field, value) => {
    if (field !== 1 || typeof value === 'number') return false;
    key = value;
    return true;
  });
  if (!key) throw new BboltFormatError('mvccpb.KeyValue without a key');
  return key;
}

/** The top-level buckets by name; the refs are copies (an inline bucket's page outlives the walk). */
export async function topBuckets(walker: BucketWalker, root: number): Promise<Map<string, BucketRef>> {
  const tops = new Map<string, BucketRef>();
  await walker.forEach({ root }, 'root bucket', 0, (name, value, isBucket) => {
    if (!isBucket) throw new BboltFormatError(`top-level key ${name.toString('latin1')} is not a bucket`);
    tops.set(name.toString('latin1'), parseBucketValue(Buffer.from(value), `bucket ${name.toString('latin1')}`));
  });
  return tops;
}

/** The finished and scheduled compaction revisions from the meta bucket; -1 for none. */
async function compactionMarks(walker: BucketWalker, metaRef: BucketRef | undefined): Promise<{ finished: number; scheduled: number }> {
  let finished = -1;
  let scheduled = -1;
  if (metaRef) {
    await walker.forEach(metaRef, 'bucket meta', 1, (k, v, isSub) => {
      if (isSub) return;
      const key = k.toString('latin1');
      if (key === 'finishedCompactRev' && v.length >= 8) finished = revisionMain(v);
      if (key === 'scheduledCompactRev' && v.length >= 8) scheduled = revisionMain(v);
    });
  }
  return { finished, scheduled };
}

/** Pass 1 over every bucket: entry counts, the key bucket's last revision, and the keys written since the finished compaction. */
interface KeyHistory {
  buckets: Record<string, number>;
  lastRevision: number;
  /** Keys written above the tentative compaction revision: is its latest entry a tombstone. */
  later: Map<string, boolean>;
  /** Keys written between the finished and the tentative compaction revision: the revision key of its latest entry. */
  between: Map<string, string>;
}

async function countAndCollect(walker: BucketWalker, tops: Map<string, BucketRef>, finished: number, tentativeC: number): Promise<KeyHistory> {
  const h: KeyHistory = { buckets: {}, lastRevision: 0, later: new Map(), between: new Map() };
  for (const [name, ref] of tops) {
    let n = 0;
    const isKey = name === 'key';
    await walker.forEach(ref, `bucket ${name}`, 1, (k, v, isSub) => {
      n++;
      if (!isKey || isSub) return;
      const r = revisionMain(k);
      h.lastRevision = r;
      if (r <= finished) return;
      const key = keyOfKeyValue(v).toString('latin1');
      if (r > tentativeC) h.later.set(key, isTombstone(k));
      else h.between.set(key, k.toString('latin1'));
    });
    h.buckets[name] = n;
  }
  return h;
}

/**
 * Pass 2 over the key bucket: the live keys at or below C and the hash.
 * Entries above C all count; one at or below C counts when it is its key's
 * latest entry and no tombstone. When no key is live at all, etcd counts
 * every entry: keep that hash too.
 */
async function hashKeyBucket(
  walker: BucketWalker,
  keyRef: BucketRef,
  h: KeyHistory,
  finished: number,
  compactRevision: number,
): Promise<{ liveKeys: number; hashKV: number }> {
  let liveKeys = 0;
  for (const t of h.later.values()) if (!t) liveKeys++;
  const { later, between } = h;
  const needAll = liveKeys === 0;
  let hashKept = crc32c(KEY_BUCKET);
  let hashAll = hashKept;
  const filter = later.size > 0 || between.size > 0;
  await walker.forEach(keyRef, 'bucket key', 1, (k, v, isSub) => {
    if (isSub) return;
    if (needAll) hashAll = crc32c(v, crc32c(k, hashAll));
    const r = revisionMain(k);
    let keep = r > compactRevision;
    if (!keep && !isTombstone(k)) {
      if (!filter) keep = true;
      else {
        const key = keyOfKeyValue(v).toString('latin1');
        keep = !later.has(key) && (r > finished ? between.get(key) === k.toString('latin1') : !between.has(key));
      }
      if (keep) liveKeys++;
    }
    if (keep) hashKept = crc32c(v, crc32c(k, hashKept));
  });
  return { liveKeys, hashKV: liveKeys === 0 ? hashAll : hashKept };
}

/**
 * Reads the snapshot's buckets and computes what a restored etcd must serve:
 * its revision, its live key count, and its HashKV. The HashKV rule
 * (etcd mvcc `HashByRev` at revision R with compaction revision C): entries
 * above C all count; an entry at or below C counts only when it is its key's
 * latest entry and not a tombstone (`kvindex.Keep(R)`), unless no key is live
 * at all (then every entry counts). Memory: the keys written since the last
 * compaction (none are held when there is nothing to filter).
 */
export async function readKeyspace(path: string, signal: AbortSignal = new AbortController().signal): Promise<KeyspaceSummary> {
  const fh = await open(path, 'r');
  try {
    const { pageSize, meta, highWater } = await openBbolt(fh);
    const walker = new BucketWalker(new PageReader(fh, pageSize, highWater, { borrowed: true }), { signal });
    const tops = await topBuckets(walker, meta.root);
    // The compaction marks first (the meta bucket is small).
    const { finished, scheduled } = await compactionMarks(walker, tops.get('meta'));
    // Pass 1: entries per bucket; in the key bucket the last revision and the keys written after the
    // finished compaction F: above C (`later`: is its latest entry a tombstone) and between F and C
    // (`between`: the revision key of its latest entry). etcd resumes a scheduled compaction S > F at
    // start when S is not beyond its revision; C is S then, else F.
    const tentativeC = scheduled > finished ? scheduled : finished;
    const h = await countAndCollect(walker, tops, finished, tentativeC);
    // A store without any key starts at revision 1, and a compaction past the last entry moves the revision up to it (mvcc restore).
    const servedRevision = Math.max(1, h.lastRevision, finished);
    const compactRevision = scheduled > finished && scheduled <= servedRevision ? scheduled : finished;
    if (compactRevision !== tentativeC) {
      // The scheduled compaction is not resumed: what lies between F and S is "later" after all (older than what is there).
      for (const [key, revKey] of h.between) if (!h.later.has(key)) h.later.set(key, isTombstone(Buffer.from(revKey, 'latin1')));
      h.between.clear();
    }
    const base = { buckets: h.buckets, lastRevision: h.lastRevision, finishedCompactRevision: finished, scheduledCompactRevision: scheduled, servedRevision, compactRevision };
    const keyRef = tops.get('key');
    if (!keyRef) return { ...base, liveKeys: 0, hashKV: crc32c(KEY_BUCKET) };
    return { ...base, ...(await hashKeyBucket(walker, keyRef, h, finished, compactRevision)) };
  } finally {
    await fh.close();
  }
}
