import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir, writeConfig, FAKE_CLUSTER_BACKUP } from '../support/cli.js';
import { metricValue, startDaemonProcess } from '../support/daemon.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { makeFakeMaster } from '../support/fake-master.js';

/**
 * The daemon as users run it: a real process on a seconds-level schedule
 * against a real etcd, driven through its schedule, its control socket and
 * signals, observed through its log, its metrics and the store.
 */
let cluster: EtcdCluster;
let root: string;

beforeAll(async () => {
  root = tempDir('daemon');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  await cluster.putMany(Array.from({ length: 50 }, (_, i) => [`/registry/k${i}`, `v${i}`] as [string, string]));
});
afterAll(async () => {
  await cluster?.stop();
});

function config(name: string, extra: Record<string, unknown> = {}) {
  const dir = join(root, name);
  mkdirSync(join(dir, 'manifests'), { recursive: true });
  writeFileSync(join(dir, 'manifests', 'kube-apiserver.yaml'), 'kind: Pod\n');
  const cfg = {
    cluster: 'c1',
    node: 'm0',
    workDir: 'work',
    schedule: '*/2 * * * * *',
    source: { type: 'etcdctl', staticPodDir: 'manifests', timeout: '30s' },
    etcd: { endpoints: [cluster.endpoints[0]] },
    stores: [{ name: 'nfs', type: 'local', path: 'store' }],
    retention: { keepLast: 2, daily: 0, weekly: 0, monthly: 0 },
    local: { keep: 1, retryMin: '1s', retryMax: '2s' },
    metrics: { listen: '127.0.0.1:0' },
    control: { socket: 'ctl/control.sock' },
    shutdownTimeout: '20s',
    ...extra,
  };
  return { dir, file: writeConfig(dir, cfg) };
}

