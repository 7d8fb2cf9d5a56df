/**
 * Reading committed segments out of a store (the I/O edge of restore to a
 * time): list a base's segment manifests, check each (bounded size, schema,
 * name, signature), and fetch one segment's records (sha256 against its
 * manifest, age decryption, zstd, one record per line). Segments are small
 * (a few MiB, continuous.interval's worth): one is read whole into memory
 * and checked before any of its records is replayed.
 */
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { zstdDecompressSync } from 'node:zlib';
import { decryptStream } from '../bundle/encrypt.js';
import { checkSignature } from '../bundle/sign.js';
import { isEnforced, type Trust } from '../catalog/trust.js';
import { BackupError, messageOf } from '../errors.js';
import { continuousPrefix, parseSegmentManifestName, segmentObjectName } from '../layout.js';
import type { Store } from '../storage/store.js';
import type { SegmentRef } from './plan.js';
import { rangeText } from './replay-step.js';
import { decodeRecord, segmentManifestSchema, type RevisionRecord, type SegmentManifest } from './segment.js';

/** A manifest is a few hundred bytes: anything much larger is not one. */
const MAX_MANIFEST_BYTES = 64 * 1024;
/** More segments than this under one base is not a chain a writer made (one per interval): refuse rather than read forever. */
const MAX_SEGMENTS_PER_BASE = 200_000;
/** A segment is a few MiB; its records are held in memory, so a larger one is refused. */
const MAX_SEGMENT_RAW_BYTES = 512 * 1024 * 1024;
/** Manifests read at once. */
const READ_CONCURRENCY = 8;

export interface BaseSegments {
  refs: SegmentRef[];
  manifests: Map<string, SegmentManifest>;
}

/** The whole object, refusing more than `max` bytes (a store answering forever fills no memory). */
async function readBounded(body: Readable, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) {
      body.destroy();
      throw new BackupError('checksum-mismatch', `${what} is larger than the ${max} bytes it may have`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** One committed segment manifest, checked against the key it was found under. */
async function readManifest(store: Store, cluster: string, baseId: string, key: string, trust: Trust, allowUntrusted: boolean, signal?: AbortSignal): Promise<SegmentManifest> {
  const name = key.slice(key.lastIndexOf('/') + 1);
  const range = parseSegmentManifestName(name)!;
  const text = (await readBounded(await store.get(key, { signal }), MAX_MANIFEST_BYTES, `segment manifest ${key}`)).toString('utf8');
  let m: SegmentManifest;
  try {
    m = segmentManifestSchema.parse(JSON.parse(text));
  } catch (e) {
    throw new BackupError('manifest-invalid', `segment manifest ${key} (revisions ${rangeText(range)}) is not a valid segment manifest: ${messageOf(e).slice(0, 300)}`);
  }
  const dir = key.slice(0, key.length - name.length);
  const wrong: string[] = [];
  if (m.cluster !== cluster) wrong.push(`cluster ${m.cluster}`);
  if (m.base !== baseId) wrong.push(`base ${m.base}`);
  if (m.fromRev !== range.fromRev || m.toRev !== range.toRev) wrong.push(`revisions ${m.fromRev}-${m.toRev}`);
  // The manifest may only speak for its own object, beside it and named by the same range.
  if (m.object.key !== `${dir}${segmentObjectName(m.fromRev, m.toRev, { codec: m.object.codec, encrypted: m.object.encrypted })}`) wrong.push(`object ${m.object.key}`);
  if (wrong.length) throw new BackupError('manifest-invalid', `segment manifest ${key} does not match its name: it says ${wrong.join(', ')}`);
  if (isEnforced(trust) && !allowUntrusted && checkSignature(m, trust.keys!) !== 'trusted') {
    throw new BackupError('signature-untrusted', `segment ${rangeText(m)} of base ${baseId} carries no signature by a trusted key: someone who can write the store may have planted it`, {
      hint: 'check who wrote it; --allow-untrusted replays it anyway',
    });
  }
  return m;
}

/** Every committed segment of one base (only names parseSegmentManifestName accepts), checked. */
export async function listSegments(store: Store, cluster: string, baseId: string, trust: Trust, allowUntrusted: boolean, signal?: AbortSignal): Promise<BaseSegments> {
  const prefix = `${continuousPrefix(cluster)}${baseId}/`;
  const keys: string[] = [];
  for await (const o of store.list(prefix, { signal })) {
    const name = o.key.slice(prefix.length);
    if (name.includes('/') || !parseSegmentManifestName(name)) continue;
    keys.push(o.key);
    if (keys.length > MAX_SEGMENTS_PER_BASE) throw new BackupError('store-misbehaving', `store ${store.name} lists more than ${MAX_SEGMENTS_PER_BASE} segments under ${prefix}`);
  }
  const manifests = new Map<string, SegmentManifest>();
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const key = keys[next++]!;
      manifests.set(key, await readManifest(store, cluster, baseId, key, trust, allowUntrusted, signal));
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, keys.length) }, worker));
  const refs = keys.map((key): SegmentRef => {
    const m = manifests.get(key)!;
    return { key, fromRev: m.fromRev, toRev: m.toRev, firstTime: new Date(m.firstTime), lastTime: new Date(m.lastTime) };
  });
  return { refs, manifests };
}

