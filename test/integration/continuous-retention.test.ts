/**
 * Issue 17, retention: continuous-backup segments live and die with their
 * base. When retention prunes a full backup, the segments under
 * `<cluster>/continuous/<base-id>/` go with it (first, so a crash never
 * leaves segments nobody deletes); the segments of a kept base stay; a dry
 * run deletes nothing.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RevisionRecord } from '../../src/continuous/segment.js';
import { runCli, tempDir, writeConfig } from '../support/cli.js';
import { ensureTool, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { writeSegment } from '../support/segment-writer.js';

let cluster: EtcdCluster;
let dir: string;
let store: string;
let cfg: string;
let pruneCfg: string;

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
  const base = {
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
