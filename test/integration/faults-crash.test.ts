import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { tempNameFor } from '../../src/fsutil.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { metricValue } from '../support/daemon.js';
import type { EtcdCluster } from '../support/etcd.js';
import { clusterBackupSource, makeEnv, s3StoreConfig, sftpStoreConfig, startFilledEtcd, tempDir } from '../support/fault-env.js';
import { eventually, listFiles, pidsWithEnv, sleep, spawnDaemon, type DaemonProc } from '../support/faults.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';

/**
 * The daemon dies at the worst moment (SIGKILL: the OOM killer, a node
 * reboot, a container eviction) and comes back. Nothing half-written may
 * ever look like a backup, the sealed bundle in the outbox must still reach
 * the store, and what the interrupted write left behind must be cleaned.
 */
let etcd: EtcdCluster;
let s3: S3rver;
let sshd: Sshd;
let root: string;
const daemons: DaemonProc[] = [];

beforeAll(async () => {
  root = tempDir('faults-crash');
  // 12 MiB of values (3 parts of 5 MiB): an upload takes long enough to be interrupted on purpose.
  [etcd, s3, sshd] = await Promise.all([startFilledEtcd({ mib: 12 }), startS3rver(), startSshd()]);
}, 240_000);

afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  await etcd?.stop();
  await s3?.dispose();
  if (sshd) {
    await sshd.stop();
    await removeSshdDir(sshd);
  }
});

async function start(file: string, opts: Parameters<typeof spawnDaemon>[1] = {}): Promise<DaemonProc> {
  const d = await spawnDaemon(file, opts);
  daemons.push(d);
  return d;
}

type ListDoc = { backups: { id: string }[]; incomplete: string[]; problems: unknown[] };
async function list(file: string, store: string): Promise<ListDoc> {
  const r = await runCli(['list', '--config', file, '--store', store, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as ListDoc;
}

/** Files of parts s3rver holds for multipart uploads that were never completed. */
function s3PartFiles(server: S3rver): string[] {
  const uploads = join(server.dir, server.bucket, '._S3rver_uploads');
  return listFiles(uploads).filter((f) => /\/\d+$/.test(f));
}

/** Polls `find` every few ms until it returns something: the moment to pull the plug. */
async function whenSeen<T>(find: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = find();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`never saw ${what}`);
    await sleep(5);
  }
}

function tmpFilesUnder(dir: string): string[] {
  return listFiles(dir).filter((f) => /(^|\/)\.[^/]+\.tmp-[0-9a-f]+$/.test(f));
}

