/**
 * Every key a client sees at a revision, read natively from a snapshot
 * file, and the comparison of two such keyspaces (the replay drill,
 * src/continuous/replay-drill.ts: the chain replayed onto one full backup against
 * the next full backup).
 *
 * The key bucket holds one entry per revision of a key (mvccpb.KeyValue
 * under the revision), in revision order, tombstones ("t" suffix) for
 * deletes. Walking it in order and keeping each key's latest entry at or
 * below the revision, dropping the key at a tombstone, gives what a range
 * at that revision returns, compacted or not: a compaction keeps each key's
 * latest entry and drops the keys whose latest entry is a tombstone.
 *
 * Kept per key: a digest of the value (values are never kept or logged:
 * they hold every Secret), create_revision, mod_revision and version. Not
 * compared: the lease (a replay puts keys whose lease was granted after the
 * base without one, replay-step.ts txnOf). Memory: one entry per live key.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { BboltFormatError, revisionMain } from './bbolt.js';
import { isTombstone, topBuckets, walkKeyValueFields } from './keyspace.js';
import { PageReader } from './page-reader.js';
import { BucketWalker, openBbolt, printable } from './walker.js';

export interface KeyFacts {
  /** 16 bytes of sha256 of the value, base64: equal values, equal digests. */
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
}

export interface LiveKeys {
  /** By key (latin1: the bytes exactly). */
  keys: Map<string, KeyFacts>;
  /** Main revision of the last key bucket entry (0: none). */
  lastRevision: number;
}

export interface DecodedKeyValue {
  key: Buffer;
  value: Buffer;
  createRevision: number;
  modRevision: number;
  version: number;
}

/** An mvccpb.KeyValue: key (1), create_revision (2), mod_revision (3), version (4), value (5); lease (6) and others skipped. Bounds-checked. */
export function decodeKeyValue(v: Buffer): DecodedKeyValue {
  const out: DecodedKeyValue = { key: Buffer.alloc(0), value: Buffer.alloc(0), createRevision: 0, modRevision: 0, version: 0 };
  let hasKey = false;
  walkKeyValueFields(v, (field, x) => {
    if (typeof x === 'number') {
      if (field === 2) out.createRevision = x;
      else if (field === 3) out.modRevision = x;
      else if (field === 4) out.version = x;
    } else if (field === 1) {
      out.key = x;
      hasKey = true;
    } else if (field === 5) out.value = x;
  });
  if (!hasKey) throw new BboltFormatError('mvccpb.KeyValue without a key');
  return out;
}

function digest(value: Buffer): string {
  return createHash('sha256').update(value).digest('base64').slice(0, 22);
}

/** The live keys of the snapshot at `atRev` (entries above it are ignored); see the file comment. */
export async function readLiveKeys(path: string, atRev: number, signal: AbortSignal = new AbortController().signal): Promise<LiveKeys> {
  const fh = await open(path, 'r');
  try {
    const { pageSize, meta, highWater } = await openBbolt(fh);
    const walker = new BucketWalker(new PageReader(fh, pageSize, highWater, { borrowed: true }), { signal });
    const keyRef = (await topBuckets(walker, meta.root)).get('key');
    const keys = new Map<string, KeyFacts>();
    let lastRevision = 0;
    if (!keyRef) return { keys, lastRevision };
    await walker.forEach(keyRef, 'bucket key', 1, (k, v, isSub) => {
      if (isSub) return;
      const rev = revisionMain(k);
      lastRevision = rev;
      if (rev > atRev) return;
      const kv = decodeKeyValue(v);
      const name = kv.key.toString('latin1');
      if (isTombstone(k)) keys.delete(name);
      else keys.set(name, { value: digest(kv.value), createRevision: kv.createRevision, modRevision: kv.modRevision, version: kv.version });
    });
    return { keys, lastRevision };
  } finally {
    await fh.close();
  }
}

export interface KeyDifference {
  /** The key as printable() shows it (quoted, or hex). */
  key: string;
  /** What differs: `missing` (the expected side has it, the other not), `extra`, or the fields. */
  what: ('missing' | 'extra' | 'value' | 'createRevision' | 'modRevision' | 'version')[];
}

export interface KeyspaceComparison {
  /** Keys on each side. */
  expectedKeys: number;
  actualKeys: number;
  missing: number;
  extra: number;
  /** Keys on both sides with another value, create/mod revision or version. */
  changed: number;
  /** The first differing keys in key order, at most `limit`. */
  first: KeyDifference[];
}

const FIELDS = ['value', 'createRevision', 'modRevision', 'version'] as const;

/** `actual` against `expected`, key by key (pure). Values are compared by digest and never shown. */
export function compareLiveKeys(expected: ReadonlyMap<string, KeyFacts>, actual: ReadonlyMap<string, KeyFacts>, limit = 10): KeyspaceComparison {
  const diffs: { raw: string; d: KeyDifference }[] = [];
  let missing = 0;
  let extra = 0;
  let changed = 0;
  const show = (k: string) => printable(Buffer.from(k, 'latin1'));
  for (const [k, want] of expected) {
    const got = actual.get(k);
    if (!got) {
      missing++;
      diffs.push({ raw: k, d: { key: show(k), what: ['missing'] } });
      continue;
    }
    const what = FIELDS.filter((f) => want[f] !== got[f]);
    if (what.length) {
      changed++;
      diffs.push({ raw: k, d: { key: show(k), what } });
    }
  }
  for (const k of actual.keys()) {
    if (!expected.has(k)) {
      extra++;
      diffs.push({ raw: k, d: { key: show(k), what: ['extra'] } });
    }
  }
  const first = diffs
    .sort((a, b) => Buffer.compare(Buffer.from(a.raw, 'latin1'), Buffer.from(b.raw, 'latin1')))
    .slice(0, limit)
    .map((x) => x.d);
  return { expectedKeys: expected.size, actualKeys: actual.size, missing, extra, changed, first };
}
