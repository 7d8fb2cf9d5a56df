import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { silentLogger } from '../../src/log.js';
import { deliverToStore } from '../../src/run/deliver.js';
import { LocalStore } from '../../src/storage/local/store.js';
import { tempDir } from '../support/cli.js';
import { storeContract } from '../support/store-contract.js';

storeContract('local directory', {
  async make() {
    const dir = tempDir('store-local');
    return { store: new LocalStore('local', join(dir, 'root')), cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
});

describe('LocalStore.putFile and delivery of a sealed bundle', () => {
  const cleanups: string[] = [];
  afterEach(async () => {
    for (const d of cleanups.splice(0)) await rm(d, { recursive: true, force: true });
  });

  async function bundleIn(dir: string, bytes = 2 * 1024 * 1024 + 3): Promise<{ path: string; size: number; sha256: string }> {
    const data = randomBytes(bytes);
    const path = join(dir, 'backup.tar');
    await writeFile(path, data, { mode: 0o600 });
    return { path, size: bytes, sha256: createHash('sha256').update(data).digest('hex') };
  }

  function manifestFor(b: { size: number; sha256: string }, key = 'c/20261125T000000Z-n/backup.tar'): Manifest {
    return { id: '20261125T000000Z-n', object: { key, size: b.size, sha256: b.sha256, encrypted: false, recipients: [] } } as unknown as Manifest;
  }

  async function dotFiles(dir: string): Promise<string[]> {
    return (await readdir(dir, { recursive: true })).filter((n) => n.split('/').some((seg) => seg.startsWith('.')));
  }

  it('on the same filesystem hard-links the bundle (0600 file, 0700 dirs) and calls it the same file', async () => {
    const dir = tempDir('putfile-same');
    cleanups.push(dir);
    const b = await bundleIn(dir);
    const store = new LocalStore('local', join(dir, 'store'));
    const put = await store.putFile('c/id/backup.tar', b.path);
    expect(put).toEqual({ key: 'c/id/backup.tar', size: b.size, sameFile: true });
    const [src, dst] = [await stat(b.path), await stat(join(dir, 'store', 'c/id/backup.tar'))];
    expect(dst.ino).toBe(src.ino);
    expect(dst.mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'store', 'c/id'))).mode & 0o777).toBe(0o700);
    expect(await dotFiles(join(dir, 'store'))).toEqual([]);
    // The outbox lets go of its name after delivery: the store keeps the bytes.
    await rm(b.path);
    expect(createHash('sha256').update(await readFile(join(dir, 'store', 'c/id/backup.tar'))).digest('hex')).toBe(b.sha256);
  });

  it('across filesystems (a tmpfs bundle, a disk store) copies, fsyncs, 0600, and it is not the same file', async () => {
    const shm = await mkdtemp('/dev/shm/ebd-putfile-');
    const dir = tempDir('putfile-cross');
    cleanups.push(shm, dir);
    expect((await stat(shm)).dev).not.toBe((await stat(dir)).dev);
    const b = await bundleIn(shm);
    const store = new LocalStore('local', join(dir, 'store'));
    const put = await store.putFile('c/id/backup.tar', b.path);
    expect(put).toEqual({ key: 'c/id/backup.tar', size: b.size, sameFile: false });
    const dst = join(dir, 'store', 'c/id/backup.tar');
    expect((await stat(dst)).ino).not.toBe((await stat(b.path)).ino);
    expect((await stat(dst)).mode & 0o777).toBe(0o600);
    expect(createHash('sha256').update(await readFile(dst)).digest('hex')).toBe(b.sha256);
    expect(await dotFiles(join(dir, 'store'))).toEqual([]);
  });

  it('a failed copy names the path and leaves no temp file', async () => {
    const shm = await mkdtemp('/dev/shm/ebd-putfile-');
    cleanups.push(shm);
    const store = new LocalStore('local', join(shm, 'store'));
    const e = await store.putFile('c/id/backup.tar', join(shm, 'no-such-bundle')).then(
      () => undefined,
      (err: { reason?: string; message: string }) => err,
    );
    expect(e?.reason).toBe('upload-failed');
    expect(e?.message).toMatch(/writing .*c\/id\/backup\.tar failed: ENOENT/);
    expect(await dotFiles(join(shm, 'store'))).toEqual([]);
  });

  it('delivery proves a fresh linked bundle by identity, and reads back a link to a bundle sealed earlier', async () => {
    const dir = tempDir('deliver-link');
    cleanups.push(dir);
    const b = await bundleIn(dir);
    const store = new LocalStore('local', join(dir, 'store'));
    const fresh = await deliverToStore(store, 'readback', b.path, manifestFor(b), silentLogger, undefined, { sealedNow: true });
    expect(fresh).toMatchObject({ result: 'success', proof: 'same-file', size: b.size });
    expect(JSON.parse(await readFile(join(dir, 'store', 'c/20261125T000000Z-n/manifest.json'), 'utf8')).object.sha256).toBe(b.sha256);

    // An outbox retry: the bundle has sat on disk since an earlier process, so the store copy is read back.
    const old = await deliverToStore(store, 'readback', b.path, manifestFor(b, 'c/20261125T000001Z-n/backup.tar'), silentLogger);
    expect(old).toMatchObject({ result: 'success', proof: 'readback' });

    // A retry of a bundle that rotted in the outbox (one byte flipped, same size): refused, nothing committed.
    const box2 = join(dir, 'box2');
    await mkdir(box2);
    const b2 = await bundleIn(box2);
    const fh = await open(b2.path, 'r+');
    await fh.write(Buffer.from([0xff ^ (await readFile(b2.path))[4096]!]), 0, 1, 4096);
    await fh.close();
    const rotten = await deliverToStore(store, 'readback', b2.path, manifestFor(b2, 'c/20261125T000002Z-n/backup.tar'), silentLogger);
    expect(rotten).toMatchObject({ result: 'failed', reason: 'remote-verify-failed' });
    expect(await readdir(join(dir, 'store', 'c')).then((d) => d.sort())).toEqual(['20261125T000000Z-n', '20261125T000001Z-n']);
  });

  it('verify: size stays a size check even for a link', async () => {
    const dir = tempDir('deliver-size');
    cleanups.push(dir);
    const b = await bundleIn(dir);
    const store = new LocalStore('local', join(dir, 'store'));
    const o = await deliverToStore(store, 'size', b.path, manifestFor(b), silentLogger, undefined, { sealedNow: true });
    expect(o).toMatchObject({ result: 'success', proof: 'size' });
  });
});
