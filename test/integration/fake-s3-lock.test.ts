import { randomBytes } from 'node:crypto';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeS3, type FakeS3 } from '../support/fake-s3.js';
import { sdkRejectionOf } from '../support/rejections.js';
import { fakeS3Client } from '../support/fake-s3-client.js';

/**
 * The Object Lock of the fake S3 server (test/support/fake-s3-lock.ts)
 * against the real SDK, configured as src/storage/s3/store.ts configures it
 * (checksums only when required): a lock bucket is versioned, wants an
 * integrity header on every write, reports locks, answers a plain DELETE
 * with a delete marker and refuses to delete a locked version.
 */
const MiB = 1024 * 1024;
let locked: FakeS3;
let plain: FakeS3;

const client = (s3: FakeS3): S3Client => fakeS3Client(s3);

const rejection = sdkRejectionOf;

const inSeconds = (s: number) => new Date(Math.ceil((Date.now() + s * 1000) / 1000) * 1000);
const lockOf = (seconds: number, mode: 'GOVERNANCE' | 'COMPLIANCE' = 'COMPLIANCE') => ({ ObjectLockMode: mode, ObjectLockRetainUntilDate: inSeconds(seconds) });

beforeAll(async () => {
  [locked, plain] = await Promise.all([startFakeS3({ objectLock: true }), startFakeS3()]);
});
afterAll(async () => {
  await Promise.all([locked?.close(), plain?.close()]);
});
beforeEach(() => {
  locked.reset();
  plain.reset();
});

describe('writes to a lock bucket', () => {
  it('a PutObject without Content-MD5 or a checksum is refused (400 InvalidRequest); with CRC32 or Content-MD5 it is stored with its lock', async () => {
    const c = client(locked);
    const no = await rejection(c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'a', Body: Buffer.from('x'), ...lockOf(60) })));
    expect(no).toMatchObject({ name: 'InvalidRequest', status: 400 });
    expect(no.message).toMatch(/Content-MD5 OR x-amz-checksum-/);
    expect(locked.objects.has('a')).toBe(false);
    const until = inSeconds(60);
    const put = await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'a', Body: Buffer.from('x'), ChecksumAlgorithm: 'CRC32', ObjectLockMode: 'COMPLIANCE', ObjectLockRetainUntilDate: until }));
    expect(put.VersionId).toBeTruthy();
    expect(put.ChecksumCRC32).toBeTruthy();
    const h = await c.send(new HeadObjectCommand({ Bucket: locked.bucket, Key: 'a' }));
    expect(h.ObjectLockMode).toBe('COMPLIANCE');
    expect(h.ObjectLockRetainUntilDate?.toISOString()).toBe(until.toISOString());
    expect(h.VersionId).toBe(put.VersionId);
    const md5 = (await import('node:crypto')).createHash('md5').update('y').digest('base64');
    await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'b', Body: Buffer.from('y'), ContentMD5: md5 }));
    expect((await c.send(new HeadObjectCommand({ Bucket: locked.bucket, Key: 'b' }))).ObjectLockMode).toBeUndefined();
  });

  it('a wrong CRC32 is BadDigest; a past retain-until date and a mode alone are InvalidArgument', async () => {
    const c = client(locked);
    const wrong = await rejection(c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'a', Body: Buffer.from('x'), ChecksumCRC32: 'AAAAAA==' })));
    expect(wrong).toMatchObject({ name: 'BadDigest', status: 400 });
    const past = await rejection(
      c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'a', Body: Buffer.from('x'), ChecksumAlgorithm: 'CRC32', ObjectLockMode: 'GOVERNANCE', ObjectLockRetainUntilDate: new Date(Date.now() - 1000) })),
    );
    expect(past).toMatchObject({ name: 'InvalidArgument', status: 400 });
    const half = await rejection(c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'a', Body: Buffer.from('x'), ChecksumAlgorithm: 'CRC32', ObjectLockMode: 'GOVERNANCE' })));
    expect(half).toMatchObject({ name: 'InvalidArgument', status: 400 });
    expect(locked.objects.size).toBe(0);
  });

  it('a bucket without Object Lock refuses lock headers (400 InvalidRequest) and takes writes without a checksum', async () => {
    const c = client(plain);
    const e = await rejection(c.send(new PutObjectCommand({ Bucket: plain.bucket, Key: 'a', Body: Buffer.from('x'), ChecksumAlgorithm: 'CRC32', ...lockOf(60) })));
    expect(e).toMatchObject({ name: 'InvalidRequest', status: 400 });
    expect(e.message).toMatch(/missing Object Lock Configuration/);
    await c.send(new PutObjectCommand({ Bucket: plain.bucket, Key: 'a', Body: Buffer.from('x') }));
    expect(plain.objects.get('a')?.body.toString()).toBe('x');
  });

  it('a multipart upload: parts need a checksum, completion needs each part checksum, the object gets the lock of CreateMultipartUpload', async () => {
    const c = client(locked);
    const lock = lockOf(60, 'GOVERNANCE');
    const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: locked.bucket, Key: 'big', ChecksumAlgorithm: 'CRC32', ...lock }));
    const bodies = [randomBytes(5 * MiB), randomBytes(MiB)];
    const bare = await rejection(c.send(new UploadPartCommand({ Bucket: locked.bucket, Key: 'big', UploadId, PartNumber: 1, Body: bodies[0] })));
    expect(bare).toMatchObject({ name: 'InvalidRequest', status: 400 });
    const parts = [];
    for (const [i, Body] of bodies.entries()) {
      const r = await c.send(new UploadPartCommand({ Bucket: locked.bucket, Key: 'big', UploadId, PartNumber: i + 1, Body, ChecksumAlgorithm: 'CRC32' }));
      expect(r.ChecksumCRC32).toBeTruthy();
      parts.push({ PartNumber: i + 1, ETag: r.ETag!, ChecksumCRC32: r.ChecksumCRC32! });
    }
    const without = await rejection(
      c.send(new CompleteMultipartUploadCommand({ Bucket: locked.bucket, Key: 'big', UploadId, MultipartUpload: { Parts: parts.map(({ PartNumber, ETag }) => ({ PartNumber, ETag })) } })),
    );
    expect(without).toMatchObject({ name: 'InvalidPart', status: 400 });
    await c.send(new CompleteMultipartUploadCommand({ Bucket: locked.bucket, Key: 'big', UploadId, MultipartUpload: { Parts: parts } }));
    const h = await c.send(new HeadObjectCommand({ Bucket: locked.bucket, Key: 'big' }));
    expect(h.ContentLength).toBe(6 * MiB);
    expect(h.ObjectLockMode).toBe('GOVERNANCE');
    expect(h.ObjectLockRetainUntilDate?.getTime()).toBe(lock.ObjectLockRetainUntilDate.getTime());
  });

  it('a PUT over an existing key adds a version: the locked one stays', async () => {
    const c = client(locked);
    await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'k', Body: Buffer.from('one'), ChecksumAlgorithm: 'CRC32', ...lockOf(60) }));
    await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'k', Body: Buffer.from('two'), ChecksumAlgorithm: 'CRC32' }));
    expect(locked.objects.get('k')?.body.toString()).toBe('two');
    expect(locked.lock.objectVersions('k').map((v) => v.object?.body.toString())).toEqual(['one', 'two']);
  });
});

