/**
 * DrillMetrics on the daemon's registry, read back the way a scrape sees
 * them, and the DrillFailing rules checked against the reasons a drill
 * really reports.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { DRILL_FAILURE_REASONS, type DrillResult } from '../../src/drill/drill.js';
import { DrillMetrics } from '../../src/drill/metrics.js';
import { REPLAY_DRILL_FAILURE_REASONS, type ReplayDrillResult } from '../../src/drill/replay-result.js';
import { BackupMetrics } from '../../src/metrics/metrics.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function drill(result: 'success' | 'failed', reason?: DrillResult['reason']): DrillResult {
  return {
    id: '20261125T020000Z-master-0',
    result,
    reason,
    steps: [
      { name: 'fetch', seconds: 1.5 },
      { name: 'restore', seconds: 2 },
      { name: 'stop', seconds: 0.25 },
    ],
    startedAt: '2026-11-25T02:00:00.000Z',
    finishedAt: '2026-11-25T02:00:10.000Z',
    ...(result === 'success' ? { revision: 1234, liveKeys: 99 } : {}),
  };
}

async function setup() {
  const m = new BackupMetrics({ cluster: 'c', node: 'n' });
  const d = new DrillMetrics(m.registry);
  return { m, d, text: () => m.render() };
}

describe('DrillMetrics', () => {
  it('shares the daemon registry; counters start at 0, timestamps and the interval are absent until known', async () => {
    const { text } = await setup();
    const t = await text();
    expect(t).toContain('etcd_backup_drill_runs_total{kind="restore",result="success"} 0');
    expect(t).toContain('etcd_backup_drill_runs_total{kind="restore",result="failed"} 0');
    for (const reason of DRILL_FAILURE_REASONS) expect(t).toContain(`etcd_backup_drill_failures_total{kind="restore",reason="${reason}"} 0`);
    expect(t).toContain('etcd_backup_drill_consecutive_failures 0');
    for (const absent of ['interval_seconds', 'last_success_timestamp_seconds', 'last_attempt_timestamp_seconds', 'duration_seconds', 'last_failed', 'revision', 'keys']) {
      expect(t).toContain(`# TYPE etcd_backup_drill_${absent} gauge`);
      expect(t).not.toMatch(new RegExp(`^etcd_backup_drill_${absent}[ {]`, 'm'));
    }
  });

  it('records a success, then a failure, then a success', async () => {
    const { d, text } = await setup();
    d.setInterval(604800);
    d.recordDrill(drill('success'));
    let t = await text();
    expect(t).toContain('etcd_backup_drill_interval_seconds 604800');
    expect(t).toContain(`etcd_backup_drill_last_success_timestamp_seconds ${Date.parse('2026-11-25T02:00:10Z') / 1000}`);
    expect(t).toContain(`etcd_backup_drill_last_attempt_timestamp_seconds ${Date.parse('2026-11-25T02:00:00Z') / 1000}`);
    expect(t).toContain('etcd_backup_drill_duration_seconds 10');
    expect(t).toContain('etcd_backup_drill_step_duration_seconds{step="restore"} 2');
    expect(t).toContain('etcd_backup_drill_revision 1234');
    expect(t).toContain('etcd_backup_drill_keys 99');

    d.recordDrill(drill('failed', 'drill-restore-failed'));
    d.recordDrill(drill('failed', 'drill-timeout'));
    t = await text();
    expect(t).toContain('etcd_backup_drill_failures_total{kind="restore",reason="drill-restore-failed"} 1');
    expect(t).toContain('etcd_backup_drill_consecutive_failures 2');
    // Only the last drill's reason.
    expect(t).toContain('etcd_backup_drill_last_failed{kind="restore",reason="drill-timeout"} 1');
    expect(t).not.toContain('etcd_backup_drill_last_failed{kind="restore",reason="drill-restore-failed"}');

    d.recordDrill(drill('success'));
    t = await text();
    expect(t).toContain('etcd_backup_drill_consecutive_failures 0');
    expect(t).not.toMatch(/^etcd_backup_drill_last_failed\{/m);
    expect(t).toContain('etcd_backup_drill_runs_total{kind="restore",result="success"} 2');
  });

  it('a drill stopped by a shutdown is counted but changes no verdict', async () => {
    const { d, text } = await setup();
    d.recordDrill(drill('failed', 'drill-mismatch'));
    d.recordDrill(drill('failed', 'drill-aborted'));
    const t = await text();
    expect(t).toContain('etcd_backup_drill_failures_total{kind="restore",reason="drill-aborted"} 1');
    expect(t).toContain('etcd_backup_drill_last_failed{kind="restore",reason="drill-mismatch"} 1');
    expect(t).toContain('etcd_backup_drill_consecutive_failures 1');
  });

  it('restores what a restart forgets', async () => {
    const { d, text } = await setup();
    d.restoreState({ lastAttempt: '2026-11-20T02:00:00Z', lastSuccess: '2026-11-13T02:05:00Z', consecutiveFailures: 1, lastFailureReason: 'snapshot-corrupt' });
    const t = await text();
    expect(t).toContain(`etcd_backup_drill_last_success_timestamp_seconds ${Date.parse('2026-11-13T02:05:00Z') / 1000}`);
    expect(t).toContain('etcd_backup_drill_last_failed{kind="restore",reason="snapshot-corrupt"} 1');
    expect(t).toContain('etcd_backup_drill_consecutive_failures 1');
  });
});

describe('DrillMetrics: the replay drill', () => {
  const replay = (result: ReplayDrillResult['result'], reason?: ReplayDrillResult['reason']): ReplayDrillResult => ({
    kind: 'replay',
    result,
    ...(reason ? { reason } : {}),
    steps: [{ name: 'replay', seconds: 3 }],
    startedAt: '2026-11-25T02:01:00.000Z',
    finishedAt: '2026-11-25T02:01:30.000Z',
    ...(result === 'success' ? { revisionsReplayed: 4321 } : {}),
  });

  it('counts by kind, and a replay verdict never clears or sets the restore drill\'s', async () => {
    const { d, text } = await setup();
    let t = await text();
    for (const reason of REPLAY_DRILL_FAILURE_REASONS) expect(t).toContain(`etcd_backup_drill_failures_total{kind="replay",reason="${reason}"} 0`);
    expect(t).toContain('etcd_backup_drill_runs_total{kind="replay",result="failed"} 0');
    expect(t).not.toMatch(/^etcd_backup_drill_replay_(last_success_timestamp_seconds|revisions)[ {]/m);

    d.recordDrill(drill('failed', 'drill-timeout'));
    d.recordReplayDrill(replay('failed', 'drill-replay-mismatch'));
    t = await text();
    expect(t).toContain('etcd_backup_drill_last_failed{kind="restore",reason="drill-timeout"} 1');
    expect(t).toContain('etcd_backup_drill_last_failed{kind="replay",reason="drill-replay-mismatch"} 1');
    expect(t).toContain('etcd_backup_drill_failures_total{kind="replay",reason="drill-replay-mismatch"} 1');
    expect(t).toContain('etcd_backup_drill_consecutive_failures 1');

    d.recordDrill(drill('success'));
    t = await text();
    expect(t).not.toContain('etcd_backup_drill_last_failed{kind="restore"');
    expect(t).toContain('etcd_backup_drill_last_failed{kind="replay",reason="drill-replay-mismatch"} 1');

    d.recordReplayDrill(replay('skipped', 'not-found'));
    d.recordReplayDrill(replay('failed', 'drill-aborted'));
    t = await text();
    expect(t).toContain('etcd_backup_drill_last_failed{kind="replay",reason="drill-replay-mismatch"} 1');
    expect(t).toContain('etcd_backup_drill_runs_total{kind="replay",result="failed"} 2');

    d.recordReplayDrill(replay('success'));
    t = await text();
    expect(t).not.toMatch(/^etcd_backup_drill_last_failed\{/m);
    expect(t).toContain('etcd_backup_drill_runs_total{kind="replay",result="success"} 1');
    expect(t).toContain(`etcd_backup_drill_replay_last_success_timestamp_seconds ${Date.parse('2026-11-25T02:01:30Z') / 1000}`);
    expect(t).toContain('etcd_backup_drill_replay_revisions 4321');
    // The restore drill's own gauges are not the replay's.
    expect(t).toContain('etcd_backup_drill_revision 1234');
  });

  it('restores the replay verdict a restart forgets (the state file), never touching the restore drill\'s', async () => {
    const { d, text } = await setup();
    d.restoreReplayState({ lastSuccess: '2026-11-24T02:01:30Z', revisions: 777, lastFailureReason: 'segment-gap' });
    d.restoreReplayState({ lastFailureReason: 'not-a-reason' }); // an unknown reason sets nothing
    const t = await text();
    expect(t).toContain(`etcd_backup_drill_replay_last_success_timestamp_seconds ${Date.parse('2026-11-24T02:01:30Z') / 1000}`);
    expect(t).toContain('etcd_backup_drill_replay_revisions 777');
    expect(t.match(/^etcd_backup_drill_last_failed\{.*$/gm)).toEqual(['etcd_backup_drill_last_failed{kind="replay",reason="segment-gap"} 1']);
  });
});

describe('EtcdBackupDrillFailing and the drill reasons', () => {
  interface Rule {
    alert?: string;
    expr: string;
    labels?: Record<string, string>;
  }
  const groups = (parse(readFileSync(join(ROOT, 'packaging/prometheus/etcd-backupd-rules.yaml'), 'utf8')) as { groups: { rules: Rule[] }[] }).groups;
  const failing = groups.flatMap((g) => g.rules).filter((r) => r.alert === 'EtcdBackupDrillFailing');
  // Both kinds of drill set last_failed{kind,reason}: one pair of rules reads both.
  const ALL_REASONS: readonly string[] = [...new Set<string>([...DRILL_FAILURE_REASONS, ...REPLAY_DRILL_FAILURE_REASONS])];
  const matcher = (r: Rule): ((reason: string) => boolean) => {
    const m = /reason(=~|!~)"([^"]+)"/.exec(r.expr);
    if (!m) throw new Error(`no reason matcher in ${r.expr}`);
    const re = new RegExp(`^(?:${m[2]})$`);
    return m[1] === '=~' ? (x) => re.test(x) : (x) => !re.test(x);
  };

  it('names only reasons a drill reports', () => {
    for (const r of failing) {
      for (const name of /reason[=!]~"([^"]+)"/.exec(r.expr)![1]!.split('|')) expect(ALL_REASONS, name).toContain(name);
    }
  });

  it('sends every failure reason but drill-aborted to exactly one of its rules', () => {
    expect(failing.map((r) => r.labels?.cause).sort()).toEqual(['backup-unrestorable', 'drill-broken']);
    for (const reason of ALL_REASONS) {
      const hits = failing.filter((r) => matcher(r)(reason)).map((r) => r.labels!.cause);
      expect(hits, reason).toEqual(reason === 'drill-aborted' ? [] : [expect.any(String)]);
    }
    const bad = failing.find((r) => r.labels?.cause === 'backup-unrestorable')!;
    for (const reason of ['checksum-mismatch', 'snapshot-corrupt', 'drill-restore-failed', 'drill-mismatch', 'drill-replay-mismatch', 'segment-gap', 'segment-corrupt']) expect(matcher(bad)(reason), reason).toBe(true);
    for (const reason of ['drill-start-failed', 'drill-timeout', 'preflight-disk-space', 'store-unavailable']) expect(matcher(bad)(reason), reason).toBe(false);
  });
});
