/**
 * Issue 17, retention: continuous-backup segments live and die with their
 * base. When retention prunes a full backup, the segments under
 * `<cluster>/continuous/<base-id>/` go with it (first, so a crash never
 * leaves segments nobody deletes); the segments of a kept base stay; a dry
 * run deletes nothing.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RevisionRecord } from '../../src/continuous/segment.js';
import { backupId } from '../../src/layout.js';
import { runCli, tempDir, writeConfig } from '../support/cli.js';
import { ensureTool, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { writeSegment } from '../support/segment-writer.js';

let cluster: EtcdCluster;
let dir: string;
let store: string;
let cfg: string;
let pruneCfg: string;
let base: Record<string, unknown>;

/** Consecutive records from `from` (what is in them does not matter to retention). */
function records(from: number, n: number): RevisionRecord[] {
  return Array.from({ length: n }, (_, i) => ({ rev: from + i, time: new Date(Date.now() + i).toISOString(), ops: [{ put: Buffer.from(`/k${from + i}`), value: Buffer.from('v'), lease: '0' }] }));
}

async function backup(): Promise<{ id: string; revision: number }> {
  const r = await runCli(['backup', '--config', cfg, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { id: string; revision: number };
}

const segmentDir = (id: string) => join(store, 'ret', 'continuous', id);
const filesIn = (d: string) => (existsSync(d) ? readdirSync(d) : []);

beforeAll(async () => {
  dir = tempDir('continuous-retention');
  store = join(dir, 'store');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  const manifests = join(dir, 'manifests');
  mkdirSync(manifests, { recursive: true });
  writeFileSync(join(manifests, 'etcd-pod.yaml'), 'kind: Pod\n');
  base = {
    cluster: 'ret',
    node: 'master-0',
    workDir: join(dir, 'work'),
    source: { type: 'etcdctl', etcdctl: ensureTool('etcdctl'), staticPodDir: manifests, timeout: '30s' },
    etcd: { endpoints: cluster.endpoints },
    stores: [{ name: 'nfs', type: 'local', path: store }],
  };
  // Backups keep everything; the prune config keeps only the newest.
  cfg = writeConfig(dir, { ...base, retention: { keepLast: 10 } });
  pruneCfg = writeConfig(dir, { ...base, retention: { keepLast: 1 } }, 'prune.yaml');
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('segments live and die with their base', () => {
  it('a pruned base takes its segments along; a kept base keeps them; a dry run deletes nothing', async () => {
    await cluster.put('/a', '1');
    const a = await backup();
    writeSegment(store, 'ret', a.id, records(a.revision + 1, 5));
    writeSegment(store, 'ret', a.id, records(a.revision + 6, 5), 'none');
    expect(filesIn(segmentDir(a.id))).toHaveLength(4);
    await new Promise((r) => setTimeout(r, 1100)); // a new id (ids have whole seconds)
    await cluster.put('/b', '2');
    const b = await backup();
    writeSegment(store, 'ret', b.id, records(b.revision + 1, 3));

    // keepLast 1: `a` goes. A dry run first: it is planned, and nothing is deleted.
    const dry = await runCli(['prune', '--config', pruneCfg, '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.stringify(JSON.parse(dry.stdout))).toContain(a.id);
    expect(existsSync(join(store, 'ret', a.id, 'manifest.json'))).toBe(true);
    expect(filesIn(segmentDir(a.id))).toHaveLength(4);

    const real = await runCli(['prune', '--config', pruneCfg, '--json']);
    expect(real.code, real.stderr).toBe(0);
    expect(existsSync(join(store, 'ret', a.id, 'manifest.json'))).toBe(false);
    expect(filesIn(segmentDir(a.id))).toEqual([]);
    // `b` is the newest: kept, and so are its segments.
    expect(existsSync(join(store, 'ret', b.id, 'manifest.json'))).toBe(true);
    expect(filesIn(segmentDir(b.id))).toHaveLength(2);
    // list never shows the continuous directory as a backup, nor as an incomplete one.
    const l = JSON.parse((await runCli(['list', '--config', pruneCfg, '--json'])).stdout) as { backups: { id: string }[]; incomplete: string[] };
    expect(l.backups.map((x) => x.id)).toEqual([b.id]);
    expect(l.incomplete).toEqual([]);
  });
});

describe('continuous.keepWithin bounds the segments of kept bases, whole chains at a time', () => {
  const DAY = 86_400_000;
  let store2: string;
  let backupCfg: string;
  const chainDir = (id: string) => join(store2, 'ret', 'continuous', id);

  /** Makes a backup look `days` old: its directory, id and times moved back (the listing dates a base by its id). */
  function age(b: { id: string; revision: number }, days: number): { id: string; revision: number } {
    const m = JSON.parse(readFileSync(join(store2, 'ret', b.id, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    const at = new Date(Date.parse(String(m.createdAt)) - days * DAY);
    const id = backupId(at, 'master-0');
    const text = JSON.stringify({ ...m, createdAt: at.toISOString(), startedAt: at.toISOString(), finishedAt: at.toISOString() }).split(b.id).join(id);
    renameSync(join(store2, 'ret', b.id), join(store2, 'ret', id));
    writeFileSync(join(store2, 'ret', id, 'manifest.json'), text);
    return { id, revision: b.revision };
  }

  /** Two segments under `b`, stored `daysAgo` days ago. */
  function chainOf(b: { id: string; revision: number }, daysAgo: number): void {
    const when = new Date(Date.now() - daysAgo * DAY);
    for (const s of [writeSegment(store2, 'ret', b.id, records(b.revision + 1, 3)), writeSegment(store2, 'ret', b.id, records(b.revision + 4, 2), 'none')]) {
      for (const p of [s.objectPath, s.manifestPath]) utimesSync(p, when, when);
    }
  }

  async function backup2(): Promise<{ id: string; revision: number }> {
    const r = await runCli(['backup', '--config', backupCfg, '--json']);
    expect(r.code, r.stderr).toBe(0);
    await new Promise((res) => setTimeout(res, 1100)); // the next id (ids have whole seconds)
    return JSON.parse(r.stdout) as { id: string; revision: number };
  }

  it('an old chain of a kept base goes (dry run first); a chain within keepWithin stays; the newest chain stays even when old', async () => {
    store2 = join(dir, 'store-keep-within');
    const stores = [{ name: 'nfs', type: 'local', path: store2 }];
    backupCfg = writeConfig(dir, { ...base, stores, retention: { keepLast: 10 } }, 'kw-backup.yaml');
    const keepCfg = writeConfig(dir, { ...base, stores, retention: { keepLast: 10 }, continuous: { keepWithin: '1d' } }, 'kw-prune.yaml');
    await cluster.put('/kw', '0');
    const b0 = age(await backup2(), 5);
    const b1 = age(await backup2(), 4);
    const b2 = age(await backup2(), 3);
    const b3 = await backup2(); // the newest base: no chain yet (as when etcd compacted its revisions)
    chainOf(b0, 4.5); // old: goes
    chainOf(b1, 0.2); // within the day: stays
    chainOf(b2, 2); // old, but the newest chain: the writer may still extend it

    const dry = await runCli(['prune', '--config', keepCfg, '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = JSON.parse(dry.stdout) as { continuous: { base: string; objects: number; keep?: string; deleted?: boolean }[] };
    expect(plan.continuous).toEqual([
      expect.objectContaining({ base: b2.id, objects: 4, keep: 'live' }),
      expect.objectContaining({ base: b1.id, objects: 4, keep: 'within' }),
      expect.objectContaining({ base: b0.id, objects: 4, deleted: false }),
    ]);
    expect(filesIn(chainDir(b0.id))).toHaveLength(4);
    const text = await runCli(['prune', '--config', keepCfg, '--dry-run']);
    expect(text.stdout).toContain(`continuous-backup segments of ${b0.id} (4 objects, newest stored `);
    expect(text.stdout).toMatch(/: to delete \(older than continuous\.keepWithin\)/);

    const real = await runCli(['prune', '--config', keepCfg, '--json']);
    expect(real.code, real.stderr).toBe(0);
    expect((JSON.parse(real.stdout) as typeof plan).continuous.find((c) => c.base === b0.id)).toMatchObject({ deleted: true });
    expect(filesIn(chainDir(b0.id))).toEqual([]);
    expect(filesIn(chainDir(b1.id))).toHaveLength(4);
    expect(filesIn(chainDir(b2.id))).toHaveLength(4);
    // The bases themselves are retention's: all kept.
    const l = JSON.parse((await runCli(['list', '--config', keepCfg, '--json'])).stdout) as { backups: { id: string }[] };
    expect(l.backups.map((x) => x.id)).toEqual([b3.id, b2.id, b1.id, b0.id]);

    // Once the newest base has a chain, the old one of b2 is no longer the live chain: it goes too.
    chainOf(b3, 0);
    const again = await runCli(['prune', '--config', keepCfg, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as typeof plan).continuous.map((c) => [c.base, c.keep ?? (c.deleted ? 'deleted' : 'kept?')])).toEqual([
      [b3.id, 'newest-base'],
      [b2.id, 'deleted'],
      [b1.id, 'within'],
    ]);
    expect(filesIn(chainDir(b2.id))).toEqual([]);
  }, 120_000);
});
