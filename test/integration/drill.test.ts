/**
 * Restore drills against real parts: a real etcd (Debian 3.4), a real backup
 * taken through the CLI into a local store, and the drill restoring it into a
 * throwaway etcd. Then backups damaged in ways the sha256 checks cannot see:
 *
 *   A. a value changed after the backup, every sha256 recomputed (trailer,
 *      artifact, object) — the manifest's content hash still says what the
 *      snapshot held at backup time: the drill refuses it (snapshot-corrupt)
 *      before restoring anything;
 *   B. a value whose encoding is broken, with EVERY hash recomputed, the
 *      content hash in the manifest included — what a bit flip in the
 *      member's own bbolt file looks like, since it is already there when the
 *      backup hashes it: `verify` passes, only the restore can tell
 *      (drill-restore-failed);
 *   C. a restore tool that restores other data (an older snapshot): the
 *      restored etcd's revision, keys and HashKV differ (drill-mismatch).
 *
 * After every drill, passed or failed: nothing left in scratchDir and no
 * process left that runs from it.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serializeManifest, type Manifest } from '../../src/bundle/manifest.js';
import { objectKeys } from '../../src/layout.js';
import { readBundle } from '../../src/bundle/read.js';
import { writeBundle } from '../../src/bundle/write.js';
import { runRestoreDrill, type DrillResult } from '../../src/drill/drill.js';
import { DrillMetrics } from '../../src/drill/metrics.js';
import { readKeyspace } from '../../src/etcd/keyspace.js';
import { inspectSnapshot } from '../../src/etcd/snapshot.js';
import { findBackup, loadCatalog } from '../../src/catalog/catalog.js';
import { verifyBackup } from '../../src/catalog/fetch.js';
import { LocalStore } from '../../src/storage/local/store.js';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { makeFakeMaster } from '../support/fake-master.js';

const CLUSTER = 'drill-cluster';
const TARGET_KEY = '/kubernetes.io/secrets/drill/tamper-target';
const TARGET_VALUE = 'ORIGINAL-DRILL-VALUE-0123456789';

let cluster: EtcdCluster;
let dir: string;
let storeDir: string;
let manifest: Manifest;
let oldSnapshot: string;
let liveKeysAtBackup: number;
const timings: Record<string, DrillResult['steps']> = {};

interface Captured {
  logger: pino.Logger;
  lines: Record<string, unknown>[];
  on(msg: string, fn: (line: Record<string, unknown>) => void): void;
}

function capturingLogger(): Captured {
  const lines: Record<string, unknown>[] = [];
  const hooks: [string, (l: Record<string, unknown>) => void][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const s of chunk.toString().split('\n')) {
        if (!s) continue;
        const l = JSON.parse(s) as Record<string, unknown>;
        lines.push(l);
        for (const [msg, fn] of hooks) if (l.msg === msg) fn(l);
      }
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines, on: (msg, fn) => hooks.push([msg, fn]) };
}

/** Processes whose command line mentions `path` (the drill etcd, a restore tool...). */
function processesUsing(path: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(path) && Number(pid) !== process.pid) out.push(`${pid}: ${cmd}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

function expectCleanedUp(scratch: string): void {
  expect(existsSync(scratch) ? readdirSync(scratch) : []).toEqual([]);
  expect(processesUsing(scratch)).toEqual([]);
}

function freshScratch(name: string): string {
  const d = join(dir, 'scratch', name);
  mkdirSync(d, { recursive: true, mode: 0o700 });
  return d;
}

beforeAll(async () => {
  dir = tempDir('drill');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  // History the HashKV rule has to get right: overwrites and deletes before a
  // compaction, then more overwrites, deletes and new keys after it.
  const first: [string, string][] = [];
  for (let i = 0; i < 400; i++) first.push([`/kubernetes.io/configmaps/ns${i % 9}/cm${i}`, `v1-${i}-${'y'.repeat(i % 200)}`]);
  await cluster.putMany(first, 4);
  for (let i = 0; i < 400; i += 3) await cluster.put(`/kubernetes.io/configmaps/ns${i % 9}/cm${i}`, `v2-${i}`);
  await cluster.etcdctl(['del', '--prefix', '/kubernetes.io/configmaps/ns1/']);
  await cluster.put(TARGET_KEY, TARGET_VALUE);
  await cluster.etcdctl(['compact', String(await cluster.revision())]);
  oldSnapshot = join(dir, 'old-snapshot.db');
  await cluster.etcdctl(['snapshot', 'save', oldSnapshot]);
  for (let i = 0; i < 400; i += 5) await cluster.put(`/kubernetes.io/configmaps/ns${i % 9}/cm${i}`, `v3-${i}`);
  await cluster.etcdctl(['del', '--prefix', '/kubernetes.io/configmaps/ns2/']);
  const more: [string, string][] = [];
  for (let i = 0; i < 150; i++) more.push([`/kubernetes.io/secrets/ns${i % 5}/s${i}`, `secret-${i}-${'z'.repeat(i % 300)}`]);
  more.push(['/kubernetes.io/configmaps/big', 'B'.repeat(300_000)]);
  await cluster.putMany(more, 4);
  liveKeysAtBackup = (await cluster.getAll('')).size;

  // A real backup through the CLI, as a user takes it.
  const d = join(dir, 'backup');
  mkdirSync(d, { recursive: true });
  storeDir = join(d, 'store');
  const cfg = writeConfig(d, {
    cluster: CLUSTER,
    node: 'master-0',
    workDir: join(d, 'work'),
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: makeFakeMaster(join(d, 'master'), cluster.endpoints[0]!).env },
    etcd: { endpoints: [cluster.endpoints[0]!] },
    stores: [{ name: 'nfs', type: 'local', path: storeDir }],
  });
  const r = await runCli(['backup', '--config', cfg, '--json']);
  expect(r.code, r.stderr).toBe(0);
  const id = (JSON.parse(r.stdout) as { id: string }).id;
  manifest = findBackup(await loadCatalog(new LocalStore('nfs', storeDir), CLUSTER), id, 'nfs');
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
  // eslint-disable-next-line no-console
  const fmt = (steps: DrillResult['steps']) => steps.map((s) => `${s.name} ${s.seconds.toFixed(3)}s`).join(', ');
  console.log(`restore drill step timings:\n${Object.entries(timings).map(([k, v]) => `  ${k}: ${fmt(v)}`).join('\n')}`);
});

/**
 * A copy of the backup in a new store, its snapshot changed by `mutate`
 * (bbolt data without the trailer), the sha256 trailer recomputed, the tar
 * rebuilt and every sha256 in the manifest recomputed. With `rehashContent`
 * the manifest's etcd.{hash,revision,totalKey,totalSize} are recomputed too.
 */
async function tamperedCopy(name: string, mutate: (db: Buffer) => number, rehashContent: boolean): Promise<{ store: LocalStore; manifest: Manifest }> {
  const root = join(dir, 'tampered', name);
  const work = join(root, 'work');
  await mkdir(work, { recursive: true, mode: 0o700 });
  const files = (await readBundle(createReadStream(join(storeDir, manifest.object!.key)), manifest, work)).files;
  const snap = files.find((f) => f.endsWith('.db'))!;
  const whole = await readFile(snap);
  const db = Buffer.from(whole.subarray(0, whole.length - 32));
  expect(mutate(db), 'the bytes to alter were found').toBeGreaterThan(0);
  await writeFile(snap, Buffer.concat([db, createHash('sha256').update(db).digest()]));
  const report = await inspectSnapshot(snap);
  expect(report.trailer).toBe('ok'); // a structurally valid snapshot with a valid trailer
  const etcd = rehashContent
    ? { ...manifest.etcd, hash: report.hash, revision: report.revision, totalKey: report.totalKey, totalSize: report.totalSize }
    : manifest.etcd;
  const base = { ...manifest, etcd };
  delete (base as Partial<Manifest>).object;
  const storeRoot = join(root, 'store');
  const keys = objectKeys(CLUSTER, manifest.id, { encrypted: false });
  await mkdir(join(storeRoot, keys.dir), { recursive: true, mode: 0o700 });
  const bundle = await writeBundle(join(storeRoot, keys.object), files, (artifacts) => serializeManifest({ ...base, artifacts } as Manifest));
  const m: Manifest = {
    ...base,
    artifacts: bundle.artifacts,
    object: { ...manifest.object!, key: keys.object, codec: 'none', rawSize: bundle.rawSize, size: bundle.size, sha256: bundle.sha256 },
  };
  await writeFile(join(storeRoot, keys.manifest), serializeManifest(m), { mode: 0o600 });
  return { store: new LocalStore('tampered', storeRoot), manifest: m };
}

/** Replaces every occurrence of `from` (stale copies in free pages included) by `to`, same length. */
function replaceAll(db: Buffer, from: Buffer, to: Buffer): number {
  expect(to.length).toBe(from.length);
  let n = 0;
  for (let i = db.indexOf(from); i >= 0; i = db.indexOf(from, i + 1)) {
    to.copy(db, i);
    n++;
  }
  return n;
}

describe('a restore drill of a good backup', () => {
  let result: DrillResult;
  let scratch: string;
  let niceOfEtcd: number | undefined;
  let ioniceOfEtcd = '';
  let etcdCmdline = '';

  beforeAll(async () => {
    scratch = freshScratch('good');
    const cap = capturingLogger();
    cap.on('restore drill: etcd serves the restored data', (l) => {
      const stat = readFileSync(`/proc/${l.pid}/stat`, 'utf8');
      niceOfEtcd = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      etcdCmdline = readFileSync(`/proc/${l.pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      ioniceOfEtcd = spawnSync('ionice', ['-p', String(l.pid)], { encoding: 'utf8' }).stdout.trim();
    });
    result = await runRestoreDrill({ store: new LocalStore('nfs', storeDir), manifest, scratchDir: scratch, log: cap.logger });
    timings.good = result.steps;
  });

  it('passes: the restored etcd serves the backup revision, its keys and its HashKV', async () => {
    expect(result.error).toBeUndefined();
    expect(result).toMatchObject({ id: manifest.id, result: 'success', revision: manifest.etcd.revision, totalKey: manifest.etcd.totalKey, liveKeys: liveKeysAtBackup, sampled: 100, restoreTool: 'etcdctl' });
    // totalKey counts every bucket entry (all revisions, tombstones, meta, members...): more than the live keys.
    expect(manifest.etcd.totalKey).toBeGreaterThan(liveKeysAtBackup);
    const want = await readKeyspace(join(dir, 'old-snapshot.db'));
    expect(want.compactRevision).toBeGreaterThan(0); // the history really went through a compaction
    expect(result.hashKV).toEqual(expect.any(Number));
  });

  it('times every step, in order', () => {
    expect(result.steps.map((s) => s.name)).toEqual(['fetch', 'restore', 'start', 'check', 'stop']);
    for (const s of result.steps) expect(s.seconds).toBeGreaterThanOrEqual(0);
    expect(Date.parse(result.finishedAt)).toBeGreaterThanOrEqual(Date.parse(result.startedAt));
  });

  it('ran etcd at low priority on loopback ports other than 2379/2380', () => {
    expect(niceOfEtcd).toBe(19);
    expect(ioniceOfEtcd).toBe('idle');
    expect(etcdCmdline).toMatch(/--listen-client-urls http:\/\/127\.0\.0\.1:\d+/);
    expect(etcdCmdline).not.toMatch(/:(2379|2380)\b/);
    expect(etcdCmdline).toContain('--quota-backend-bytes');
  });

  it('leaves nothing behind: no files in scratchDir, no process', () => {
    expectCleanedUp(scratch);
  });

  it('feeds the drill metrics', async () => {
    const reg = new Registry();
    const dm = new DrillMetrics(reg);
    dm.setInterval(7 * 86400);
    dm.recordDrill(result);
    const text = await reg.metrics();
    expect(text).toContain('etcd_backup_drill_runs_total{kind="restore",result="success"} 1');
    expect(text).toContain('etcd_backup_drill_failures_total{kind="restore",reason="drill-mismatch"} 0');
    expect(text).toMatch(/etcd_backup_drill_last_success_timestamp_seconds \d/);
    expect(text).toMatch(/etcd_backup_drill_step_duration_seconds\{step="restore"\} \d/);
    expect(text).toContain('etcd_backup_drill_consecutive_failures 0');
    expect(text).toContain(`etcd_backup_drill_revision ${manifest.etcd.revision}`);
  });
});

