/**
 * The replay drill on real parts: a 1-member etcd 3.4, a full backup B1
 * through the CLI into a local store, writes recorded by the stand-in
 * writer (test/support/segment-writer.ts: a real gRPC watch, segments in
 * the format), a second full backup B2, more writes after it. Then
 * `verify --replay latest` must replay B1 + its segments to exactly rev(B2)
 * and find B2's keys, values and revisions; a chain that lost one event of
 * a revision (every sha256 right, the revision count too) must fail with
 * drill-replay-mismatch naming that key and never a value.
 */
import { cpSync, mkdirSync, readdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RevisionRecord } from '../../src/continuous/segment.js';
import { makePooledClient } from '../../src/etcd/client.js';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { runEtcdctl, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { makeFakeMaster } from '../support/fake-master.js';
import { recordFrom, writeSegment, writeSegments } from '../support/segment-writer.js';

const CLUSTER = 'replay-drill-cluster';
const SECRET_VALUE = 'SECRET-VALUE-never-in-a-message';
let cluster: EtcdCluster;
let client: Etcd3;
let dir: string;
let b1: { id: string; revision: number };
let b2: { id: string; revision: number };
let records: RevisionRecord[];

function config(storeDir: string, storeName: string): string {
  return writeConfig(dir, {
    cluster: CLUSTER,
    node: 'master-0',
    workDir: join(dir, 'work'),
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: makeFakeMaster(join(dir, 'master'), cluster.endpoints[0]!).env },
    etcd: { endpoints: cluster.endpoints },
    stores: [{ name: storeName, type: 'local', path: storeDir }],
  }, `config-${storeName}.yaml`);
}

