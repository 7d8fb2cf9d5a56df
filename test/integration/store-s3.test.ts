import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeSchema } from '../../src/config/schema.js';
import { BackupError } from '../../src/errors.js';
import { createS3Client } from '../../src/storage/s3/client.js';
import { S3Store, type S3StoreConfig } from '../../src/storage/s3/store.js';
import { verifyRemoteCopy } from '../../src/storage/verify.js';
import type { Manifest } from '../../src/bundle/manifest.js';
import { silentLogger } from '../../src/log.js';
import { deliverToStore } from '../../src/run/deliver.js';
import { tempDir } from '../support/cli.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { generated, storeContract } from '../support/store-contract.js';
import { rejectionOf } from '../support/rejections.js';
import { drain } from '../support/streams.js';

const MiB = 1024 * 1024;

let server: S3rver;
let credDir: string;
let keyFile: string;
let secretFile: string;

function writeSecret(name: string, value: string): string {
  const p = join(credDir, name);
  writeFileSync(p, value, { mode: 0o600 });
  return p;
}

/** A store config as the config loader would produce it (schema defaults applied). */
function s3Config(over: Record<string, unknown> = {}, srv: S3rver = server): S3StoreConfig {
  const cfg = storeSchema.parse({
    name: 'objstore',
    type: 's3',
    bucket: srv.bucket,
    prefix: `t-${randomBytes(4).toString('hex')}`,
    region: 'us-east-1',
    endpoint: srv.endpoint,
    forcePathStyle: true,
    accessKeyIdFile: keyFile,
    secretAccessKeyFile: secretFile,
    partSize: 5 * MiB,
    ...over,
  });
  if (cfg.type !== 's3') throw new Error('not an s3 config');
  return cfg;
}

beforeAll(async () => {
  server = await startS3rver();
  credDir = tempDir('s3-creds');
  // Trailing newlines as `kubectl create secret --from-file` keeps them: the store trims.
  keyFile = writeSecret('access-key-id', `${server.accessKeyId}\n`);
  secretFile = writeSecret('secret-access-key', `${server.secretAccessKey}\n`);
});

afterAll(async () => {
  await server?.dispose();
  if (credDir) await rm(credDir, { recursive: true, force: true });
});

storeContract('s3 on s3rver', {
  async make() {
    return { store: new S3Store(s3Config({ prefix: 'clusters/contract' })) };
  },
  listCount: 1100,
  largeBytes: 40 * MiB + 12345,
  ignoresIfNoneMatch: true,
});

