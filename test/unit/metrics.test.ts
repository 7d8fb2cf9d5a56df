/**
 * BackupMetrics: what a run, an inventory, an outbox scan... turn into, read
 * back from the Prometheus text exposition the way a scrape sees it.
 */
import { describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import type { PreflightCheck } from '../../src/etcd/health.js';
import { BackupMetrics, RUN_FAILURE_REASONS, STORE_FAILURE_REASONS } from '../../src/metrics/metrics.js';
import type { RunResult } from '../../src/run/backup.js';
import { VERSION } from '../../src/version.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text format (0.0.4): sample lines and the families named by `# TYPE`. */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) {
      types.set(t[1]!, t[2]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    const v = m[3]!;
    samples.push({ name: m[1]!, labels, value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v) });
  }
  return { samples, types };
}

async function scrape(m: BackupMetrics): Promise<{ samples: Sample[]; types: Map<string, string>; text: string }> {
  const text = await m.render();
  return { ...parse(text), text };
}

/** The value of the one sample with exactly these labels (le excluded unless given), or undefined when absent. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = samples.filter((s) => s.name === name && Object.keys(labels).length === Object.keys(s.labels).length && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0]?.value;
}

function series(samples: Sample[], name: string): Sample[] {
  return samples.filter((s) => s.name === name);
}

const CLUSTER = 'prod-east';
const NODE = 'master-0';
const T0 = Date.parse('2026-11-25T02:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();
const sec = (ms: number): number => ms / 1000;

function idAt(ms: number): string {
  return `${iso(ms).replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '')}-${NODE}`;
}

const HEALTHY: PreflightCheck[] = [
  { name: 'endpoint-health', ok: true, detail: 'https://127.0.0.1:2379 is healthy' },
  { name: 'member-list', ok: true, detail: '3 members' },
  { name: 'members-reachable', ok: true, detail: 'all 3 members answer' },
  { name: 'quorum', ok: true, detail: '3 of 3 voting members answer, quorum needs 2' },
  { name: 'leader', ok: true, detail: 'leader master-1' },
  { name: 'disk-space', ok: true, detail: '40 GiB free' },
];

function manifestFor(id: string, start: number, opts: { size: number; snapshot: number; revision: number; keys: number }): Manifest {
  return {
    format: 1,
    id,
    cluster: CLUSTER,
    node: NODE,
    trigger: 'schedule',
    pinned: false,
    createdAt: iso(start),
    startedAt: iso(start),
    finishedAt: iso(start + 60_000),
    tool: { name: 'etcd-backupd', version: VERSION },
    source: { type: 'cluster-backup', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] },
    etcd: { version: '3.5.9', clusterId: '14841639068965178418', memberId: '10276657743932975437', leader: '10276657743932975437', revision: opts.revision, totalKey: opts.keys, hash: 3102514566, totalSize: opts.snapshot - 32 },
    artifacts: [
      { name: 'snapshot_2026-11-25_020000.db', size: opts.snapshot, sha256: 'a'.repeat(64) },
      { name: 'static_kuberesources_2026-11-25_020000.tar.gz', size: 81_234, sha256: 'b'.repeat(64) },
    ],
    object: { key: `${CLUSTER}/${id}/backup.tar`, size: opts.size, sha256: 'c'.repeat(64), encrypted: false, recipients: [] },
  };
}

function successRun(start = T0, trigger: RunResult['trigger'] = 'schedule'): RunResult {
  const id = idAt(start);
  const manifest = manifestFor(id, start, { size: 104_960_000, snapshot: 104_857_632, revision: 987_654, keys: 12_345 });
  return {
    id,
    result: 'success',
    trigger,
    startedAt: iso(start),
    finishedAt: iso(start + 75_000),
    phases: { preflight: 0.3, source: 41.5, 'verify-local': 2.25, bundle: 6, deliver: 24 },
    stores: {
      s3: { result: 'success', key: manifest.object!.key, size: manifest.object!.size, sha256: manifest.object!.sha256, uploadSeconds: 12.5, verifySeconds: 8 },
      nfs: { result: 'success', key: manifest.object!.key, size: manifest.object!.size, sha256: manifest.object!.sha256, uploadSeconds: 2, verifySeconds: 1.5 },
    },
    preflight: { checks: HEALTHY, forced: false },
    manifest,
  };
}

/** Delivered to nfs, but s3 kept other bytes than those sent. */
function remoteVerifyFailedRun(start: number): RunResult {
  const id = idAt(start);
  const manifest = manifestFor(id, start, { size: 50_000_000, snapshot: 49_000_032, revision: 999_999, keys: 99 });
  return {
    id,
    result: 'failed',
    reason: 'remote-verify-failed',
    error: `1 of 2 stores failed; s3: store s3: ${manifest.object!.key} read back as 10 bytes with sha256 ${'d'.repeat(64)}`,
    hint: 'the verified bundle stays in the outbox under workDir; fix the store and run the backup again',
    trigger: 'schedule',
    startedAt: iso(start),
    finishedAt: iso(start + 90_000),
    phases: { preflight: 0.2, source: 40, 'verify-local': 2, bundle: 5, deliver: 42 },
    stores: {
      s3: { result: 'failed', reason: 'remote-verify-failed', error: `store s3: ${manifest.object!.key} holds 10 bytes`, key: manifest.object!.key, uploadSeconds: 30 },
      nfs: { result: 'success', key: manifest.object!.key, size: manifest.object!.size, sha256: manifest.object!.sha256, uploadSeconds: 3, verifySeconds: 1 },
    },
    preflight: { checks: HEALTHY, forced: false },
    manifest,
  };
}

