import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { createServer, connect, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeS3, startThrottleProxy, type FakeS3 } from '../support/fake-s3.js';
import { sdkRejectionOf } from '../support/rejections.js';
import { fakeS3Client } from '../support/fake-s3-client.js';

/**
 * The fake S3 server of test/support/fake-s3.ts against the real SDK
 * (@aws-sdk/client-s3 and lib-storage, configured as src/storage/s3/store.ts
 * configures them): it must behave like S3 where it is meant to, and
 * misbehave exactly as told.
 */
const MiB = 1024 * 1024;
let s3: FakeS3;

const client = (over: { maxAttempts?: number; requestTimeout?: number } = {}): S3Client => fakeS3Client(s3, over);
let c: S3Client;
const B = () => s3.bucket;

async function bytesOf(body: unknown): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const x of body as Readable) chunks.push(x as Buffer);
  return Buffer.concat(chunks);
}

const rejection = sdkRejectionOf;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  s3 = await startFakeS3({ bucket: 'fake-bucket' });
  c = client();
});
afterAll(async () => {
  c?.destroy();
  await s3?.close();
});
beforeEach(() => s3.reset());

describe('S3 as the SDK expects it', () => {
  it('put, head, get, delete; missing keys are NotFound (HEAD) and NoSuchKey (GET); another bucket is NoSuchBucket', async () => {
    const body = randomBytes(70_000);
    const put = await c.send(new PutObjectCommand({ Bucket: B(), Key: 'p/c1/a b+c/obj.bin', Body: body, ContentLength: body.length }));
    expect(put.ETag).toBe(`"${createHash('md5').update(body).digest('hex')}"`);
    expect(s3.objects.get('p/c1/a b+c/obj.bin')?.body.equals(body)).toBe(true);
    const head = await c.send(new HeadObjectCommand({ Bucket: B(), Key: 'p/c1/a b+c/obj.bin' }));
    expect(head.ContentLength).toBe(body.length);
    expect(head.ETag).toBe(put.ETag);
    expect(Math.abs(head.LastModified!.getTime() - Date.now())).toBeLessThan(5_000);
    const get = await c.send(new GetObjectCommand({ Bucket: B(), Key: 'p/c1/a b+c/obj.bin' }));
    expect(get.ContentLength).toBe(body.length);
    expect((await bytesOf(get.Body)).equals(body)).toBe(true);
    const ranged = await c.send(new GetObjectCommand({ Bucket: B(), Key: 'p/c1/a b+c/obj.bin', Range: 'bytes=10-19' }));
    expect((await bytesOf(ranged.Body)).equals(body.subarray(10, 20))).toBe(true);

    expect(await rejection(c.send(new HeadObjectCommand({ Bucket: B(), Key: 'nope' })))).toMatchObject({ name: 'NotFound', status: 404 });
    expect(await rejection(c.send(new GetObjectCommand({ Bucket: B(), Key: 'nope' })))).toMatchObject({ name: 'NoSuchKey', status: 404 });
    expect(await rejection(c.send(new GetObjectCommand({ Bucket: 'other-bucket', Key: 'x' })))).toMatchObject({ name: 'NoSuchBucket', status: 404 });

    await c.send(new DeleteObjectCommand({ Bucket: B(), Key: 'p/c1/a b+c/obj.bin' }));
    await c.send(new DeleteObjectCommand({ Bucket: B(), Key: 'p/c1/a b+c/obj.bin' })); // idempotent, as on S3
    expect(s3.objects.size).toBe(0);
    expect(s3.requests.map((r) => `${r.op} ${r.status}`)).toEqual([
      'PutObject 200',
      'HeadObject 200',
      'GetObject 200',
      'GetObject 206',
      'HeadObject 404',
      'GetObject 404',
      'GetObject 404',
      'DeleteObject 204',
      'DeleteObject 204',
    ]);
    expect(s3.requests[0]).toMatchObject({ method: 'PUT', key: 'p/c1/a b+c/obj.bin' });
  });

  it('If-None-Match: * refuses to overwrite with 412 PreconditionFailed and keeps the first bytes', async () => {
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'k', Body: 'first', IfNoneMatch: '*' }));
    const e = await rejection(c.send(new PutObjectCommand({ Bucket: B(), Key: 'k', Body: 'second', IfNoneMatch: '*' })));
    expect(e).toMatchObject({ name: 'PreconditionFailed', status: 412 });
    expect(s3.objects.get('k')!.body.toString()).toBe('first');
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'k', Body: 'third' })); // unconditional: overwrites
    expect(s3.objects.get('k')!.body.toString()).toBe('third');
  });

  it('Expect: 100-continue: the body is asked for; a refused PUT is answered before any body is sent', async () => {
    s3.objects.set('taken', { body: Buffer.from('x'), modified: new Date(), etag: '"x"' });
    const raw = (headers: Record<string, string>, path: string) =>
      new Promise<{ status: number; continued: boolean; text: string }>((resolve, reject) => {
        let continued = false;
        const req = request({ host: '127.0.0.1', port: s3.port, method: 'PUT', path, headers: { Expect: '100-continue', 'Content-Length': '5', ...headers } });
        req.on('continue', () => {
          continued = true;
          req.end('hello');
        });
        req.on('response', (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode!, continued, text }));
        });
        req.on('error', reject);
        req.flushHeaders();
      });
    const refused = await raw({ 'If-None-Match': '*' }, `/${B()}/taken`);
    expect(refused).toMatchObject({ status: 412, continued: false });
    expect(refused.text).toMatch(/<Code>PreconditionFailed<\/Code>/);
    expect(await raw({}, `/${B()}/fresh`)).toMatchObject({ status: 200, continued: true });
    expect(s3.objects.get('fresh')!.body.toString()).toBe('hello');
  });

  it('ListObjectsV2 pages 1000 keys at a time (2500 keys: 1000, 1000, 500), with prefix, max-keys and delimiter', async () => {
    const keys: string[] = [];
    for (let i = 0; i < 2500; i++) keys.push(`pre/c1/${String(i).padStart(5, '0')}/manifest.json`);
    for (const k of keys) s3.objects.set(k, { body: Buffer.from(k), modified: new Date(), etag: '"e"' });
    s3.objects.set('other/x', { body: Buffer.from('x'), modified: new Date(), etag: '"e"' });
    const pages: { n: number; truncated?: boolean; count?: number }[] = [];
    const seen: string[] = [];
    for await (const page of paginateListObjectsV2({ client: c }, { Bucket: B(), Prefix: 'pre/' })) {
      pages.push({ n: page.Contents?.length ?? 0, truncated: page.IsTruncated, count: page.KeyCount });
      for (const o of page.Contents ?? []) seen.push(o.Key!);
      expect(page.Contents?.[0]?.Size).toBeGreaterThan(0);
    }
    expect(pages).toEqual([
      { n: 1000, truncated: true, count: 1000 },
      { n: 1000, truncated: true, count: 1000 },
      { n: 500, truncated: false, count: 500 },
    ]);
    expect(seen).toEqual(keys);
    const small = await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'pre/c1/0001', MaxKeys: 7 }));
    expect(small).toMatchObject({ KeyCount: 7, MaxKeys: 7, IsTruncated: true });
    const next = await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'pre/c1/0001', MaxKeys: 7, ContinuationToken: small.NextContinuationToken }));
    expect(next.Contents![0]!.Key).toBe('pre/c1/00017/manifest.json');
    const folded = await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'pre/c1/', Delimiter: '/', MaxKeys: 3 }));
    expect(folded.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['pre/c1/00000/', 'pre/c1/00001/', 'pre/c1/00002/']);
    expect(folded.Contents ?? []).toEqual([]);
    const folded2 = await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'pre/c1/', Delimiter: '/', MaxKeys: 3, ContinuationToken: folded.NextContinuationToken }));
    expect(folded2.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['pre/c1/00003/', 'pre/c1/00004/', 'pre/c1/00005/']);
  });

  it('DeleteObjects (POST ?delete) removes every key named, quiet or not', async () => {
    for (const k of ['a', 'b', 'c', 'd']) await c.send(new PutObjectCommand({ Bucket: B(), Key: k, Body: k }));
    const loud = await c.send(new DeleteObjectsCommand({ Bucket: B(), Delete: { Objects: [{ Key: 'a' }, { Key: 'b' }, { Key: 'missing' }] } }));
    expect(loud.Deleted?.map((d) => d.Key).sort()).toEqual(['a', 'b', 'missing']);
    const quiet = await c.send(new DeleteObjectsCommand({ Bucket: B(), Delete: { Objects: [{ Key: 'c' }], Quiet: true } }));
    expect(quiet.Deleted ?? []).toEqual([]);
    expect(quiet.Errors ?? []).toEqual([]);
    expect([...s3.objects.keys()]).toEqual(['d']);
    expect(s3.requests.filter((r) => r.op === 'DeleteObjects').map((r) => r.keys)).toEqual([['a', 'b', 'missing'], ['c']]);
  });

  it('multipart: lib-storage Upload of 12 MiB in 5 MiB parts (a stream, as the store sends it); unfinished uploads are listed and aborted', async () => {
    const body = randomBytes(12 * MiB);
    const up = new Upload({ client: c, params: { Bucket: B(), Key: 'p/big.tar', Body: Readable.from([body.subarray(0, 3 * MiB), body.subarray(3 * MiB)]) }, partSize: 5 * MiB, queueSize: 2 });
    const done = await up.done();
    expect(done.ETag).toMatch(/^"[0-9a-f]{32}-3"$/);
    expect(s3.objects.get('p/big.tar')!.body.equals(body)).toBe(true);
    expect(s3.requests.map((r) => r.op)).toEqual(['CreateMultipartUpload', 'UploadPart', 'UploadPart', 'UploadPart', 'CompleteMultipartUpload']);
    expect(s3.requests.every((r) => r.status === 200)).toBe(true);
    const get = await c.send(new GetObjectCommand({ Bucket: B(), Key: 'p/big.tar' }));
    expect(sha(await bytesOf(get.Body))).toBe(sha(body));

    const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: B(), Key: 'p/left.tar' }));
    const listed = await c.send(new ListMultipartUploadsCommand({ Bucket: B(), Prefix: 'p/' }));
    expect(listed.Uploads?.map((u) => [u.Key, u.UploadId])).toEqual([['p/left.tar', UploadId]]);
    expect(listed.Uploads![0]!.Initiated).toBeInstanceOf(Date);
    await c.send(new AbortMultipartUploadCommand({ Bucket: B(), Key: 'p/left.tar', UploadId }));
    expect((await c.send(new ListMultipartUploadsCommand({ Bucket: B(), Prefix: 'p/' }))).Uploads ?? []).toEqual([]);
    expect(await rejection(c.send(new AbortMultipartUploadCommand({ Bucket: B(), Key: 'p/left.tar', UploadId })))).toMatchObject({ name: 'NoSuchUpload', status: 404 });
    expect(s3.objects.has('p/left.tar')).toBe(false);
  }, 60_000);
});