describe('restore drills of damaged backups', () => {
  it('A: a value changed after the backup with every sha256 recomputed fails on the content hash (snapshot-corrupt)', async () => {
    const t = await tamperedCopy('a', (db) => replaceAll(db, Buffer.from(TARGET_VALUE), Buffer.from(TARGET_VALUE.replace('ORIGINAL', 'TAMPERED'))), false);
    const scratch = freshScratch('a');
    const r = await runRestoreDrill({ store: t.store, manifest: t.manifest, scratchDir: scratch, log: pino({ level: 'silent' }) });
    timings.tamperA = r.steps;
    expect(r).toMatchObject({ result: 'failed', reason: 'snapshot-corrupt' });
    expect(r.error).toMatch(/hash is \d+, the manifest recorded \d+ at backup time/);
    expect(r.steps.map((s) => s.name)).toEqual(['fetch', 'stop']);
    expectCleanedUp(scratch);
  });

  it('B: an undecodable value with every hash recomputed passes verify; only the restore can tell (drill-restore-failed)', async () => {
    // The mvccpb.KeyValue of the target starts with field 1 (key): 0x0a, length, key. Wire type 7 does not exist.
    const pb = Buffer.concat([Buffer.from([0x0a, TARGET_KEY.length]), Buffer.from(TARGET_KEY)]);
    const broken = Buffer.from(pb);
    broken[0] = 0x0f;
    const t = await tamperedCopy('b', (db) => replaceAll(db, pb, broken), true);
    // Every sha256, the trailer, the bbolt structure and the content hash agree:
    const v = await verifyBackup(t.store, t.manifest, join(dir, 'verify-b'));
    expect(v.snapshot?.trailer).toBe('ok');
    const scratch = freshScratch('b');
    const r = await runRestoreDrill({ store: t.store, manifest: t.manifest, scratchDir: scratch, log: pino({ level: 'silent' }) });
    timings.tamperB = r.steps;
    expect(r).toMatchObject({ result: 'failed', reason: 'drill-restore-failed' });
    expect(r.error).toContain('failed to unmarshal mvccpb.KeyValue');
    expect(r.hint).toMatch(/cannot be restored/);
    expect(r.steps.map((s) => s.name)).toEqual(['fetch', 'restore', 'stop']);
    expectCleanedUp(scratch);
  });

  it('C: a restore that brings back other data than the backup holds fails the check (drill-mismatch)', async () => {
    const fake = join(dir, 'fake-etcdutl.sh');
    // Restores the OLDER snapshot with the drill's own flags: `snapshot restore FILE --data-dir ...`.
    writeFileSync(fake, `#!/bin/sh\nshift 3\nexec etcdctl snapshot restore '${oldSnapshot}' "$@"\n`);
    chmodSync(fake, 0o755);
    const scratch = freshScratch('c');
    const r = await runRestoreDrill({ store: new LocalStore('nfs', storeDir), manifest, scratchDir: scratch, etcdutlBinary: fake, log: pino({ level: 'silent' }) });
    timings.mismatch = r.steps;
    expect(r).toMatchObject({ result: 'failed', reason: 'drill-mismatch', restoreTool: 'etcdutl' });
    expect(r.error).toMatch(/serves revision \d+, the backup is at revision \d+/);
    expect(r.steps.map((s) => s.name)).toEqual(['fetch', 'restore', 'start', 'check', 'stop']);
    expectCleanedUp(scratch);
  });
});

