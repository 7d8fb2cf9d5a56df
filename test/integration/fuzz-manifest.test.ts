import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { Rng } from '../support/fuzz.js';

/**
 * `list` and `prune` as the operator runs them, on a store holding damaged
 * manifests next to good ones (test/unit/fuzz-manifest.test.ts drives the
 * catalog and the planner through many more). Damaged manifests are
 * reported in `problems` and skipped; the command still succeeds.
 */
const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

function manifest(id: string, day: number, over: Record<string, unknown> = {}) {
  const body = `object of ${id}`;
  const at = `2026-01-${String(day).padStart(2, '0')}T00:00:00.000Z`;
  return {
    format: 1,
    id,
    cluster: 'c1',
    node: 'm0',
    trigger: 'schedule',
    pinned: false,
    createdAt: at,
    startedAt: at,
    finishedAt: at,
    tool: { name: 'etcd-backupd', version: '0.1.0' },
    source: { type: 'etcdctl', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] },
    etcd: { revision: day, totalKey: 1, hash: 1, totalSize: 1 },
    artifacts: [{ name: 'snapshot_x.db', size: 1, sha256: sha('x') }],
    object: { key: `c1/${id}/backup.tar`, size: Buffer.byteLength(body), sha256: sha(body), encrypted: false, recipients: [] },
    ...over,
  };
}

const idAt = (day: number, h = 0) => `202601${String(day).padStart(2, '0')}T${String(h).padStart(2, '0')}0000Z-m0`;

function setup(name: string) {
  const dir = tempDir(`fuzz-manifest-${name}`);
  const file = writeConfig(dir, {
    cluster: 'c1',
    node: 'm0',
    workDir: join(dir, 'work'),
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
    etcd: { endpoints: ['http://127.0.0.1:1'] },
    stores: [{ name: 'nfs', type: 'local', path: join(dir, 'store') }],
    retention: { keepLast: 2, daily: 0, weekly: 0, monthly: 0 },
  });
  const plant = (id: string, body: string | Buffer) => {
    mkdirSync(join(dir, 'store', 'c1', id), { recursive: true });
    writeFileSync(join(dir, 'store', 'c1', id, 'backup.tar'), `object of ${id}`);
    writeFileSync(join(dir, 'store', 'c1', id, 'manifest.json'), body);
  };
  for (const d of [25, 26, 27]) plant(idAt(d), JSON.stringify(manifest(idAt(d), d)));
  return { dir, file, plant };
}

describe('list and prune --dry-run with damaged manifests in the store', () => {
  it('40 damaged manifests (bytes, truncation, types, size, nesting): reported in problems, skipped, exit 0', async () => {
    const { file, plant } = setup('broken');
    const r = new Rng(2024);
    const text = JSON.stringify(manifest(idAt(1), 1), null, 2);
    const damaged: string[] = [];
    for (let i = 0; i < 40; i++) {
      const id = idAt(1 + (i % 20), Math.floor(i / 20));
      let body: string | Buffer;
      switch (i % 8) {
        case 0:
          body = r.bytes(1 + r.int(3000));
          break;
        case 1:
          body = text.slice(0, r.int(text.length));
          break;
        case 2:
          body = JSON.stringify(manifest(id, 1, { pinned: 'yes', etcd: { revision: '12' } }));
          break;
        case 3:
          body = JSON.stringify({ ...manifest(id, 1), label: 'x'.repeat(1 << 21) });
          break;
        case 4:
          body = `{"deep": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
          break;
        case 5:
          body = '';
          break;
        case 6:
          body = JSON.stringify(manifest(idAt(27), 27)); // describes another backup
          break;
        default:
          body = JSON.stringify({ ...manifest(id, 1), format: 2 });
      }
      plant(id, body);
      damaged.push(`c1/${id}/manifest.json`);
    }
    const l = await runCli(['list', '--config', file, '--json']);
    expect(l.code, l.stderr).toBe(0);
    const doc = JSON.parse(l.stdout);
    expect(doc.backups.map((b: { id: string }) => b.id)).toEqual([idAt(27), idAt(26), idAt(25)]);
    expect(doc.problems.map((p: { key: string }) => p.key).sort()).toEqual(damaged.sort());
    for (const p of doc.problems) expect(p.error).toMatch(/\S/);
    expect(l.stderr.match(/skipping unreadable manifest/g)).toHaveLength(40);

    const p = await runCli(['prune', '--config', file, '--dry-run', '--json']);
    expect(p.code, p.stderr).toBe(0);
    const plan = JSON.parse(p.stdout);
    expect(plan.keep.map((k: { id: string }) => k.id)).toEqual([idAt(27), idAt(26)]);
    expect(plan.prune.map((k: { id: string }) => k.id)).toEqual([idAt(25)]);
    // A damaged manifest is not an incomplete backup: prune must not remove what it cannot read.
    expect(plan.incomplete).toEqual([]);
  });

  it('a well-formed manifest whose createdAt is not a date: list and prune --dry-run still work and name it', async () => {
    const { file, plant } = setup('bad-date');
    plant(idAt(10), JSON.stringify(manifest(idAt(10), 10, { createdAt: 'not a date' })));
    const l = await runCli(['list', '--config', file, '--json']);
    expect(l.code, l.stderr).toBe(0);
    const doc = JSON.parse(l.stdout);
    // `latest` must be the newest real backup, not the one whose time sorts first as text.
    expect(doc.backups[0].id).toBe(idAt(27));
    const p = await runCli(['prune', '--config', file, '--dry-run', '--json']);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stderr).not.toMatch(/"stack"/);
    expect(JSON.parse(p.stdout).keep.map((k: { id: string }) => k.id)).toContain(idAt(27));
  });
});
