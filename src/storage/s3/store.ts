import { createReadStream } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { Readable, Transform, finished } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type PutObjectCommandInput,
  type S3Client,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BackupError, type Reason } from '../../errors.js';
import { readFully } from '../file-chunks.js';
import { settingsOf } from '../registry.js';
import { abortedByShutdown, checkListExclude, ObjectExistsError, readBackByGet, type ListOptions, type ObjectInfo, type OpOptions, type PutOptions, type PutResult, type Store, type TransferOptions } from '../store.js';
import { s3Capabilities, type S3StoreConfig } from './index.js';
import { createS3Client } from './client.js';
import { listSkippingSubtree } from './list-skip.js';
import { AUTH_CODES, facts, isNetwork, isNotFound, isPreconditionFailed, isUnsupported } from './errors.js';
import { assertUnlocked, lockHint, lockInfo, lockParams } from './lock.js';

export type { S3StoreConfig };

/** S3 refuses more parts than this in one multipart upload. */
const MAX_PARTS = 10_000;
/** One DeleteObjects request takes at most this many keys. */
const DELETE_BATCH = 1000;
/** Pages one listing may take (10 million keys at 1000 a page): past it the server is looping. */
const MAX_PAGES = 10_000;
/** Cleanup requests sent after the operation's own signal fired (aborting a multipart upload) get this long. */
const CLEANUP_MS = 10_000;

/**
 * An S3 bucket (AWS or an S3-compatible server: MinIO, Ceph RGW, ODF/NooBaa).
 * Objects live under `prefix/`; keys handed in and out are relative to it.
 *
 * `put` streams through `@aws-sdk/lib-storage`: bodies smaller than one part
 * go as one PutObject, larger ones as a multipart upload. Memory stays at
 * about partSize x (queueSize + 1) whatever the object size, and because every
 * request body is a Buffer, each part can be retried and no aws-chunked
 * framing is ever sent. An object appears only when the upload completes, so
 * readers see it absent or whole.
 */
export class S3Store implements Store {
  readonly type = 's3';
  readonly name: string;
  /** The SDK client, for diagnostics and tests; the store owns it (close() destroys it). */
  readonly client: S3Client;
  private readonly secrets = new Set<string>();
  /** Cleared when the server turns out not to implement DeleteObjects. */
  private bulkDelete = true;

  readonly caps;
  readonly settings;

  constructor(private readonly cfg: S3StoreConfig) {
    this.name = cfg.name;
    this.caps = s3Capabilities(cfg);
    this.settings = { ...settingsOf(cfg), ...(cfg.objectLock ? { lockRetain: cfg.objectLock.retain } : {}) };
    this.client = createS3Client(cfg, (s) => {
      if (s.length >= 4) this.secrets.add(s);
    });
  }

  /** `prefix/key`, refusing keys that would mean something else on another store. */
  private objectKey(key: string): string {
    if (!key || key.startsWith('/') || key.split('/').some((seg) => seg === '' || seg === '.' || seg === '..')) {
      throw new BackupError('internal', `store ${this.name}: refusing object key ${JSON.stringify(key)}`);
    }
    return this.cfg.prefix ? `${this.cfg.prefix}/${key}` : key;
  }

  private get base(): string {
    return this.cfg.prefix ? `${this.cfg.prefix}/` : '';
  }

  private url(objectKey: string): string {
    return `s3://${this.cfg.bucket}/${objectKey}`;
  }

  private scrub(text: string): string {
    let out = text;
    for (const s of this.secrets) out = out.split(s).join('<redacted>');
    return out;
  }