describe('drills that cannot run', () => {
  it('an etcd that does not start: drill-start-failed with its own words', async () => {
    const fake = join(dir, 'fake-etcd.sh');
    writeFileSync(fake, `#!/bin/sh\necho '{"level":"fatal","msg":"cannot access data directory","error":"boom"}' >&2\nexit 1\n`);
    chmodSync(fake, 0o755);
    const scratch = freshScratch('nostart');
    const r = await runRestoreDrill({ store: new LocalStore('nfs', storeDir), manifest, scratchDir: scratch, etcdBinary: fake, log: pino({ level: 'silent' }) });
    expect(r).toMatchObject({ result: 'failed', reason: 'drill-start-failed' });
    expect(r.error).toContain('cannot access data directory: boom');
    expect(r.steps.map((s) => s.name)).toEqual(['fetch', 'restore', 'start', 'stop']);
    expectCleanedUp(scratch);
  });

  it('no etcd binary at all: drill-start-failed before anything is fetched', async () => {
    const scratch = freshScratch('nobinary');
    const r = await runRestoreDrill({ store: new LocalStore('nfs', storeDir), manifest, scratchDir: scratch, etcdBinary: '/nonexistent/etcd', log: pino({ level: 'silent' }) });
    expect(r).toMatchObject({ result: 'failed', reason: 'drill-start-failed' });
    expect(r.hint).toMatch(/install/);
    expect(r.steps.map((s) => s.name)).toEqual(['stop']);
    expectCleanedUp(scratch);
  });
});

