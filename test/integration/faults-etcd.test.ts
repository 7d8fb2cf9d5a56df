import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_CLUSTER_BACKUP, runCli } from '../support/cli.js';
import { metricValue } from '../support/daemon.js';
import type { EtcdCluster } from '../support/etcd.js';
import { clusterBackupSource, makeEnv, startFilledEtcd, tempDir } from '../support/fault-env.js';
import { commOf, eventually, listFiles, MiB, mountSmallFs, pidsWithEnv, sleep, spawnDaemon, type DaemonProc, type SmallFs } from '../support/faults.js';

/**
 * The source side fails: an etcd member down, the quorum lost, the backup
 * script hanging, the work directory too small. The daemon's metrics and
 * the CLI's result name the reason; nothing is started that cannot finish,
 * and nothing is left running or lying around.
 */
let etcd: EtcdCluster;
let root: string;
const daemons: DaemonProc[] = [];
const mounts: SmallFs[] = [];

beforeAll(async () => {
  root = tempDir('faults-etcd');
  etcd = await startFilledEtcd({ members: 3, mib: 3 });
}, 180_000);

afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  for (const m of mounts) m.unmount();
  await etcd?.stop();
});

async function start(file: string): Promise<DaemonProc> {
  const d = await spawnDaemon(file);
  daemons.push(d);
  return d;
}

/** No catch-up run at start: the runs below are the ones the test asks for. */
function recentSuccess(dir: string) {
  mkdirSync(join(dir, 'work'), { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date().toISOString(), consecutiveFailures: 0, stores: {} }));
}

/** A CLI backup sent to the daemon, retried while the daemon is busy with a scheduled run. */
async function backupViaDaemon(file: string, extra: string[] = []) {
  for (let i = 0; ; i++) {
    const r = await runCli(['backup', '--config', file, '--json', ...extra], { timeoutMs: 120_000 });
    const doc = JSON.parse(r.stdout || '{}');
    if (doc.reason !== 'lock-busy' && !/already running/.test(r.stderr) || i > 30) return { r, doc };
    await sleep(300);
  }
}

async function dbSize(): Promise<number> {
  const { stdout } = await etcd.etcdctl(['endpoint', 'status', '-w', 'json'], { endpoints: [etcd.endpoints[0]!] });
  return Number((JSON.parse(stdout) as { Status: { dbSize: number } }[])[0]!.Status.dbSize);
}

