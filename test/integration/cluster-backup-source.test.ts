/**
 * The cluster-backup source against the faithful stand-in of the real
 * script (a fake master root, the `oc` stand-in, real etcd 3.4): a rollout,
 * the API server away and a stalled etcd each end with their own reason and
 * hint; `backup --force` goes through a rollout and its backup shows as
 * possibly dirty; a scheduled run retries a rollout within its slot. The
 * etcdctl source has the same stall watchdog.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { runBackupWithRetry } from '../../src/run/retry.js';
import { createSource } from '../../src/source/index.js';
import { ClusterBackupSource } from '../../src/source/cluster-backup.js';
import { BackupError } from '../../src/errors.js';
import { createStores } from '../../src/storage/index.js';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { freePort, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { makeFakeMaster, type FakeMaster } from '../support/fake-master.js';
import { metricValue, startDaemonProcess } from '../support/daemon.js';

let cluster: EtcdCluster;
let dir: string;

beforeAll(async () => {
  dir = tempDir('cb-source');
  cluster = await startEtcdCluster({ members: 1, tls: true });
  await cluster.putMany([['/kubernetes.io/configmaps/a', 'b']]);
});

afterAll(async () => {
  await cluster?.stop();
});

function setup(name: string, source: Record<string, unknown> = {}, endpoint = cluster.endpoints[0]!): { m: FakeMaster; file: string; cfg: Record<string, unknown>; d: string } {
  const d = join(dir, name);
  const m = makeFakeMaster(join(d, 'root'), endpoint, cluster.tls);
  const cfg = {
    cluster: 'test-cluster',
    node: 'master-0',
    workDir: join(d, 'work'),
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: m.env, ...source },
    etcd: { endpoints: [cluster.endpoints[0]!], caFile: cluster.tls!.caFile, certFile: cluster.tls!.certFile, keyFile: cluster.tls!.keyFile },
    stores: [{ name: 'nfs', type: 'local', path: join(d, 'store') }],
  };
  return { m, file: writeConfig(d, cfg), cfg, d };
}

async function backup(file: string, ...extra: string[]) {
  const r = await runCli(['backup', '--config', file, '--json', ...extra]);
  return { r, json: JSON.parse(r.stdout) as Record<string, unknown> };
}

const entries = (p: string): string[] => (existsSync(p) ? readdirSync(p) : []);

describe('cluster-backup.sh refusals name their cause', () => {
  it('a rollout: source-rollout-in-progress, a hint about retries and --force, no retry for a manual run', async () => {
    const { m, file, d } = setup('rollout');
    m.setProgressing('kube-controller-manager', 'True');
    const { r, json } = await backup(file);
    expect(r.code).toBe(1);
    expect(json).toMatchObject({ result: 'failed', reason: 'source-rollout-in-progress' });
    expect(json.error).toMatch(/kube-controller-manager operator is progressing/);
    expect(json.hint).toMatch(/kube-controller-manager operator is rolling out[\s\S]*backup --force/);
    expect(json.hint).not.toMatch(/code 5/);
    expect(json.attempts).toBeUndefined();
    expect(r.stderr).not.toMatch(/retrying within the slot/);
    expect(entries(join(d, 'store'))).toEqual([]);
  });

  it('the API server down: source-apiserver-unavailable', async () => {
    const { m, file } = setup('api-down');
    m.setApiDown(true);
    const { r, json } = await backup(file);
    expect(r.code).toBe(1);
    expect(json).toMatchObject({ result: 'failed', reason: 'source-apiserver-unavailable' });
    expect(json.hint).toMatch(/oc get co/);
  });

  it('backup --force goes through a rollout; list shows the backup as possibly dirty', async () => {
    const { m, file } = setup('force');
    m.setProgressing('etcd', 'True');
    const { r, json } = await backup(file, '--force');
    expect(r.code, r.stderr).toBe(0);
    expect(json).toMatchObject({ result: 'success' });
    const listed = await runCli(['list', '--config', file, '--json']);
    const backups = (JSON.parse(listed.stdout) as { backups: { id: string; possiblyDirty: boolean }[] }).backups;
    expect(backups).toEqual([expect.objectContaining({ id: json.id, possiblyDirty: true })]);
    const human = await runCli(['list', '--config', file]);
    expect(human.stdout).toMatch(/Dirty/);
    expect(human.stdout).toMatch(/POSSIBLY/);
    expect(human.stdout).toMatch(/1 backup\(s\) were taken with --force/);
    // A clean one is not marked.
    m.setProgressing('etcd', 'False');
    expect((await backup(file)).json).toMatchObject({ result: 'success' });
    const again = (JSON.parse((await runCli(['list', '--config', file, '--json'])).stdout) as { backups: { possiblyDirty: boolean }[] }).backups;
    expect(again.map((b) => b.possiblyDirty).sort()).toEqual([false, true]);
  });
});

describe('a stalled etcd', () => {
  it('etcd unreachable: the script waits on an empty .part; the watchdog kills it with source-stalled and removes the .part', async () => {
    const port = await freePort(); // nothing listens there
    const { file, d } = setup('stall', { stallTimeout: '2s', timeout: '10m' }, `https://127.0.0.1:${port}`);
    const { r, json } = await backup(file);
    expect(r.code).toBe(1);
    expect(json).toMatchObject({ result: 'failed', reason: 'source-stalled' });
    expect(json.hint).toMatch(/etcdctl endpoint health/);
    expect(r.stderr).toMatch(/the snapshot file stopped growing/);
    expect(entries(join(d, 'work', 'runs'))).toEqual([]);
    expect(entries(join(d, 'store'))).toEqual([]);
  });
});

describe('the source alone', () => {
  it('a stalled script leaves nothing in its run directory: neither the .part nor the static archive with its keys', async () => {
    const port = await freePort();
    const m = makeFakeMaster(join(dir, 'alone', 'root'), `https://127.0.0.1:${port}`, cluster.tls);
    const runDir = join(dir, 'alone', 'run');
    mkdirSync(runDir, { recursive: true });
    const src = new ClusterBackupSource({ script: FAKE_CLUSTER_BACKUP, timeoutSeconds: 600, stallSeconds: 1, env: m.env });
    const err = await src.produce({ runDir, log: pino({ level: 'silent' }), force: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupError);
    expect((err as BackupError).reason).toBe('source-stalled');
    expect(readdirSync(runDir)).toEqual([]);
  });
});

describe('a stalled etcd, etcdctl source', () => {
  it('etcdctl snapshot save waiting on an unreachable member is killed by the same watchdog', async () => {
    const port = await freePort(); // nothing listens there
    const d = join(dir, 'stall-etcdctl');
    mkdirSync(join(d, 'manifests'), { recursive: true });
    writeFileSync(join(d, 'manifests', 'etcd-pod.yaml'), 'kind: Pod\n');
    const file = writeConfig(d, {
      cluster: 'test-cluster',
      node: 'master-0',
      workDir: join(d, 'work'),
      source: { type: 'etcdctl', staticPodDir: join(d, 'manifests'), timeout: '10m', stallTimeout: '2s' },
      etcd: { endpoints: [`http://127.0.0.1:${port}`], timeout: '1s' },
      stores: [{ name: 'nfs', type: 'local', path: join(d, 'store') }],
    });
    // --force: the preflight cannot reach the member either.
    const { r, json } = await backup(file, '--force');
    expect(r.code).toBe(1);
    expect(json).toMatchObject({ result: 'failed', reason: 'source-stalled' });
    expect(json.error).toMatch(/etcdctl snapshot save: its snapshot file .* did not grow for 2s/);
    expect(entries(join(d, 'work', 'runs'))).toEqual([]);
  });
});

describe('retry within the slot', () => {
  const quiet = pino({ level: 'silent' });

  it('a rollout that ends while the run waits: the next attempt succeeds', async () => {
    const { m, cfg, d } = setup('retry');
    m.setProgressing('kube-apiserver', 'True');
    const config = parseConfig(cfg, join(d, 'config.yaml'));
    const stores = await createStores(config.stores);
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    // The rollout ends once the first refusal is logged.
    const logged = new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (lines.some((l) => l.msg === 'backup failed for a transient reason; retrying within the slot')) {
          clearInterval(t);
          m.setProgressing('kube-apiserver', 'False');
          resolve();
        }
      }, 20);
    });
    const run = await runBackupWithRetry(
      config,
      { source: createSource(config), stores, log, retryDelays: { firstMs: 500, maxMs: 1000 } },
      { trigger: 'schedule', retryUntil: new Date(Date.now() + 60_000) },
    );
    await logged;
    expect(run).toMatchObject({ result: 'success', attempts: 2 });
    const retry = lines.find((l) => l.msg === 'backup failed for a transient reason; retrying within the slot')!;
    expect(retry).toMatchObject({ reason: 'source-rollout-in-progress', attempt: 1 });
    expect(typeof retry.nextAttempt).toBe('string');
    expect(entries(join(d, 'store')).length).toBeGreaterThan(0);
  });

  it('gives up at the deadline, and shutdown ends the wait at once', async () => {
    const { m, cfg, d } = setup('retry-stop');
    m.setApiDown(true);
    const config = parseConfig(cfg, join(d, 'config.yaml'));
    const stores = await createStores(config.stores);
    const deps = { source: createSource(config), stores, log: quiet, retryDelays: { firstMs: 300, maxMs: 300 } };
    // A deadline shorter than the first delay: one attempt only.
    const once = await runBackupWithRetry(config, deps, { trigger: 'schedule', retryUntil: new Date(Date.now() + 100) });
    expect(once).toMatchObject({ result: 'failed', reason: 'source-apiserver-unavailable' });
    expect(once.attempts).toBeUndefined();
    // A long wait (1 h) ended by shutdown: the run returns its last failure.
    const stop = new AbortController();
    const pending = runBackupWithRetry(config, { ...deps, retryDelays: { firstMs: 3600_000, maxMs: 3600_000 }, stopRetries: stop.signal }, { trigger: 'schedule', retryUntil: new Date(Date.now() + 7200_000) });
    setTimeout(() => stop.abort(), 1500);
    expect(await pending).toMatchObject({ result: 'failed', reason: 'source-apiserver-unavailable' });
  });
});

/** The daemon's metrics once `ok` holds (they are recorded after the cycle's upkeep), or the last ones after 10 s. */
async function metricsWhen(daemon: { metrics(): Promise<string> }, ok: (text: string) => boolean): Promise<string> {
  let text = await daemon.metrics();
  for (let i = 0; i < 100 && !ok(text); i++) {
    await new Promise((r) => setTimeout(r, 100));
    text = await daemon.metrics();
  }
  return text;
}