describe('faults', () => {
  it('error: a status and S3 code, by op or method and key, for the next N requests only', async () => {
    const f = s3.faults.error({ method: 'PUT', times: 2 }, 500, 'InternalError');
    expect(await rejection(c.send(new PutObjectCommand({ Bucket: B(), Key: 'x', Body: 'x' })))).toMatchObject({ name: 'InternalError', status: 500 });
    expect(await rejection(c.send(new PutObjectCommand({ Bucket: B(), Key: 'y', Body: 'y' })))).toMatchObject({ name: 'InternalError', status: 500 });
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'z', Body: 'z' }));
    expect(f.hits).toBe(2);
    expect(f.active).toBe(false);
    expect([...s3.objects.keys()]).toEqual(['z']);

    const slow = s3.faults.error({ op: 'GetObject', key: /\/backup\.tar$/ }, 503, 'SlowDown');
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'c1/id/backup.tar', Body: 'x' }));
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'c1/id/manifest.json', Body: '{}' }));
    expect(await rejection(c.send(new GetObjectCommand({ Bucket: B(), Key: 'c1/id/backup.tar' })))).toMatchObject({ name: 'SlowDown', status: 503 });
    expect((await bytesOf((await c.send(new GetObjectCommand({ Bucket: B(), Key: 'c1/id/manifest.json' }))).Body)).toString()).toBe('{}');
    // SlowDown is retried by the SDK (3 attempts): every one is answered 503 while the fault is on.
    expect(await rejection(client({ maxAttempts: 3 }).send(new GetObjectCommand({ Bucket: B(), Key: 'c1/id/backup.tar' })))).toMatchObject({ status: 503 });
    expect(slow.hits).toBe(4);
    slow.off();
    expect((await bytesOf((await c.send(new GetObjectCommand({ Bucket: B(), Key: 'c1/id/backup.tar' }))).Body)).toString()).toBe('x');

    s3.faults.error({ op: 'HeadObject' }, 503, 'SlowDown');
    expect(await rejection(c.send(new HeadObjectCommand({ Bucket: B(), Key: 'c1/id/backup.tar' })))).toMatchObject({ status: 503 });
    s3.faults.clear();
    expect((await c.send(new HeadObjectCommand({ Bucket: B(), Key: 'c1/id/backup.tar' }))).ContentLength).toBe(1);
  }, 60_000);

  it('hang: no answer (the client times out; logged with status 0) until the fault is switched off, then the request is served', async () => {
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'k', Body: 'v' }));
    const f = s3.faults.hang({ op: 'HeadObject' });
    const quick = client({ requestTimeout: 700 });
    const t0 = Date.now();
    const e = await rejection(quick.send(new HeadObjectCommand({ Bucket: B(), Key: 'k' })));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
    expect(e.name).toMatch(/Timeout/);
    expect(s3.requests.at(-1)).toMatchObject({ op: 'HeadObject', status: 0 });
    // A PUT hangs too when told (before the body is asked for).
    const put = s3.faults.hang({ method: 'PUT', key: /^held$/ });
    const pending = c.send(new PutObjectCommand({ Bucket: B(), Key: 'held', Body: 'later' }));
    const waiting = c.send(new HeadObjectCommand({ Bucket: B(), Key: 'k' }));
    await new Promise((r) => setTimeout(r, 500));
    expect(s3.objects.has('held')).toBe(false);
    put.off();
    f.off();
    await pending;
    expect((await waiting).ContentLength).toBe(1);
    expect(s3.objects.get('held')!.body.toString()).toBe('later');
    quick.destroy();
  });

  it('trickle: GET bodies at N bytes/s (headers at once), full speed again when switched off', async () => {
    const body = randomBytes(3000);
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'slow', Body: body }));
    const f = s3.faults.trickle(1000, { key: /^slow$/ });
    const t0 = Date.now();
    const r = await c.send(new GetObjectCommand({ Bucket: B(), Key: 'slow' }));
    expect(Date.now() - t0).toBeLessThan(2000); // headers at once (the body would take 3 s)
    expect(r.ContentLength).toBe(3000);
    const got = await bytesOf(r.Body);
    const secs = (Date.now() - t0) / 1000;
    expect(got.equals(body)).toBe(true);
    expect(secs).toBeGreaterThan(2.5);
    expect(secs).toBeLessThan(15); // loose: a loaded machine stretches every tick

    // 1 byte/s: after 2 s about 2 bytes have arrived; off() delivers the rest at once.
    const g = s3.faults.trickle(1, { key: /^slow$/ });
    f.off();
    const r2 = await c.send(new GetObjectCommand({ Bucket: B(), Key: 'slow' }));
    let n = 0;
    const chunks: Buffer[] = [];
    (r2.Body as Readable).on('data', (d: Buffer) => ((n += d.length), chunks.push(d)));
    await new Promise((res) => setTimeout(res, 2200));
    expect(n).toBeGreaterThanOrEqual(1);
    expect(n).toBeLessThanOrEqual(4);
    g.off();
    await new Promise((res) => (r2.Body as Readable).once('end', res));
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
  }, 30_000);

  it('head-200: every HEAD answers 200 (existing keys with their real size), GET is unaffected', async () => {
    await c.send(new PutObjectCommand({ Bucket: B(), Key: 'real', Body: 'twelve bytes' }));
    s3.faults.head200({}, 4242);
    expect((await c.send(new HeadObjectCommand({ Bucket: B(), Key: 'no/such/key' }))).ContentLength).toBe(4242);
    expect((await c.send(new HeadObjectCommand({ Bucket: B(), Key: 'real' }))).ContentLength).toBe(12);
    expect(await rejection(c.send(new GetObjectCommand({ Bucket: B(), Key: 'no/such/key' })))).toMatchObject({ name: 'NoSuchKey' });
    s3.faults.clear();
    expect(await rejection(c.send(new HeadObjectCommand({ Bucket: B(), Key: 'no/such/key' })))).toMatchObject({ name: 'NotFound' });
  });

  it('list-loop: IsTruncated forever with the same token; or truncated with no token at all', async () => {
    for (let i = 0; i < 5; i++) s3.objects.set(`l/${i}`, { body: Buffer.from('x'), modified: new Date(), etag: '"e"' });
    const f = s3.faults.listLoop('same-token', { key: /^l\// });
    const tokens: (string | undefined)[] = [];
    let token: string | undefined;
    for (let i = 0; i < 4; i++) {
      const p = await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'l/', ...(token ? { ContinuationToken: token } : {}) }));
      expect(p.IsTruncated).toBe(true);
      expect(p.Contents?.map((o) => o.Key)).toEqual(['l/0', 'l/1', 'l/2', 'l/3', 'l/4']);
      tokens.push((token = p.NextContinuationToken));
    }
    expect(new Set(tokens).size).toBe(1);
    expect(tokens[0]).toBe('bG9vcA');
    // Another prefix is not matched by the fault.
    expect((await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'm/' }))).IsTruncated).toBe(false);
    f.off();
    s3.faults.listLoop('no-token');
    const p = await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'l/' }));
    expect(p.IsTruncated).toBe(true);
    expect(p.NextContinuationToken).toBeUndefined();
    s3.faults.clear();
    expect((await c.send(new ListObjectsV2Command({ Bucket: B(), Prefix: 'l/' }))).IsTruncated).toBe(false);
  });
});

