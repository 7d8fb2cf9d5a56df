/**
 * A stand-in for the continuous-backup writer (the daemon's, built
 * elsewhere): it watches a real etcd over gRPC from a revision on, groups
 * the events by revision with the wall time each was seen, and writes
 * segments exactly in the format (src/continuous/segment.ts, keys from
 * src/layout.ts) into a local store's directory (a local store is files at
 * `<path>/<key>`). Only for tests of the replay side.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { zstdCompressSync } from 'node:zlib';
import { Range, type Etcd3, type Watcher } from 'etcd3';
import { encodeRecord, SEGMENT_FORMAT, segmentManifestSchema, type RevisionRecord, type SegmentManifest } from '../../src/continuous/segment.js';
import { segmentKeys, type Codec } from '../../src/layout.js';

export interface RecordingWatch {
  /** Revisions seen so far, in order. */
  records: RevisionRecord[];
  /** Resolves once a revision >= rev has been seen. */
  waitFor(rev: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Watches the whole keyspace from `fromRev` on, one record per revision. */
export async function recordFrom(client: Etcd3, fromRev: number): Promise<RecordingWatch> {
  const records: RevisionRecord[] = [];
  const watcher: Watcher = await client
    .watch()
    .inRange(new Range(Buffer.from([0]), Buffer.from([0])))
    .startRevision(String(fromRev))
    .create();
  watcher.on('data', (res) => {
    const time = new Date().toISOString();
    for (const ev of res.events ?? []) {
      const rev = Number(ev.kv.mod_revision);
      let r = records.at(-1);
      if (!r || r.rev !== rev) {
        r = { rev, time, ops: [] };
        records.push(r);
      }
      r.ops.push(ev.type === 'Put' ? { put: Buffer.from(ev.kv.key), value: Buffer.from(ev.kv.value), lease: String(ev.kv.lease ?? '0') } : { del: Buffer.from(ev.kv.key) });
    }
  });
  return {
    records,
    async waitFor(rev, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while ((records.at(-1)?.rev ?? 0) < rev) {
        if (Date.now() > deadline) throw new Error(`the watch saw revision ${records.at(-1)?.rev ?? 'none'}, waiting for ${rev}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    close: () => watcher.cancel(),
  };
}

export interface WrittenSegment {
  fromRev: number;
  toRev: number;
  manifest: SegmentManifest;
  /** Absolute paths in the store directory. */
  objectPath: string;
  manifestPath: string;
}

/** Writes `records` (consecutive revisions) as one committed segment: object, then manifest. */
export function writeSegment(storeDir: string, cluster: string, baseId: string, records: RevisionRecord[], codec: Codec = 'zstd'): WrittenSegment {
  const fromRev = records[0]!.rev;
  const toRev = records.at(-1)!.rev;
  const raw = Buffer.from(records.map(encodeRecord).join(''), 'utf8');
  const body = codec === 'zstd' ? zstdCompressSync(raw) : raw;
  const keys = segmentKeys(cluster, baseId, fromRev, toRev, { codec, encrypted: false });
  const manifest = segmentManifestSchema.parse({
    format: SEGMENT_FORMAT,
    kind: 'segment',
    cluster,
    base: baseId,
    node: 'test-writer',
    fromRev,
    toRev,
    revisions: toRev - fromRev + 1,
    firstTime: records[0]!.time,
    lastTime: records.at(-1)!.time,
    createdAt: new Date().toISOString(),
    tool: { name: 'segment-writer.test', version: '0' },
    object: { key: keys.object, size: body.length, sha256: createHash('sha256').update(body).digest('hex'), encrypted: false, recipients: [], codec, rawSize: raw.length },
  });
  const objectPath = join(storeDir, keys.object);
  const manifestPath = join(storeDir, keys.manifest);
  mkdirSync(dirname(objectPath), { recursive: true, mode: 0o700 });
  writeFileSync(objectPath, body, { mode: 0o600 });
  writeFileSync(manifestPath, JSON.stringify(manifest), { mode: 0o600 });
  return { fromRev, toRev, manifest, objectPath, manifestPath };
}

/** Splits the records into segments of the given sizes (the rest in one more), alternating zstd and none. */
export function writeSegments(storeDir: string, cluster: string, baseId: string, records: RevisionRecord[], sizes: number[]): WrittenSegment[] {
  const out: WrittenSegment[] = [];
  let i = 0;
  for (const [n, size] of [...sizes, Infinity].entries()) {
    if (i >= records.length) break;
    const part = records.slice(i, i + size);
    out.push(writeSegment(storeDir, cluster, baseId, part, n % 2 === 0 ? 'zstd' : 'none'));
    i += part.length;
  }
  return out;
}