describe('deletes in a lock bucket', () => {
  it('DeleteObject without a version id adds a delete marker: gone from GET and listings, the locked version kept, the marker recorded', async () => {
    const c = client(locked);
    await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'p/a', Body: Buffer.from('x'), ChecksumAlgorithm: 'CRC32', ...lockOf(60) }));
    const d = await c.send(new DeleteObjectCommand({ Bucket: locked.bucket, Key: 'p/a' }));
    expect(d.DeleteMarker).toBe(true);
    expect(await rejection(c.send(new GetObjectCommand({ Bucket: locked.bucket, Key: 'p/a' })))).toMatchObject({ name: 'NoSuchKey', status: 404 });
    expect((await c.send(new ListObjectsV2Command({ Bucket: locked.bucket, Prefix: 'p/' }))).Contents ?? []).toEqual([]);
    expect(locked.lock.objectVersions('p/a')).toHaveLength(1);
    expect(locked.lock.deleteMarkers).toMatchObject([{ key: 'p/a', hidLocked: true }]);
  });

  it('DeleteObjects without version ids does the same for each key', async () => {
    const c = client(locked);
    for (const Key of ['q/a', 'q/b']) await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key, Body: Buffer.from(Key), ChecksumAlgorithm: 'CRC32', ...lockOf(60) }));
    await c.send(new DeleteObjectsCommand({ Bucket: locked.bucket, Delete: { Objects: [{ Key: 'q/a' }, { Key: 'q/b' }], Quiet: true } }));
    expect(locked.objects.size).toBe(0);
    expect(locked.lock.deleteMarkers.map((m) => [m.key, m.hidLocked])).toEqual([
      ['q/a', true],
      ['q/b', true],
    ]);
    expect(locked.lock.objectVersions('q/a')).toHaveLength(1);
  });

  it('DeleteObject of a locked version is 403 AccessDenied (GOVERNANCE yields to the bypass header); once the lock expires the version goes', async () => {
    const c = client(locked);
    const comp = await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'c', Body: Buffer.from('x'), ChecksumAlgorithm: 'CRC32', ...lockOf(2) }));
    const gov = await c.send(new PutObjectCommand({ Bucket: locked.bucket, Key: 'g', Body: Buffer.from('x'), ChecksumAlgorithm: 'CRC32', ...lockOf(60, 'GOVERNANCE') }));
    expect(await rejection(c.send(new DeleteObjectCommand({ Bucket: locked.bucket, Key: 'c', VersionId: comp.VersionId })))).toMatchObject({ name: 'AccessDenied', status: 403 });
    expect(await rejection(c.send(new DeleteObjectCommand({ Bucket: locked.bucket, Key: 'c', VersionId: comp.VersionId, BypassGovernanceRetention: true })))).toMatchObject({
      name: 'AccessDenied',
      status: 403,
    });
    expect(await rejection(c.send(new DeleteObjectCommand({ Bucket: locked.bucket, Key: 'g', VersionId: gov.VersionId })))).toMatchObject({ name: 'AccessDenied', status: 403 });
    expect(locked.objects.has('c') && locked.objects.has('g')).toBe(true);
    await c.send(new DeleteObjectCommand({ Bucket: locked.bucket, Key: 'g', VersionId: gov.VersionId, BypassGovernanceRetention: true }));
    expect(locked.objects.has('g')).toBe(false);
    await new Promise((r) => setTimeout(r, Math.max(0, lockOf(0).ObjectLockRetainUntilDate.getTime() - Date.now()) + 2100));
    await c.send(new DeleteObjectCommand({ Bucket: locked.bucket, Key: 'c', VersionId: comp.VersionId }));
    expect(locked.objects.has('c')).toBe(false);
    expect(locked.lock.objectVersions('c')).toEqual([]);
    expect(locked.lock.versionDeletes.map((v) => v.key)).toEqual(['g', 'c']);
    expect(locked.lock.deleteMarkers).toEqual([]);
  });
});