describe('SIGKILL of the daemon during an upload, then a restart', () => {
  it('S3 (multipart): nothing is committed for the interrupted upload; the outbox bundle is delivered after the restart and verifies', async () => {
    const env = makeEnv(root, 's3-kill', etcd, { stores: [s3StoreConfig(s3, join(root, 's3-kill-creds'), { incompleteGrace: '1s' })] });
    const d = await start(env.file);
    const sealed = await d.waitFor((l) => l.msg === 'bundle sealed in the outbox', 120_000, 'a sealed bundle');
    const id = String(sealed.runId);
    // Some parts have reached the server: the upload is under way. Freeze the server so it cannot finish, then kill.
    await whenSeen(() => (s3PartFiles(s3).length > 0 ? true : undefined), 60_000, 'an uploaded part');
    s3.pause();
    try {
      await sleep(200);
      expect(await d.stop('SIGKILL')).toBe(128);
    } finally {
      s3.resume();
    }
    expect(d.count((l) => l.msg === 'remote copy verified and committed')).toBe(0);

    // What a crash leaves: the lock of a dead process, the sealed bundle in the outbox, no committed backup.
    const work = join(env.dir, 'work');
    expect(existsSync(join(work, 'run.lock'))).toBe(true);
    expect(readdirSync(join(work, 'outbox', id)).sort()).toEqual(expect.arrayContaining(['backup.tar.zst', 'manifest.json']));
    const before = await list(env.file, 's3');
    expect(before.backups.map((b) => b.id)).not.toContain(id);

    // Restart: the catch-up run takes a new backup, and the outbox delivers the interrupted one.
    const d2 = await start(env.file);
    await d2.waitFor((l) => l.msg === 'outbox backlog delivered' && l.id === id, 180_000, `delivery of ${id}`);
    const run = await d2.waitFor((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed', 180_000, 'the catch-up run');
    expect(run).toMatchObject({ trigger: 'catch-up', result: 'success' });
    await eventually(async () => expect(metricValue(await d2.metrics(), 'etcd_backup_outbox_backlog')).toBe(0));

    const after = await list(env.file, 's3');
    expect(after.backups.map((b) => b.id)).toEqual(expect.arrayContaining([id, String(run.runId)]));
    expect(after.problems).toEqual([]);
    const v = await runCli(['verify', '--config', env.file, '--store', 's3', id, '--json'], { timeoutMs: 180_000 });
    expect(v.code, v.stderr).toBe(0);
    expect(existsSync(join(work, 'run.lock'))).toBe(false);

    // Nothing manifest-less is visible; prune after the grace period reports nothing left to clean.
    // (s3rver keeps the parts of the interrupted multipart upload in a place no S3 API shows:
    // it lacks ListMultipartUploads, so cleanupIncomplete cannot see them there; on AWS it aborts them.)
    await sleep(1200);
    const p = await runCli(['prune', '--config', env.file, '--store', 's3', '--json']);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout)).toMatchObject({ incomplete: [], errors: [] });
    expect((await list(env.file, 's3')).incomplete).toEqual([]);
    expect(await d2.stop()).toBe(0);
  });

  it('SFTP: the temp file of the interrupted upload is never listed, and prune removes it after the grace period', async () => {
    const path = join(sshd.root, 'crash');
    const env = makeEnv(root, 'sftp-kill', etcd, { stores: [sftpStoreConfig(sshd, path, { incompleteGrace: '1s' })] });
    const d = await start(env.file);
    const id = String((await d.waitFor((l) => l.msg === 'bundle sealed in the outbox', 120_000, 'a sealed bundle')).runId);
    const tmp = await whenSeen(
      () => {
        const t = tmpFilesUnder(path).filter((f) => f.includes(`${id}/.backup.tar.zst.tmp-`));
        return t.length && statSync(join(path, t[0]!)).size > 0 ? t[0] : undefined;
      },
      60_000,
      'the temp file of the upload',
    );
    expect(await d.stop('SIGKILL')).toBe(128);
    expect(existsSync(join(path, 'c1', id, 'manifest.json'))).toBe(false);
    expect(existsSync(join(path, tmp))).toBe(true);
    expect((await list(env.file, 'sftp')).backups.map((b) => b.id)).not.toContain(id);

    const d2 = await start(env.file);
    await d2.waitFor((l) => l.msg === 'outbox backlog delivered' && l.id === id, 180_000, `delivery of ${id}`);
    await d2.waitFor((l) => l.msg === 'backup run finished', 180_000, 'the catch-up run');
    // The cycle's prune (after the successful run) removes the leftover: it is older than incompleteGrace.
    await eventually(() => expect(tmpFilesUnder(path)).toEqual([]), 30_000);
    expect(d2.count((l) => l.msg === 'removed leftover of an interrupted upload')).toBeGreaterThanOrEqual(1);
    expect((await list(env.file, 'sftp')).backups.map((b) => b.id)).toContain(id);
    const v = await runCli(['verify', '--config', env.file, '--store', 'sftp', id]);
    expect(v.code, v.stderr).toBe(0);
    expect(await d2.stop()).toBe(0);
  }, 300_000);

  // The local store hard-links the sealed bundle (link, utimes, rename: microseconds), so a kill cannot be
  // aimed at the middle of that write the way it is for S3 and SFTP. The kill lands wherever it lands after
  // the seal, and the leftover an interrupted write leaves (a dot-temp file, named by the store's own
  // tempNameFor) is put next to it, so both halves hold on every run.
  it('local store: a kill after the seal loses nothing, and the temp file of an interrupted write is never listed and is removed by prune', async () => {
    const env = makeEnv(root, 'local-kill', etcd, { stores: [{ name: 'nfs', type: 'local', path: join(root, 'local-kill', 'store'), incompleteGrace: '1s' }] });
    const store = join(env.dir, 'store');
    const d = await start(env.file);
    const id = String((await d.waitFor((l) => l.msg === 'bundle sealed in the outbox', 120_000, 'a sealed bundle')).runId);
    expect(await d.stop('SIGKILL')).toBe(128);

    const leftover = tempNameFor(join(store, 'c1', id, 'backup.tar.zst'));
    mkdirSync(join(store, 'c1', id), { recursive: true, mode: 0o700 });
    writeFileSync(leftover, randomBytes(64 * 1024), { mode: 0o600 });
    expect(JSON.stringify(await list(env.file, 'nfs'))).not.toContain(basename(leftover));

    const d2 = await start(env.file);
    // Delivered before the kill, or from the outbox after the restart: either way it is in the store.
    const listed = await eventually(async () => {
      const doc = await list(env.file, 'nfs');
      expect(doc.backups.map((b) => b.id)).toContain(id);
      return doc;
    }, 180_000);
    expect(JSON.stringify(listed)).not.toContain(basename(leftover));
    await d2.waitFor((l) => l.msg === 'backup run finished', 180_000, 'the catch-up run');
    expect(await d2.stop()).toBe(0);
    const v = await runCli(['verify', '--config', env.file, '--store', 'nfs', id]);
    expect(v.code, v.stderr).toBe(0);

    await sleep(1200);
    const p = await runCli(['prune', '--config', env.file, '--json']);
    expect(p.code, p.stderr).toBe(0);
    // A full-size copy of the cluster's secrets must not stay on the NFS share forever.
    expect(tmpFilesUnder(store), `leftover temp files in ${store}`).toEqual([]);
    expect(existsSync(join(store, 'c1', id, 'manifest.json'))).toBe(true);
  });
});

