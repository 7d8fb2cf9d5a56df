import { existsSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, tempDir, writeConfig, FAKE_CLUSTER_BACKUP } from '../support/cli.js';

/** `prune` and `retention --simulate` through the CLI, on planted committed backups in a local store. */
function plant(root: string, id: string, createdAt: string, opts: { pinned?: boolean; node?: string; manifest?: boolean } = {}) {
  const d = join(root, 'store', 'c1', id);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'backup.tar'), 'x');
  if (opts.manifest === false) {
    // An upload interrupted long ago: well past the 1 s grace, whatever the test's speed.
    const old = new Date(Date.now() - 3600_000);
    utimesSync(join(d, 'backup.tar'), old, old);
    return;
  }
  writeFileSync(
    join(d, 'manifest.json'),
    JSON.stringify({
      format: 1, id, cluster: 'c1', node: opts.node ?? 'm0', trigger: 'schedule', pinned: opts.pinned ?? false,
      createdAt, startedAt: createdAt, finishedAt: createdAt,
      tool: { name: 'etcd-backupd', version: '0.1.0' }, source: { type: 'etcdctl', possiblyDirty: false },
      preflight: { forced: false, failedChecks: [] }, etcd: { revision: 1, totalKey: 1, hash: 1, totalSize: 1 },
      artifacts: [{ name: 'snapshot_x.db', size: 1, sha256: '0'.repeat(64) }],
      object: { key: `c1/${id}/backup.tar`, size: 1, sha256: '0'.repeat(64), encrypted: false, recipients: [] },
    }),
  );
}

const idAt = (iso: string, node = 'm0') => `${iso.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${node}`;