  /** One BackupError for any SDK/network failure: store, bucket, key, S3 code; never a credential. */
  private fail(action: string, objectKey: string, e: unknown, reason?: Reason): BackupError {
    if (e instanceof BackupError) return e;
    const f = facts(e);
    const network = isNetwork(f);
    const r: Reason = reason ?? (network ? 'store-unavailable' : 'upload-failed');
    let hint: string | undefined;
    if (AUTH_CODES.has(f.code) || f.status === 403) {
      hint = this.cfg.accessKeyIdFile
        ? `the credentials in ${this.cfg.accessKeyIdFile} / ${this.cfg.secretAccessKeyFile} are wrong or lack permission on bucket ${this.cfg.bucket} (s3:PutObject, GetObject, ListBucket, DeleteObject, AbortMultipartUpload, ListBucketMultipartUploads${this.cfg.objectLock ? ', PutObjectRetention, GetObjectRetention' : ''})`
        : `the credentials of the AWS default chain (env, web identity, instance profile) are missing, wrong, or lack permission on bucket ${this.cfg.bucket}`;
    } else if (f.code === 'NoSuchBucket') {
      hint = `bucket ${this.cfg.bucket} does not exist${this.cfg.endpoint ? ` at ${this.cfg.endpoint}` : ` in ${this.cfg.region}`}: create it or fix stores[].bucket`;
    } else if (f.code === 'ECONNREFUSED' || f.code === 'ENOTFOUND' || f.code === 'EAI_AGAIN' || f.code === 'EHOSTUNREACH' || f.code === 'ENETUNREACH') {
      hint = `cannot reach ${this.cfg.endpoint ?? `S3 in ${this.cfg.region}`}: check the endpoint, DNS, proxies and network policy; the local copy stays in the outbox and is retried`;
    } else if (network) {
      hint = 'the store is slow or failing; the local copy stays in the outbox and is retried';
    } else if (f.code === 'PermanentRedirect' || f.code === 'AuthorizationHeaderMalformed' || f.code === 'IllegalLocationConstraintException') {
      hint = `bucket ${this.cfg.bucket} is not in region ${this.cfg.region}: fix stores[].region`;
    } else if (f.code === 'InvalidStorageClass') {
      hint = 'fix stores[].storageClass';
    } else if (f.code === 'KMS.NotFoundException' || f.code === 'KMSAccessDenied' || f.code.startsWith('KMS')) {
      hint = 'the KMS key (stores[].kmsKeyId) is missing or the credentials may not use it';
    }
    hint ??= lockHint(this.cfg, f.code, f.detail); // an Object Lock bucket, or the lack of one
    const message = `store ${this.name}: ${action} ${this.url(objectKey)} failed: ${f.code}${f.status ? ` (HTTP ${f.status})` : ''}${f.detail ? `: ${f.detail}` : ''}`;
    return new BackupError(r, this.scrub(message), { hint, cause: e });
  }

  /** Keeps within S3's 10,000 parts when the size is known (a 160 GiB object at 16 MiB parts). */
  private partSizeFor(size: number | undefined): number {
    const mib = 1024 * 1024;
    return size && size / this.cfg.partSize > MAX_PARTS - 1 ? Math.ceil(size / (MAX_PARTS - 1) / mib) * mib : this.cfg.partSize;
  }

  /** What every write carries; with objectLock, the retention from now (so call it when the write starts). */
  private objectParams(Key: string): Omit<PutObjectCommandInput, 'Body' | 'IfNoneMatch'> {
    const params: Omit<PutObjectCommandInput, 'Body' | 'IfNoneMatch'> = { Bucket: this.cfg.bucket, Key, ...lockParams(this.cfg.objectLock) };
    if (this.cfg.sse) params.ServerSideEncryption = this.cfg.sse;
    if (this.cfg.kmsKeyId) params.SSEKMSKeyId = this.cfg.kmsKeyId;
    if (this.cfg.storageClass) params.StorageClass = this.cfg.storageClass as StorageClass;
    return params;
  }

