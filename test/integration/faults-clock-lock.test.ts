import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, FAKE_CLUSTER_BACKUP, runCli, type CliResult } from '../support/cli.js';
import type { EtcdCluster } from '../support/etcd.js';
import { makeEnv, startFilledEtcd, tempDir } from '../support/fault-env.js';
import { faketimeEnv, listFiles, sleep } from '../support/faults.js';
import { makeFakeMaster } from '../support/fake-master.js';

/**
 * Time and concurrency: the wall clock stepping back (NTP fixing a bad RTC,
 * a VM restored from a snapshot) and two operators (or an operator and a
 * cron job) starting a backup at the same moment without a daemon.
 */
let etcd: EtcdCluster;
let root: string;

beforeAll(async () => {
  root = tempDir('faults-clock-lock');
  // 4 MiB: a run takes long enough for a second one to overlap it.
  etcd = await startFilledEtcd({ mib: 4 });
});
afterAll(async () => {
  await etcd?.stop();
});

type BackupDoc = { id: string; result: string; reason?: string; error?: string; revision?: number; stores: Record<string, { result: string }> };

async function backup(file: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []): Promise<{ r: CliResult; doc: BackupDoc }> {
  const r = await runCli(['backup', '--config', file, '--json', ...extra], { env: { ETCD_BACKUPD_NO_DAEMON: '1', ...env } });
  return { r, doc: JSON.parse(r.stdout || '{}') as BackupDoc };
}

function manifestOf(dir: string, id: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, 'store', 'c1', id, 'manifest.json'), 'utf8'));
}

/** `20261125T120000Z-m0` -> `2026-11-25 12:00:00` (what FAKETIME takes). */
const fakeTimeOf = (id: string) => id.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z.*$/, '$1-$2-$3 $4:$5:$6');

describe('the clock is set back', () => {
  /** Two backups at the real time, the first pinned; the outbox keeps only the newest delivered one (local.keep: 1). */
  async function twoBackups(name: string) {
    const env = makeEnv(root, name, etcd, { retention: { keepLast: 2, hourly: 0, daily: 0, weekly: 0, monthly: 0 } });
    const first = (await backup(env.file, {}, ['--pin', '--label', 'pre-upgrade', '--reason', 'keep me'])).doc;
    expect(first.result).toBe('success');
    await etcd.put('/registry/after-first', 'x');
    const second = (await backup(env.file)).doc;
    expect(second.result).toBe('success');
    await etcd.put('/registry/after-second', 'x');
    return { env, first, second };
  }

  it('a backup taken while the clock reads the second of an existing backup gets a new id and overwrites nothing', async () => {
    const { env, first, second } = await twoBackups('clock-same-second');
    const before = manifestOf(env.dir, first.id);
    const { r, doc } = await backup(env.file, faketimeEnv(fakeTimeOf(first.id)));
    expect(r.code, r.stderr).toBe(0);
    // It did run at the faked time (within the same minute as the first backup).
    expect(String(manifestOf(env.dir, doc.id).startedAt).slice(0, 16)).toBe(fakeTimeOf(first.id).replace(' ', 'T').slice(0, 16));
    expect([first.id, second.id], `the new backup reused the id ${doc.id}`).not.toContain(doc.id);
    // The pinned pre-upgrade backup is still exactly what it was.
    expect(manifestOf(env.dir, first.id)).toEqual(before);
    expect(manifestOf(env.dir, doc.id)).toMatchObject({ id: doc.id, pinned: false });
  });

  describe('a backup taken at 2020-01-01, after backups at the real time', () => {
    let env: ReturnType<typeof makeEnv>;
    let ids: string[];
    let old: BackupDoc;
    beforeAll(async () => {
      const t = await twoBackups('clock-2020');
      env = t.env;
      ids = [t.first.id, t.second.id];
      const { r, doc } = await backup(env.file, faketimeEnv('2020-01-01 00:00:00'));
      expect(r.code, r.stderr).toBe(0);
      old = doc;
    });

    it('is committed under a unique id and is still there after its own run (whose retention sees it as the oldest)', async () => {
      expect(old).toMatchObject({ id: '20200101T000000Z-m0', result: 'success' });
      expect(ids).not.toContain(old.id);
      const l = await runCli(['list', '--config', env.file, '--json']);
      expect(l.code, l.stderr).toBe(0);
      const listed = (JSON.parse(l.stdout) as { backups: { id: string; revision: number }[] }).backups;
      // It holds the newest etcd data of all: reported success, it must exist.
      expect(old.revision).toBeGreaterThan(Math.max(...listed.filter((b) => b.id !== old.id).map((b) => b.revision)));
      expect(listed.map((b) => b.id), 'the run reported success, then its own retention pruned the backup it had just taken').toContain(old.id);
    });

    it('prune --dry-run works and keeps the pinned and the newest-verified backup', async () => {
      const p = await runCli(['prune', '--config', env.file, '--dry-run', '--json']);
      expect(p.code, p.stderr).toBe(0);
      const plan = JSON.parse(p.stdout) as { keep: { id: string; reasons: string[] }[]; prune: { id: string }[] };
      expect(plan.keep.find((k) => k.reasons.includes('newest-verified'))?.id).toBe(ids[1]);
      expect(plan.keep.find((k) => k.id === ids[0])?.reasons).toContain('pinned');
      expect(plan.prune.map((x) => x.id)).not.toContain(ids[1]);
    });
  });
});

