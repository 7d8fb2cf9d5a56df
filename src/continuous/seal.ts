/**
 * Sealing one segment on the node (docs/continuous.md): the records as
 * NDJSON, compressed and encrypted as bundles are (zstd with a frame
 * checksum, then age), hashed while streaming into the segment outbox
 * entry, with its manifest beside it (signed when signing.keyFile is set).
 * Delivery (deliver.ts) then puts the object, proves it and writes the
 * manifest last, per store.
 */
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { zstdCompressor } from '../bundle/write.js';
import { encryptStream } from '../bundle/encrypt.js';
import { HashingStream } from '../bundle/hash.js';
import { signManifest, type SigningKey } from '../bundle/sign.js';
import { writeFileAtomic } from '../fsutil.js';
import { segmentKeys, segmentManifestName, segmentObjectName, type Codec } from '../layout.js';
import { VERSION } from '../version.js';
import { encodeRecord, SEGMENT_FORMAT, segmentManifestSchema, type RevisionRecord, type SegmentManifest } from './segment.js';

export interface SealOptions {
  cluster: string;
  node: string;
  baseId: string;
  codec: Codec;
  level: number;
  recipients: string[];
  signingKey?: SigningKey | undefined;
}

export interface SealedSegment {
  /** The outbox entry directory holding both files. */
  dir: string;
  objectPath: string;
  manifest: SegmentManifest;
}

/** The manifest's bytes as stored (JSON, one line). */
export function serializeSegmentManifest(m: SegmentManifest): Buffer {
  return Buffer.from(`${JSON.stringify(m)}\n`);
}

/** The object's file in an outbox entry, and the manifest's. */
export function sealedPaths(dir: string, m: Pick<SegmentManifest, 'fromRev' | 'toRev'> & { object: { codec: Codec; encrypted: boolean } }): { object: string; manifest: string } {
  return { object: join(dir, segmentObjectName(m.fromRev, m.toRev, m.object)), manifest: join(dir, segmentManifestName(m.fromRev, m.toRev)) };
}

/**
 * Writes `records` (consecutive revisions, at least one) into `dir` as a
 * sealed segment: the object first, then its manifest, both 0600 in a 0700
 * directory, each atomically (a crash leaves no half file under its name).
 */
export async function sealSegment(dir: string, records: readonly RevisionRecord[], o: SealOptions): Promise<SealedSegment> {
  const first = records[0];
  const last = records[records.length - 1];
  if (!first || !last) throw new Error('sealSegment: no records');
  for (let i = 1; i < records.length; i++) {
    if (records[i]!.rev !== records[i - 1]!.rev + 1) throw new Error(`sealSegment: revision ${records[i]!.rev} follows ${records[i - 1]!.rev}`);
  }
  const encrypted = o.recipients.length > 0;
  const shape = { codec: o.codec, encrypted };
  const paths = sealedPaths(dir, { fromRev: first.rev, toRev: last.rev, object: shape });
  let rawSize = 0;
  const lines = Readable.from(
    (function* () {
      for (const r of records) {
        const b = Buffer.from(encodeRecord(r));
        rawSize += b.length;
        yield b;
      }
    })(),
  );
  let body: Readable = lines;
  // pipe() does not forward errors: each stage fails the next, or a failure would hang the write.
  if (o.codec === 'zstd') {
    const z = zstdCompressor(o.level);
    lines.on('error', (e) => z.destroy(e));
    body = lines.pipe(z);
  }
  if (encrypted) body = await encryptStream(body, o.recipients);
  const hash = new HashingStream();
  body.on('error', (e) => hash.destroy(e));
  await writeFileAtomic(paths.object, body.pipe(hash));
  const keys = segmentKeys(o.cluster, o.baseId, first.rev, last.rev, shape);
  let manifest: SegmentManifest = segmentManifestSchema.parse({
    format: SEGMENT_FORMAT,
    kind: 'segment',
    cluster: o.cluster,
    base: o.baseId,
    node: o.node,
    fromRev: first.rev,
    toRev: last.rev,
    revisions: last.rev - first.rev + 1,
    firstTime: first.time,
    lastTime: last.time,
    createdAt: new Date().toISOString(),
    tool: { name: 'etcd-backupd', version: VERSION },
    object: { key: keys.object, size: hash.bytes, sha256: hash.digest(), encrypted, recipients: [...o.recipients], codec: o.codec, rawSize },
  });
  if (o.signingKey) manifest = signManifest(manifest, o.signingKey);
  await writeFileAtomic(paths.manifest, serializeSegmentManifest(manifest));
  return { dir, objectPath: paths.object, manifest };
}