/** Stopped by preflight: no quorum, two members down. Nothing reached a store. */
function preflightFailedRun(start: number, trigger: RunResult['trigger'] = 'schedule'): RunResult {
  return {
    id: idAt(start),
    result: 'failed',
    reason: 'preflight-no-quorum',
    error: 'preflight failed: quorum: 1 of 3 voting members answer, quorum needs 2',
    trigger,
    startedAt: iso(start),
    finishedAt: iso(start + 3_000),
    phases: { preflight: 3 },
    stores: {},
    preflight: {
      forced: false,
      checks: [
        { name: 'endpoint-health', ok: false, detail: 'https://127.0.0.1:2379 reports unhealthy' },
        { name: 'member-list', ok: true, detail: '3 members' },
        { name: 'members-reachable', ok: false, detail: 'unreachable: master-1, master-2' },
        { name: 'quorum', ok: false, detail: '1 of 3 voting members answer, quorum needs 2' },
        { name: 'leader', ok: false, detail: 'no leader (reported 0)' },
      ],
    },
  };
}

function newMetrics(): BackupMetrics {
  const m = new BackupMetrics({ cluster: CLUSTER, node: NODE, startTime: new Date(T0 - 3_600_000) });
  m.initStores(['s3', 'nfs']);
  return m;
}

const ALLOWED_LABELS = new Set(['store', 'result', 'reason', 'phase', 'trigger', 'check', 'le', 'kind', 'why']);

