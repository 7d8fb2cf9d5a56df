import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli, tempDir, writeConfig, FAKE_CLUSTER_BACKUP } from '../support/cli.js';
import { startFakeS3, type FakeS3 } from '../support/fake-s3.js';

/**
 * The catalog at scale: one listing per call, manifests read once per node
 * (the cache), only this node's manifests for retention, pins as marker
 * objects beside manifests that are never rewritten. Against the fake S3,
 * whose request log counts every GET a command makes.
 */
let s3: FakeS3;
let dir: string;
let file: string;
const PREFIX = 'clusters';
const NODES = ['master-0', 'master-1', 'master-2'];
const START = Date.parse('2026-11-20T00:00:00Z');

function idOf(i: number): { id: string; node: string; at: Date } {
  const at = new Date(START + i * 900_000);
  const node = NODES[i % 3]!;
  return { id: `${at.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '')}-${node}`, node, at };
}

function manifestText(id: string, node: string, at: Date, o: { pinned?: boolean; pinReason?: string } = {}): string {
  const t = at.toISOString();
  return JSON.stringify({
    format: 1, id, cluster: 'c1', node, trigger: 'schedule', pinned: o.pinned ?? false, ...(o.pinReason ? { pinReason: o.pinReason } : {}),
    createdAt: t, startedAt: t, finishedAt: t,
    tool: { name: 'etcd-backupd', version: '0.1.0' }, source: { type: 'etcdctl', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] }, etcd: { revision: 100, totalKey: 1, hash: 1, totalSize: 1 },
    artifacts: [{ name: 'snapshot_x.db', size: 1, sha256: '0'.repeat(64) }],
    object: { key: `c1/${id}/backup.tar`, size: 1, sha256: '0'.repeat(64), encrypted: false, recipients: [] },
  });
}

function putObject(key: string, body: string | Buffer, modified = new Date()): void {
  const b = Buffer.from(body);
  s3.objects.set(`${PREFIX}/${key}`, { body: b, modified, etag: `"${createHash('md5').update(b).digest('hex')}"` });
}

function plant(i: number, o: { pinned?: boolean; pinReason?: string } = {}): string {
  const { id, node, at } = idOf(i);
  putObject(`c1/${id}/backup.tar`, 'x', at);
  putObject(`c1/${id}/manifest.json`, manifestText(id, node, at, o), at);
  return id;
}

const manifestGets = () => s3.requests.filter((r) => r.op === 'GetObject' && r.key.endsWith('/manifest.json')).length;
const lists = () => s3.requests.filter((r) => r.op === 'ListObjectsV2').length;