/** Collects a stream into one buffer (a decrypted segment, bounded by its manifest's size). */
async function collect(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

/**
 * One segment's records, in file order: the stored bytes against the
 * manifest's size and sha256 (`checksum-mismatch`), decrypted, decompressed
 * to exactly rawSize, then one record per line (`segment-corrupt`, naming
 * the range and the line). Sequence is the stepper's job.
 */
export async function readSegmentRecords(store: Store, m: SegmentManifest, identities: string[] | undefined, signal?: AbortSignal): Promise<RevisionRecord[]> {
  const range = rangeText(m);
  const o = m.object;
  if (o.rawSize > MAX_SEGMENT_RAW_BYTES) throw new BackupError('segment-corrupt', `segment ${range}: ${o.rawSize} bytes of records, more than a segment may hold (${MAX_SEGMENT_RAW_BYTES})`);
  if (o.encrypted && !identities?.length) {
    throw new BackupError('usage', `segment ${range} of base ${m.base} is encrypted for ${o.recipients.join(', ')}; pass --identity FILE with the matching age secret key`);
  }
  const stored = await readBounded(await store.get(o.key, { signal }), o.size, `segment ${range} (${o.key})`);
  const sha = createHash('sha256').update(stored).digest('hex');
  if (stored.length !== o.size || sha !== o.sha256) {
    throw new BackupError('checksum-mismatch', `segment ${range} of base ${m.base}: ${stored.length} bytes with sha256 ${sha.slice(0, 16)}…, its manifest says ${o.size} bytes with ${o.sha256.slice(0, 16)}…`, {
      hint: 'the stored copy is damaged: replay from another store, or pick a TIME before this segment',
    });
  }
  const compressed = o.encrypted ? await collect(await decryptStream(Readable.from([stored]), identities!)) : stored;
  let raw: Buffer;
  try {
    raw = o.codec === 'zstd' ? zstdDecompressSync(compressed, { maxOutputLength: Math.max(1, o.rawSize + 1) }) : compressed;
  } catch (e) {
    throw new BackupError('segment-corrupt', `segment ${range}: cannot decompress: ${messageOf(e)}`);
  }
  if (raw.length !== o.rawSize) throw new BackupError('segment-corrupt', `segment ${range}: ${raw.length} bytes of records, its manifest says ${o.rawSize}`);
  const lines = raw.toString('utf8').split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.map((line, i) => {
    try {
      return decodeRecord(line);
    } catch (e) {
      throw new BackupError('segment-corrupt', `segment ${range} of base ${m.base}: record ${i + 1} (after revision ${m.fromRev + i - 1}) is corrupt: ${messageOf(e).slice(0, 200)}`);
    }
  });
}