async function eventually(check: () => Promise<void>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

const committed = (dir: string) => {
  const p = join(dir, 'store', 'c1');
  return existsSync(p) ? readdirSync(p).filter((id) => existsSync(join(p, id, 'manifest.json'))).sort() : [];
};

describe('etcd-backupd run', () => {
  it('catches up at start, runs on schedule, prunes, serves metrics, answers the control socket, stops cleanly', async () => {
    const { dir, file } = config('main');
    const d = await startDaemonProcess(file);
    try {
      // No state yet: a catch-up run right away.
      const first = await d.waitFor((l) => l.msg === 'backup run finished' && l.trigger === 'catch-up', 60_000, 'catch-up run');
      expect(first.result).toBe('success');
      // Then scheduled runs.
      await d.waitFor((l) => l.msg === 'backup run finished' && l.trigger === 'schedule', 30_000, 'scheduled run');
      await d.waitFor((l) => l.msg === 'backup run finished' && l.trigger === 'schedule' && l !== first && d.lines.filter((x) => x.msg === 'backup run finished').length >= 3, 30_000, 'three runs');

      const sock = join(dir, 'ctl', 'control.sock');
      expect(statSync(sock).mode & 0o777).toBe(0o600);
      expect(statSync(join(dir, 'ctl')).mode & 0o777).toBe(0o700);

      // A CLI backup goes through the daemon and streams its progress back.
      let viaCli;
      for (let i = 0; i < 20; i++) {
        viaCli = await runCli(['backup', '--config', file, '--label', 'pre-upgrade-4.14.8', '--pin', '--reason', 'upgrade', '--json']);
        if (viaCli.code === 0) break;
        expect(JSON.parse(viaCli.stdout || '{}').reason ?? viaCli.stderr).toMatch(/lock-busy|already running/);
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(viaCli!.code, viaCli!.stderr).toBe(0);
      const b = JSON.parse(viaCli!.stdout);
      expect(b).toMatchObject({ result: 'success', trigger: 'manual' });
      expect(viaCli!.stderr).toContain('"msg":"backup run started"');
      const pinnedId = b.id as string;

      // Retention keeps the last 2 plus the pinned one, through more scheduled runs.
      const runsSoFar = d.lines.filter((x) => x.msg === 'backup run finished').length;
      await d.waitFor(() => d.lines.filter((x) => x.msg === 'backup run finished').length >= runsSoFar + 3, 40_000, 'more runs');
      await d.waitFor((l) => l.msg === 'pruned backup', 30_000, 'a prune');
      await new Promise((r) => setTimeout(r, 500));
      const ids = committed(dir);
      expect(ids).toContain(pinnedId);
      expect(ids.length).toBeLessThanOrEqual(4); // 2 kept + pinned + at most one being committed
      const m = JSON.parse(readFileSync(join(dir, 'store', 'c1', pinnedId, 'manifest.json'), 'utf8'));
      expect(m).toMatchObject({ pinned: true, label: 'pre-upgrade-4.14.8', reason: 'upgrade', trigger: 'manual' });

      // Unpin through the daemon: a marker beside the manifest, which stays byte for byte as committed.
      const manifestBefore = readFileSync(join(dir, 'store', 'c1', pinnedId, 'manifest.json'));
      const un = await runCli(['unpin', '--config', file, pinnedId]);
      expect(un.code, un.stderr).toBe(0);
      expect(readFileSync(join(dir, 'store', 'c1', pinnedId, 'manifest.json')).equals(manifestBefore)).toBe(true);
      const markers = readdirSync(join(dir, 'store', 'c1', pinnedId, 'pins'));
      expect(markers).toHaveLength(1);
      expect(markers[0]).toMatch(/^\d{8}T\d{6}\.\d{3}Z-unpin-[0-9a-f]{8}\.json$/);
      const listed = await runCli(['list', '--config', file, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
      expect((JSON.parse(listed.stdout) as { backups: { id: string; pinned: boolean }[] }).backups.find((x) => x.id === pinnedId)?.pinned).toBe(false);

      // Metrics.
      const text = await d.metrics();
      expect(metricValue(text, 'etcd_backup_runs_total', { result: 'success', trigger: 'catch-up' })).toBe(1);
      expect(metricValue(text, 'etcd_backup_runs_total', { result: 'success', trigger: 'schedule' })).toBeGreaterThanOrEqual(3);
      expect(metricValue(text, 'etcd_backup_runs_total', { result: 'success', trigger: 'manual' })).toBe(1);
      expect(metricValue(text, 'etcd_backup_next_run_timestamp_seconds')!).toBeGreaterThan(Date.now() / 1000 - 3);
      expect(metricValue(text, 'etcd_backup_last_success_timestamp_seconds', { store: 'nfs' })!).toBeGreaterThan(Date.now() / 1000 - 30);
      expect(metricValue(text, 'etcd_backup_schedule_interval_seconds')).toBe(2);
      expect(metricValue(text, 'etcd_backup_pruned_total', { store: 'nfs' })!).toBeGreaterThanOrEqual(1);
      expect((await fetch(`${d.metricsUrl}/healthz`)).status).toBe(200);
      expect((await fetch(`${d.metricsUrl}/readyz`)).status).toBe(200);

      // SIGTERM: exit 0, socket gone, no run left half-done.
      expect(await d.stop('SIGTERM')).toBe(0);
      expect(existsSync(sock)).toBe(false);
      expect(existsSync(join(dir, 'work', 'run.lock'))).toBe(false);
      expect(readdirSync(join(dir, 'work', 'runs'))).toEqual([]);
      const state = JSON.parse(readFileSync(join(dir, 'work', 'state.json'), 'utf8'));
      expect(state).toMatchObject({ lastResult: 'success', consecutiveFailures: 0 });
    } finally {
      await d.stop('SIGKILL');
    }
  });

  it('does not catch up when the last success is recent, and does when a slot was missed', async () => {
    const { dir, file } = config('catchup', { schedule: '0 3 * * *' });
    mkdirSync(join(dir, 'work'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date(Date.now() - 3600_000).toISOString(), consecutiveFailures: 0, stores: {} }));
    const d1 = await startDaemonProcess(file);
    await new Promise((r) => setTimeout(r, 1500));
    expect(d1.lines.some((l) => l.msg === 'backup run started')).toBe(false);
    expect(metricValue(await d1.metrics(), 'etcd_backup_schedule_interval_seconds')).toBe(86400);
    expect(await d1.stop()).toBe(0);

    writeFileSync(join(dir, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date(Date.now() - 2 * 86400_000).toISOString(), consecutiveFailures: 0, stores: {} }));
    const d2 = await startDaemonProcess(file);
    try {
      const run = await d2.waitFor((l) => l.msg === 'backup run finished', 60_000, 'catch-up');
      expect(run).toMatchObject({ trigger: 'catch-up', result: 'success' });
    } finally {
      expect(await d2.stop()).toBe(0);
    }
  });

  it('a SIGTERM right as the daemon comes up is a graceful stop (exit 0), never death by the signal', async () => {
    // The start-up log line used to come before the signal handlers: a stop in that window killed node.
    for (let i = 0; i < 5; i++) {
      const { file } = config(`early-stop-${i}`, { schedule: '0 0 1 1 *' });
      const d = await startDaemonProcess(file);
      expect(await d.stop('SIGTERM'), `attempt ${i}`).toBe(0);
    }
  });

  it('runs at the configured lower CPU and I/O priority, every thread (what the DaemonSet cannot set)', async () => {
    const { file } = config('priority', { schedule: '0 0 1 1 *', priority: { nice: 13, ioClass: 'idle' } });
    const d = await startDaemonProcess(file);
    try {
      await d.metrics(); // started and serving
      const pid = d.child.pid!;
      const tids = readdirSync(`/proc/${pid}/task`);
      expect(tids.length).toBeGreaterThan(1);
      for (const tid of tids) {
        // Field 19 of stat is the nice value; the command name (field 2) may hold spaces, so count from its ")".
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        expect(Number(fields[16]), `thread ${tid}`).toBe(13);
      }
      const io = execFileSync('ionice', ['-p', String(pid)], { encoding: 'utf8' }).trim();
      expect(io).toBe('idle');
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });

  it('skips and counts ticks while a run is in progress, and SIGTERM aborts a hung run within the shutdown timeout', async () => {
    const { file } = config('busy', {
      schedule: '* * * * * *',
      source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: { ...makeFakeMaster(join(root, 'busy-master'), cluster.endpoints[0]!).env, FAKE_BACKUP_HANG: '1' } },
      shutdownTimeout: '2s',
    });
    const d = await startDaemonProcess(file);
    try {
      await d.waitFor((l) => l.msg === 'schedule tick skipped: a run is still in progress', 20_000, 'skipped tick');
      const text = await d.metrics();
      expect(metricValue(text, 'etcd_backup_skipped_ticks_total', { reason: 'busy' })!).toBeGreaterThanOrEqual(1);
      const t0 = Date.now();
      expect(await d.stop('SIGTERM')).toBe(0);
      expect(Date.now() - t0).toBeLessThan(15_000);
      const failed = d.lines.find((l) => l.msg === 'backup run failed');
      expect(failed).toMatchObject({ result: 'failed', reason: 'source-failed', err: 'cluster-backup.sh was stopped because the run was aborted' });
    } finally {
      await d.stop('SIGKILL');
    }
  });

  it('keeps an undelivered bundle in the outbox and delivers it when the store comes back', async () => {
    const { dir, file } = config('outbox', { schedule: '0 3 * * *' });
    // The store path is a file: every write fails (ENOTDIR), as on a broken mount.
    writeFileSync(join(dir, 'store'), 'not a directory');
    const d = await startDaemonProcess(file);
    try {
      const run = await d.waitFor((l) => l.msg === 'backup run failed', 60_000, 'failed run');
      expect(run.reason).toBe('upload-failed');
      const outbox = readdirSync(join(dir, 'work', 'outbox'));
      expect(outbox).toHaveLength(1);
      await eventually(async () => expect(metricValue(await d.metrics(), 'etcd_backup_outbox_backlog')).toBe(1));
      let text = await d.metrics();
      expect(metricValue(text, 'etcd_backup_failures_total', { reason: 'upload-failed' })).toBe(1);
      expect(metricValue(text, 'etcd_backup_store_failures_total', { store: 'nfs', reason: 'upload-failed' })).toBe(1);

      rmSync(join(dir, 'store'));
      await d.waitFor((l) => l.msg === 'outbox backlog delivered', 30_000, 'backlog delivery');
      expect(committed(dir)).toEqual(outbox);
      const v = await runCli(['verify', '--config', file, outbox[0]!]);
      expect(v.code, v.stderr).toBe(0);
      await eventually(async () => expect(metricValue(await d.metrics(), 'etcd_backup_outbox_backlog')).toBe(0));
      text = await d.metrics();
      expect(metricValue(text, 'etcd_backup_last_success_timestamp_seconds', { store: 'nfs' })!).toBeGreaterThan(Date.now() / 1000 - 30);
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });

  it('runs restore drills on their own schedule and reports them in metrics', async () => {
    const { dir, file } = config('drill', { schedule: '0 3 * * *', drill: { schedule: '*/3 * * * * *', timeout: '2m', sampleKeys: 10 } });
    const d = await startDaemonProcess(file);
    try {
      await d.waitFor((l) => l.msg === 'backup run finished' && l.trigger === 'catch-up', 60_000, 'catch-up backup');
      const passed = await d.waitFor((l) => l.msg === 'restore drill passed', 120_000, 'a drill');
      expect(passed.revision).toBeGreaterThan(0);
      await eventually(async () => {
        const text = await d.metrics();
        expect(metricValue(text, 'etcd_backup_drill_last_success_timestamp_seconds')!).toBeGreaterThan(Date.now() / 1000 - 120);
        expect(metricValue(text, 'etcd_backup_drill_runs_total', { result: 'success' })!).toBeGreaterThanOrEqual(1);
      });
      expect(readdirSync(join(dir, 'work', 'drill'))).toEqual([]);
    } finally {
      expect(await d.stop()).toBe(0);
    }
    expect(JSON.parse(readFileSync(join(dir, 'work', 'state.json'), 'utf8')).drill).toMatchObject({ consecutiveFailures: 0 });
  });

  it('refuses to start a second daemon on the same control socket', async () => {
    const { file } = config('twice', { schedule: '0 3 * * *' });
    const d = await startDaemonProcess(file);
    try {
      const second = await runCli(['run', '--config', file], { timeoutMs: 20_000 });
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(/another etcd-backupd daemon already listens/);
    } finally {
      await d.stop();
    }
  });
});
