import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';

/**
 * `fetch` on objects that are not what their (committed, self-consistent)
 * manifest describes, beyond test/integration/fetch-hostile.test.ts: tar
 * headers that declare huge sizes, truncated archives, objects with more
 * bytes than the manifest says, and an object that never ends. Each must
 * fail with a reason, promptly, and leave the target directory empty.
 */
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const snap = { name: 'snapshot_2026-01-01_000000.db', body: Buffer.alloc(64 * 1024, 7) };
const root = tempDir('fuzz-fetch');
const file = writeConfig(root, {
  cluster: 'c1',
  node: 'm0',
  workDir: join(root, 'work'),
  source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
  etcd: { endpoints: ['http://127.0.0.1:1'] },
  stores: [{ name: 'nfs', type: 'local', path: join(root, 'store') }],
});
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

async function makeTar(entries: { name: string; body: Buffer }[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const e of entries) pack.entry({ name: e.name, size: e.body.length, mode: 0o600 }, e.body);
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Rewrites the size field of the first tar header (octal, offset 124) and its checksum. */
function withDeclaredSize(t: Buffer, size: number): Buffer {
  const b = Buffer.from(t);
  b.write(size.toString(8).padStart(11, '0') + '\0', 124, 12, 'ascii');
  b.fill(' ', 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return b;
}

let seq = 0;
/** A committed backup whose manifest describes `described` (artifacts and object); the store holds `stored` (a Buffer, or a path is made a FIFO when null). */
function plant(described: Buffer, stored: Buffer | null): string {
  const id = `20260201T0000${String(seq++).padStart(2, '0')}Z-m0`;
  const dir = join(root, 'store', 'c1', id);
  mkdirSync(dir, { recursive: true });
  const obj = join(dir, 'backup.tar');
  if (stored) writeFileSync(obj, stored);
  else execFileSync('mkfifo', ['-m', '0600', obj]);
  const at = '2026-02-01T00:00:00.000Z';
  writeFileSync(
    join(dir, 'manifest.json'),
    JSON.stringify({
      format: 1, id, cluster: 'c1', node: 'm0', trigger: 'manual', pinned: false, createdAt: at, startedAt: at, finishedAt: at,
      tool: { name: 'etcd-backupd', version: '0.1.0' }, source: { type: 'cluster-backup', possiblyDirty: false },
      preflight: { forced: false, failedChecks: [] }, etcd: { revision: 1, totalKey: 1, hash: 1, totalSize: 1 },
      artifacts: [{ name: snap.name, size: snap.body.length, sha256: sha(snap.body) }],
      object: { key: `c1/${id}/backup.tar`, size: described.length, sha256: sha(described), encrypted: false, recipients: [] },
    }),
  );
  return id;
}

async function fetchFails(id: string, reason: RegExp, timeoutMs = 60_000) {
  const to = join(tempDir('fuzz-fetch-to'), 'out');
  const t0 = Date.now();
  const r = await runCli(['fetch', '--config', file, id, '--to', to], { timeoutMs });
  expect(r.code, `exit ${r.code} after ${Date.now() - t0} ms (-1: killed at the timeout)\n${r.stderr}`).toBe(1);
  expect(r.stderr).toMatch(reason);
  expect(r.stderr).not.toMatch(/"stack"/);
  expect(existsSync(to) ? readdirSync(to) : [], 'files left in the target').toEqual([]);
}

describe('fetch on objects that do not match their manifest', () => {
  it('a tar header declaring 8 GiB for an artifact the manifest says is 64 KiB: refused before writing', async () => {
    const good = await makeTar([snap]);
    const bomb = withDeclaredSize(good, 8 * 1024 ** 3 - 1);
    await fetchFails(plant(bomb, bomb), /unsafe-archive|has size 8589934591, manifest says 65536/);
  });

  it('a truncated archive (cut inside the artifact; the object itself matches its manifest)', async () => {
    const good = await makeTar([snap]);
    const cut = good.subarray(0, 512 + 20_000);
    await fetchFails(plant(cut, cut), /checksum-mismatch|unsafe-archive/);
  });

  it('the store lost the tail of the object (cut after the artifact, which is whole and already written)', async () => {
    const good = await makeTar([snap]);
    await fetchFails(plant(good, good.subarray(0, 512 + snap.body.length)), /checksum-mismatch/);
  });

  it('the store holds 16 MiB more than the manifest says (junk after the archive)', async () => {
    const good = await makeTar([snap]);
    await fetchFails(plant(good, Buffer.concat([good, Buffer.alloc(16 * 1024 * 1024, 0x41)])), /checksum-mismatch/);
  });

  it('an object that never ends (a store streaming zeros forever) fails once it passes the size in the manifest', async () => {
    const good = await makeTar([snap]);
    const id = plant(good, null);
    const feeder = spawn('sh', ['-c', `exec cat /dev/zero > '${join(root, 'store', 'c1', id, 'backup.tar')}'`], { stdio: 'ignore' });
    children.push(feeder);
    try {
      await fetchFails(id, /checksum-mismatch|larger than|more than/, 20_000);
    } finally {
      feeder.kill('SIGKILL');
    }
  }, 60_000);
});
