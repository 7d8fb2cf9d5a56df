import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { runCli } from '../support/cli.js';
import { ensureTool, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { makeEnv, s3StoreConfig, tempDir, type Env } from '../support/fault-env.js';
import { kubernetesShaped } from '../support/k8s-data.js';
import { startS3rver, type S3rver } from '../support/s3.js';

/**
 * zstd in the stream, on by default: a backup of Kubernetes-shaped data is
 * stored as `backup.tar.zst` at half its raw size or less, the object is a
 * standard zstd frame of a tar (the aws CLI, zstd and tar read it), and the
 * artifacts come back byte-identical to what the source produced.
 */
let etcd: EtcdCluster;
let s3: S3rver;
let root: string;
const noDaemon = { ETCD_BACKUPD_NO_DAEMON: '1' };
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  for (const t of ['zstd', 'aws', 'age', 'age-keygen']) ensureTool(t);
  root = tempDir('compression');
  [etcd, s3] = await Promise.all([startEtcdCluster({ members: 1, tls: false }), startS3rver()]);
  const batch: [string, Buffer][] = [];
  for (const e of kubernetesShaped(12 * 1024 * 1024)) {
    batch.push([e.key, e.value]);
    if (batch.length === 256) await etcd.putMany(batch.splice(0));
  }
  await etcd.putMany(batch);
}, 240_000);

afterAll(async () => {
  await etcd?.stop();
  await s3?.dispose();
});