describe('two CLI backups at once (no daemon)', () => {
  /** Starts a CLI backup as a process we can pause. */
  function startBackup(file: string) {
    const child = spawn(process.execPath, [CLI, 'backup', '--config', file, '--json'], {
      env: { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1', ETCD_BACKUPD_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const done = new Promise<CliResult>((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr })));
    return { child, done };
  }

  async function until(cond: () => boolean, what: string, timeoutMs = 60_000) {
    const end = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(5);
    }
  }

  it('the second is refused with lock-busy, naming the pid of the first; the first succeeds', async () => {
    // The first run must still hold the lock when the second (a new Node process, slow to start on a
    // loaded machine) asks for it: its source takes a few seconds.
    const slow = join(root, 'slow-cluster-backup.sh');
    writeFileSync(slow, `#!/bin/bash\nsleep 8\nexec ${FAKE_CLUSTER_BACKUP} "$@"\n`, { mode: 0o755 });
    const env = makeEnv(root, 'two-cli', etcd, { source: { type: 'cluster-backup', script: slow, timeout: '60s', env: makeFakeMaster(join(root, 'two-cli-master'), etcd.endpoints[0]!).env } });
    const a = startBackup(env.file);
    await until(() => existsSync(join(env.dir, 'work', 'run.lock')), 'the run lock');
    const b = await backup(env.file);
    expect(b.r.code).toBe(1);
    expect(b.doc).toMatchObject({ result: 'failed', reason: 'lock-busy' });
    expect(b.doc.error).toContain(`pid ${a.child.pid}`);
    const ra = await a.done;
    expect(ra.code, ra.stderr).toBe(0);
    const da = JSON.parse(ra.stdout) as BackupDoc;
    expect(da.result).toBe('success');
    // Exactly one committed backup, whole; the refused run left nothing.
    expect(readdirSync(join(env.dir, 'store', 'c1'))).toEqual([da.id]);
    expect((await runCli(['verify', '--config', env.file, da.id])).code).toBe(0);
    expect(readdirSync(join(env.dir, 'work', 'outbox'))).toEqual([da.id]);
  });

  it('a backup refused while the first is writing its bundle does not destroy that bundle', async () => {
    const env = makeEnv(root, 'two-cli-bundle', etcd);
    const a = startBackup(env.file);
    const outbox = join(env.dir, 'work', 'outbox');
    // The first run is sealing its bundle (outbox entry without a manifest yet): hold it there.
    await until(() => listFiles(outbox).some((f) => /\.backup\.tar(\.zst)?\.tmp-/.test(f)), 'the bundle being written');
    a.child.kill('SIGSTOP');
    let b;
    try {
      b = await backup(env.file);
    } finally {
      a.child.kill('SIGCONT');
    }
    expect(b.doc.reason).toBe('lock-busy');
    const ra = await a.done;
    const da = JSON.parse(ra.stdout || '{}') as BackupDoc;
    expect(da, ra.stderr.split('\n').filter((l) => /removing unusable|failed/.test(l)).join('\n') + b.r.stderr.split('\n').filter((l) => /removing unusable/.test(l)).join('\n')).toMatchObject({ result: 'success' });
    expect(b.r.stderr).not.toMatch(/removing unusable outbox entry/);
  });
});