describe('drills that are stopped', () => {
  it('times out with drill-timeout and cleans up', async () => {
    const scratch = freshScratch('timeout');
    const r = await runRestoreDrill({ store: new LocalStore('nfs', storeDir), manifest, scratchDir: scratch, timeoutSeconds: 0.3, log: pino({ level: 'silent' }) });
    expect(r).toMatchObject({ result: 'failed', reason: 'drill-timeout' });
    expect(r.error).toMatch(/did not finish within 0.3s/);
    expect(r.steps[r.steps.length - 1]!.name).toBe('stop');
    expectCleanedUp(scratch);
  });

  it('aborted while etcd runs: drill-aborted, the etcd is stopped and everything removed', async () => {
    const scratch = freshScratch('abort');
    const ac = new AbortController();
    const cap = capturingLogger();
    let pid = 0;
    cap.on('restore drill: etcd serves the restored data', (l) => {
      pid = Number(l.pid);
      ac.abort();
    });
    const r = await runRestoreDrill({ store: new LocalStore('nfs', storeDir), manifest, scratchDir: scratch, signal: ac.signal, log: cap.logger });
    expect(pid).toBeGreaterThan(0);
    expect(r).toMatchObject({ result: 'failed', reason: 'drill-aborted' });
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expectCleanedUp(scratch);
  });

  it('a drill interrupted by a crash is cleaned up by the next one in the same scratchDir', async () => {
    const scratch = freshScratch('stale');
    const stale = join(scratch, 'drill-crashed-abc');
    await mkdir(join(stale, 'data'), { recursive: true });
    await writeFile(join(stale, 'drill-owner.json'), JSON.stringify({ pid: 999_999_999 }));
    await copyFile(oldSnapshot, join(stale, 'data', 'leftover.db'));
    const r = await runRestoreDrill({ store: new LocalStore('nfs', storeDir), manifest, scratchDir: scratch, sampleKeys: 5, log: pino({ level: 'silent' }) });
    expect(r).toMatchObject({ result: 'success', sampled: 5 });
    expectCleanedUp(scratch);
  });
});