describe('zstd by default, against s3rver', () => {
  let env: Env;
  let m: Manifest;

  beforeAll(async () => {
    env = makeEnv(root, 's3', etcd, { stores: [s3StoreConfig(s3, join(root, 'creds'))], retention: { keepLast: 10 } });
    const r = await runCli(['backup', '--config', env.file, '--json'], { env: noDaemon });
    expect(r.code, r.stderr).toBe(0);
    const id = JSON.parse(r.stdout).id as string;
    const prefix = String((env.cfg.stores as { prefix: string }[])[0]!.prefix);
    // The committed manifest as the store holds it, read with the aws CLI.
    m = JSON.parse(awsGet(`${prefix}/c1/${id}/manifest.json`).toString()) as Manifest;
  }, 180_000);

  function awsGet(key: string): Buffer {
    return execFileSync('aws', ['--endpoint-url', s3.endpoint, 's3', 'cp', `s3://${s3.bucket}/${key}`, '-'], {
      env: { ...process.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_DEFAULT_REGION: 'us-east-1' },
      maxBuffer: 1 << 30,
    });
  }

  it('stores backup.tar.zst at half the raw size or less, and the manifest says so', () => {
    expect(m.object!.key).toMatch(/\/backup\.tar\.zst$/);
    expect(m.object!.codec).toBe('zstd');
    expect(m.object!.rawSize).toBeGreaterThan(8 * 1024 * 1024);
    expect(m.object!.size).toBeLessThanOrEqual(0.5 * m.object!.rawSize!);
  });

  it('the object read by the aws CLI is a zstd frame of a tar holding the artifacts byte for byte', () => {
    const prefix = String((env.cfg.stores as { prefix: string }[])[0]!.prefix);
    const stored = awsGet(`${prefix}/${m.object!.key}`);
    expect(stored.length).toBe(m.object!.size);
    expect(sha(stored)).toBe(m.object!.sha256);
    const tarBytes = execFileSync('zstd', ['-d', '-c'], { input: stored, maxBuffer: 1 << 30 });
    expect(tarBytes.length).toBe(m.object!.rawSize);
    const out = join(root, 'by-hand');
    mkdirSync(out, { recursive: true });
    execFileSync('tar', ['-x', '-C', out], { input: tarBytes });
    for (const a of m.artifacts) expect(sha(readFileSync(join(out, a.name))), a.name).toBe(a.sha256);
    writeFileSync(join(root, 'stored.tar.zst'), stored);
  });

  it('inspect reads the stored .tar.zst as a bundle and reports its snapshot as etcdctl would', async () => {
    const r = await runCli(['inspect', join(root, 'stored.tar.zst'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { hash: number; revision: number; totalKey: number; trailer: string; bundle: { codec: string; encrypted: boolean } };
    expect(doc).toMatchObject({ hash: m.etcd.hash, revision: m.etcd.revision, totalKey: m.etcd.totalKey, trailer: 'ok', bundle: { codec: 'zstd', encrypted: false } });
  });

  it('fetch gives the artifacts back byte-identical to what the source produced; verify reads it end to end', async () => {
    const to = join(root, 'fetched');
    const f = await runCli(['fetch', 'latest', '--config', env.file, '--to', to, '--json'], { env: noDaemon });
    expect(f.code, f.stderr).toBe(0);
    for (const a of m.artifacts) expect(sha(readFileSync(join(to, a.name))), a.name).toBe(a.sha256);
    const snap = readdirSync(to).find((n) => n.endsWith('.db'))!;
    const by = join(root, 'by-hand', snap);
    expect(readFileSync(join(to, snap)).equals(readFileSync(by))).toBe(true);
    const v = await runCli(['verify', 'latest', '--config', env.file, '--json'], { env: noDaemon });
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout).snapshot.revision).toBe(m.etcd.revision);
  });
});

describe('codec none, old uncompressed backups, and zstd with age', () => {
  it('compression.codec none stores backup.tar; a manifest from before compression (no codec) still fetches', async () => {
    const env = makeEnv(root, 'none', etcd, { compression: { codec: 'none' }, stores: [{ name: 'nfs', type: 'local', path: join(root, 'none-store') }] });
    const r = await runCli(['backup', '--config', env.file, '--json'], { env: noDaemon });
    expect(r.code, r.stderr).toBe(0);
    const id = JSON.parse(r.stdout).id as string;
    const mpath = join(root, 'none-store', 'c1', id, 'manifest.json');
    const m = JSON.parse(readFileSync(mpath, 'utf8')) as Manifest;
    expect(m.object).toMatchObject({ key: `c1/${id}/backup.tar`, codec: 'none' });
    expect(m.object!.rawSize).toBe(m.object!.size);
    // As 0.1.0 wrote it: no codec, no rawSize.
    delete m.object!.codec;
    delete m.object!.rawSize;
    writeFileSync(mpath, JSON.stringify(m, null, 2));
    const to = join(root, 'none-fetched');
    const f = await runCli(['fetch', id, '--config', env.file, '--to', to], { env: noDaemon });
    expect(f.code, f.stderr).toBe(0);
    for (const a of m.artifacts) expect(sha(readFileSync(join(to, a.name)))).toBe(a.sha256);
    const i = await runCli(['inspect', join(root, 'none-store', 'c1', id, 'backup.tar'), '--json']);
    expect(i.code, i.stderr).toBe(0);
    expect(JSON.parse(i.stdout)).toMatchObject({ revision: m.etcd.revision, hash: m.etcd.hash, bundle: { codec: 'none', encrypted: false } });
  });

  it('compressed, then encrypted: backup.tar.zst.age, which age -d | zstd -d | tar reads', async () => {
    const key = join(root, 'age.key');
    execFileSync('age-keygen', ['-o', key], { stdio: 'pipe' });
    const recipient = /public key: (age1\S+)/.exec(readFileSync(key, 'utf8'))![1]!;
    const env = makeEnv(root, 'age', etcd, { encryption: { recipients: [recipient] }, stores: [{ name: 'nfs', type: 'local', path: join(root, 'age-store') }] });
    const r = await runCli(['backup', '--config', env.file, '--json'], { env: noDaemon });
    expect(r.code, r.stderr).toBe(0);
    const id = JSON.parse(r.stdout).id as string;
    const m = JSON.parse(readFileSync(join(root, 'age-store', 'c1', id, 'manifest.json'), 'utf8')) as Manifest;
    expect(m.object).toMatchObject({ key: `c1/${id}/backup.tar.zst.age`, codec: 'zstd', encrypted: true });
    const plain = execFileSync('age', ['-d', '-i', key, join(root, 'age-store', m.object!.key)], { maxBuffer: 1 << 30 });
    const tarBytes = execFileSync('zstd', ['-d', '-c'], { input: plain, maxBuffer: 1 << 30 });
    expect(tarBytes.length).toBe(m.object!.rawSize);
    const to = join(root, 'age-fetched');
    const f = await runCli(['fetch', id, '--config', env.file, '--to', to, '--identity', key], { env: noDaemon });
    expect(f.code, f.stderr).toBe(0);
    for (const a of m.artifacts) expect(sha(readFileSync(join(to, a.name)))).toBe(a.sha256);
    const object = join(root, 'age-store', m.object!.key);
    const without = await runCli(['inspect', object]);
    expect(without.code).toBe(2);
    expect(without.stderr).toMatch(/encrypted \(age\); pass --identity FILE/);
    const i = await runCli(['inspect', object, '--identity', key, '--json']);
    expect(i.code, i.stderr).toBe(0);
    expect(JSON.parse(i.stdout)).toMatchObject({ revision: m.etcd.revision, hash: m.etcd.hash, bundle: { codec: 'zstd', encrypted: true } });
  });
});