describe('startThrottleProxy', () => {
  let target: Server;
  const payload = randomBytes(6000);
  beforeAll(async () => {
    // Answers each connection's first byte with the payload; echoes nothing else.
    target = createServer((s) => s.once('data', () => s.end(payload)));
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
  });
  afterAll(() => new Promise<void>((r) => target.close(() => r())));

  const fetchThrough = (port: number) =>
    new Promise<{ data: Buffer; ms: number }>((resolve, reject) => {
      const t0 = Date.now();
      const chunks: Buffer[] = [];
      const s = connect({ host: '127.0.0.1', port }, () => s.write('go'));
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => resolve({ data: Buffer.concat(chunks), ms: Date.now() - t0 }));
      s.on('error', reject);
    });

  it('passes bytes both ways; limits server->client bytes (after a free allowance) when a rate is set; full speed again when cleared', async () => {
    const proxy = await startThrottleProxy({ targetPort: (target.address() as AddressInfo).port });
    try {
      const fast = await fetchThrough(proxy.port);
      expect(fast.data.equals(payload)).toBe(true);
      expect(fast.ms).toBeLessThan(1000);
      proxy.setDownstreamRate(2000, { afterBytes: 2000 });
      const slow = await fetchThrough(proxy.port);
      expect(slow.data.equals(payload)).toBe(true);
      expect(slow.ms).toBeGreaterThan(1500); // 4000 throttled bytes at 2000 B/s
      expect(slow.ms).toBeLessThan(15_000);
      proxy.setDownstreamRate(1);
      const pending = fetchThrough(proxy.port);
      await new Promise((r) => setTimeout(r, 1500));
      proxy.setDownstreamRate(undefined);
      const released = await pending;
      expect(released.data.equals(payload)).toBe(true);
      expect(released.ms).toBeLessThan(10_000); // 1 byte/s would take 100 minutes
      expect(proxy.connections()).toBe(3);
      expect(proxy.downstreamBytes()).toBe(3 * payload.length);
    } finally {
      await proxy.close();
    }
  }, 30_000);
});