describe('the daemon through a rollout', () => {
  it('scheduled runs get the next tick as their deadline, do not count as failures in a row, and succeed once the rollout ends', async () => {
    const { m, cfg, d } = setup('daemon');
    m.setProgressing('etcd', 'True');
    const file = writeConfig(d, { ...cfg, schedule: '*/3 * * * * *', metrics: { listen: '127.0.0.1:0' }, control: { socket: join(d, 'ctl.sock') }, shutdownTimeout: '20s' }, 'daemon.yaml');
    const daemon = await startDaemonProcess(file);
    try {
      // The first retry (30 s) would start after the next tick (3 s later): the slot ends first.
      const line = await daemon.waitFor((l) => l.msg === 'backup not retried: the slot ends before the next attempt', 30_000, 'a refused run');
      expect(line).toMatchObject({ reason: 'source-rollout-in-progress', attempts: 1 });
      const until = new Date(String(line.retryUntil));
      expect(until.getUTCSeconds() % 3).toBe(0);
      expect(until.getUTCMilliseconds()).toBe(0);
      // Recorded once the cycle (the run and its upkeep) is over: shortly after the log line.
      const text = await metricsWhen(daemon, (t) => metricValue(t, 'etcd_backup_failures_total', { reason: 'source-rollout-in-progress' })! >= 1);
      expect(metricValue(text, 'etcd_backup_consecutive_failures')).toBe(0);
      m.setProgressing('etcd', 'False');
      await daemon.waitFor((l) => l.msg === 'backup run finished', 30_000, 'a success after the rollout');
      const after = await metricsWhen(daemon, (t) => metricValue(t, 'etcd_backup_last_possibly_dirty') !== undefined);
      expect(metricValue(after, 'etcd_backup_last_possibly_dirty')).toBe(0);
      expect(metricValue(after, 'etcd_backup_consecutive_failures')).toBe(0);
    } finally {
      expect(await daemon.stop()).toBe(0);
    }
  });

  it('SIGTERM while a catch-up run waits for its next attempt: the wait ends, the daemon exits 0', async () => {
    const { m, cfg, d } = setup('daemon-stop');
    m.setApiDown(true);
    // Hourly: the catch-up run at start may retry until the next full hour.
    const file = writeConfig(d, { ...cfg, schedule: '0 0 * * * *', metrics: { listen: '127.0.0.1:0' }, control: { socket: join(d, 'ctl.sock') }, shutdownTimeout: '60s' }, 'daemon.yaml');
    const daemon = await startDaemonProcess(file);
    let code: number | null = -1;
    try {
      const retry = await daemon.waitFor((l) => l.msg === 'backup failed for a transient reason; retrying within the slot' || l.msg === 'backup not retried: the slot ends before the next attempt', 30_000, 'a refused catch-up run');
      // Started within the last ~36 s of an hour there is no retry to abandon: nothing to test then.
      if (retry.msg === 'backup not retried: the slot ends before the next attempt') return;
      expect(retry).toMatchObject({ reason: 'source-apiserver-unavailable', attempt: 1 });
    } finally {
      code = await daemon.stop();
    }
    expect(code).toBe(0);
    expect(daemon.lines.some((l) => l.msg === 'retry abandoned: the daemon is shutting down')).toBe(true);
    // Not the shutdown timeout's abort: the wait ended, the run was not killed.
    expect(daemon.lines.some((l) => l.msg === 'shutdown: run did not finish in time; aborting it (nothing unverified is committed)')).toBe(false);
  });
});