interface Listed {
  backups: { id: string; pinned: boolean; pinReason?: string; node: string }[];
  problems: unknown[];
}
async function list(): Promise<Listed> {
  const r = await runCli(['list', '--config', file, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Listed;
}

beforeAll(async () => {
  s3 = await startFakeS3();
  dir = tempDir('catalog');
  writeFileSync(join(dir, 'ak'), 'anything\n', { mode: 0o600 });
  writeFileSync(join(dir, 'sk'), 'whatever\n', { mode: 0o600 });
  file = writeConfig(dir, {
    cluster: 'c1', node: 'master-0', workDir: 'work',
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: [{ name: 's3', type: 's3', bucket: s3.bucket, prefix: PREFIX, endpoint: s3.endpoint, forcePathStyle: true, accessKeyIdFile: 'ak', secretAccessKeyFile: 'sk' }],
    retention: { keepLast: 10, daily: 0, weekly: 0, monthly: 0 },
    // Each node plans its own series: prune reads only master-0's manifests (with coordination, the cluster's).
    coordination: { mode: 'none' },
  });
});
afterAll(async () => {
  await s3?.close();
});

describe('the catalog cache', () => {
  const N = 300;
  beforeEach(() => {
    s3.requests.length = 0;
  });

  it('a cold list reads every manifest once; a warm one reads none and says the same', async () => {
    for (let i = 0; i < N; i++) plant(i);
    const cold = await list();
    expect(cold.backups).toHaveLength(N);
    expect(manifestGets()).toBe(N);
    expect(lists()).toBe(1);
    s3.requests.length = 0;
    const warm = await list();
    expect(manifestGets()).toBe(0);
    expect(warm).toEqual(cold);
    expect(readdirSync(join(dir, 'work', 'cache', 's3'))).toHaveLength(N);
  });

  it('never hides what another node added or deleted, and forgets the deleted', async () => {
    const added = plant(N);
    const gone = idOf(5).id;
    for (const k of [...s3.objects.keys()]) if (k.includes(`/${gone}/`)) s3.objects.delete(k);
    const l = await list();
    const ids = l.backups.map((b) => b.id);
    expect(ids).toContain(added);
    expect(ids).not.toContain(gone);
    expect(l.backups).toHaveLength(N);
    expect(manifestGets()).toBe(1);
    expect(existsSync(join(dir, 'work', 'cache', 's3', `${gone}.json`))).toBe(false);
  });

  it('a manifest rewritten in place (a pin by an older version) is read again', async () => {
    const { id, node, at } = idOf(7);
    putObject(`c1/${id}/manifest.json`, manifestText(id, node, at, { pinned: true, pinReason: 'old-style' }), at);
    const b = (await list()).backups.find((x) => x.id === id);
    expect(b).toMatchObject({ pinned: true, pinReason: 'old-style' });
    expect(manifestGets()).toBe(1);
  });

  it('a mangled or foreign cache file costs a GET, never a wrong answer; the cache is private', async () => {
    const cacheDir = join(dir, 'work', 'cache', 's3');
    expect(statSync(cacheDir).mode & 0o777).toBe(0o700);
    const a = idOf(10).id;
    const b = idOf(11).id;
    expect(statSync(join(cacheDir, `${a}.json`)).mode & 0o777).toBe(0o600);
    writeFileSync(join(cacheDir, `${a}.json`), '{"format":1,"objects":{tor');
    // A copy of the right key but another version (what a rewrite elsewhere leaves behind): not used.
    const doc = JSON.parse(readFileSync(join(cacheDir, `${b}.json`), 'utf8')) as { objects: Record<string, { version: string; text: string }> };
    const [k] = Object.keys(doc.objects);
    doc.objects[k!] = { version: 'etag:"stale":1', text: manifestText(b, idOf(11).node, idOf(11).at, { pinned: true, pinReason: 'stale copy' }) };
    writeFileSync(join(cacheDir, `${b}.json`), JSON.stringify(doc));
    const l = await list();
    expect(manifestGets()).toBe(2);
    expect(l.backups.find((x) => x.id === b)).toMatchObject({ pinned: false });
    expect(l.backups).toHaveLength(N);
  });

  it('prune --dry-run plans from the listing and this node\'s manifests only; warm it reads none', async () => {
    await runCli(['list', '--config', file, '--json']); // everything cached
    s3.requests.length = 0;
    const warm = await runCli(['prune', '--config', file, '--dry-run', '--json']);
    expect(warm.code, warm.stderr).toBe(0);
    expect(manifestGets()).toBe(0);
    // A fresh workDir: only master-0's manifests are read, not the other nodes'.
    const cold = writeConfig(dir, { ...(await import('yaml')).parse((await import('node:fs')).readFileSync(file, 'utf8')), workDir: 'work-cold' }, 'cold.yaml');
    s3.requests.length = 0;
    const r = await runCli(['prune', '--config', cold, '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const mine = [...s3.objects.keys()].filter((k) => /master-0\/manifest\.json$/.test(k)).length;
    expect(manifestGets()).toBe(mine);
    expect(mine).toBeLessThan(N / 2);
  });
});

describe('pins are markers', () => {
  it('pin and unpin write markers; the committed manifest is never rewritten', async () => {
    const id = plant(400);
    const mkey = `${PREFIX}/c1/${id}/manifest.json`;
    const before = Buffer.from(s3.objects.get(mkey)!.body);
    s3.requests.length = 0;
    const pin = await runCli(['pin', '--config', file, id, '--reason', 'pre-upgrade'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(pin.code, pin.stderr).toBe(0);
    expect(s3.objects.get(mkey)!.body.equals(before)).toBe(true);
    expect(s3.requests.filter((r) => r.op === 'PutObject').map((r) => r.key)).toEqual([
      expect.stringMatching(new RegExp(`^${PREFIX}/c1/${id}/pins/\\d{8}T\\d{6}\\.\\d{3}Z-pin-[0-9a-f]{8}\\.json$`)),
    ]);
    expect((await list()).backups.find((b) => b.id === id)).toMatchObject({ pinned: true, pinReason: 'pre-upgrade' });
    // A later marker wins.
    await new Promise((r) => setTimeout(r, 5));
    const un = await runCli(['unpin', '--config', file, id], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(un.code, un.stderr).toBe(0);
    const after = (await list()).backups.find((b) => b.id === id)!;
    expect(after.pinned).toBe(false);
    expect(after.pinReason).toBeUndefined();
    expect(s3.objects.get(mkey)!.body.equals(before)).toBe(true);
  });

  it('a pin in an old manifest still counts, and an unpin marker lifts it', async () => {
    const id = plant(401, { pinned: true, pinReason: 'from 0.1' });
    expect((await list()).backups.find((b) => b.id === id)).toMatchObject({ pinned: true, pinReason: 'from 0.1' });
    const un = await runCli(['unpin', '--config', file, id], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(un.code, un.stderr).toBe(0);
    expect((await list()).backups.find((b) => b.id === id)?.pinned).toBe(false);
  });

  it('retention keeps a marker-pinned backup, and prune takes its markers with it', async () => {
    // master-0's oldest backup, pinned then unpinned: prune removes it whole, markers included.
    const oldest = idOf(0).id;
    for (const op of ['pin', 'unpin']) {
      const r = await runCli([op, '--config', file, oldest], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
      expect(r.code, r.stderr).toBe(0);
      await new Promise((res) => setTimeout(res, 5));
    }
    // master-0's second oldest, pinned: kept with reason pinned.
    const kept = idOf(3).id;
    expect((await runCli(['pin', '--config', file, kept], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } })).code).toBe(0);
    const r = await runCli(['prune', '--config', file, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { keep: { id: string; reasons: string[] }[]; prune: { id: string }[]; errors: string[] };
    expect(doc.errors).toEqual([]);
    expect(doc.prune.map((p) => p.id)).toContain(oldest);
    expect(doc.keep.find((k) => k.id === kept)?.reasons).toContain('pinned');
    expect([...s3.objects.keys()].filter((k) => k.includes(`/${oldest}/`))).toEqual([]);
    expect([...s3.objects.keys()].filter((k) => k.includes(`/${kept}/pins/`))).toHaveLength(1);
  });
});
