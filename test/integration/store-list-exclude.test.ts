/**
 * The catalog lists `<cluster>/` leaving out `<cluster>/continuous/` (Store.list's
 * `exclude`): with a segment every 10 s there are thousands of segment
 * objects a day per base, and a listing of backups must not pay for them.
 * Every store type must leave the subtree unread, not read and drop it:
 * - local and SFTP (find and the walk): the subtree's directories get an
 *   access time in 2000; reading one sets it to now (relatime), so a
 *   listing that opened them shows;
 * - S3: requests are counted on the fake S3 (one page may reach into the
 *   subtree, then the listing jumps past it), and s3rver gives the same keys.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeSchema } from '../../src/config/schema.js';
import { clusterPrefix, continuousPrefix } from '../../src/layout.js';
import type { FindListing } from '../../src/storage/sftp/find-list.js';
import { LocalStore } from '../../src/storage/local/store.js';
import { S3Store, type S3StoreConfig } from '../../src/storage/s3/store.js';
import { SftpStore, type SftpStoreConfig } from '../../src/storage/sftp/store.js';
import type { Store } from '../../src/storage/store.js';
import { tempDir } from '../support/cli.js';
import { startFakeS3, type FakeS3 } from '../support/fake-s3.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';

const C = 'c1';
const BASE = '20261126T000000Z-master-0';
const EXCLUDE = continuousPrefix(C);

/** What the catalog wants: every key of the cluster but the segments, including names next to `continuous/` on either side. */
const BACKUP_KEYS = [
  ...['20261125T000000Z-master-0', '20261125T120000Z-master-1', BASE].flatMap((id) => [`${C}/${id}/backup.tar.zst`, `${C}/${id}/manifest.json`]),
  `${C}/continuous-x/y`, // '-' sorts before '/': beside the subtree, not in it
  `${C}/continuous0/z`, // '0' sorts after '/': the first name past it
  `${C}/zzz/after`,
].sort();

/** `n` segments of BASE: an object and a manifest each. */
function segmentKeys(n: number): string[] {
  return Array.from({ length: n }, (_, i) => {
    const stem = `${String(100 + i * 10).padStart(20, '0')}-${String(109 + i * 10).padStart(20, '0')}`;
    return [`${EXCLUDE}${BASE}/${stem}.seg.zst`, `${EXCLUDE}${BASE}/${stem}.json`];
  }).flat();
}

/** Files at `<root>/<key>` (a local store, an SFTP store's directory); the subtree's directories last accessed in 2000. */
function plantFiles(root: string, keys: string[]): void {
  for (const k of keys) {
    mkdirSync(dirname(join(root, k)), { recursive: true });
    writeFileSync(join(root, k), k);
  }
  for (const d of subtreeDirs(root)) utimesSync(d, OLD, OLD);
}

const OLD = new Date('2000-01-01T00:00:00Z');
const subtreeDirs = (root: string) => [join(root, EXCLUDE), join(root, EXCLUDE, BASE)];
/** The subtree's directories whose access time moved: the ones a listing read. */
const readDirs = (root: string) => subtreeDirs(root).filter((d) => statSync(d).atimeMs !== OLD.getTime());

async function listKeys(store: Store, exclude?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(clusterPrefix(C), exclude ? { exclude } : {})) out.push(o.key);
  return out;
}