describe('SIGKILL before the bundle is sealed', () => {
  it('the run directory of the killed run (snapshot, static resources with private keys) does not stay in workDir', async () => {
    const marker = `crash-${Date.now()}`;
    const env = makeEnv(root, 'runs-leftover', etcd, { source: clusterBackupSource(etcd.endpoints[0]!, { FAKE_BACKUP_HANG: '1', EBD_TEST_MARKER: marker }) });
    const runs = join(env.dir, 'work', 'runs');
    const d = await start(env.file);
    await whenSeen(() => listFiles(runs).find((f) => /static_kuberesources_/.test(f)), 60_000, 'the static archive in the run dir');
    expect(await d.stop('SIGKILL')).toBe(128);
    // The script ran in its own process group, which a SIGKILL of the daemon does not reach: stop it as the node's reboot would.
    for (const pid of pidsWithEnv('EBD_TEST_MARKER', marker)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone already */
      }
    }

    env.rewrite({ source: clusterBackupSource(etcd.endpoints[0]!) });
    const d2 = await start(env.file);
    const run = await d2.waitFor((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed', 120_000, 'the catch-up run');
    expect(run.result).toBe('success');
    expect(await d2.stop()).toBe(0);
    expect(listFiles(runs), `files left in ${runs}`).toEqual([]);
  });
});

describe('the daemon restarts in a fresh container (PID namespace) after being killed mid-run', () => {
  it('the stale run lock of the previous life (same pid: 1) does not block every later backup', async () => {
    const wrapper = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child=SIGKILL'];
    const env = makeEnv(root, 'pidns', etcd, { source: clusterBackupSource(etcd.endpoints[0]!, { FAKE_BACKUP_HANG: '1' }) });
    const d = await start(env.file, { wrapper });
    await d.waitFor((l) => l.msg === 'backup run started', 60_000, 'a run');
    expect(d.lines.find((l) => l.msg === 'etcd-backupd daemon started')?.pid).toBe(1);
    const lock = JSON.parse(readFileSync(join(env.dir, 'work', 'run.lock'), 'utf8'));
    expect(lock.pid).toBe(1);
    // Kill the container: its PID 1 dies, and with it every process of the namespace.
    expect(await d.stop('SIGKILL')).not.toBe(0);

    env.rewrite({ source: clusterBackupSource(etcd.endpoints[0]!) });
    const d2 = await start(env.file, { wrapper });
    const run = await d2.waitFor((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed', 120_000, 'the catch-up run');
    expect(run, `${String(run.reason)}: ${String(run.err)}`).toMatchObject({ result: 'success' });
    expect(await d2.stop()).toBe(0);
  });
});