/**
 * What etcd's HashKV counts depends on the compaction history; the drill
 * derives it from the snapshot. Histories where a wrong rule would show:
 * never compacted, everything deleted (no live key: etcd counts every
 * entry), and a compaction past the last entry (the restored revision is the
 * compaction's, above the snapshot's last key).
 */
describe('histories the HashKV rule must get right', () => {
  async function drillSnapshotOf(name: string, history: (c: EtcdCluster) => Promise<void>): Promise<DrillResult> {
    const c = await startEtcdCluster({ members: 1, tls: false });
    const root = mkdtempSync(join(dir, `history-${name}-`));
    const snap = join(root, 'snapshot_2026-11-25_020000.db');
    try {
      await history(c);
      await c.etcdctl(['snapshot', 'save', snap]);
    } finally {
      await c.stop();
    }
    const rep = await inspectSnapshot(snap);
    const id = `20261125T020000Z-${name}`;
    const keys = objectKeys(CLUSTER, id, { encrypted: false });
    const storeRoot = join(root, 'store');
    await mkdir(join(storeRoot, keys.dir), { recursive: true, mode: 0o700 });
    const base = { ...manifest, id, etcd: { revision: rep.revision, totalKey: rep.totalKey, hash: rep.hash, totalSize: rep.totalSize } };
    delete (base as Partial<Manifest>).object;
    const b = await writeBundle(join(storeRoot, keys.object), [snap], (artifacts) => serializeManifest({ ...base, artifacts } as Manifest));
    const m: Manifest = { ...base, artifacts: b.artifacts, object: { key: keys.object, size: b.size, sha256: b.sha256, encrypted: false, recipients: [] } };
    const scratch = freshScratch(`history-${name}`);
    const r = await runRestoreDrill({ store: new LocalStore('h', storeRoot), manifest: m, scratchDir: scratch, sampleKeys: 10, log: pino({ level: 'silent' }) });
    expectCleanedUp(scratch);
    return r;
  }

  it('never compacted', async () => {
    const r = await drillSnapshotOf('plain', async (c) => {
      for (let i = 0; i < 60; i++) await c.put(`k${i % 25}`, `v${i}`);
      await c.etcdctl(['del', 'k3']);
    });
    expect(r).toMatchObject({ result: 'success', liveKeys: 24, sampled: 10 });
  });

  it('every key deleted', async () => {
    const r = await drillSnapshotOf('empty', async (c) => {
      for (let i = 0; i < 40; i++) await c.put(`k${i % 25}`, `v${i}`);
      await c.etcdctl(['compact', '10']);
      await c.etcdctl(['del', '--prefix', 'k']);
    });
    expect(r).toMatchObject({ result: 'success', liveKeys: 0, sampled: 0 });
  });

  it('compacted past the last entry', async () => {
    let compactedAt = 0;
    const r = await drillSnapshotOf('compacted', async (c) => {
      for (let i = 0; i < 40; i++) await c.put(`k${i % 25}`, `v${i}`);
      await c.etcdctl(['del', 'k7']);
      compactedAt = await c.revision();
      await c.etcdctl(['compact', String(compactedAt)]);
    });
    expect(r).toMatchObject({ result: 'success', liveKeys: 24, revision: compactedAt });
  });
});