describe('etcd members down (the daemon)', () => {
  it('one member down: the backup proceeds; the metrics show the failed check and the unreachable member', async () => {
    const env = makeEnv(root, 'one-down', etcd, { etcd: { endpoints: [etcd.endpoints[0]], timeout: '2s' } });
    recentSuccess(env.dir);
    const d = await start(env.file);
    await etcd.stopMember(2);
    try {
      const { r, doc } = await backupViaDaemon(env.file);
      expect(r.code, r.stderr).toBe(0);
      expect(doc.preflight.checks.filter((c: { ok: boolean }) => !c.ok).map((c: { name: string }) => c.name)).toEqual(['members-reachable']);
      const text = await d.metrics();
      expect(metricValue(text, 'etcd_backup_preflight_check_ok', { check: 'members-reachable' })).toBe(0);
      expect(metricValue(text, 'etcd_backup_preflight_check_ok', { check: 'quorum' })).toBe(1);
      expect(metricValue(text, 'etcd_backup_etcd_members_unreachable')).toBe(1);
      expect(metricValue(text, 'etcd_backup_runs_total', { result: 'success', trigger: 'manual' })).toBe(1);
      expect(metricValue(text, 'etcd_backup_failures_total', { reason: 'preflight-member-unreachable' })).toBe(0);
    } finally {
      await etcd.startMember(2);
    }
    // Back to healthy: the next run clears the gauge.
    const { r } = await backupViaDaemon(env.file);
    expect(r.code, r.stderr).toBe(0);
    const text = await d.metrics();
    expect(metricValue(text, 'etcd_backup_etcd_members_unreachable')).toBe(0);
    expect(metricValue(text, 'etcd_backup_preflight_check_ok', { check: 'members-reachable' })).toBe(1);
    expect(await d.stop()).toBe(0);
  }, 180_000);

  it('quorum lost: scheduled runs refuse with preflight-no-quorum (metrics, readiness); backup --force through the daemon works', async () => {
    const env = makeEnv(root, 'no-quorum', etcd, { schedule: '*/3 * * * * *', etcd: { endpoints: [etcd.endpoints[0]], timeout: '2s' }, readyFailureThreshold: 2 });
    recentSuccess(env.dir);
    await etcd.stopMember(1);
    await etcd.stopMember(2);
    let d: DaemonProc;
    try {
      d = await start(env.file);
      await d.waitFor(() => d.count((l) => l.msg === 'backup run failed' && l.trigger === 'schedule') >= 2, 60_000, 'two refused scheduled runs');
      const refused = d.lines.filter((l) => l.msg === 'backup run failed');
      for (const f of refused) expect(f, String(f.err)).toMatchObject({ reason: 'preflight-no-quorum' });
      expect(d.count((l) => l.msg === 'phase source done')).toBe(0); // refused before anything was started
      // (The log line comes at the end of the run, the metrics right after the cycle.)
      let text = await eventually(async () => {
        const t = await d.metrics();
        expect(metricValue(t, 'etcd_backup_failures_total', { reason: 'preflight-no-quorum' })).toBeGreaterThanOrEqual(2);
        expect(metricValue(t, 'etcd_backup_runs_total', { result: 'failed', trigger: 'schedule' })).toBeGreaterThanOrEqual(2);
        expect(metricValue(t, 'etcd_backup_preflight_check_ok', { check: 'quorum' })).toBe(0);
        expect(metricValue(t, 'etcd_backup_etcd_members_unreachable')).toBe(2);
        expect(metricValue(t, 'etcd_backup_consecutive_failures')).toBeGreaterThanOrEqual(2);
        return t;
      });
      const ready = await fetch(`${d.metricsUrl}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.text()).toMatch(/preflight-no-quorum/);

      const { r, doc } = await backupViaDaemon(env.file, ['--force']);
      expect(r.code, r.stderr).toBe(0);
      expect(doc).toMatchObject({ result: 'success', trigger: 'manual', preflight: { forced: true } });
      const m = JSON.parse(readFileSync(join(env.dir, 'store', 'c1', doc.id, 'manifest.json'), 'utf8'));
      expect(m.preflight.forced).toBe(true);
      expect(m.preflight.failedChecks.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining(['quorum', 'members-reachable']));
      text = await d.metrics();
      expect(metricValue(text, 'etcd_backup_runs_total', { result: 'success', trigger: 'manual' })).toBe(1);
    } finally {
      await etcd.startMember(1);
      await etcd.startMember(2);
    }
    expect(await d.stop()).toBe(0);
  }, 180_000);
});

describe('cluster-backup.sh hangs', () => {
  async function hangingRun(name: string, script: string, timeout: string) {
    const marker = `${name}-${Date.now()}`;
    const env = makeEnv(root, name, etcd, {
      source: { ...clusterBackupSource(etcd.endpoints[0]!, { FAKE_BACKUP_HANG: '1', EBD_TEST_MARKER: marker }, timeout), script },
    });
    const t0 = Date.now();
    const run = runCli(['backup', '--config', env.file, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' }, timeoutMs: 90_000 });
    // While it hangs, the script (and its children) are there to be seen, so the check below can fail.
    const seen = await eventually(() => {
      const pids = pidsWithEnv('EBD_TEST_MARKER', marker);
      expect(pids.length).toBeGreaterThan(0);
      return pids.map(commOf);
    }, 20_000, 20);
    const r = await run;
    const seconds = (Date.now() - t0) / 1000;
    const left = pidsWithEnv('EBD_TEST_MARKER', marker);
    // Clean up before asserting, so a failure does not leave a process behind.
    for (const pid of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    return { env, r, doc: JSON.parse(r.stdout), seconds, seen, left };
  }

  it('the timeout kills the script and its whole process group: source-timeout, nothing left running or on disk', async () => {
    const { env, r, doc, seconds, left, seen } = await hangingRun('hang', FAKE_CLUSTER_BACKUP, '5s');
    expect(seen.length, 'the hanging script was visible while it ran').toBeGreaterThan(0);
    expect(r.code).toBe(1);
    expect(doc).toMatchObject({ result: 'failed', reason: 'source-timeout' });
    expect(doc.error).toMatch(/did not finish within 5s and was killed/);
    expect(seconds).toBeLessThan(25);
    expect(left.map((p) => `${p} ${commOf(p)}`), 'processes of the killed script still running').toEqual([]);
    expect(listFiles(join(env.dir, 'work'))).toEqual([]);
    expect(existsSync(join(env.dir, 'store', 'c1'))).toBe(false);
  });

  it('a script that ignores SIGTERM (and its children) is SIGKILLed after the grace period', async () => {
    const wrapper = join(root, 'ignore-term.sh');
    writeFileSync(wrapper, `#!/bin/bash\ntrap '' TERM\nexec ${FAKE_CLUSTER_BACKUP} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const { r, doc, seconds, left } = await hangingRun('hang-ignore-term', wrapper, '2s');
    expect(r.code).toBe(1);
    expect(doc.reason).toBe('source-timeout');
    expect(seconds).toBeGreaterThan(2);
    expect(seconds).toBeLessThan(25);
    expect(left.map((p) => `${p} ${commOf(p)}`)).toEqual([]);
  });
});

describe('workDir too small', () => {
  it('preflight refuses with preflight-disk-space before anything is started', async () => {
    const size = await dbSize();
    const env = makeEnv(root, 'disk-preflight', etcd, { preflight: { freeSpaceFactor: 2 } });
    // Room for one copy of the db, not two.
    const fs = mountSmallFs(join(env.dir, 'work'), Math.ceil(size * 1.5));
    mounts.push(fs);
    const r = await runCli(['backup', '--config', env.file, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ result: 'failed', reason: 'preflight-disk-space' });
    expect(doc.error).toMatch(/disk-space: .* free in .*work, need .*\(2 x etcd db size/);
    expect(doc.hint).toMatch(/freeSpaceFactor/);
    expect(Object.keys(doc.phases)).toEqual(['preflight']);
    expect(r.stderr).not.toMatch(/phase source done|etcdctl snapshot save/);
    expect(readdirSync(join(env.dir, 'work'))).toEqual([]);
  });

  it('preflight passes (freeSpaceFactor 1) but the bundle does not fit: bundle-failed, and workDir is left clean', async () => {
    const size = await dbSize();
    expect(size).toBeGreaterThan(2 * MiB);
    // Uncompressed: the snapshot fits, a second copy (the bundle) does not. (zstd would make the bundle fit.)
    const env = makeEnv(root, 'disk-bundle', etcd, { preflight: { freeSpaceFactor: 1 }, compression: { codec: 'none' } });
    const fs = mountSmallFs(join(env.dir, 'work'), Math.ceil(size * 1.5));
    mounts.push(fs);
    const r = await runCli(['backup', '--config', env.file, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout);
    expect(doc.phases).toHaveProperty('bundle');
    expect(doc.error).toMatch(/ENOSPC/);
    expect(doc, `reason ${doc.reason}: ${doc.error}`).toMatchObject({ result: 'failed', reason: 'bundle-failed' });
    expect(listFiles(join(env.dir, 'work'))).toEqual([]);
  });
});
