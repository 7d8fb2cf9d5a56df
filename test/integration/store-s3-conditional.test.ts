import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { storeSchema } from '../../src/config/schema.js';
import { S3Store } from '../../src/storage/s3/store.js';
import { tempDir } from '../support/cli.js';
import { startFakeS3, type FakeS3 } from '../support/fake-s3.js';
import { storeContract } from '../support/store-contract.js';

/**
 * The S3 store against an S3 server that honours `If-None-Match: *` (AWS and
 * MinIO do; s3rver ignores it): the whole store contract, including the
 * conditional create that keeps a committed manifest from ever being
 * replaced, on PutObject and on a multipart upload's completion.
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

function store(): S3Store {
  const cfg = storeSchema.parse({
    name: 'cond',
    type: 's3',
    bucket: s3.bucket,
    prefix: `c-${randomBytes(4).toString('hex')}`,
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

storeContract('s3 on a server that honours If-None-Match (the fake S3 server)', {
  async make() {
    return { store: store() };
  },
  listCount: 1100,
  largeBytes: 12 * 1024 * 1024 + 7,
});
