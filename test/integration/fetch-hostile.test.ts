import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { runCli, tempDir, writeConfig, FAKE_CLUSTER_BACKUP } from '../support/cli.js';

/**
 * `fetch` on archives an attacker (or a broken store) could hand us. The
 * manifest is committed and consistent with the object, so only the tar's
 * own entries can make the difference: each must be refused before anything
 * lands outside the target, and nothing half-written may stay inside it.
 */
type Entry = { name: string; type?: 'file' | 'symlink' | 'link' | 'directory'; body?: Buffer; linkname?: string; pax?: Record<string, string> };

async function makeTar(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => pack.on('end', r));
  for (const e of entries) {
    pack.entry({ name: e.name, type: e.type ?? 'file', size: e.body?.length ?? 0, linkname: e.linkname, mode: 0o600, pax: e.pax }, e.body ?? Buffer.alloc(0));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function plant(dir: string, id: string, tarBuf: Buffer, artifacts: { name: string; body: Buffer }[]) {
  const bdir = join(dir, 'store', 'c1', id);
  mkdirSync(bdir, { recursive: true });
  writeFileSync(join(bdir, 'backup.tar'), tarBuf);
  const manifest = {
    format: 1,
    id,
    cluster: 'c1',
    node: 'm0',
    trigger: 'manual',
    pinned: false,
    createdAt: '2026-01-01T00:00:00.000Z',
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:00:01.000Z',
    tool: { name: 'etcd-backupd', version: '0.1.0' },
    source: { type: 'cluster-backup', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] },
    etcd: { revision: 1, totalKey: 1, hash: 1, totalSize: 1 },
    artifacts: artifacts.map((a) => ({ name: a.name, size: a.body.length, sha256: sha(a.body) })),
    object: { key: `c1/${id}/backup.tar`, size: tarBuf.length, sha256: sha(tarBuf), encrypted: false, recipients: [] },
  };
  writeFileSync(join(bdir, 'manifest.json'), JSON.stringify(manifest));
}

describe('fetch refuses hostile archives', () => {
  const root = tempDir('hostile');
  const file = writeConfig(root, {
    cluster: 'c1',
    workDir: 'work',
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: [{ name: 'nfs', type: 'local', path: 'store' }],
  });
  const snap = { name: 'snapshot_2026-01-01_000000.db', body: Buffer.from('snapshot bytes') };
  const cases: [string, Entry[]][] = [
    ['path traversal', [{ name: '../../escape.txt', body: Buffer.from('pwned') }, { name: snap.name, body: snap.body }]],
    ['absolute path', [{ name: '/tmp/etcd-backupd-escape.txt', body: Buffer.from('pwned') }, { name: snap.name, body: snap.body }]],
    ['nested path', [{ name: `sub/${snap.name}`, body: snap.body }]],
    ['symlink under an artifact name', [{ name: snap.name, type: 'symlink', linkname: '/etc/passwd' }]],
    ['hard link under an artifact name', [{ name: snap.name, type: 'link', linkname: '/etc/shadow' }]],
    ['directory entry', [{ name: 'dir', type: 'directory' }, { name: snap.name, body: snap.body }]],
    ['huge pax header naming an escape', [{ name: 'x', body: Buffer.from('pwned'), pax: { path: '../' + 'a'.repeat(200_000) } }, { name: snap.name, body: snap.body }]],
    ['entry not in the manifest', [{ name: snap.name, body: snap.body }, { name: 'extra.sh', body: Buffer.from('#!/bin/sh') }]],
    ['duplicate entry', [{ name: snap.name, body: snap.body }, { name: snap.name, body: snap.body }]],
    ['artifact with different bytes', [{ name: snap.name, body: Buffer.from('snapshot bytez') }]],
  ];
  cases.forEach(([what, entries], i) => {
    it(what, async () => {
      const id = `20260101T0000${String(i).padStart(2, '0')}Z-m0`;
      plant(root, id, await makeTar(entries), [snap]);
      const to = join(tempDir('hostile-to'), 'out');
      const r = await runCli(['fetch', '--config', file, id, '--to', to]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/unsafe-archive|checksum-mismatch/);
      expect(existsSync(to) ? readdirSync(to) : []).toEqual([]);
      expect(existsSync('/tmp/etcd-backupd-escape.txt')).toBe(false);
      expect(existsSync(join(to, '..', '..', 'escape.txt'))).toBe(false);
    });
  });

  it('a well-formed planted backup fetches (the cases above fail for their own reason)', async () => {
    const id = '20260102T000000Z-m0';
    plant(root, id, await makeTar([{ name: snap.name, body: snap.body }]), [snap]);
    const to = join(tempDir('hostile-ok'), 'out');
    const r = await runCli(['fetch', '--config', file, id, '--to', to]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(to)).toEqual([snap.name]);
  });

  it('list reports a corrupt manifest and goes on', async () => {
    const bad = join(root, 'store', 'c1', '20260103T000000Z-m0');
    mkdirSync(bad, { recursive: true });
    writeFileSync(join(bad, 'manifest.json'), '{"format": 1, "id": ');
    const r = await runCli(['list', '--config', file, '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.problems.map((p: { key: string }) => p.key)).toContain('c1/20260103T000000Z-m0/manifest.json');
    expect(doc.backups.map((b: { id: string }) => b.id)).toContain('20260102T000000Z-m0');
    expect(r.stderr).toMatch(/skipping unreadable manifest/);
  });
});