describe('BackupMetrics before any run', () => {
  it('exposes the info series, start time and zeroed counters, and leaves unknown values absent', async () => {
    const { samples, types } = await scrape(newMetrics());
    expect(value(samples, 'etcd_backup_info', { cluster: CLUSTER, node: NODE, version: VERSION })).toBe(1);
    expect(value(samples, 'etcd_backup_start_time_seconds')).toBe(sec(T0 - 3_600_000));
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(0);

    for (const result of ['success', 'failed']) {
      for (const trigger of ['schedule', 'manual', 'catch-up']) expect(value(samples, 'etcd_backup_runs_total', { result, trigger })).toBe(0);
    }
    for (const reason of RUN_FAILURE_REASONS) expect(value(samples, 'etcd_backup_failures_total', { reason })).toBe(0);
    for (const store of ['s3', 'nfs']) {
      for (const reason of STORE_FAILURE_REASONS) expect(value(samples, 'etcd_backup_store_failures_total', { store, reason })).toBe(0);
      expect(value(samples, 'etcd_backup_pruned_total', { store })).toBe(0);
    }
    expect(value(samples, 'etcd_backup_skipped_ticks_total', { reason: 'busy' })).toBe(0);
    expect(value(samples, 'etcd_backup_outbox_dropped_total')).toBe(0);

    // Known families, no sample yet: a 0 here would be a lie (and would fire EtcdBackupMissing).
    for (const name of [
      'etcd_backup_last_run_success_timestamp_seconds',
      'etcd_backup_last_attempt_timestamp_seconds',
      'etcd_backup_last_success_timestamp_seconds',
      'etcd_backup_last_failure_timestamp_seconds',
      'etcd_backup_next_run_timestamp_seconds',
      'etcd_backup_schedule_interval_seconds',
      'etcd_backup_size_bytes',
      'etcd_backup_last_possibly_dirty',
      'etcd_backup_snapshot_size_bytes',
      'etcd_backup_etcd_revision',
      'etcd_backup_etcd_keys',
      'etcd_backup_backups',
      'etcd_backup_backups_pinned',
      'etcd_backup_oldest_backup_timestamp_seconds',
      'etcd_backup_newest_backup_timestamp_seconds',
      'etcd_backup_outbox_backlog',
      'etcd_backup_outbox_backlog_bytes',
      'etcd_backup_outbox_oldest_timestamp_seconds',
      'etcd_backup_preflight_check_ok',
      'etcd_backup_etcd_members_unreachable',
      'etcd_backup_upload_duration_seconds',
      'etcd_backup_remote_verify_duration_seconds',
    ]) {
      expect(types.get(name), name).toBe('gauge');
      expect(series(samples, name), name).toEqual([]);
    }
    expect(types.get('etcd_backup_phase_duration_seconds')).toBe('histogram');
    expect(types.get('etcd_backup_run_duration_seconds')).toBe('histogram');
  });

  it('follows the naming rules: prefix, _total counters, no other counters', async () => {
    const { types } = await scrape(newMetrics());
    for (const [name, type] of types) {
      expect(name.startsWith('etcd_backup_'), name).toBe(true);
      expect(type === 'counter', name).toBe(name.endsWith('_total'));
    }
  });
});

