import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { storeSchema } from '../../src/config/schema.js';
import { S3Store, type S3StoreConfig } from '../../src/storage/s3/store.js';
import { pruneChains } from '../../src/catalog/prune-chains.js';
import type { ListedBackup } from '../../src/catalog/listing.js';
import type { Config } from '../../src/config/load.js';
import { backupId } from '../../src/layout.js';
import { silentLogger } from '../../src/log.js';
import { runCli, tempDir, writeConfig } from '../support/cli.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { startFakeS3, type FakeS3 } from '../support/fake-s3.js';
import { backupErrorOf } from '../support/rejections.js';

/**
 * S3 Object Lock (WORM) end to end, against the fake S3 server with lock
 * enforcement (test/support/fake-s3-lock.ts; s3rver knows nothing of locks):
 * every object the daemon writes carries its retention and a checksum (or
 * the bucket refuses it), a locked object is never sent a DELETE, and
 * retention waits for the locks: prune reports what waits, deletes nothing
 * of it, makes no delete marker, and removes it once the lock has expired.
 */
const MiB = 1024 * 1024;
let s3: FakeS3;
let plain: FakeS3;
let dir: string;

beforeAll(async () => {
  [s3, plain] = await Promise.all([startFakeS3({ objectLock: true }), startFakeS3()]);
  dir = tempDir('object-lock');
  writeFileSync(join(dir, 'ak'), `${s3.accessKeyId}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'sk'), `${s3.secretAccessKey}\n`, { mode: 0o600 });
});

afterAll(async () => {
  await Promise.all([s3?.close(), plain?.close()]);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** DELETE requests (one key or many) touching keys under `prefix`, and the delete markers made there. */
const deletesSent = (prefix: string) =>
  s3.requests.filter((r) => (r.op === 'DeleteObject' && r.key.startsWith(prefix)) || (r.op === 'DeleteObjects' && (r.keys ?? []).some((k) => k.startsWith(prefix))));
const markers = (prefix: string) => s3.lock.deleteMarkers.filter((m) => m.key.startsWith(prefix));

function s3Store(server: FakeS3, prefix: string, objectLock: Record<string, unknown> | null = { retain: '30s' }): S3Store {
  const cfg = storeSchema.parse({
    name: 'worm',
    type: 's3',
    bucket: server.bucket,
    prefix,
    endpoint: server.endpoint,
    forcePathStyle: true,
    accessKeyIdFile: join(dir, 'ak'),
    secretAccessKeyFile: join(dir, 'sk'),
    partSize: 5 * MiB,
    ...(objectLock ? { objectLock } : {}),
  });
  if (cfg.type !== 's3') throw new Error('not an s3 config');
  return new S3Store(cfg as S3StoreConfig);
}

describe('config', () => {
  const base = { cluster: 'c', source: { type: 'etcdctl', staticPodDir: '/' }, etcd: { endpoints: ['http://127.0.0.1:2379'] } };
  const withLock = (objectLock: unknown) => ({ ...base, stores: [{ name: 's3', type: 's3', bucket: 'b-1', objectLock }] });

  it('objectLock is optional; mode defaults to GOVERNANCE; caps.objectLock says whether it is set', () => {
    const cfg = parseConfig(withLock({ retain: '30d' }));
    expect(cfg.stores[0]).toMatchObject({ objectLock: { mode: 'GOVERNANCE', retain: '30d' } });
    expect(s3Store(s3, 'x').caps.objectLock).toBe(true);
    expect(s3Store(s3, 'x', null).caps.objectLock).toBe(false);
    expect(parseConfig(withLock({ mode: 'COMPLIANCE', retain: '2w' })).stores[0]).toMatchObject({ objectLock: { mode: 'COMPLIANCE' } });
  });

  it.each([
    [{ mode: 'governance', retain: '30d' }, /stores\[0\]\.objectLock\.mode: expected one of "GOVERNANCE", "COMPLIANCE", got "governance"/],
    [{ retain: '30 days' }, /stores\[0\]\.objectLock\.retain: "30 days" is not a duration.*e\.g\. 30d/],
    [{ retain: '0' }, /stores\[0\]\.objectLock\.retain: "0" locks nothing/],
    [{ retain: '40000d' }, /longer than S3 allows/],
    [{ mode: 'COMPLIANCE' }, /stores\[0\]\.objectLock\.retain: required/],
    [{ retain: '1d', days: 3 }, /stores\[0\]\.objectLock\.days: unknown key/],
  ])('%j is config-invalid, naming the key', (lock, message) => {
    let err: unknown;
    try {
      parseConfig(withLock(lock));
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ reason: 'config-invalid', hint: expect.stringMatching(/check-config/) });
    expect((err as Error).message).toMatch(message);
  });
});

describe('the S3 store on a lock bucket', () => {
  it('every write carries the retention (mode, retain-until = now + retain) and a checksum: put, putFile, one part and multipart', async () => {
    const s = s3Store(s3, 'w', { retain: '30s', mode: 'COMPLIANCE' });
    const file = join(dir, 'big');
    writeFileSync(file, randomBytes(11 * MiB));
    writeFileSync(join(dir, 'small'), 'small file');
    const before = Date.now();
    await s.put('c/1/small', Readable.from([Buffer.from('manifest')]));
    await s.put('c/1/big', Readable.from([randomBytes(11 * MiB)]), { size: 11 * MiB });
    await s.putFile('c/1/file-small', join(dir, 'small'));
    await s.putFile('c/1/file-big', file, { ifAbsent: true });
    const after = Date.now();
    for (const k of ['small', 'big', 'file-small', 'file-big']) {
      const o = s3.objects.get(`w/c/1/${k}`);
      expect(o?.lock?.mode, k).toBe('COMPLIANCE');
      expect(o!.lock!.until.getTime(), k).toBeGreaterThanOrEqual(before + 30_000);
      expect(o!.lock!.until.getTime(), k).toBeLessThanOrEqual(after + 31_000);
      const h = await s.head(`c/1/${k}`);
      expect(h?.lockedUntil?.getTime()).toBe(o!.lock!.until.getTime());
      expect(h?.lockMode).toBe('COMPLIANCE');
    }
    // Multipart went as parts with CRC32 each (the fake refuses parts without, and completion without their checksums).
    expect(s3.requests.filter((r) => r.key.startsWith('w/') && r.op === 'UploadPart' && r.status === 200).length).toBe(6);
    await s.close();
  });

  it('delete() of a locked object throws object-locked naming the key and the date, and sends no DELETE at all', async () => {
    const s = s3Store(s3, 'd', { retain: '3s' });
    await s.put('c/1/a', Readable.from([Buffer.from('a')]));
    await s.put('c/1/b', Readable.from([Buffer.from('b')]));
    const until = s3.objects.get('d/c/1/b')!.lock!.until;
    const sent = deletesSent('d/').length;
    const e = await backupErrorOf(s.delete(['c/1/a', 'c/1/b', 'c/1/absent']));
    expect(e.reason).toBe('object-locked');
    expect(e.message).toMatch(/s3:\/\/etcd-backups\/d\/c\/1\/a is under Object Lock \(GOVERNANCE\) until \d{4}-\d\d-\d\dT/);
    expect(e.hint).toMatch(/expires/);
    expect(sent).toBe(0);
    expect(deletesSent('d/').length).toBe(0);
    expect(markers('d/')).toEqual([]);
    expect(s3.objects.has('d/c/1/a') && s3.objects.has('d/c/1/b')).toBe(true);
    await sleep(until.getTime() - Date.now() + 500);
    await s.delete(['c/1/a', 'c/1/b', 'c/1/absent']);
    expect(s3.objects.has('d/c/1/a') || s3.objects.has('d/c/1/b')).toBe(false);
    expect(markers('d/').map((m) => [m.key, m.hidLocked])).toEqual([
      ['d/c/1/a', false],
      ['d/c/1/b', false],
      ['d/c/1/absent', false],
    ]);
    await s.close();
  });

  it('objectLock on a bucket created without Object Lock: the write fails, and the hint says why', async () => {
    const s = s3Store(plain, 'n');
    const e = await backupErrorOf(s.put('c/1/a', Readable.from([Buffer.from('a')])));
    expect(e.message).toMatch(/InvalidRequest.*missing Object Lock Configuration/);
    expect(e.hint).toMatch(/no Object Lock configuration.*when a bucket is created/);
    expect(plain.objects.size).toBe(0);
    await s.close();
  });

  it('without objectLock, a lock bucket refuses the write (no checksum) and the hint names objectLock', async () => {
    const s = s3Store(s3, 'x', null);
    const e = await backupErrorOf(s.put('c/1/a', Readable.from([Buffer.from('a')])));
    expect(e.hint).toMatch(/set stores\[\]\.objectLock/);
    await s.close();
  });
});

describe('backups and retention on a lock bucket (real etcd, the CLI)', () => {
  let cluster: EtcdCluster;
  let file: string;
  const ids: string[] = [];
  const leftover = '20200101T000000Z-master-0';
  const keysOf = (id: string) => [...s3.objects.keys()].filter((k) => k.startsWith(`clusters/prod/${id}/`));

  beforeAll(async () => {
    cluster = await startEtcdCluster({ members: 1, tls: false });
    await cluster.putMany(Array.from({ length: 50 }, (_, i) => [`/registry/configmaps/cm${i}`, `data-${i}`] as [string, string]));
    mkdirSync(join(dir, 'manifests'));
    writeFileSync(join(dir, 'manifests', 'etcd.yaml'), 'kind: Pod\n');
    file = writeConfig(dir, {
      cluster: 'prod',
      node: 'master-0',
      workDir: 'work',
      source: { type: 'etcdctl', staticPodDir: 'manifests' },
      etcd: { endpoints: [cluster.endpoints[0]] },
      stores: [
        {
          name: 's3', type: 's3', bucket: s3.bucket, prefix: 'clusters', endpoint: s3.endpoint, forcePathStyle: true,
          accessKeyIdFile: 'ak', secretAccessKeyFile: 'sk', incompleteGrace: '1s', objectLock: { retain: '30s' },
        },
      ],
      retention: { keepLast: 1 },
    });
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  async function json(args: string[]) {
    const r = await runCli([...args, '--config', file, '--json']);
    expect(r.code, r.stderr).toBe(0);
    return { doc: JSON.parse(r.stdout), stderr: r.stderr };
  }

  it('two backups: every object is locked; retention plans to remove the first, which waits for its lock (nothing deleted)', async () => {
    const started = Date.now();
    ids.push((await json(['backup'])).doc.id);
    // A manifest-less leftover of this node, locked too: prune removes it only after its lock.
    const planter = s3Store(s3, 'clusters', { retain: '30s' });
    await planter.put(`prod/${leftover}/backup.tar.zst`, Readable.from([Buffer.from('interrupted')]));
    await planter.close();
    await sleep(1100); // the next id is a second later
    const second = await json(['backup']);
    ids.push(second.doc.id);
    for (const id of ids) {
      const keys = keysOf(id);
      expect(keys.map((k) => k.split('/').pop()).sort()).toEqual(['backup.tar.zst', 'manifest.json']);
      for (const k of keys) {
        expect(s3.objects.get(k)!.lock?.mode, k).toBe('GOVERNANCE');
        expect(s3.objects.get(k)!.lock!.until.getTime(), k).toBeGreaterThan(started + 30_000);
      }
    }
    // The second run's retention found the first planned for removal and locked: info, not an error.
    const waitLog = second.stderr.split('\n').filter((l) => l.includes('wait for their object locks')).map((l) => JSON.parse(l));
    expect(waitLog.map((l) => [l.waiting, l.level])).toEqual([[2, 30]]); // the first backup and the leftover
    expect(deletesSent('clusters/')).toEqual([]);
    expect(markers('clusters/')).toEqual([]);
  });

  it('prune --dry-run and prune report what waits for its lock, with the date, and delete nothing', async () => {
    const seen = s3.requests.length;
    const dry = (await json(['prune', '--dry-run'])).doc;
    expect(dry.prune.map((p: { id: string }) => p.id)).toEqual([ids[0]]);
    const until0 = Math.max(...keysOf(ids[0]!).map((k) => s3.objects.get(k)!.lock!.until.getTime()));
    // A backup younger than the configured retain is locked for sure: its time plus retain, a lower bound, without a HEAD.
    const heads = s3.requests.slice(seen).filter((r) => r.op === 'HeadObject').length;
    expect(dry.waitingForLock).toEqual([
      { id: ids[0], until: expect.any(String), estimated: true },
      { id: leftover, until: expect.any(String), incomplete: true },
    ]);
    const estimated = Date.parse(dry.waitingForLock[0].until);
    expect(estimated).toBeLessThanOrEqual(until0);
    expect(estimated).toBeGreaterThan(until0 - 10_000);
    expect(s3.requests.slice(seen).filter((r) => r.op === 'HeadObject' && r.key.includes(ids[0]!))).toHaveLength(0);
    expect(heads).toBeGreaterThan(0); // the leftover's objects were asked about
    expect(dry.incomplete).toEqual([]);
    const real = (await json(['prune'])).doc;
    expect(real.waitingForLock).toEqual(dry.waitingForLock);
    expect(real.errors).toEqual([]);
    // Configured for shorter locks than the objects carry (retain shortened since): the store is asked, and its date reported.
    const short = writeConfig(dir, { ...parseYaml(readFileSync(file, 'utf8')), stores: [{ ...parseYaml(readFileSync(file, 'utf8')).stores[0], objectLock: { retain: '1s' } }] }, 'short.yaml');
    const asked = await runCli(['prune', '--dry-run', '--json', '--config', short]);
    expect(asked.code, asked.stderr).toBe(0);
    expect(JSON.parse(asked.stdout).waitingForLock[0]).toEqual({ id: ids[0], until: new Date(until0).toISOString() });
    const human = await runCli(['prune', '--config', file]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain(`waiting for its object lock: ${ids[0]} is locked until at least ${new Date(estimated).toISOString()}; not deleted`);
    expect(human.stdout).toContain(`waiting for its object lock: ${leftover} (incomplete) is locked until`);
    // (The lock is long enough for a slow machine to get here before it expires: 30 s from the first backup, ten times what it takes here.)
    expect(keysOf(ids[0]!)).toHaveLength(2);
    expect(keysOf(leftover)).toHaveLength(1);
    expect(deletesSent('clusters/')).toEqual([]);
    expect(markers('clusters/')).toEqual([]);
  });

  it('once the locks have expired, prune removes the backup and the leftover; the newest stays', async () => {
    const until = Math.max(...[...keysOf(ids[0]!), ...keysOf(leftover)].map((k) => s3.objects.get(k)!.lock!.until.getTime()));
    await sleep(until - Date.now() + 500);
    const doc = (await json(['prune'])).doc;
    expect(doc.waitingForLock).toEqual([]);
    expect(doc.incomplete).toEqual([leftover]);
    expect(doc.errors).toEqual([]);
    expect(keysOf(ids[0]!)).toEqual([]);
    expect(keysOf(leftover)).toEqual([]);
    expect(keysOf(ids[1]!)).toHaveLength(2);
    // S3 kept the expired versions behind delete markers (a lifecycle rule reclaims them); none hid a locked one.
    expect(markers('clusters/').map((m) => m.key.split('/').slice(2).join('/')).sort()).toEqual(
      [`${ids[0]}/backup.tar.zst`, `${ids[0]}/manifest.json`, `${leftover}/backup.tar.zst`].sort(),
    );
    expect(markers('clusters/').every((m) => !m.hidLocked)).toBe(true);
    expect(s3.lock.objectVersions(`clusters/prod/${ids[0]}/manifest.json`)).toHaveLength(1);
    const list = (await json(['list'])).doc;
    expect(list.backups.map((b: { id: string }) => b.id)).toEqual([ids[1]]);
  }, 120_000);
});

describe('continuous.keepWithin on a lock bucket', () => {
  it('a chain to delete waits, whole, while one of its objects is locked; once free it goes, manifests first', async () => {
    const s = s3Store(s3, 'kw', { retain: '30s' });
    const DAY = 86_400_000;
    const now = new Date();
    const based = (daysAgo: number): ListedBackup => {
      const time = new Date(Math.floor((now.getTime() - daysAgo * DAY) / 1000) * 1000);
      const id = backupId(time, 'master-0');
      return { id, time, node: 'master-0', keys: [`kw/${id}/manifest.json`], manifest: { key: `kw/${id}/manifest.json`, version: 'v' }, pins: [] };
    };
    const [newest, old] = [based(0), based(3)];
    const seg = (id: string, stem: string) => [`kw/continuous/${id}/${stem}.seg.zst`, `kw/continuous/${id}/${stem}.json`];
    const oldKeys = [...seg(old.id, '00000000000000000011-00000000000000000020'), ...seg(old.id, '00000000000000000021-00000000000000000030')];
    for (const k of [...oldKeys, ...seg(newest.id, '00000000000000000100-00000000000000000110')]) await s.put(k, Readable.from([Buffer.from(k)]));
    // The old chain was stored two days ago; its objects are still locked (as with a retain longer than keepWithin).
    for (const k of oldKeys) s3.objects.get(`kw/${k}`)!.modified = new Date(now.getTime() - 2 * DAY);
    const cfg = { cluster: 'kw', continuous: { keepWithinSeconds: 86_400 } } as Pick<Config, 'cluster' | 'continuous'>;
    const catalog = { listed: [newest, old] };

    const out = { errors: [] as string[], waitingForLock: [] as { id: string; until: Date }[] };
    const first = await pruneChains(cfg, s, silentLogger, catalog, [newest, old], out, { dryRun: false, now });
    expect(first.map((d) => [d.base, d.keep ?? (d.deleted ? 'deleted' : 'waiting')])).toEqual([[newest.id, 'newest-base'], [old.id, 'waiting']]);
    expect(out.errors).toEqual([]);
    expect(out.waitingForLock.map((w) => w.id)).toEqual([`continuous/${old.id}`]);
    expect(deletesSent('kw/')).toEqual([]);

    for (const k of oldKeys) s3.objects.get(`kw/${k}`)!.lock!.until = new Date(Date.now() - 1000);
    const out2 = { errors: [] as string[], waitingForLock: [] as { id: string; until: Date }[] };
    const second = await pruneChains(cfg, s, silentLogger, catalog, [newest, old], out2, { dryRun: false, now });
    expect(second.find((d) => d.base === old.id)).toMatchObject({ deleted: true });
    expect(out2).toEqual({ errors: [], waitingForLock: [] });
    const deleted = deletesSent('kw/').flatMap((r) => r.keys ?? [r.key]);
    // The manifests went first: a crash between leaves objects no reader takes for segments.
    expect(deleted.map((k) => k.endsWith('.json'))).toEqual([true, true, false, false]);
    expect([...s3.objects.keys()].filter((k) => k.startsWith(`kw/kw/continuous/${old.id}/`))).toEqual([]);
    expect([...s3.objects.keys()].filter((k) => k.startsWith(`kw/kw/continuous/${newest.id}/`))).toHaveLength(2);
    await s.close();
  });
});