describe('S3Store on s3rver', () => {
  const stores: S3Store[] = [];
  const clients: S3Client[] = [];
  const store = (over: Record<string, unknown> = {}, srv?: S3rver) => {
    const s = new S3Store(s3Config(over, srv));
    stores.push(s);
    return s;
  };
  const client = (cfg: S3StoreConfig) => {
    const c = createS3Client(cfg);
    clients.push(c);
    return c;
  };
  afterAll(async () => {
    for (const s of stores) await s.close();
    for (const c of clients) c.destroy();
  });

  it('keeps objects under the prefix and hands keys back without it; uses multipart above partSize', async () => {
    const cfg = s3Config({ prefix: 'a/b' });
    const s = store(cfg);
    const commands: string[] = [];
    s.client.middlewareStack.add(
      (next, context) => async (args) => {
        commands.push(context.commandName ?? '?');
        return next(args);
      },
      { step: 'initialize', name: 'recordCommands' },
    );
    const g = generated(12 * MiB + 1, 7);
    expect(await s.put('c/x/backup.tar', g.stream(), { size: 12 * MiB + 1 })).toEqual({ key: 'c/x/backup.tar', size: 12 * MiB + 1 });
    // 5 + 5 + 2 MiB parts.
    expect(commands.sort()).toEqual(['CompleteMultipartUploadCommand', 'CreateMultipartUploadCommand', 'UploadPartCommand', 'UploadPartCommand', 'UploadPartCommand']);
    commands.length = 0;
    await s.put('c/x/small', Readable.from([Buffer.from('small')]));
    expect(commands).toEqual(['PutObjectCommand']);
    const raw = client(cfg);
    const listed = await raw.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: 'a/b/' }));
    expect(listed.Contents?.map((o) => o.Key)).toEqual(['a/b/c/x/backup.tar', 'a/b/c/x/small']);
    const seen = [];
    for await (const o of s.list('')) seen.push(o);
    expect(seen).toMatchObject([
      { key: 'c/x/backup.tar', size: 12 * MiB + 1 },
      { key: 'c/x/small', size: 5 },
    ]);
    expect(seen[0]!.modifiedAt).toBeInstanceOf(Date);
    await expect(verifyRemoteCopy(s, 'c/x/backup.tar', 12 * MiB + 1, g.sha256, 'readback')).resolves.toMatchObject({ proof: 'readback' });
  });

  it('works with an empty prefix, and refuses keys that escape or are ambiguous', async () => {
    const s = store({ prefix: '' });
    const k = `noprefix-${randomBytes(4).toString('hex')}/m.json`;
    await s.put(k, Readable.from([Buffer.from('{}')]));
    expect(await s.head(k)).toMatchObject({ key: k, size: 2 });
    await s.delete([k]);
    await expect(s.put('/abs', Readable.from([Buffer.from('x')]))).rejects.toMatchObject({ reason: 'internal' });
    await expect(s.head('a/../b')).rejects.toMatchObject({ reason: 'internal' });
  });

  it('deletes more than one DeleteObjects batch (1000 keys) in one call', async () => {
    const s = store();
    const keys = Array.from({ length: 1005 }, (_, i) => `c/many/${String(i).padStart(4, '0')}`);
    const queue = [...keys];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let k = queue.shift(); k; k = queue.shift()) await s.put(k, Readable.from([Buffer.from('x')]));
      }),
    );
    let n = 0;
    for await (const _ of s.list('c/many/')) n++;
    expect(n).toBe(1005);
    await s.delete([...keys, 'c/many/never-existed']);
    const left = [];
    for await (const o of s.list('c/many/')) left.push(o.key);
    expect(left).toEqual([]);
  });

  it('sends the storage class when configured', async () => {
    const cfg = s3Config({ storageClass: 'STANDARD_IA' });
    const s = store(cfg);
    await s.put('c/sc/obj', Readable.from([Buffer.from('x')]));
    const h = await client(cfg).send(new HeadObjectCommand({ Bucket: server.bucket, Key: `${cfg.prefix}/c/sc/obj` }));
    expect(h.StorageClass).toBe('STANDARD_IA');
    const bad = store({ storageClass: 'NOT_A_CLASS' });
    const e = await rejectionOf(bad.put('c/sc/bad', Readable.from([Buffer.from('x')])));
    expect(e).toBeInstanceOf(BackupError);
    expect(e).toMatchObject({ reason: 'upload-failed', hint: expect.stringContaining('storageClass') });
    expect((e as Error).message).toContain('InvalidStorageClass');
  });

  it('reports a failing body as upload-failed, naming the store, and leaves no object', async () => {
    const s = store();
    // Fails after 8 MiB: one 5 MiB part is already uploaded by then.
    let n = 0;
    const failing = new Readable({
      read() {
        if (++n > 8) return void this.destroy(new Error('disk read error on snapshot'));
        this.push(randomBytes(MiB));
      },
    });
    const e = await rejectionOf(s.put('c/bodyfail/backup.tar', failing));
    expect(e).toBeInstanceOf(BackupError);
    expect(e).toMatchObject({ reason: 'upload-failed' });
    expect((e as Error).message).toMatch(/store objstore: .*c\/bodyfail\/backup\.tar.*disk read error on snapshot/);
    expect(await s.head('c/bodyfail/backup.tar')).toBeUndefined();
  });

  // (1) Why `checksum` defaults to WHEN_REQUIRED.
  describe('checksum setting (why WHEN_REQUIRED is the default)', () => {
    it('a streamed PutObject with WHEN_SUPPORTED is stored with its aws-chunked framing; verifyRemoteCopy catches it', async () => {
      const size = 256 * 1024 + 17;
      const data = randomBytes(size);
      const sha = createHash('sha256').update(data).digest('hex');
      for (const checksum of ['WHEN_SUPPORTED', 'WHEN_REQUIRED'] as const) {
        const cfg = s3Config({ checksum });
        const raw = client(cfg);
        // What a naive store would do: hand the SDK the stream itself.
        await raw.send(new PutObjectCommand({ Bucket: server.bucket, Key: `${cfg.prefix}/c/chunked/obj`, Body: Readable.from([data]), ContentLength: size }));
        const s = store(cfg);
        const info = await s.head('c/chunked/obj');
        if (checksum === 'WHEN_SUPPORTED') {
          // s3rver answered 200 but holds the aws-chunked encoding: chunk-size lines and a CRC32 trailer around the data.
          expect(info!.size).toBeGreaterThan(size);
          const parts: Buffer[] = [];
          for await (const c of await s.get('c/chunked/obj')) parts.push(c as Buffer);
          const stored = Buffer.concat(parts);
          expect(stored.length).toBe(info!.size);
          // "<hex chunk size>\r\n<data>\r\n0\r\nx-amz-checksum-crc32:<b64>\r\n\r\n"
          expect(stored.subarray(0, 16).toString('latin1')).toMatch(new RegExp(`^${size.toString(16)}\r\n`, 'i'));
          expect(stored.subarray(stored.length - 64).toString('latin1')).toMatch(/\r\n0\r\nx-amz-checksum-crc32:[A-Za-z0-9+/=]+\r\n\r\n$/);
          const e = await rejectionOf(verifyRemoteCopy(s, 'c/chunked/obj', size, sha, 'readback'));
          expect(e).toBeInstanceOf(BackupError);
          expect(e).toMatchObject({ reason: 'remote-verify-failed' });
          // Even a `size`-only verify catches this particular corruption.
          await expect(verifyRemoteCopy(s, 'c/chunked/obj', size, sha, 'size')).rejects.toMatchObject({ reason: 'remote-verify-failed' });
        } else {
          expect(info!.size).toBe(size);
          await expect(verifyRemoteCopy(s, 'c/chunked/obj', size, sha, 'readback')).resolves.toMatchObject({ proof: 'readback' });
        }
      }
    });

    it('S3Store.put itself stays intact even with WHEN_SUPPORTED: lib-storage sends Buffers, never aws-chunked streams', async () => {
      const s = store({ checksum: 'WHEN_SUPPORTED' });
      for (const size of [300 * 1024, 11 * MiB + 3]) {
        const g = generated(size, size);
        await s.put(`c/ws/${size}`, g.stream(), { size });
        await expect(verifyRemoteCopy(s, `c/ws/${size}`, size, g.sha256, 'readback')).resolves.toMatchObject({ proof: 'readback' });
      }
    });

    it('with WHEN_SUPPORTED S3Store has no putFile capability: delivery streams the bundle through lib-storage (checksummed parts), intact', async () => {
      const s = store({ checksum: 'WHEN_SUPPORTED', partSize: 5 * MiB });
      expect(s.caps.putFile).toBe(false);
      expect(store().caps.putFile).toBe(true);
      const dir = await mkdtemp(join(tmpdir(), 'ebd-s3-ws-'));
      const manifestFor = (k: string, size: number, sha256: string) =>
        ({ id: 'x', object: { key: `c/wsf/${k}/backup.tar`, size, sha256, encrypted: false, recipients: [] } }) as unknown as Manifest;
      try {
        for (const size of [300 * 1024, 11 * MiB + 3]) {
          const g = generated(size, size + 1);
          await pipeline(g.stream(), createWriteStream(join(dir, 'f'), { mode: 0o600 }));
          const o = await deliverToStore(s, 'readback', join(dir, 'f'), manifestFor(String(size), size, g.sha256), silentLogger);
          expect(o).toMatchObject({ result: 'success', size, proof: 'readback' });
          await expect(verifyRemoteCopy(s, `c/wsf/${size}/backup.tar`, size, g.sha256, 'readback')).resolves.toMatchObject({ proof: 'readback' });
        }
        const missing = await deliverToStore(s, 'readback', join(dir, 'missing'), manifestFor('none', 1, 'x'), silentLogger);
        expect(missing).toMatchObject({ result: 'failed', reason: 'upload-failed', error: expect.stringMatching(/ENOENT/) });
        expect(await s.head('c/wsf/none/backup.tar')).toBeUndefined();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  // (2)
  it('wrong credentials: put rejects naming the store and bucket, with a hint, never the secret', async () => {
    const wrongSecret = 'wrong-secret-Zq8vN1xK7pLm';
    const s = store({ accessKeyIdFile: writeSecret('wrong-key', 'NOT-S3RVER\n'), secretAccessKeyFile: writeSecret('wrong-secret', wrongSecret) });
    const e = await rejectionOf(s.put('c/creds/backup.tar', Readable.from([Buffer.from('data')])));
    expect(e).toBeInstanceOf(BackupError);
    const be = e as BackupError;
    expect(be.reason).toBe('upload-failed');
    expect(be.message).toContain('store objstore');
    expect(be.message).toContain(`s3://${server.bucket}/`);
    expect(be.message).toContain('c/creds/backup.tar');
    expect(be.message).toContain('InvalidAccessKeyId');
    expect(be.message).toContain('HTTP 403');
    expect(be.hint).toMatch(/credentials/);
    expect(be.hint).toContain(join(credDir, 'wrong-key')); // names the file, not its content
    expect(JSON.stringify({ m: be.message, h: be.hint, s: be.stack })).not.toContain(wrongSecret);

    // s3rver checks only the access key id: it does not verify SigV4 signatures, so a wrong
    // secret with the right key id is accepted there (real S3: SignatureDoesNotMatch, same hint).
    const wrongSecretOnly = store({ secretAccessKeyFile: writeSecret('wrong-secret-only', wrongSecret) });
    await expect(wrongSecretOnly.put('c/creds/ok', Readable.from([Buffer.from('d')]))).resolves.toEqual({ key: 'c/creds/ok', size: 1 });

    const missing = store({ secretAccessKeyFile: join(credDir, 'does-not-exist') });
    await expect(missing.put('c/creds/x', Readable.from([Buffer.from('d')]))).rejects.toMatchObject({
      reason: 'store-unavailable',
      message: expect.stringContaining('does-not-exist'),
      hint: expect.stringContaining('Secret'),
    });
  });

  it('a missing bucket is named with a hint', async () => {
    const s = store({ bucket: 'no-such-bucket-here' });
    const e = await rejectionOf(s.put('c/nb/x', Readable.from([Buffer.from('d')])));
    expect(e).toMatchObject({ reason: 'upload-failed', message: expect.stringContaining('NoSuchBucket'), hint: expect.stringContaining('no-such-bucket-here') });
  });

  // (3)
  describe('server down', () => {
    let down: S3rver;
    beforeAll(async () => {
      down = await startS3rver({ bucket: 'outage' });
    });
    afterAll(async () => {
      await down?.dispose();
    });

    it('put and list reject with store-unavailable within seconds, and work again after a restart', async () => {
      const s = store({}, down);
      await s.put('c/o/before', Readable.from([Buffer.from('before')]));
      await down.stop();

      let t0 = Date.now();
      const g = generated(11 * MiB, 5);
      const e = await rejectionOf(s.put('c/o/backup.tar', g.stream(), { size: 11 * MiB }));
      expect(Date.now() - t0).toBeLessThan(20_000);
      expect(e).toBeInstanceOf(BackupError);
      expect(e).toMatchObject({ reason: 'store-unavailable', hint: expect.stringContaining(down.endpoint) });
      expect((e as Error).message).toMatch(/store objstore: uploading s3:\/\/outage\/.*c\/o\/backup\.tar failed: ECONNREFUSED/);

      t0 = Date.now();
      const consume = async () => {
        for await (const _ of s.list('c/')) void _;
      };
      const le = await rejectionOf(consume());
      expect(Date.now() - t0).toBeLessThan(20_000);
      expect(le).toMatchObject({ reason: 'store-unavailable', message: expect.stringContaining('ECONNREFUSED') });
      await expect(s.head('c/o/before')).rejects.toMatchObject({ reason: 'store-unavailable' });
      await expect(s.get('c/o/before')).rejects.toMatchObject({ reason: 'store-unavailable' });

      await down.restart();
      await s.put('c/o/backup.tar', g.stream(), { size: 11 * MiB });
      await expect(verifyRemoteCopy(s, 'c/o/backup.tar', 11 * MiB, g.sha256, 'readback')).resolves.toMatchObject({ proof: 'readback' });
      expect((await drain(await s.get('c/o/before'))).bytes).toBe(6);
    });

    it('a server lost in the middle of a multipart upload fails the put with the network error, not the body', async () => {
      const s = store({}, down);
      const chunk = randomBytes(MiB);
      let stopped = false;
      const body = Readable.from(
        (async function* () {
          for (let i = 0; i < 40; i++) {
            if (i === 12 && !stopped) {
              stopped = true;
              await down.stop(); // two parts are on the server by now
            }
            yield chunk;
          }
        })(),
      );
      const t0 = Date.now();
      const e = await rejectionOf(s.put('c/mid/backup.tar', body));
      expect(Date.now() - t0).toBeLessThan(30_000);
      expect(stopped).toBe(true);
      expect(e).toBeInstanceOf(BackupError);
      expect(e).toMatchObject({ reason: 'store-unavailable', message: expect.stringMatching(/c\/mid\/backup\.tar failed: (ECONNREFUSED|ECONNRESET|EPIPE)/) });
      expect(body.destroyed).toBe(true); // the producer is told, not left waiting
      await down.restart();
      expect(await s.head('c/mid/backup.tar')).toBeUndefined();
    });

    it('a download cut by the server ends the stream with store-unavailable', async () => {
      const s = store({}, down);
      const size = 48 * MiB;
      const g = generated(size, 11);
      await s.put('c/dl/backup.tar', g.stream(), { size });
      const r = await s.get('c/dl/backup.tar');
      let got = 0;
      let stopped = false;
      const e = await rejectionOf(
        (async () => {
          for await (const c of r) {
            got += (c as Buffer).length;
            if (got >= 4 * MiB && !stopped) {
              stopped = true;
              await down.stop();
            }
          }
        })(),
      );
      expect(got).toBeLessThan(size);
      expect(e).toBeInstanceOf(BackupError);
      expect(e).toMatchObject({ reason: 'store-unavailable', message: expect.stringContaining('c/dl/backup.tar') });
      await down.restart();
    });
  });

  // (4)
  it('cleanupIncomplete returns [] on s3rver (no ListMultipartUploads) without throwing', async () => {
    const s = store();
    await expect(s.cleanupIncomplete('c/', new Date())).resolves.toEqual([]);
    await expect(s.cleanupIncomplete('', new Date(Date.now() + 86_400_000))).resolves.toEqual([]);
  });
});