describe('recordRun', () => {
  it('records a successful run', async () => {
    const m = newMetrics();
    const run = successRun();
    m.recordRun(run);
    const { samples } = await scrape(m);

    expect(value(samples, 'etcd_backup_runs_total', { result: 'success', trigger: 'schedule' })).toBe(1);
    expect(value(samples, 'etcd_backup_runs_total', { result: 'failed', trigger: 'schedule' })).toBe(0);
    expect(series(samples, 'etcd_backup_failures_total').every((s) => s.value === 0)).toBe(true);
    expect(value(samples, 'etcd_backup_last_attempt_timestamp_seconds')).toBe(sec(T0));
    expect(value(samples, 'etcd_backup_last_run_success_timestamp_seconds')).toBe(sec(T0 + 75_000));
    expect(value(samples, 'etcd_backup_last_success_timestamp_seconds', { store: 's3' })).toBe(sec(T0 + 75_000));
    expect(value(samples, 'etcd_backup_last_success_timestamp_seconds', { store: 'nfs' })).toBe(sec(T0 + 75_000));
    expect(series(samples, 'etcd_backup_last_failure_timestamp_seconds')).toEqual([]);
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(0);

    expect(value(samples, 'etcd_backup_size_bytes')).toBe(104_960_000);
    expect(value(samples, 'etcd_backup_last_possibly_dirty')).toBe(0);
    expect(value(samples, 'etcd_backup_snapshot_size_bytes')).toBe(104_857_632);
    expect(value(samples, 'etcd_backup_etcd_revision')).toBe(987_654);
    expect(value(samples, 'etcd_backup_etcd_keys')).toBe(12_345);

    expect(value(samples, 'etcd_backup_upload_duration_seconds', { store: 's3' })).toBe(12.5);
    expect(value(samples, 'etcd_backup_remote_verify_duration_seconds', { store: 's3' })).toBe(8);
    expect(value(samples, 'etcd_backup_upload_duration_seconds', { store: 'nfs' })).toBe(2);
    expect(value(samples, 'etcd_backup_remote_verify_duration_seconds', { store: 'nfs' })).toBe(1.5);

    for (const [phase, secs] of Object.entries(run.phases)) {
      expect(value(samples, 'etcd_backup_last_phase_duration_seconds', { phase })).toBe(secs);
      expect(value(samples, 'etcd_backup_phase_duration_seconds_count', { phase })).toBe(1);
      expect(value(samples, 'etcd_backup_phase_duration_seconds_sum', { phase })).toBe(secs);
      expect(value(samples, 'etcd_backup_phase_duration_seconds_bucket', { phase, le: '+Inf' })).toBe(1);
    }
    // source took 41.5 s: not in the 30 s bucket, in the 60 s one.
    expect(value(samples, 'etcd_backup_phase_duration_seconds_bucket', { phase: 'source', le: '30' })).toBe(0);
    expect(value(samples, 'etcd_backup_phase_duration_seconds_bucket', { phase: 'source', le: '60' })).toBe(1);
    // Buckets span 0.1 s .. 2 h.
    const les = series(samples, 'etcd_backup_run_duration_seconds_bucket').map((s) => s.labels.le);
    expect(les[0]).toBe('0.1');
    expect(les).toContain('7200');
    expect(value(samples, 'etcd_backup_run_duration_seconds_count')).toBe(1);
    expect(value(samples, 'etcd_backup_run_duration_seconds_sum')).toBe(75);

    for (const c of HEALTHY) expect(value(samples, 'etcd_backup_preflight_check_ok', { check: c.name })).toBe(1);
    expect(value(samples, 'etcd_backup_etcd_members_unreachable')).toBe(0);
  });

  it('records a failed run: reason, per-store failure, streak, and keeps the last success values', async () => {
    const m = newMetrics();
    m.recordRun(successRun());
    const t1 = T0 + 3_600_000;
    m.recordRun(remoteVerifyFailedRun(t1));
    const { samples } = await scrape(m);

    expect(value(samples, 'etcd_backup_runs_total', { result: 'success', trigger: 'schedule' })).toBe(1);
    expect(value(samples, 'etcd_backup_runs_total', { result: 'failed', trigger: 'schedule' })).toBe(1);
    expect(value(samples, 'etcd_backup_failures_total', { reason: 'remote-verify-failed' })).toBe(1);
    expect(series(samples, 'etcd_backup_failures_total').reduce((a, s) => a + s.value, 0)).toBe(1);
    expect(value(samples, 'etcd_backup_store_failures_total', { store: 's3', reason: 'remote-verify-failed' })).toBe(1);
    expect(value(samples, 'etcd_backup_store_failures_total', { store: 'nfs', reason: 'remote-verify-failed' })).toBe(0);
    expect(value(samples, 'etcd_backup_last_failure_timestamp_seconds', { store: 's3' })).toBe(sec(t1 + 90_000));
    expect(value(samples, 'etcd_backup_last_failure_timestamp_seconds', { store: 'nfs' })).toBeUndefined();
    // nfs holds a verified copy of this run even though the run failed as a whole.
    expect(value(samples, 'etcd_backup_last_success_timestamp_seconds', { store: 'nfs' })).toBe(sec(t1 + 90_000));
    expect(value(samples, 'etcd_backup_last_success_timestamp_seconds', { store: 's3' })).toBe(sec(T0 + 75_000));
    expect(value(samples, 'etcd_backup_last_run_success_timestamp_seconds')).toBe(sec(T0 + 75_000));
    expect(value(samples, 'etcd_backup_last_attempt_timestamp_seconds')).toBe(sec(t1));
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(1);
    expect(value(samples, 'etcd_backup_upload_duration_seconds', { store: 's3' })).toBe(30);
    // No verify time for s3 in this run: the gauge keeps the last one measured.
    expect(value(samples, 'etcd_backup_remote_verify_duration_seconds', { store: 's3' })).toBe(8);
    // Size, revision, keys are those of the last successful run.
    expect(value(samples, 'etcd_backup_size_bytes')).toBe(104_960_000);
    expect(value(samples, 'etcd_backup_etcd_revision')).toBe(987_654);
    expect(value(samples, 'etcd_backup_run_duration_seconds_count')).toBe(2);
    expect(value(samples, 'etcd_backup_run_duration_seconds_sum')).toBe(165);
  });

  it('counts failures in a row and resets on success', async () => {
    const m = newMetrics();
    m.recordRun(preflightFailedRun(T0));
    m.recordRun(preflightFailedRun(T0 + 3_600_000, 'catch-up'));
    let { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(2);
    expect(value(samples, 'etcd_backup_failures_total', { reason: 'preflight-no-quorum' })).toBe(2);
    expect(value(samples, 'etcd_backup_runs_total', { result: 'failed', trigger: 'catch-up' })).toBe(1);
    expect(series(samples, 'etcd_backup_last_run_success_timestamp_seconds')).toEqual([]);
    expect(series(samples, 'etcd_backup_size_bytes')).toEqual([]);
    // Nothing reached a store: no store failure, no store timestamps.
    expect(series(samples, 'etcd_backup_store_failures_total').every((s) => s.value === 0)).toBe(true);
    expect(series(samples, 'etcd_backup_last_failure_timestamp_seconds')).toEqual([]);
    expect(value(samples, 'etcd_backup_preflight_check_ok', { check: 'quorum' })).toBe(0);
    expect(value(samples, 'etcd_backup_preflight_check_ok', { check: 'member-list' })).toBe(1);
    expect(value(samples, 'etcd_backup_preflight_check_ok', { check: 'disk-space' })).toBeUndefined();
    expect(value(samples, 'etcd_backup_etcd_members_unreachable')).toBe(2);

    m.recordRun(successRun(T0 + 7_200_000, 'manual'));
    ({ samples } = await scrape(m));
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(0);
    expect(value(samples, 'etcd_backup_runs_total', { result: 'success', trigger: 'manual' })).toBe(1);
    expect(value(samples, 'etcd_backup_last_run_success_timestamp_seconds')).toBe(sec(T0 + 7_275_000));
    expect(value(samples, 'etcd_backup_preflight_check_ok', { check: 'quorum' })).toBe(1);
    expect(value(samples, 'etcd_backup_preflight_check_ok', { check: 'disk-space' })).toBe(1);
    expect(value(samples, 'etcd_backup_etcd_members_unreachable')).toBe(0);
  });

  it('replaces the preflight checks with those of the last run', async () => {
    const m = newMetrics();
    m.recordRun(successRun());
    m.recordRun({
      ...preflightFailedRun(T0 + 60_000),
      reason: 'preflight-unhealthy',
      preflight: { forced: false, checks: [{ name: 'endpoint-health', ok: false, detail: 'no configured etcd endpoint answers' }] },
    });
    const { samples } = await scrape(m);
    expect(series(samples, 'etcd_backup_preflight_check_ok')).toEqual([{ name: 'etcd_backup_preflight_check_ok', labels: { check: 'endpoint-health' }, value: 0 }]);
    // The members were not asked: unknown, not "0 unreachable".
    expect(series(samples, 'etcd_backup_etcd_members_unreachable')).toEqual([]);
  });

  it('counts a run refused by the lock without calling it a failed backup', async () => {
    const m = newMetrics();
    m.recordRun(successRun());
    m.recordRun({ id: idAt(T0 + 10_000), result: 'failed', reason: 'lock-busy', error: 'another run holds the lock', trigger: 'manual', startedAt: iso(T0 + 10_000), finishedAt: iso(T0 + 10_001), phases: {}, stores: {} });
    const { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_runs_total', { result: 'failed', trigger: 'manual' })).toBe(1);
    expect(value(samples, 'etcd_backup_failures_total', { reason: 'lock-busy' })).toBe(1);
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(0);
    expect(value(samples, 'etcd_backup_last_attempt_timestamp_seconds')).toBe(sec(T0));
    expect(value(samples, 'etcd_backup_run_duration_seconds_count')).toBe(1);
  });

  it('a refusal during a rollout or with the API server away is a failure, not one in a row (no EtcdBackupFailing page through an upgrade)', async () => {
    const m = newMetrics();
    m.recordRun(successRun());
    for (const [i, reason] of (['source-rollout-in-progress', 'source-apiserver-unavailable', 'source-rollout-in-progress'] as const).entries()) {
      m.recordRun({ id: idAt(T0 + 10_000 * (i + 1)), result: 'failed', reason, error: 'refused', trigger: 'schedule', startedAt: iso(T0 + 10_000 * (i + 1)), finishedAt: iso(T0 + 10_000 * (i + 1) + 1), phases: {}, stores: {} });
    }
    m.recordRun({ id: idAt(T0 + 50_000), result: 'failed', reason: 'source-stalled', error: 'stalled', trigger: 'schedule', startedAt: iso(T0 + 50_000), finishedAt: iso(T0 + 50_001), phases: {}, stores: {} });
    const { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_failures_total', { reason: 'source-rollout-in-progress' })).toBe(2);
    expect(value(samples, 'etcd_backup_failures_total', { reason: 'source-apiserver-unavailable' })).toBe(1);
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(1); // only the stall counts
    expect(value(samples, 'etcd_backup_last_attempt_timestamp_seconds')).toBe(sec(T0 + 50_000));
  });

  it('a --force run marks the last success possibly dirty until a clean one', async () => {
    const m = newMetrics();
    const dirty = successRun();
    dirty.manifest = { ...dirty.manifest!, source: { type: 'cluster-backup', possiblyDirty: true } };
    m.recordRun(dirty);
    expect(value((await scrape(m)).samples, 'etcd_backup_last_possibly_dirty')).toBe(1);
    m.recordRun(successRun(T0 + 60_000));
    expect(value((await scrape(m)).samples, 'etcd_backup_last_possibly_dirty')).toBe(0);
  });

  it('a failed run without a reason is counted as internal', async () => {
    const m = newMetrics();
    m.recordRun({ ...preflightFailedRun(T0), reason: undefined, preflight: undefined });
    const { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_failures_total', { reason: 'internal' })).toBe(1);
  });
});

describe('label cardinality', () => {
  it('never carries a backup id, key, hash or free text; series do not grow with runs', async () => {
    const m = newMetrics();
    m.recordRun(successRun());
    m.recordRun(remoteVerifyFailedRun(T0 + 3_600_000));
    m.recordRun(preflightFailedRun(T0 + 7_200_000));
    const before = (await scrape(m)).samples.map((s) => `${s.name}${JSON.stringify(s.labels)}`).sort();

    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      const t = T0 + (i + 3) * 3_600_000;
      const r = i % 3 === 0 ? successRun(t) : i % 3 === 1 ? remoteVerifyFailedRun(t) : preflightFailedRun(t);
      ids.push(r.id);
      m.recordRun(r);
    }
    const { samples, text } = await scrape(m);
    const after = samples.map((s) => `${s.name}${JSON.stringify(s.labels)}`).sort();
    expect(after).toEqual(before);

    for (const id of ids) expect(text).not.toContain(id);
    expect(text).not.toMatch(/\d{8}T\d{6}Z/);
    expect(text).not.toContain('backup.tar');
    expect(text).not.toMatch(/[0-9a-f]{64}/);
    expect(text).not.toContain('unreachable: master');
    expect(text).not.toContain('store s3:');

    for (const s of samples) {
      for (const k of Object.keys(s.labels)) {
        if (s.name === 'etcd_backup_info') expect(['cluster', 'node', 'version']).toContain(k);
        // One series, bounded by the masters' names.
        else if (s.name === 'etcd_backup_last_slot_timestamp_seconds') expect(k).toBe('winner');
        else expect(ALLOWED_LABELS.has(k), `${s.name} has label ${k}`).toBe(true);
      }
    }
    // cluster and node appear on the info series only: the cluster's own gauge has none either, so the rules' `max by (cluster)` is the same for every family.
    expect(samples.filter((s) => s.labels.cluster !== undefined || s.labels.node !== undefined).map((s) => s.name).sort()).toEqual(['etcd_backup_info']);
  });

  it('keeps odd phase names out of the labels', async () => {
    const m = newMetrics();
    m.recordRun({ ...successRun(), phases: { preflight: 1, 'Evil Phase {"x"}': 2, [idAt(T0)]: 3 } });
    const { samples } = await scrape(m);
    expect(series(samples, 'etcd_backup_last_phase_duration_seconds').map((s) => s.labels.phase)).toEqual(['preflight']);
  });
});

describe('inventory, outbox, schedule and the rest', () => {
  it('setInventory sets counts and oldest/newest per store, and drops unknown ends', async () => {
    const m = newMetrics();
    const oldest = new Date('2026-01-01T02:00:00Z');
    const newest = new Date('2026-11-25T02:00:00Z');
    m.setInventory('s3', { count: 19, pinned: 2, oldest, newest });
    m.setInventory('nfs', { count: 0, pinned: 0 });
    let { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_backups', { store: 's3' })).toBe(19);
    expect(value(samples, 'etcd_backup_backups_pinned', { store: 's3' })).toBe(2);
    expect(value(samples, 'etcd_backup_oldest_backup_timestamp_seconds', { store: 's3' })).toBe(sec(oldest.getTime()));
    expect(value(samples, 'etcd_backup_newest_backup_timestamp_seconds', { store: 's3' })).toBe(sec(newest.getTime()));
    expect(value(samples, 'etcd_backup_backups', { store: 'nfs' })).toBe(0);
    expect(value(samples, 'etcd_backup_backups_pinned', { store: 'nfs' })).toBe(0);
    expect(value(samples, 'etcd_backup_oldest_backup_timestamp_seconds', { store: 'nfs' })).toBeUndefined();

    m.setInventory('s3', { count: 0, pinned: 0 });
    ({ samples } = await scrape(m));
    expect(value(samples, 'etcd_backup_backups', { store: 's3' })).toBe(0);
    expect(series(samples, 'etcd_backup_oldest_backup_timestamp_seconds')).toEqual([]);
    expect(series(samples, 'etcd_backup_newest_backup_timestamp_seconds')).toEqual([]);
  });

  it('setOutbox sets the backlog, and the oldest only while there is a backlog', async () => {
    const m = newMetrics();
    const oldest = new Date(T0);
    m.setOutbox({ count: 3, bytes: 314_572_800, oldest });
    let { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_outbox_backlog')).toBe(3);
    expect(value(samples, 'etcd_backup_outbox_backlog_bytes')).toBe(314_572_800);
    expect(value(samples, 'etcd_backup_outbox_oldest_timestamp_seconds')).toBe(sec(T0));

    m.setOutbox({ count: 0, bytes: 0 });
    m.recordOutboxDropped();
    ({ samples } = await scrape(m));
    expect(value(samples, 'etcd_backup_outbox_backlog')).toBe(0);
    expect(value(samples, 'etcd_backup_outbox_backlog_bytes')).toBe(0);
    expect(series(samples, 'etcd_backup_outbox_oldest_timestamp_seconds')).toEqual([]);
    expect(value(samples, 'etcd_backup_outbox_dropped_total')).toBe(1);
  });

  it('counts skipped ticks and pruned backups', async () => {
    const m = newMetrics();
    m.recordSkippedTick('busy');
    m.recordSkippedTick('busy');
    m.recordPrune('s3', 4);
    m.recordPrune('s3', 0, 2);
    m.recordPrune('local-extra', 1);
    const { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_skipped_ticks_total', { reason: 'busy' })).toBe(2);
    expect(value(samples, 'etcd_backup_pruned_total', { store: 's3' })).toBe(4);
    expect(value(samples, 'etcd_backup_pruned_total', { store: 'nfs' })).toBe(0);
    expect(value(samples, 'etcd_backup_pruned_total', { store: 'local-extra' })).toBe(1);
    // Object Lock: the last prune's count of backups waiting for their lock (a gauge, not a sum).
    expect(value(samples, 'etcd_backup_prune_waiting_for_lock', { store: 's3' })).toBe(2);
    expect(value(samples, 'etcd_backup_prune_waiting_for_lock', { store: 'local-extra' })).toBe(0);
  });

  it('sets and clears the next run, sets the schedule interval', async () => {
    const m = newMetrics();
    const next = new Date(T0 + 86_400_000);
    m.setNextRun(next);
    m.setScheduleInterval(86_400);
    let { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_next_run_timestamp_seconds')).toBe(sec(next.getTime()));
    expect(value(samples, 'etcd_backup_schedule_interval_seconds')).toBe(86_400);
    m.setNextRun(undefined);
    ({ samples } = await scrape(m));
    expect(series(samples, 'etcd_backup_next_run_timestamp_seconds')).toEqual([]);
  });

  it('restoreState brings back what a restart forgets', async () => {
    const m = newMetrics();
    m.restoreState({
      lastAttempt: iso(T0),
      lastSuccess: iso(T0 - 86_400_000),
      consecutiveFailures: 3,
      stores: { s3: { lastSuccess: iso(T0 - 86_400_000), lastFailure: iso(T0 + 60_000) }, nfs: {} },
    });
    let { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_last_attempt_timestamp_seconds')).toBe(sec(T0));
    expect(value(samples, 'etcd_backup_last_run_success_timestamp_seconds')).toBe(sec(T0 - 86_400_000));
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(3);
    expect(value(samples, 'etcd_backup_last_success_timestamp_seconds', { store: 's3' })).toBe(sec(T0 - 86_400_000));
    expect(value(samples, 'etcd_backup_last_failure_timestamp_seconds', { store: 's3' })).toBe(sec(T0 + 60_000));
    expect(value(samples, 'etcd_backup_last_success_timestamp_seconds', { store: 'nfs' })).toBeUndefined();

    m.recordRun(preflightFailedRun(T0 + 3_600_000));
    ({ samples } = await scrape(m));
    expect(value(samples, 'etcd_backup_consecutive_failures')).toBe(4);
  });

  it('uses its own registry and the Prometheus text content type', async () => {
    const a = newMetrics();
    const b = newMetrics();
    a.recordSkippedTick('busy');
    expect(value((await scrape(b)).samples, 'etcd_backup_skipped_ticks_total', { reason: 'busy' })).toBe(0);
    expect(a.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });
});

describe('the cluster view', () => {
  it('cluster_last_success only moves forward, from any source, and ignores times ahead of the clock', async () => {
    const m = new BackupMetrics({ cluster: CLUSTER, node: NODE });
    const name = 'etcd_backup_cluster_last_success_timestamp_seconds';
    expect(series((await scrape(m)).samples, name)).toEqual([]);
    const t1 = Date.now() - 3600_000;
    m.recordClusterSuccess(new Date(t1));
    expect(value((await scrape(m)).samples, name)).toBe(t1 / 1000);
    m.recordClusterSuccess(new Date(t1 - 60_000)); // an older one seen later (the catalog after a slot result)
    m.recordClusterSuccess(new Date(Date.now() + 3600_000)); // a skewed clock or a planted manifest
    expect(value((await scrape(m)).samples, name)).toBe(t1 / 1000);
    const t2 = Date.now() - 60_000;
    m.recordClusterSuccess(new Date(t2));
    expect(value((await scrape(m)).samples, name)).toBe(t2 / 1000);
  });

  it('last_slot names the node that took the last slot, one series at a time', async () => {
    const m = new BackupMetrics({ cluster: CLUSTER, node: NODE });
    m.recordSlotWinner(new Date(T0), 'master-1');
    m.recordSlotWinner(new Date(T0 + 3600_000), 'master-2');
    const s = series((await scrape(m)).samples, 'etcd_backup_last_slot_timestamp_seconds');
    expect(s).toEqual([{ name: 'etcd_backup_last_slot_timestamp_seconds', labels: { winner: 'master-2' }, value: sec(T0 + 3600_000) }]);
  });

  it('missed slots: counters at 0 for every kind and why from the start, the newest missed slot per kind and why', async () => {
    const m = new BackupMetrics({ cluster: CLUSTER, node: NODE });
    const before = series((await scrape(m)).samples, 'etcd_backup_missed_slots_total');
    expect(before).toHaveLength(8);
    expect(before.every((x) => x.value === 0)).toBe(true);
    expect(series((await scrape(m)).samples, 'etcd_backup_last_missed_slot_timestamp_seconds')).toEqual([]);
    m.recordMissedSlot('backup', new Date(T0), 'no-quorum');
    m.recordMissedSlot('backup', new Date(T0 + 3600_000), 'no-quorum');
    m.recordMissedSlot('drill', new Date(T0), 'nobody-claimed');
    const { samples } = await scrape(m);
    expect(value(samples, 'etcd_backup_missed_slots_total', { kind: 'backup', why: 'no-quorum' })).toBe(2);
    expect(value(samples, 'etcd_backup_missed_slots_total', { kind: 'drill', why: 'nobody-claimed' })).toBe(1);
    expect(value(samples, 'etcd_backup_missed_slots_total', { kind: 'backup', why: 'attempts' })).toBe(0);
    expect(series(samples, 'etcd_backup_last_missed_slot_timestamp_seconds')).toEqual([
      { name: 'etcd_backup_last_missed_slot_timestamp_seconds', labels: { kind: 'backup', why: 'no-quorum' }, value: sec(T0 + 3600_000) },
      { name: 'etcd_backup_last_missed_slot_timestamp_seconds', labels: { kind: 'drill', why: 'nobody-claimed' }, value: sec(T0) },
    ]);
  });
});