/** A full backup through the CLI into the good store. */
async function fullBackup(): Promise<{ id: string; revision: number }> {
  const r = await runCli(['backup', '--config', config(join(dir, 'store'), 'good'), '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { id: string; revision: number };
}

interface DrillDoc {
  result: string;
  reason?: string;
  error?: string;
  id?: string;
  base?: string;
  revision?: number;
  revisionsReplayed?: number;
  segmentsUsed?: number;
  keys?: number;
  mismatch?: { missing: number; extra: number; changed: number; first: { key: string; what: string[] }[] };
  steps: { name: string }[];
}

async function drill(storeDir: string, storeName: string, which = 'latest'): Promise<{ code: number; doc: DrillDoc; stderr: string }> {
  const r = await runCli(['verify', '--config', config(storeDir, storeName), which, '--replay', '--json']);
  return { code: r.code, doc: JSON.parse(r.stdout) as DrillDoc, stderr: r.stderr };
}

beforeAll(async () => {
  dir = tempDir('replay-drill');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  client = makePooledClient({ endpoints: cluster.endpoints });
  await cluster.putMany([['/r/keep', 'k'], ['/r/gone', 'g'], ['/r/dir/x', 'x']], 1);
  // A lease the base holds: the throwaway etcd keeps it alive while replaying.
  await client.lease(3600).put('/r/baselease').value('held');
  b1 = await fullBackup();
  const watch = await recordFrom(client, b1.revision + 1);
  // Between B1 and B2: puts, an overwrite (version 2), two keys in ONE revision, deletes, a put on a lease granted after B1, a secret.
  await cluster.put('/r/a', 'a1');
  await cluster.put('/r/a', 'a2');
  await cluster.putMany([['/r/pair/one', '1'], ['/r/pair/two', '2']], 1);
  await client.delete().key('/r/gone');
  await client.lease(600).put('/r/leased').value('L');
  await client.delete().prefix('/r/dir/');
  await cluster.put('/kubernetes.io/secrets/ns/s', SECRET_VALUE);
  // B2 compacted, as a Kubernetes cluster's always is (the API server compacts every 5 minutes): its
  // key bucket lost the history the replayed etcd still has; the live keys must still be the same.
  await runEtcdctl(['compact', String(await cluster.revision())], { endpoints: cluster.endpoints });
  // The backup id has a one-second resolution.
  await new Promise((res) => setTimeout(res, 1100));
  b2 = await fullBackup();
  expect(b2.revision).toBe(b1.revision + 7);
  // After B2: the chain goes on; the drill must stop at rev(B2).
  await cluster.put('/r/after', 'x');
  await cluster.put('/r/a', 'a3');
  await watch.waitFor(b2.revision + 2);
  await watch.close();
  records = watch.records;
  expect(records.map((x) => x.rev)).toEqual(Array.from({ length: 9 }, (_, i) => b1.revision + 1 + i));
  // [1-3] [4-6] [7-9], and a failover's overlap [2-5]; rev(B2) is inside [7-9]: the drill stops in it.
  const good = join(dir, 'store');
  writeSegments(good, CLUSTER, b1.id, records, [3, 3]);
  writeSegment(good, CLUSTER, b1.id, records.slice(1, 5), 'none');
}, 180_000);

afterAll(async () => {
  client?.close();
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('verify --replay', () => {
  it('replays B1 + its segments to exactly rev(B2) and finds B2: every key, value, create/mod revision and version', async () => {
    const { code, doc, stderr } = await drill(join(dir, 'store'), 'good');
    expect(code, stderr).toBe(0);
    expect(doc).toMatchObject({ result: 'success', base: b1.id, id: b2.id, revision: b2.revision, revisionsReplayed: 7, segmentsUsed: 3 });
    // /r/keep, /r/baselease, /r/a, /r/pair/one, /r/pair/two, /r/leased, the secret.
    expect(doc.keys).toBe(7);
    expect(doc.steps.map((s) => s.name)).toEqual(['choose', 'replay', 'fetch', 'compare', 'stop']);
    // Nothing left behind: both snapshots hold every Secret.
    expect(readdirSync(join(dir, 'work', 'drill'))).toEqual([]);
    expect(readdirSync(join(dir, 'work', 'replay'))).toEqual([]);
  }, 120_000);

  it('says so in plain text', async () => {
    const r = await runCli(['verify', '--config', config(join(dir, 'store'), 'good'), 'latest', '--replay']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`base ${b1.id} + 7 revisions from 3 segment(s) replayed to revision ${b2.revision} give exactly backup ${b2.id}: 7 keys`);
  }, 120_000);

  it('a chain that lost one event of a revision fails with drill-replay-mismatch naming the key, never a value', async () => {
    const bad = join(dir, 'store-bad');
    mkdirSync(bad, { recursive: true, mode: 0o700 });
    // The same full backups (copied), and segments whose every sha256 is right and whose revisions are all there:
    // only the revision writing /r/pair/one and /r/pair/two lost /r/pair/two, and the secret's revision holds another value.
    for (const id of [b1.id, b2.id]) cpSync(join(dir, 'store', CLUSTER, id), join(bad, CLUSTER, id), { recursive: true });
    const lossy = records.map((r) => ({
      ...r,
      ops: r.ops.flatMap((o) => {
        if ('put' in o && o.put.toString() === '/r/pair/two') return [];
        if ('put' in o && o.put.toString() === '/kubernetes.io/secrets/ns/s') return [{ ...o, value: Buffer.from('ANOTHER-SECRET') }];
        return [o];
      }),
    }));
    writeSegments(bad, CLUSTER, b1.id, lossy, [4]);
    const { code, doc, stderr } = await drill(bad, 'bad');
    expect(code).toBe(1);
    expect(doc).toMatchObject({ result: 'failed', reason: 'drill-replay-mismatch', base: b1.id, id: b2.id });
    expect(doc.mismatch).toMatchObject({ missing: 1, extra: 0, changed: 1 });
    expect(doc.mismatch!.first).toEqual([
      { key: '"/kubernetes.io/secrets/ns/s"', what: ['value'] },
      { key: '"/r/pair/two"', what: ['missing'] },
    ]);
    expect(doc.error).toContain('1 key(s) missing from the replay, 0 extra, 1 changed');
    expect(doc.error).toContain('"/r/pair/two" (missing)');
    for (const text of [JSON.stringify(doc), stderr]) {
      expect(text).not.toContain(SECRET_VALUE);
      expect(text).not.toContain('ANOTHER-SECRET');
    }
    expect(readdirSync(join(dir, 'work', 'drill'))).toEqual([]);
    expect(readdirSync(join(dir, 'work', 'replay'))).toEqual([]);
  }, 120_000);

  it('a chain with a gap below rev(B2) fails with segment-gap naming the range (never skipped)', async () => {
    const gap = join(dir, 'store-gap');
    mkdirSync(gap, { recursive: true, mode: 0o700 });
    for (const id of [b1.id, b2.id]) cpSync(join(dir, 'store', CLUSTER, id), join(gap, CLUSTER, id), { recursive: true });
    writeSegment(gap, CLUSTER, b1.id, records.slice(0, 3));
    writeSegment(gap, CLUSTER, b1.id, records.slice(5));
    const { code, doc } = await drill(gap, 'gap');
    expect(code).toBe(1);
    expect(doc).toMatchObject({ result: 'failed', reason: 'segment-gap' });
    expect(doc.error).toContain(`misses revisions ${b1.revision + 4}-${b1.revision + 5}, below the revision ${b2.revision} of the next full backup ${b2.id}`);
    expect(doc.steps.map((s) => s.name)).toEqual(['choose']);
  }, 60_000);

  it('without a pair whose chain reaches the later backup: nothing to drill, exit 1', async () => {
    const { code, doc } = await drill(join(dir, 'store'), 'good', b1.id);
    expect(code).toBe(1);
    expect(doc).toMatchObject({ result: 'skipped', reason: 'not-found' });
  }, 60_000);
});