  /**
   * Uploads a local file (the sealed bundle): each part is read straight from
   * the file into one of queueSize + 1 part buffers, reused once its
   * UploadPart has answered. One copy per byte into memory that is already
   * mapped; lib-storage's path (read stream, Buffer.concat per part, fresh
   * buffers) cost twice the CPU, which on a master competes with etcd.
   * Memory: partSize x (queueSize + 1), as with put().
   */
  async putFile(key: string, path: string, opts: PutOptions = {}): Promise<PutResult> {
    if (this.caps.putFile) return this.putFileMultipart(key, path, opts);
    // Without the capability (s3Capabilities says why) the file goes through put() and lib-storage.
    const size = await stat(path).then(
      (st) => st.size,
      (e: unknown) => {
        throw new BackupError('upload-failed', `store ${this.name}: uploading ${this.url(this.objectKey(key))} failed: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
      },
    );
    return this.put(key, createReadStream(path, { highWaterMark: 1 << 20 }), { ...opts, size });
  }

  private async putFileMultipart(key: string, path: string, opts: PutOptions = {}): Promise<PutResult> {
    const { signal, onProgress } = opts;
    const ifAbsent = opts.ifAbsent ? { IfNoneMatch: '*' } : {};
    const Key = this.objectKey(key);
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new BackupError('upload-failed', `store ${this.name}: uploading ${this.url(Key)} failed: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
    // A failed read of the bundle is ours, not the store's: say so, never as a network error of the store.
    const readLocal = (f: FileHandle, buf: Buffer, len: number, at: number) =>
      readFully(f, buf, len, at).catch((e: unknown) => {
        throw new BackupError('upload-failed', `store ${this.name}: uploading ${this.url(Key)} failed: reading ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
      });
    let uploadId: string | undefined;
    const inflight = new Set<Promise<void>>();
    const aborted = () => abortedByShutdown(this.name, `upload of ${this.url(Key)}`);
    try {
      const size = (await fh.stat()).size;
      const partSize = this.partSizeFor(size);
      const head = this.objectParams(Key);
      if (size <= partSize) {
        const body = Buffer.allocUnsafe(size);
        await readLocal(fh, body, size, 0);
        if (signal?.aborted) throw aborted();
        await this.client.send(new PutObjectCommand({ ...head, ...ifAbsent, Body: body, ContentLength: size }), { abortSignal: signal });
        onProgress?.(size);
        return { key, size };
      }
      uploadId = (await this.client.send(new CreateMultipartUploadCommand(head), { abortSignal: signal })).UploadId;
      if (!uploadId) throw new BackupError('upload-failed', `store ${this.name}: uploading ${this.url(Key)} failed: the server returned no UploadId`);
      const pool: Buffer[] = [];
      const parts: CompletedPart[] = [];
      let failure: unknown;
      const queue = this.cfg.queueSize;
      for (let n = 1, pos = 0; pos < size; n++, pos += partSize) {
        while (inflight.size >= queue && failure === undefined) await Promise.race(inflight);
        if (failure !== undefined) throw failure;
        if (signal?.aborted) throw aborted();
        const buf = pool.pop() ?? Buffer.allocUnsafeSlow(partSize);
        const len = Math.min(partSize, size - pos);
        await readLocal(fh, buf, len, pos);
        const PartNumber = n;
        const p: Promise<void> = this.client
          .send(
            new UploadPartCommand({ Bucket: this.cfg.bucket, Key, UploadId: uploadId, PartNumber, Body: buf.subarray(0, len), ContentLength: len, ChecksumAlgorithm: head.ChecksumAlgorithm }),
            { abortSignal: signal },
          )
          .then((r) => {
            if (!r.ETag) throw new BackupError('upload-failed', `store ${this.name}: uploading ${this.url(Key)} failed: the server returned no ETag for part ${PartNumber}`);
            // An upload begun with a checksum algorithm completes only with each part's checksum.
            parts.push({ PartNumber, ETag: r.ETag, ...(r.ChecksumCRC32 ? { ChecksumCRC32: r.ChecksumCRC32 } : {}) });
            pool.push(buf);
            onProgress?.(len);
          })
          .catch((e: unknown) => {
            failure ??= signal?.aborted ? aborted() : e;
          })
          .finally(() => inflight.delete(p));
        inflight.add(p);
      }
      await Promise.all(inflight);
      if (failure !== undefined) throw failure;
      if (signal?.aborted) throw aborted();
      parts.sort((a, b) => a.PartNumber! - b.PartNumber!);
      await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: parts }, ...ifAbsent }), {
        abortSignal: signal,
      });
      return { key, size };
    } catch (e) {
      // No part may land after the abort: wait for those still in flight (each ends, at worst, by the SDK's timeouts).
      await Promise.allSettled(inflight);
      if (uploadId) {
        // As in put(): servers without AbortMultipartUpload leave the parts to cleanupIncomplete.
        await this.client
          .send(new AbortMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId: uploadId }), { abortSignal: AbortSignal.timeout(CLEANUP_MS) })
          .catch(() => undefined);
      }
      if (opts.ifAbsent && isPreconditionFailed(facts(e))) throw new ObjectExistsError(this.name, key);
      throw this.fail('uploading', Key, e);
    } finally {
      await fh.close();
    }
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<PutResult> {
    const { size, signal } = opts;
    const Key = this.objectKey(key);
    let sent = 0;
    let bodyError: unknown;
    let gaveUp = false;
    // Counts what goes out. A failing (or prematurely closed) body fails the upload;
    // a failed upload destroys the body below, so the producer does not wait forever.
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        sent += chunk.length;
        cb(null, chunk);
      },
    });
    finished(body, { writable: false }, (err) => {
      if (!err || gaveUp) return;
      bodyError ??= err;
      counter.destroy(err);
    });
    body.pipe(counter);
    const partSize = this.partSizeFor(size);
    const params: PutObjectCommandInput = { ...this.objectParams(Key), ...(opts.ifAbsent ? { IfNoneMatch: '*' } : {}), Body: counter };
    // leavePartsOnError: lib-storage's own abort would replace the real error with the
    // abort's error on servers without AbortMultipartUpload; we abort ourselves below.
    const upload = new Upload({ client: this.client, params, partSize, queueSize: this.cfg.queueSize, leavePartsOnError: true });
    const onAbort = () => void upload.abort().catch(() => undefined);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) throw signal.reason;
      await upload.done();
    } catch (e) {
      gaveUp = true;
      counter.destroy();
      if (!body.destroyed && !body.readableEnded) body.destroy();
      const uploadId = (upload as unknown as { uploadId?: string }).uploadId;
      if (uploadId) {
        // Servers without AbortMultipartUpload (s3rver) answer with an error: the
        // prune-time cleanupIncomplete (or a bucket lifecycle rule) removes the parts.
        await this.client
          .send(new AbortMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId: uploadId }), { abortSignal: AbortSignal.timeout(CLEANUP_MS) })
          .catch(() => undefined);
      }
      if (signal?.aborted && signal.reason instanceof BackupError) throw signal.reason;
      if (opts.ifAbsent && isPreconditionFailed(facts(e))) throw new ObjectExistsError(this.name, key);
      if (bodyError !== undefined) {
        if (bodyError instanceof BackupError) throw bodyError; // the producer's own reason (bundle-failed, ...)
        throw new BackupError('upload-failed', `store ${this.name}: uploading ${this.url(Key)} failed: the data to upload failed: ${(bodyError as Error)?.message ?? String(bodyError)}`, {
          cause: bodyError,
        });
      }
      throw this.fail('uploading', Key, e);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    return { key, size: sent };
  }

  async head(key: string, opts: OpOptions = {}): Promise<ObjectInfo | undefined> {
    const Key = this.objectKey(key);
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.cfg.bucket, Key }), { abortSignal: opts.signal });
      return { key, size: r.ContentLength ?? 0, ...(r.LastModified ? { modifiedAt: r.LastModified } : {}), ...lockInfo(r) };
    } catch (e) {
      if (isNotFound(facts(e))) return undefined;
      throw this.fail('reading metadata of', Key, e, 'store-unavailable');
    }
  }

  async get(key: string, opts: TransferOptions = {}): Promise<Readable> {
    const Key = this.objectKey(key);
    let body: Readable;
    let expected: number | undefined;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.cfg.bucket, Key }), { abortSignal: opts.signal });
      if (!(r.Body instanceof Readable)) throw new BackupError('internal', `store ${this.name}: reading ${this.url(Key)} gave no body stream`);
      body = r.Body;
      expected = r.ContentLength;
    } catch (e) {
      const f = facts(e);
      if (isNotFound(f)) throw new BackupError('not-found', `store ${this.name}: ${this.url(Key)} does not exist`, { cause: e });
      throw this.fail('reading', Key, e, 'store-unavailable');
    }
    // A connection lost mid-download ends as a BackupError naming the store, and a
    // short body (server closed early) is an error, not a silently shorter stream.
    let got = 0;
    const out = new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _enc, cb) {
        got += chunk.length;
        cb(null, chunk);
      },
      flush: (cb) => {
        if (expected !== undefined && got !== expected) {
          cb(new BackupError('store-unavailable', `store ${this.name}: reading ${this.url(Key)} ended after ${got} of ${expected} bytes`));
        } else cb();
      },
    });
    body.on('error', (e) => out.destroy(this.fail('reading', Key, e, 'store-unavailable')));
    out.once('close', () => {
      if (!body.readableEnded) body.destroy();
    });
    body.pipe(out);
    return out;
  }

  /** Every object under `prefix` but those under `opts.exclude` (list-skip.ts: S3 jumps past it). */
  async *list(prefix: string, opts: ListOptions = {}): AsyncIterable<ObjectInfo> {
    yield* listSkippingSubtree((startAfter) => this.listFrom(prefix, startAfter, opts.signal), checkListExclude(this.name, prefix, opts.exclude));
  }

  /**
   * One listing of `prefix` from after `startAfter` (a key relative to the
   * store): every page within the signal's deadline; a server that keeps
   * answering "truncated" with a token it gave before, or "truncated" with no
   * token at all, is refused: the first loops forever, the second hides the rest.
   */
  private async *listFrom(prefix: string, startAfter: string | undefined, signal: AbortSignal | undefined): AsyncIterable<ObjectInfo> {
    const base = this.base;
    const Prefix = base + prefix;
    const StartAfter = startAfter === undefined ? undefined : base + startAfter;
    const seen = new Set<string>();
    let ContinuationToken: string | undefined;
    for (let pages = 1; ; pages++) {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.cfg.bucket, Prefix, ...(ContinuationToken ? { ContinuationToken } : StartAfter ? { StartAfter } : {}) }), {
          abortSignal: signal,
        });
      } catch (e) {
        throw this.fail('listing', Prefix, e, 'store-unavailable');
      }
      for (const o of page.Contents ?? []) {
        if (!o.Key?.startsWith(base)) continue;
        yield { key: o.Key.slice(base.length), size: o.Size ?? 0, ...(o.LastModified ? { modifiedAt: o.LastModified } : {}), ...(o.ETag ? { etag: o.ETag } : {}) };
      }
      if (!page.IsTruncated) return;
      ContinuationToken = page.NextContinuationToken;
      if (!ContinuationToken) throw this.misbehaving(`listing ${this.url(Prefix)}: page ${pages} says there is more but gives no continuation token`);
      if (seen.has(ContinuationToken)) throw this.misbehaving(`listing ${this.url(Prefix)}: page ${pages} repeats a continuation token it gave before (the listing would loop forever)`);
      if (pages >= MAX_PAGES) throw this.misbehaving(`listing ${this.url(Prefix)}: more than ${MAX_PAGES} pages`);
      seen.add(ContinuationToken);
    }
  }

  private misbehaving(what: string): BackupError {
    return new BackupError('store-misbehaving', `store ${this.name}: ${what}`, {
      hint: `the server at ${this.cfg.endpoint ?? `S3 in ${this.cfg.region}`} (or a proxy in front of it) answers listings wrongly; fix it or use another endpoint`,
    });
  }

  async delete(keys: string[], opts: OpOptions = {}): Promise<void> {
    const abortSignal = opts.signal;
    // With objectLock no DELETE is sent while one of the keys is locked (lock.ts says why).
    if (this.cfg.objectLock) await assertUnlocked(keys, (k) => this.head(k, { signal: abortSignal }), (k) => `store ${this.name}: ${this.url(this.objectKey(k))}`);
    const objectKeys = keys.map((k) => this.objectKey(k));
    for (let i = 0; i < objectKeys.length; i += DELETE_BATCH) {
      const batch = objectKeys.slice(i, i + DELETE_BATCH);
      if (this.bulkDelete) {
        try {
          const r = await this.client.send(
            new DeleteObjectsCommand({ Bucket: this.cfg.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
            { abortSignal },
          );
          const errors = (r.Errors ?? []).filter((x) => x.Code !== 'NoSuchKey');
          if (errors.length) {
            const first = errors[0]!;
            throw new BackupError(
              'store-unavailable',
              this.scrub(`store ${this.name}: deleting ${errors.length} of ${batch.length} objects failed, e.g. ${this.url(first.Key ?? '?')}: ${first.Code}${first.Message ? `: ${first.Message}` : ''}`),
              { hint: first.Code === 'AccessDenied' ? `the credentials lack s3:DeleteObject on bucket ${this.cfg.bucket}` : undefined },
            );
          }
          continue;
        } catch (e) {
          const f = facts(e);
          // Some gateways lack DeleteObjects or insist on Content-MD5 (newer SDKs send CRC32): delete one by one.
          if (!(e instanceof BackupError) && (isUnsupported(f) || f.code === 'MissingContentMD5' || (f.code === 'InvalidRequest' && /md5/i.test(f.detail ?? '')))) {
            this.bulkDelete = false;
          } else {
            throw this.fail(`deleting ${batch.length} objects from`, batch[0]!, e, 'store-unavailable');
          }
        }
      }
      for (const Key of batch) {
        try {
          await this.client.send(new DeleteObjectCommand({ Bucket: this.cfg.bucket, Key }), { abortSignal });
        } catch (e) {
          if (isNotFound(facts(e))) continue;
          throw this.fail('deleting', Key, e, 'store-unavailable');
        }
      }
    }
  }

  /**
   * Aborts unfinished multipart uploads. This never meets a lock: the
   * retention an upload names applies to the object its completion creates,
   * and an upload never completed has no object version to protect (S3
   * allows AbortMultipartUpload on a lock bucket).
   */
  async cleanupIncomplete(prefix: string, olderThan: Date, opts: OpOptions = {}): Promise<string[]> {
    const abortSignal = opts.signal;
    const Prefix = this.base + prefix;
    const removed: string[] = [];
    const seen = new Set<string>();
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    for (let pages = 1; ; pages++) {
      let page;
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.cfg.bucket, Prefix, ...(KeyMarker ? { KeyMarker } : {}), ...(UploadIdMarker ? { UploadIdMarker } : {}) }),
          { abortSignal },
        );
      } catch (e) {
        // Servers without ListMultipartUploads (s3rver) have nothing we could clean up this way.
        if (isUnsupported(facts(e))) return removed;
        throw this.fail('listing unfinished multipart uploads under', Prefix, e, 'store-unavailable');
      }
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated >= olderThan) continue;
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.cfg.bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal });
        } catch (e) {
          const f = facts(e);
          if (f.code === 'NoSuchUpload' || isNotFound(f)) continue; // completed or aborted meanwhile
          throw this.fail('aborting an unfinished multipart upload of', u.Key, e, 'store-unavailable');
        }
        removed.push(`unfinished multipart upload ${this.url(u.Key)} (upload id ${u.UploadId}, started ${u.Initiated.toISOString()})`);
      }
      if (!page.IsTruncated) return removed;
      KeyMarker = page.NextKeyMarker;
      UploadIdMarker = page.NextUploadIdMarker;
      const marker = `${KeyMarker ?? ''}\0${UploadIdMarker ?? ''}`;
      if (!KeyMarker) throw this.misbehaving(`listing unfinished uploads under ${this.url(Prefix)}: page ${pages} says there is more but gives no marker`);
      if (seen.has(marker) || pages >= MAX_PAGES) throw this.misbehaving(`listing unfinished uploads under ${this.url(Prefix)}: the listing loops (page ${pages})`);
      seen.add(marker);
    }
  }

  /** S3 holds no sha256 of an object it could hand out (an ETag is an MD5, of MD5s for multipart): a copy is proven by reading it back. */
  async serverSha256(_key: string, _opts?: OpOptions): Promise<undefined> {
    return undefined;
  }

  readBackSha256(key: string, opts?: TransferOptions): Promise<{ bytes: number; sha256: string }> {
    return readBackByGet(this, key, opts);
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

