/**
 * Restore to a time on real parts: a 1-member etcd 3.4 (Debian), a full
 * backup through the CLI into a local store, then writes before and after a
 * chosen TIME, recorded by a stand-in writer (test/support/segment-writer.ts:
 * a real gRPC watch, segments in the format). `fetch latest --at` and
 * `restore latest --at` must give exactly the keyspace the source had at
 * the last revision seen by TIME, at that very revision; a missing segment
 * and a damaged one must fail naming the range.
 */
import { type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { zstdDecompressSync } from 'node:zlib';
import { decodeRecord, type RevisionRecord } from '../../src/continuous/segment.js';
import { makePooledClient } from '../../src/etcd/client.js';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { freePort, restoreSnapshot, runEtcdctl, startEtcdCluster, startEtcdFromDataDir, type EtcdCluster } from '../support/etcd.js';
import { makeFakeMaster } from '../support/fake-master.js';
import { startRestoredMember, waitEtcdHealthy } from '../support/restored.js';
import { recordFrom, writeSegment, writeSegments, type WrittenSegment } from '../support/segment-writer.js';

const CLUSTER = 'replay-cluster';
let cluster: EtcdCluster;
let client: Etcd3;
let dir: string;
let baseRev: number;
let revAtT: number;
let lastRev: number;
let T: string;
let segments: WrittenSegment[];
const children: ChildProcess[] = [];

/** Every key and value (base64, byte-exact) at a revision (0: the current one), and the revision read. */
async function keysAt(endpoints: string[], rev = 0): Promise<{ kvs: Map<string, string>; revision: number }> {
  const r = await runEtcdctl(['get', '', '--from-key', `--rev=${rev}`, '-w', 'json'], { endpoints });
  const doc = JSON.parse(r.stdout) as { header: { revision: number }; kvs?: { key: string; value?: string }[] };
  return { kvs: new Map((doc.kvs ?? []).map((kv) => [kv.key, kv.value ?? ''])), revision: doc.header.revision };
}

/** A config for a copy of the store (same workDir). */
function config(storeDir: string, storeName = 'nfs'): string {
  return writeConfig(dir, {
    cluster: CLUSTER,
    node: 'master-0',
    workDir: join(dir, 'work'),
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: makeFakeMaster(join(dir, 'master'), cluster.endpoints[0]!).env },
    etcd: { endpoints: cluster.endpoints },
    stores: [{ name: storeName, type: 'local', path: storeDir }],
  }, `config-${storeName}.yaml`);
}

/** A copy of the store to damage. */
function copyStore(name: string): string {
  const to = join(dir, name);
  cpSync(join(dir, 'store'), to, { recursive: true });
  return to;
}

/** The records of a written segment, back from its file. */
function readSegmentFile(s: WrittenSegment): RevisionRecord[] {
  const body = readFileSync(s.objectPath);
  const text = (s.manifest.object.codec === 'zstd' ? zstdDecompressSync(body) : body).toString('utf8');
  return text.trim().split('\n').map(decodeRecord);
}

const segPath = (storeDir: string, s: WrittenSegment, which: 'objectPath' | 'manifestPath') => join(storeDir, s[which].slice(join(dir, 'store').length));

