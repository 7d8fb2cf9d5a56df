/**
 * Sealing segments on the node (docs/continuous.md): the records as NDJSON,
 * compressed and encrypted as bundles are (zstd with a frame checksum, then
 * age), hashed while streaming into the segment outbox, with the manifest
 * beside the object (signed when signing.keyFile is set). Delivery
 * (deliver.ts) then puts the object, proves it and writes the manifest last,
 * per store.
 *
 * A segment streams while it is open: each revision is encoded and handed to
 * the compressor as it arrives, into a file under the outbox's `.open-<from>`
 * directory, so the writer holds no revision in memory once it is written
 * (held records were promoted to V8's old generation and their buffers piled
 * up until a full GC: tens of MiB of RSS at 500 writes/s, bench/results/
 * 2026-11-27-continuous.md). Sealing ends the stream, names the object by
 * its range, writes the manifest and renames the directory into the outbox
 * entry: an entry is whole or absent.
 */
import { basename, dirname, join } from 'node:path';
import { rename, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { zstdCompressor } from '../bundle/write.js';
import { encryptStream } from '../bundle/encrypt.js';
import { HashingStream } from '../bundle/hash.js';
import { signManifest, type SigningKey } from '../bundle/sign.js';
import { messageOf } from '../errors.js';
import { fsyncPath, mkdirPrivate, writeFileAtomic } from '../fsutil.js';
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
 * Encoded records are written straight into slabs of this size, each handed to the compressor once
 * full: one buffer and one thread-pool job per 64 KiB, not per revision (a Buffer per record and a
 * concat per batch doubled the bytes allocated, and the garbage the writer's RSS is made of).
 */
const SLAB_BYTES = 64 * 1024;
/** The object's name while the segment is open (its range, hence its real name, is known at sealing). */
const PART = 'records.part';

/**
 * One segment being written: `append` revisions in order, then `seal` it
 * into its outbox entry, or `discard` it. The stream's setup (directory,
 * compressor, encrypter) runs in the background; records appended before
 * it is ready wait in the stream's buffer.
 */
export class OpenSegment {
  // Only the first and last revisions' times are kept: a held record would keep its buffers alive.
  private first: { rev: number; time: string } | undefined;
  private last: { rev: number; time: string } | undefined;
  private count = 0;
  private raw = 0;
  private opened = 0;
  private slab: Buffer | undefined;
  private slabUsed = 0;
  private failure: string | undefined;
  private discarded = false;
  private readonly lines = new Readable({ read() {} });
  private readonly hash = new HashingStream();
  private readonly written: Promise<number>;

  constructor(
    readonly dir: string,
    private readonly o: SealOptions,
  ) {
    // The stream's errors reach the writer through `written` (and `failed`), never as an 'error' event nobody hears.
    this.lines.on('error', () => undefined);
    this.written = this.start();
    this.written.catch((e: unknown) => (this.failure ??= messageOf(e)));
  }

  /** Revisions held. */
  get records(): number {
    return this.count;
  }

  /** NDJSON bytes before compression (what maxSegmentBytes counts). */
  get rawBytes(): number {
    return this.raw;
  }

  /** When the first revision was appended (ms since epoch; 0 while empty). */
  get startedAt(): number {
    return this.opened;
  }

  /** Wall time the first revision was seen. */
  get firstTime(): string | undefined {
    return this.first?.time;
  }

  get firstRev(): number | undefined {
    return this.first?.rev;
  }

  get lastRev(): number | undefined {
    return this.last?.rev;
  }

  /** Why the stream failed (the disk, the compressor), once it has: these revisions are lost on this node. */
  get failed(): string | undefined {
    return this.failure;
  }

  /** Adds the next revision (it must follow the last one). */
  append(r: RevisionRecord): void {
    if (this.last && r.rev !== this.last.rev + 1) throw new Error(`segment: revision ${r.rev} follows ${this.last.rev}`);
    const mark = { rev: r.rev, time: r.time };
    if (!this.first) {
      this.first = mark;
      this.opened = Date.now();
    }
    this.last = mark;
    const line = encodeRecord(r);
    const bytes = Buffer.byteLength(line);
    this.count++;
    this.raw += bytes;
    // A stream that failed reads nothing more: what it would hold is lost either way (the writer ends the chain).
    if (this.failure) return;
    if (this.slab && this.slabUsed + bytes > this.slab.length) this.flushSlab();
    this.slab ??= Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, bytes));
    this.slabUsed += this.slab.write(line, this.slabUsed);
  }

  /** Ends the stream and commits the segment as the outbox entry `entryDir` (replacing a stale one there). */
  async seal(entryDir: string): Promise<SealedSegment> {
    const first = this.first;
    const last = this.last;
    if (!first || !last) throw new Error('sealSegment: no records');
    try {
      this.flushSlab();
      this.lines.push(null);
      await this.written;
      const encrypted = this.o.recipients.length > 0;
      const shape = { codec: this.o.codec, encrypted };
      const keys = segmentKeys(this.o.cluster, this.o.baseId, first.rev, last.rev, shape);
      const paths = sealedPaths(this.dir, { fromRev: first.rev, toRev: last.rev, object: shape });
      await rename(join(this.dir, PART), paths.object);
      let manifest: SegmentManifest = segmentManifestSchema.parse({
        format: SEGMENT_FORMAT,
        kind: 'segment',
        cluster: this.o.cluster,
        base: this.o.baseId,
        node: this.o.node,
        fromRev: first.rev,
        toRev: last.rev,
        revisions: last.rev - first.rev + 1,
        firstTime: first.time,
        lastTime: last.time,
        createdAt: new Date().toISOString(),
        tool: { name: 'etcd-backupd', version: VERSION },
        object: { key: keys.object, size: this.hash.bytes, sha256: this.hash.digest(), encrypted, recipients: [...this.o.recipients], codec: this.o.codec, rawSize: this.raw },
      });
      if (this.o.signingKey) manifest = signManifest(manifest, this.o.signingKey);
      await writeFileAtomic(paths.manifest, serializeSegmentManifest(manifest));
      await rm(entryDir, { recursive: true, force: true });
      await rename(this.dir, entryDir);
      await fsyncPath(dirname(entryDir));
      return { dir: entryDir, manifest, objectPath: sealedPaths(entryDir, manifest).object };
    } catch (e) {
      await this.discard();
      throw e;
    }
  }

  /** Drops the segment and its files. */
  async discard(): Promise<void> {
    this.slab = undefined;
    this.discarded = true;
    // With an error: a stream destroyed without one would leave the file's pipeline waiting for an end.
    if (!this.lines.destroyed) this.lines.destroy(new Error('segment discarded'));
    await this.written.catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }

  private flushSlab(): void {
    if (this.slab && this.slabUsed > 0) this.lines.push(this.slabUsed === this.slab.length ? this.slab : this.slab.subarray(0, this.slabUsed));
    this.slab = undefined;
    this.slabUsed = 0;
  }

  /** The stream into `<dir>/records.part`: compressed, encrypted, hashed; resolves with the bytes written once the records end. */
  private async start(): Promise<number> {
    // A directory of the same name is a leftover (a previous life, an attempt that failed): not a segment.
    await rm(this.dir, { recursive: true, force: true });
    await mkdirPrivate(this.dir);
    let body: Readable = this.lines;
    const stillOpen = () => {
      if (this.discarded) throw new Error('segment discarded');
    };
    stillOpen();
    // pipe() does not forward errors: each stage fails the next, or a failure would hang the write.
    if (this.o.codec === 'zstd') {
      const z = zstdCompressor(this.o.level);
      this.lines.on('error', (e) => z.destroy(e));
      body = this.lines.pipe(z);
    }
    if (this.o.recipients.length > 0) body = await encryptStream(body, this.o.recipients);
    stillOpen();
    body.on('error', (e) => this.hash.destroy(e));
    return writeFileAtomic(join(this.dir, PART), body.pipe(this.hash));
  }
}

/**
 * Writes `records` (consecutive revisions, at least one) as the sealed
 * segment in the outbox entry `dir`: the object, then its manifest, both
 * 0600 in a 0700 directory; the entry appears whole or not at all.
 */
export async function sealSegment(dir: string, records: readonly RevisionRecord[], o: SealOptions): Promise<SealedSegment> {
  const seg = new OpenSegment(join(dirname(dir), `.open-${basename(dir)}`), o);
  try {
    for (const r of records) seg.append(r);
  } catch (e) {
    await seg.discard();
    throw new Error(`sealSegment: ${messageOf(e)}`);
  }
  return seg.seal(dir);
}