describe('a listing that excludes the continuous subtree', () => {
  it('local: never opens it; keys beside it on both sides are listed, in order', async () => {
    const root = tempDir('exclude-local');
    plantFiles(root, [...BACKUP_KEYS, ...segmentKeys(150)]);
    const store = new LocalStore('nfs', root);
    expect(await listKeys(store, EXCLUDE)).toEqual(BACKUP_KEYS);
    expect(readDirs(root)).toEqual([]);
    // The check can fail: a listing without the exclude reads them.
    expect(await listKeys(store)).toHaveLength(BACKUP_KEYS.length + 300);
    expect(readDirs(root)).toEqual(subtreeDirs(root));
  });

  it('a wrong exclude is a programming error, never a listing that leaves out something else', async () => {
    const store = new LocalStore('nfs', tempDir('exclude-bad'));
    for (const bad of [`${C}/continuous`, 'c2/continuous/', `${C}/`, `${C}//x/`]) await expect(listKeys(store, bad), bad).rejects.toThrow(/cannot exclude/);
  });

  describe('sftp', () => {
    let normal: Sshd;
    let only: Sshd;
    let tree: string;
    beforeAll(async () => {
      [normal, only] = await Promise.all([startSshd(), startSshd({ extraConfig: ['ForceCommand internal-sftp'] })]);
      tree = await mkdtemp(join(normal.root, 'tree-'));
      plantFiles(tree, [...BACKUP_KEYS, ...segmentKeys(150)]);
    }, 120_000);
    afterAll(async () => {
      for (const s of [normal, only]) {
        await s?.stop();
        if (s) await removeSshdDir(s);
      }
    });
    const config = (s: Sshd): SftpStoreConfig => ({
      name: 'vault', type: 'sftp', host: s.host, port: s.port, username: s.username,
      privateKeyFile: s.privateKeyFile, hostKey: s.hostKeyFingerprint, path: tree,
      timeout: '5s', verify: 'readback', serverHash: true, incompleteGrace: '24h',
    });
    /** Lists with and without the exclude, and says which subtree directories each read. */
    async function both(store: SftpStore): Promise<void> {
      for (const d of subtreeDirs(tree)) utimesSync(d, OLD, OLD);
      expect(await listKeys(store, EXCLUDE)).toEqual(BACKUP_KEYS);
      expect(readDirs(tree)).toEqual([]);
      expect(await listKeys(store)).toHaveLength(BACKUP_KEYS.length + 300);
      expect(readDirs(tree)).toEqual(subtreeDirs(tree));
    }
    const finderOf = (store: SftpStore) => (store as unknown as { finder: FindListing }).finder;

    it('by one remote find: the subtree is pruned, never read', async () => {
      const store = new SftpStore(config(normal));
      try {
        await both(store);
        expect(finderOf(store).lastMiss).toBeUndefined();
      } finally {
        await store.close();
      }
    });

    it('by the SFTP walk (no exec): the subtree is never read', async () => {
      const store = new SftpStore(config(only));
      try {
        await both(store);
        expect(finderOf(store).lastMiss?.miss).toBe('unsupported');
      } finally {
        await store.close();
      }
    });
  });

  describe('s3', () => {
    let fake: FakeS3;
    let server: S3rver;
    let dir: string;
    beforeAll(async () => {
      [fake, server] = await Promise.all([startFakeS3(), startS3rver()]);
      dir = tempDir('exclude-s3');
      writeFileSync(join(dir, 'ak'), 'S3RVER', { mode: 0o600 });
      writeFileSync(join(dir, 'sk'), 'S3RVER', { mode: 0o600 });
    }, 60_000);
    afterAll(async () => {
      await fake?.close();
      await server?.dispose();
    });
    function s3Store(endpoint: string, bucket: string, prefix: string): S3Store {
      const cfg = storeSchema.parse({
        name: 'objstore', type: 's3', bucket, prefix, region: 'us-east-1', endpoint, forcePathStyle: true,
        accessKeyIdFile: join(dir, 'ak'), secretAccessKeyFile: join(dir, 'sk'),
      });
      return new S3Store(cfg as S3StoreConfig);
    }

    it('fake S3, 5000 segment objects (5 pages): two listing requests, the second starting after the subtree', async () => {
      const prefix = 'p';
      const now = new Date();
      for (const k of [...BACKUP_KEYS, ...segmentKeys(2500)]) fake.objects.set(`${prefix}/${k}`, { body: Buffer.from(k), modified: now, etag: '"0"' });
      const store = s3Store(fake.endpoint, fake.bucket, prefix);
      try {
        fake.requests.length = 0;
        expect(await listKeys(store, EXCLUDE)).toEqual(BACKUP_KEYS);
        const lists = fake.requests.filter((r) => r.op === 'ListObjectsV2');
        expect(lists).toHaveLength(2);
        expect(lists[1]!.query['start-after']?.startsWith(`${prefix}/${EXCLUDE}`)).toBe(true);
        // The check can fail: without the exclude every page is read.
        fake.requests.length = 0;
        expect(await listKeys(store)).toHaveLength(BACKUP_KEYS.length + 5000);
        expect(fake.requests.filter((r) => r.op === 'ListObjectsV2').length).toBeGreaterThanOrEqual(5);
      } finally {
        await store.close();
      }
    });

    it('s3rver: the same keys, so the jump past the subtree (StartAfter) is understood by a real server', async () => {
      const store = s3Store(server.endpoint, server.bucket, `t-${randomBytes(4).toString('hex')}`);
      try {
        // s3rver lists in its filesystem's order, `continuous/` before `continuous-x/` (S3 orders by bytes: '-' < '/'), so not that one here.
        const want = BACKUP_KEYS.filter((k) => !k.startsWith(`${C}/continuous-`));
        const keys = [...want, ...segmentKeys(150)];
        for (let i = 0; i < keys.length; i += 16) await Promise.all(keys.slice(i, i + 16).map((k) => store.put(k, Readable.from([Buffer.from(k)]))));
        expect(await listKeys(store, EXCLUDE)).toEqual(want);
        expect(await listKeys(store)).toHaveLength(keys.length);
      } finally {
        await store.close();
      }
    }, 60_000);
  });
});
