import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptStream, encryptStream } from '../../src/bundle/encrypt.js';
import { runCli, tempDir, writeConfig } from '../support/cli.js';
import { ensureTool, restoreSnapshot, startEtcdCluster, startEtcdFromDataDir, type EtcdCluster } from '../support/etcd.js';

/**
 * Client-side encryption with age, checked against the age CLI (Debian `age`)
 * in both directions, and end to end: the node holds only the recipient, the
 * store holds only ciphertext, `fetch --identity` restores.
 */
let cluster: EtcdCluster;
let dir: string;
let identityFile: string;
let recipient: string;

beforeAll(async () => {
  ensureTool('age');
  ensureTool('age-keygen');
  dir = tempDir('age');
  identityFile = join(dir, 'key.txt');
  execFileSync('age-keygen', ['-o', identityFile], { stdio: 'pipe' });
  recipient = execFileSync('age-keygen', ['-y', identityFile]).toString().trim();
  cluster = await startEtcdCluster({ members: 1, tls: false });
  await cluster.putMany(Array.from({ length: 100 }, (_, i) => [`/registry/secrets/s${i}`, `top-secret-value-${i}`] as [string, string]));
});
afterAll(async () => {
  await cluster?.stop();
});

describe('age interoperability', () => {
  const plain = Buffer.concat([Buffer.from('etcd-backupd age test\n'), Buffer.alloc(300_000, 7)]);

  it('what we encrypt, `age -d` decrypts', async () => {
    const enc = join(dir, 'ours.age');
    await pipeline(await encryptStream(Readable.from([plain]), [recipient]), createWriteStream(enc));
    expect(readFileSync(enc).subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    const out = execFileSync('age', ['-d', '-i', identityFile, enc], { maxBuffer: 10 << 20 });
    expect(Buffer.compare(out, plain)).toBe(0);
  });

  it('what `age -r` encrypts, we decrypt', async () => {
    const p = join(dir, 'plain.bin');
    writeFileSync(p, plain);
    const enc = join(dir, 'theirs.age');
    execFileSync('age', ['-r', recipient, '-o', enc, p]);
    const chunks: Buffer[] = [];
    for await (const c of await decryptStream(createReadStream(enc), [readFileSync(identityFile, 'utf8').split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!])) chunks.push(c as Buffer);
    expect(Buffer.compare(Buffer.concat(chunks), plain)).toBe(0);
  });
});

describe('encrypted backups end to end', () => {
  let file: string;
  let id: string;
  let storeDir: string;

  beforeAll(async () => {
    mkdirSync(join(dir, 'e2e', 'manifests'), { recursive: true });
    writeFileSync(join(dir, 'e2e', 'manifests', 'etcd.yaml'), 'kind: Pod\n');
    storeDir = join(dir, 'e2e', 'store');
    file = writeConfig(join(dir, 'e2e'), {
      cluster: 'c1',
      node: 'm0',
      workDir: 'work',
      source: { type: 'etcdctl', staticPodDir: 'manifests' },
      etcd: { endpoints: [cluster.endpoints[0]] },
      stores: [{ name: 'nfs', type: 'local', path: 'store' }],
      encryption: { recipients: [recipient] },
    });
    const r = await runCli(['backup', '--config', file, '--json']);
    expect(r.code, r.stderr).toBe(0);
    id = JSON.parse(r.stdout).id;
  });

  it('stores only ciphertext, and a manifest that says for whom', () => {
    const bdir = join(storeDir, 'c1', id);
    expect(readdirSync(bdir).sort()).toEqual(['backup.tar.zst.age', 'manifest.json']);
    const obj = readFileSync(join(bdir, 'backup.tar.zst.age'));
    expect(obj.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    expect(obj.includes(Buffer.from('top-secret-value-'))).toBe(false);
    const m = JSON.parse(readFileSync(join(bdir, 'manifest.json'), 'utf8'));
    expect(m.object).toMatchObject({ key: `c1/${id}/backup.tar.zst.age`, encrypted: true, recipients: [recipient], codec: 'zstd' });
    expect(JSON.stringify(m)).not.toContain('AGE-SECRET-KEY');
  });

  it('lists without the key (the manifest stays readable)', async () => {
    const r = await runCli(['list', '--config', file, '--json']);
    expect(JSON.parse(r.stdout).backups[0]).toMatchObject({ id, encrypted: true, recipients: [recipient] });
  });

  it('the stored object decrypts with the age CLI into the zstd-compressed bundle tar', () => {
    const compressed = execFileSync('age', ['-d', '-i', identityFile, join(storeDir, 'c1', id, 'backup.tar.zst.age')], { maxBuffer: 64 << 20 });
    const tarBytes = execFileSync('zstd', ['-d', '-c'], { input: compressed, maxBuffer: 64 << 20 });
    const tarPath = join(dir, 'bundle.tar');
    writeFileSync(tarPath, tarBytes);
    const names = execFileSync('tar', ['tf', tarPath]).toString().trim().split('\n');
    expect(names).toContain('manifest.json');
    expect(names.some((n) => /^snapshot_.*\.db$/.test(n))).toBe(true);
  });

  it('fetch without --identity says what it needs', async () => {
    const r = await runCli(['fetch', '--config', file, id, '--to', join(tempDir('noid'), 'x')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`encrypted for ${recipient}`);
    expect(r.stderr).toContain('--identity FILE');
  });

  it('fetch with the wrong identity fails clearly and writes nothing', async () => {
    const wrong = join(dir, 'wrong.txt');
    execFileSync('age-keygen', ['-o', wrong], { stdio: 'pipe' });
    const to = join(tempDir('wrongid'), 'x');
    const r = await runCli(['fetch', '--config', file, id, '--to', to, '--identity', wrong]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot decrypt/);
    expect(readdirSync(to)).toEqual([]);
  });

  it('verify checks the ciphertext without a key and everything with it', async () => {
    const a = await runCli(['verify', '--config', file, id, '--json']);
    expect(a.code, a.stderr).toBe(0);
    expect(JSON.parse(a.stdout)).toMatchObject({ encryptedOnly: true });
    const b = await runCli(['verify', '--config', file, id, '--identity', identityFile, '--json']);
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout).snapshot.trailer).toBe('ok');
  });

  it('fetch --identity restores the cluster', async () => {
    const to = join(tempDir('withid'), 'x');
    const r = await runCli(['fetch', '--config', file, id, '--to', to, '--identity', identityFile, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const f = JSON.parse(r.stdout);
    const restored = await restoreSnapshot(f.snapshot, join(tempDir('age-restore'), 'data'));
    const etcd = await startEtcdFromDataDir(restored.dataDir, { name: restored.name, peerUrl: restored.peerUrl });
    try {
      const keys = await etcd.getAll('/registry/secrets/');
      expect(keys.size).toBe(100);
      expect(keys.get('/registry/secrets/s7')?.toString()).toBe('top-secret-value-7');
    } finally {
      await etcd.stop();
    }
  });
});