beforeAll(async () => {
  dir = tempDir('replay');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  client = makePooledClient({ endpoints: cluster.endpoints });
  await cluster.putMany([['/t/base1', 'b1'], ['/t/base2', 'b2'], ['/t/dir/x', 'x'], ['/t/dir/y', 'y']], 1);
  // A lease the base holds: the throwaway etcd must not expire it on its own while replaying.
  const baseLease = client.lease(3600);
  await baseLease.put('/t/baselease').value('held');
  const cfg = config(join(dir, 'store'));
  const r = await runCli(['backup', '--config', cfg, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
  expect(r.code, r.stderr).toBe(0);
  baseRev = (JSON.parse(r.stdout) as { revision: number }).revision;
  const baseId = (JSON.parse(r.stdout) as { id: string }).id;
  expect(await cluster.revision()).toBe(baseRev);

  const watch = await recordFrom(client, baseRev + 1);
  // Before TIME: puts (one binary), two puts in one revision, deletes (one key, a prefix of two), a put with a lease granted after the base, an overwrite.
  await cluster.put('/t/a', 'a1');
  await cluster.put('/t/bin', Buffer.from([0, 255, 10, 13]));
  await cluster.putMany([['/t/m1', 'x'], ['/t/m2', 'y']], 1);
  await client.delete().key('/t/base1');
  const lease = client.lease(600);
  await lease.put('/t/leased').value('L');
  await cluster.put('/t/a', 'a2');
  await client.delete().prefix('/t/dir/');
  revAtT = await cluster.revision();
  expect(revAtT).toBe(baseRev + 7);
  await watch.waitFor(revAtT);
  T = new Date().toISOString();
  await new Promise((res) => setTimeout(res, 30));
  // After TIME.
  await cluster.put('/t/after1', '1');
  await client.delete().key('/t/a');
  await cluster.put('/t/m1', 'changed');
  // 200 more keys on the lease (two txns of 100), then its revocation: ONE revision deleting 201 keys, past etcd's default 128 ops per txn.
  const leaseId = await lease.grant();
  for (const part of [0, 1]) {
    const success = Array.from({ length: 100 }, (_, i) => ({ request_put: { key: Buffer.from(`/t/ev/${part}-${i}`), value: Buffer.from('event'), lease: leaseId } }));
    await client.kv.txn({ compare: [], success, failure: [] });
  }
  await lease.revoke();
  await cluster.put('/t/after2', '2');
  await cluster.put('/t/base2', 'changed');
  lastRev = await cluster.revision();
  expect(lastRev).toBe(baseRev + 15);
  await watch.waitFor(lastRev);
  await watch.close();
  expect(watch.records.map((x) => x.rev)).toEqual(Array.from({ length: 15 }, (_, i) => baseRev + 1 + i));
  expect(watch.records.find((x) => x.rev === baseRev + 13)!.ops).toHaveLength(201);
  const store = join(dir, 'store');
  // [1-3] [4-6] [7-9] [10-15], and a writer failover's overlap [2-8]: replay skips what it applied.
  segments = writeSegments(store, CLUSTER, baseId, watch.records, [3, 3, 3]);
  segments.push(writeSegment(store, CLUSTER, baseId, watch.records.slice(1, 8), 'zstd'));
}, 180_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  client?.close();
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface FetchDoc {
  id: string;
  base: string;
  snapshot: string;
  files: string[];
  revisionReached: number;
  reachedTime: string;
  segmentsUsed: number;
  revisionsReplayed: number;
  leaselessKeys: number;
  replayed: boolean;
  beforeSeconds: number;
}

/** fetch --at into a fresh dir, then the snapshot restored and started: what it serves. */
async function fetchAndServe(at: string, name: string): Promise<{ doc: FetchDoc; served: { kvs: Map<string, string>; revision: number } }> {
  const to = join(dir, name);
  const r = await runCli(['fetch', '--config', config(join(dir, 'store')), 'latest', '--at', at, '--to', to, '--json']);
  expect(r.code, r.stderr).toBe(0);
  const doc = JSON.parse(r.stdout) as FetchDoc;
  expect(statSync(doc.snapshot).mode & 0o777).toBe(0o600);
  expect(doc.snapshot).toMatch(/\/snapshot_\d{4}-\d\d-\d\d_\d{6}\.db$/);
  // One flat dir, as cluster-restore.sh expects: the snapshot and the base's static pod resources.
  expect(readdirSync(to).some((n) => /^static_kuberesources_.*\.tar\.gz$/.test(n))).toBe(true);
  expect(readdirSync(to).filter((n) => n.endsWith('.db'))).toHaveLength(1);
  // The throwaway etcd's scratch is gone.
  expect(readdirSync(join(dir, 'work', 'replay'))).toEqual([]);
  const restored = await restoreSnapshot(doc.snapshot, join(dir, `${name}-data`));
  const etcd = await startEtcdFromDataDir(restored.dataDir, { name: restored.name, peerUrl: restored.peerUrl });
  try {
    return { doc, served: await keysAt(etcd.endpoints) };
  } finally {
    await etcd.stop();
  }
}

describe('fetch latest --at TIME', () => {
  it('replays up to the last revision seen by TIME: every key written by then, none after, byte-exact, at the original revision', async () => {
    const { doc, served } = await fetchAndServe(T, 'at-t');
    const want = await keysAt(cluster.endpoints, revAtT);
    expect(served.kvs).toEqual(want.kvs);
    expect(served.revision).toBe(revAtT);
    expect(served.kvs.has(Buffer.from('/t/after1').toString('base64'))).toBe(false);
    expect(served.kvs.has(Buffer.from('/t/base1').toString('base64'))).toBe(false);
    expect(served.kvs.get(Buffer.from('/t/bin').toString('base64'))).toBe(Buffer.from([0, 255, 10, 13]).toString('base64'));
    expect(doc).toMatchObject({ revisionReached: revAtT, revisionsReplayed: 7, leaselessKeys: 1, replayed: true, segmentsUsed: 2 });
    expect(Date.parse(doc.reachedTime)).toBeLessThanOrEqual(Date.parse(T));
    expect(doc.beforeSeconds).toBeGreaterThanOrEqual(0);
  }, 120_000);

  it('refuses a directory already holding a snapshot before any work (cluster-restore.sh would take the newest)', async () => {
    const r = await runCli(['fetch', '--config', config(join(dir, 'store')), 'latest', '--at', T, '--to', join(dir, 'at-t')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/already holds snapshot_\S*\.db.*; fetch into an empty directory/);
    expect(readdirSync(join(dir, 'work', 'replay'))).toEqual([]);
  });

  it('says in plain text which base, how many revisions, the time reached and how far before TIME', async () => {
    const r = await runCli(['fetch', '--config', config(join(dir, 'store')), 'latest', '--at', T, '--to', join(dir, 'human')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^--at ${T.replace(/[.]/g, '\\.')}: base \\S+ \\(revision ${baseRev}\\) \\+ 7 revisions replayed from 2 segment\\(s\\): revision ${revAtT}, seen \\S+, \\d+s before TIME; 1 key write\\(s\\) replayed without their lease`));
    expect(r.stdout).toMatch(/cluster-restore\.sh/);
  });

  it('--at now holds every write', async () => {
    const { doc, served } = await fetchAndServe('now', 'at-now');
    const want = await keysAt(cluster.endpoints);
    expect(served.kvs).toEqual(want.kvs);
    expect(served.revision).toBe(lastRev);
    expect(served.kvs.has(Buffer.from('/t/leased').toString('base64'))).toBe(false);
    expect(doc).toMatchObject({ revisionReached: lastRev, revisionsReplayed: 15, leaselessKeys: 201 });
    expect([...served.kvs.keys()].filter((k) => Buffer.from(k, 'base64').toString().startsWith('/t/ev/'))).toEqual([]);
  }, 120_000);

  it('a missing segment in the middle is a gap naming the range (exit 1)', async () => {
    const store = copyStore('store-gap');
    for (const s of segments.filter((x) => (x.fromRev === baseRev + 4 && x.toRev === baseRev + 6) || x.fromRev === baseRev + 2)) rmSync(segPath(store, s, 'manifestPath'));
    const to = join(dir, 'gap-out');
    const r = await runCli(['fetch', '--config', config(store, 'gap'), 'latest', '--at', 'now', '--to', to]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('reason: segment-gap');
    expect(r.stderr).toContain(`revisions ${baseRev + 4}-${baseRev + 6}`);
    expect(existsSync(to) ? readdirSync(to) : []).toEqual([]);
  }, 60_000);

  it('a damaged segment fails with checksum-mismatch naming the range', async () => {
    const store = copyStore('store-flip');
    const s = segments.find((x) => x.fromRev === baseRev + 10)!;
    const p = segPath(store, s, 'objectPath');
    const b = readFileSync(p);
    b[Math.floor(b.length / 2)]! ^= 0xff;
    writeFileSync(p, b);
    const r = await runCli(['fetch', '--config', config(store, 'flip'), 'latest', '--at', 'now', '--to', join(dir, 'flip-out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('reason: checksum-mismatch');
    expect(r.stderr).toContain(`segment ${baseRev + 10}-${baseRev + 15}`);
    expect(readdirSync(join(dir, 'work', 'replay'))).toEqual([]);
  }, 60_000);

  it('a segment whose records are out of sequence fails with segment-corrupt naming the range and the revision', async () => {
    const store = copyStore('store-seq');
    const s = segments.find((x) => x.fromRev === baseRev + 10)!;
    rmSync(segPath(store, s, 'manifestPath'));
    rmSync(segPath(store, s, 'objectPath'));
    // Records 10, 12, 11 as one segment "10-11" whose sha256 matches: only the sequence is wrong.
    const raw = readSegmentFile(s);
    writeSegment(store, CLUSTER, s.manifest.base, [raw[0]!, raw[2]!, raw[1]!], 'zstd');
    const r = await runCli(['fetch', '--config', config(store, 'seq'), 'latest', '--at', 'now', '--to', join(dir, 'seq-out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('reason: segment-corrupt');
    expect(r.stderr).toContain(`segment ${baseRev + 10}-${baseRev + 11}: record of revision ${baseRev + 12} out of sequence`);
  }, 60_000);
});

describe('overlapping segments must agree', () => {
  it('a revision held by two segments with different events fails with segment-corrupt (two writers disagree)', async () => {
    const store = copyStore('store-disagree');
    const s = segments.find((x) => x.fromRev === baseRev + 2)!;
    rmSync(segPath(store, s, 'manifestPath'));
    rmSync(segPath(store, s, 'objectPath'));
    const recs = readSegmentFile(s);
    const first = recs[0]!;
    recs[0] = { ...first, ops: first.ops.map((o) => ('put' in o ? { ...o, value: Buffer.from('not what etcd wrote') } : o)) };
    writeSegment(store, CLUSTER, s.manifest.base, recs, 'zstd');
    const r = await runCli(['fetch', '--config', config(store, 'disagree'), 'latest', '--at', 'now', '--to', join(dir, 'disagree-out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('reason: segment-corrupt');
    expect(r.stderr).toContain(`segment ${baseRev + 2}-${baseRev + 8} holds another revision ${baseRev + 2} than the segment that was replayed for it`);
  }, 60_000);
});

describe('restore latest --at TIME', () => {
  it('restores the replayed state into a data dir that a started etcd serves', async () => {
    const m = { name: 'r1', dataDir: join(dir, 'restored', 'data'), peer: `http://127.0.0.1:${await freePort()}`, client: `http://127.0.0.1:${await freePort()}` };
    const initialCluster = `r1=${m.peer}`;
    const r = await runCli(['restore', '--config', config(join(dir, 'store')), 'latest', '--at', T, '--data-dir', m.dataDir, '--name', 'r1', '--initial-cluster', initialCluster, '--initial-advertise-peer-urls', m.peer, '--initial-cluster-token', 'replayed', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { revision: number; revisionReached: number; base: string; revisionsReplayed: number };
    expect(doc).toMatchObject({ revision: revAtT, revisionReached: revAtT, revisionsReplayed: 7 });
    expect(readdirSync(join(dir, 'restored'))).toEqual(['data']);
    children.push(startRestoredMember(m, initialCluster, 'replayed', join(dir, 'r1.log')));
    await waitEtcdHealthy([m.client]);
    const served = await keysAt([m.client]);
    expect(served.kvs).toEqual((await keysAt(cluster.endpoints, revAtT)).kvs);
    expect(served.revision).toBe(revAtT);
  }, 120_000);
});

describe('the lease keep-alive the replay relies on (etcd 3.4)', () => {
  it('keeps a 2 s lease and its key alive as long as it runs; without it etcd expires them', async () => {
    const { EtcdClients } = await import('../../src/etcd/client.js');
    const clients = new EtcdClients({}, 5000);
    try {
      const ep = clients.endpoint(cluster.endpoints[0]!);
      const lease = client.lease(2, { autoKeepAlive: false });
      await lease.put('/t/short').value('s');
      const id = await lease.grant();
      expect(await ep.leaseIds()).toContain(id);
      const until = Date.now() + 4500;
      while (Date.now() < until) {
        await ep.keepAliveOnce([id]);
        await new Promise((res) => setTimeout(res, 500));
      }
      expect((await keysAt(cluster.endpoints)).kvs.has(Buffer.from('/t/short').toString('base64'))).toBe(true);
      await new Promise((res) => setTimeout(res, 3500));
      expect((await keysAt(cluster.endpoints)).kvs.has(Buffer.from('/t/short').toString('base64'))).toBe(false);
    } finally {
      clients.close();
    }
  }, 30_000);
});
