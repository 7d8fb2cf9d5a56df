import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeSchema } from '../../src/config/schema.js';
import { S3Store } from '../../src/storage/s3/store.js';
import { tempDir } from '../support/cli.js';
import { startFakeS3, type FakeS3 } from '../support/fake-s3.js';
import { backupErrorOf } from '../support/rejections.js';
import { storeContract } from '../support/store-contract.js';

/**
 * The S3 store against an S3 server that honours `If-None-Match: *` (AWS and
 * MinIO do; s3rver ignores it): the whole store contract, including the
 * conditional create that keeps a committed manifest from ever being
 * replaced, on PutObject and on a multipart upload's completion. And
 * against one that implements AbortMultipartUpload (s3rver does not): a
 * multipart upload whose part fails is aborted, leaving no parts behind.
 */
let s3: FakeS3;
let creds: string;

beforeAll(async () => {
  s3 = await startFakeS3();
  creds = tempDir('s3-cond');
  writeFileSync(join(creds, 'id'), 'x', { mode: 0o600 });
  writeFileSync(join(creds, 'secret'), 'y', { mode: 0o600 });
});

afterAll(async () => {
  await s3?.close();
});

function store(prefix = `c-${randomBytes(4).toString('hex')}`): S3Store {
  const cfg = storeSchema.parse({
    name: 'cond',
    type: 's3',
    bucket: s3.bucket,
    prefix,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    accessKeyIdFile: join(creds, 'id'),
    secretAccessKeyFile: join(creds, 'secret'),
    partSize: 5 * 1024 * 1024,
  });
  if (cfg.type !== 's3') throw new Error('not an s3 config');
  return new S3Store(cfg);
}

it('a multipart putFile with ifAbsent onto an existing key fails at completion with id-conflict and leaves the object as it was', async () => {
  const s = store();
  const big = join(creds, 'big');
  writeFileSync(big, randomBytes(11 * 1024 * 1024));
  await s.put('c/m/manifest.json', Readable.from([Buffer.from('committed')]));
  const e = await s.putFile!('c/m/manifest.json', big, { ifAbsent: true }).then(
    () => undefined,
    (err: { reason?: string }) => err,
  );
  expect(e?.reason).toBe('id-conflict');
  const body = [...s3.objects.entries()].find(([k]) => k.endsWith('c/m/manifest.json'))?.[1].body;
  expect(body?.toString()).toBe('committed');
  expect(s3.requests.some((r) => r.op === 'CompleteMultipartUpload' && r.status === 412)).toBe(true);
  await s.close();
});

describe('a multipart upload whose part fails is aborted', () => {
  for (const via of ['put', 'putFile'] as const) {
    it(`${via}: part 2 fails (HTTP 500, every retry); the store aborts that upload id and nothing of the object is left`, async () => {
      const prefix = `abort-${via}`;
      const s = store(prefix);
      const data = randomBytes(11 * 1024 * 1024); // three 5 MiB parts
      const file = join(creds, `abort-${via}`);
      writeFileSync(file, data);
      const fullKey = `${prefix}/c/abort/backup.tar`;
      const part2 = s3.faults.error({ op: 'UploadPart', key: new RegExp(`^${fullKey}$`), query: { partNumber: '2' } }, 500, 'InternalError');
      const e = await backupErrorOf(via === 'put' ? s.put('c/abort/backup.tar', Readable.from([data])) : s.putFile!('c/abort/backup.tar', file));
      part2.off();
      expect(e).toMatchObject({
        reason: 'store-unavailable',
        message: `store cond: uploading s3://${s3.bucket}/${fullKey} failed: InternalError (HTTP 500): We encountered an internal error. Please try again.`,
      });
      expect(part2.hits, 'the fault never acted').toBeGreaterThan(0);

      const mine = s3.requests.filter((r) => r.key === fullKey);
      const uploadIds = new Set(mine.filter((r) => r.op === 'UploadPart').map((r) => r.query.uploadId));
      expect(uploadIds.size).toBe(1);
      expect(new Set(mine.filter((r) => r.op === 'UploadPart' && r.status === 500).map((r) => r.query.partNumber)), 'only part 2 failed').toEqual(new Set(['2']));
      const [uploadId] = uploadIds;
      expect(mine.filter((r) => r.op === 'AbortMultipartUpload').map((r) => ({ uploadId: r.query.uploadId, status: r.status }))).toEqual([{ uploadId, status: 204 }]);
      expect(mine.filter((r) => r.op === 'CompleteMultipartUpload')).toEqual([]);
      // Nothing of it visible: no object, no unfinished upload holding parts, nothing listed.
      expect(s3.uploads.has(uploadId!)).toBe(false);
      expect([...s3.uploads.values()].filter((u) => u.key === fullKey)).toEqual([]);
      expect(s3.objects.has(fullKey)).toBe(false);
      expect(await s.head('c/abort/backup.tar')).toBeUndefined();
      const left: string[] = [];
      for await (const o of s.list('c/abort/')) left.push(o.key);
      expect(left).toEqual([]);
      await s.close();
    });
  }
});

storeContract('s3 on a server that honours If-None-Match (the fake S3 server)', {
  async make() {
    return { store: store() };
  },
  listCount: 1100,
  largeBytes: 12 * 1024 * 1024 + 7,
});