describe('prune', () => {
  const root = tempDir('prune');
  const file = writeConfig(root, {
    cluster: 'c1', node: 'm0', workDir: 'work',
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: [{ name: 'nfs', type: 'local', path: 'store', incompleteGrace: '1s' }],
    retention: { keepLast: 1, daily: 3, weekly: 0, monthly: 0 },
    coordination: { mode: 'none' },
  });
  // 6 days, two backups a day; one old pinned; another node's backups are never touched (each node alone).
  const times: string[] = [];
  for (let d = 1; d <= 6; d++) for (const h of ['02', '14']) times.push(`2026-11-0${d}T${h}:00:00.000Z`);
  for (const t of times) plant(root, idAt(t), t);
  plant(root, idAt('2026-10-01T02:00:00.000Z'), '2026-10-01T02:00:00.000Z', { pinned: true });
  plant(root, idAt('2026-10-02T02:00:00.000Z', 'm1'), '2026-10-02T02:00:00.000Z', { node: 'm1' });
  plant(root, '20261001T000000Z-m0', '', { manifest: false }); // an interrupted upload

  it('--dry-run --json prints the plan with reasons and deletes nothing', async () => {
    const r = await runCli(['prune', '--config', file, '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout);
    const keep = Object.fromEntries(plan.keep.map((k: { id: string; reasons: string[] }) => [k.id, k.reasons]));
    expect(keep[idAt('2026-11-06T14:00:00.000Z')]).toEqual(['last', 'daily', 'newest-verified']);
    expect(keep[idAt('2026-11-05T14:00:00.000Z')]).toEqual(['daily']);
    expect(keep[idAt('2026-11-04T14:00:00.000Z')]).toEqual(['daily']);
    expect(keep[idAt('2026-10-01T02:00:00.000Z')]).toEqual(['pinned']);
    expect(Object.keys(keep)).toHaveLength(4);
    expect(plan.prune).toHaveLength(9);
    expect(plan.incomplete).toEqual(['20261001T000000Z-m0']);
    expect(readdirSync(join(root, 'store', 'c1'))).toHaveLength(15);
  });

  it('prune deletes what the plan says, manifest-less leftovers included, and nothing of another node', async () => {
    const r = await runCli(['prune', '--config', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/keep\s+20261106T140000Z-m0/);
    const left = readdirSync(join(root, 'store', 'c1')).sort();
    expect(left).toEqual(
      [idAt('2026-10-01T02:00:00.000Z'), idAt('2026-10-02T02:00:00.000Z', 'm1'), idAt('2026-11-04T14:00:00.000Z'), idAt('2026-11-05T14:00:00.000Z'), idAt('2026-11-06T14:00:00.000Z')].sort(),
    );
    expect(existsSync(join(root, 'store', 'c1', '20261001T000000Z-m0'))).toBe(false);
  });
});

describe('prune with coordination: the cluster\'s series, whichever node took each backup', () => {
  const root = tempDir('prune-cluster');
  const file = writeConfig(root, {
    cluster: 'c1', node: 'm0', workDir: 'work',
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: [{ name: 'nfs', type: 'local', path: 'store', incompleteGrace: '1s' }],
    retention: { keepLast: 3, daily: 0, weekly: 0, monthly: 0 },
    coordination: { mode: 'etcd' }, // the default; said here because writeConfig defaults tests to none
  });
  // One backup per slot, taken by whichever node won it.
  const slots = ['2026-11-01T02:00:00.000Z', '2026-11-01T03:00:00.000Z', '2026-11-01T04:00:00.000Z', '2026-11-01T05:00:00.000Z', '2026-11-01T06:00:00.000Z'];
  const ids = slots.map((t, i) => idAt(t, `m${i % 3}`));
  slots.forEach((t, i) => plant(root, ids[i]!, t, { node: `m${i % 3}` }));
  plant(root, '20261001T000000Z-m1', '', { manifest: false }); // another node's interrupted upload: its own to clean

  it('keeps the newest of the cluster and prunes the rest, any node\'s', async () => {
    const r = await runCli(['prune', '--config', file, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout) as { keep: { id: string }[]; prune: { id: string }[]; incomplete: string[] };
    expect(plan.keep.map((k) => k.id)).toEqual([ids[4], ids[3], ids[2]]);
    expect(plan.prune.map((p) => p.id)).toEqual([ids[1], ids[0]]);
    expect(plan.incomplete).toEqual([]);
    expect(readdirSync(join(root, 'store', 'c1')).sort()).toEqual([ids[2], ids[3], ids[4], '20261001T000000Z-m1'].sort());
  });
});

describe('retention --simulate', () => {
  const root = tempDir('simulate');
  const file = writeConfig(root, {
    cluster: 'c1', workDir: 'work',
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: [{ name: 'nfs', type: 'local', path: 'store' }],
    retention: { keepLast: 2, daily: 0, weekly: 2, monthly: 0 },
  });
  const times = join(root, 'times.txt');
  writeFileSync(times, ['# weekly backups', '2026-11-02T02:00:00Z', '2026-11-09T02:00:00Z', '', '2026-11-16T02:00:00Z', '2026-11-23T02:00:00Z', '2026-11-24T02:00:00Z'].join('\n'));

  it('prints the plan for bare timestamps', async () => {
    const r = await runCli(['retention', '--config', file, '--simulate', times, '--now', '2026-11-25T00:00:00Z', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      keep: [
        { time: '2026-11-24T02:00:00.000Z', reasons: ['last', 'weekly', 'newest-verified'] },
        { time: '2026-11-23T02:00:00.000Z', reasons: ['last'] },
        { time: '2026-11-16T02:00:00.000Z', reasons: ['weekly'] },
      ],
      prune: [{ time: '2026-11-09T02:00:00.000Z' }, { time: '2026-11-02T02:00:00.000Z' }],
    });
    const t = await runCli(['retention', '--config', file, '--simulate', times]);
    expect(t.stdout).toMatch(/keep/);
  });

  it('names the bad line of a bad input file', async () => {
    const bad = join(root, 'bad.txt');
    writeFileSync(bad, '2026-11-02T02:00:00Z\nyesterday\n');
    const r = await runCli(['retention', '--config', file, '--simulate', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/line 2/);
  });
});
