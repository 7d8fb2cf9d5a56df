import { Counter, Gauge, type Registry } from 'prom-client';
import { DRILL_FAILURE_REASONS, DRILL_STEPS, type DrillResult } from './drill.js';
import { REPLAY_DRILL_FAILURE_REASONS, type ReplayDrillResult } from './replay-result.js';
import { isoSeconds } from '../metrics/metrics.js';

/**
 * Restore drill series, registered on the daemon's registry
 * (`new DrillMetrics(metrics.registry)` with BackupMetrics' registry), so one
 * scrape of /metrics carries them. Same house rules as src/metrics/metrics.ts:
 * counters start at 0 for every label value known up front (result, reason);
 * timestamps, durations and the interval stay absent until known, so a
 * restart or a node without drills never reads as "the last drill was 56
 * years ago".
 *
 *   etcd_backup_drill_interval_seconds            set by the daemon from the drill schedule; absent = no drills scheduled
 *   etcd_backup_drill_last_attempt_timestamp_seconds
 *   etcd_backup_drill_last_success_timestamp_seconds
 *   etcd_backup_drill_duration_seconds            the last drill, start to end (drills are weekly: a histogram says nothing)
 *   etcd_backup_drill_step_duration_seconds{step} the last time each step ran
 *   etcd_backup_drill_runs_total{kind,result}
 *   etcd_backup_drill_failures_total{kind,reason}
 *   etcd_backup_drill_consecutive_failures        0 after a success
 *   etcd_backup_drill_last_failed{kind,reason}    1, with the reason, while the last drill of that kind failed; absent
 *                                                 after a success (EtcdBackupDrillFailing tells "the backup does not
 *                                                 restore" from "the drill could not run" by this reason)
 *   etcd_backup_drill_revision                    etcd revision the last successful drill restored
 *   etcd_backup_drill_keys                        keys the last successful drill's etcd served
 *   etcd_backup_drill_replay_last_success_timestamp_seconds
 *   etcd_backup_drill_replay_revisions            revisions the last successful replay drill replayed
 *
 * kind: `restore` (drill.ts: one backup restored and checked) or `replay`
 * (continuous/replay-drill.ts: a chain of segments replayed onto one full backup,
 * compared with the next). Only the families a result or reason lives in
 * carry it: the timestamps, durations, steps, consecutive failures,
 * revision and keys are the restore drill's, as before (the DrillMissing
 * alert and the saved state read them), and the replay drill has its own
 * two gauges. Both verdicts survive a restart (the daemon's state file:
 * restoreState, restoreReplayState).
 */
const P = 'etcd_backup_drill_';

export type DrillKind = 'restore' | 'replay';
const DRILL_KINDS: readonly DrillKind[] = ['restore', 'replay'];

export interface DrillState {
  lastAttempt?: string;
  lastSuccess?: string;
  consecutiveFailures?: number;
  /** Reason of the last drill when it failed. */
  lastFailureReason?: string;
}

/** What the daemon's state file keeps of the replay drill (daemon/state.ts). */
export interface ReplayDrillState {
  lastSuccess?: string;
  /** Revisions the last successful one replayed. */
  revisions?: number;
  /** Reason of the last replay drill when it failed (absent once one succeeds). */
  lastFailureReason?: string;
}


export class DrillMetrics {
  private readonly interval: Gauge;
  private readonly lastAttempt: Gauge;
  private readonly lastSuccess: Gauge;
  private readonly duration: Gauge;
  private readonly stepDuration: Gauge<'step'>;
  private readonly runs: Counter<'kind' | 'result'>;
  private readonly failures: Counter<'kind' | 'reason'>;
  private readonly consecutiveFailures: Gauge;
  private readonly lastFailed: Gauge<'kind' | 'reason'>;
  private readonly revision: Gauge;
  private readonly keys: Gauge;
  private readonly replayLastSuccess: Gauge;
  private readonly replayRevisions: Gauge;
  /** The reason each kind's last_failed series carries, to remove only that kind's. */
  private readonly failedReason = new Map<DrillKind, string>();

  constructor(registry: Registry) {
    const registers = [registry];
    const gauge = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], known = false): Gauge<L> => {
      const g = new Gauge<L>({ name: P + name, help, labelNames, registers });
      // prom-client shows an unlabelled gauge as 0 from the start; "not known yet" must be absent.
      if (labelNames.length === 0 && !known) g.remove();
      return g;
    };
    this.interval = gauge('interval_seconds', 'Longest gap between two scheduled restore drills; absent when no drills are scheduled. Alert thresholds follow it.');
    this.lastAttempt = gauge('last_attempt_timestamp_seconds', 'Unix time the last restore drill started, whatever its result.');
    this.lastSuccess = gauge('last_success_timestamp_seconds', 'Unix time the last successful restore drill finished (a backup restored into a throwaway etcd that served exactly its data).');
    this.duration = gauge('duration_seconds', 'Duration of the last restore drill, start to end.');
    this.stepDuration = gauge('step_duration_seconds', 'Duration of each step (fetch, restore, start, check, stop) the last time it ran.', ['step'] as const);
    this.runs = new Counter({ name: P + 'runs_total', help: 'Drills by kind (restore: one backup restored; replay: segments replayed onto a full backup, compared with the next) and result.', labelNames: ['kind', 'result'] as const, registers });
    this.failures = new Counter({ name: P + 'failures_total', help: 'Failed drills by kind and reason (one per failed drill).', labelNames: ['kind', 'reason'] as const, registers });
    this.consecutiveFailures = gauge('consecutive_failures', 'Restore drills that failed in a row; 0 after a success.', [], true);
    this.lastFailed = gauge('last_failed', '1 while the last drill of a kind failed, labelled with its kind and reason; absent after a successful drill of that kind.', ['kind', 'reason'] as const);
    this.revision = gauge('revision', 'etcd revision the last successful restore drill restored and served.');
    this.keys = gauge('keys', 'Keys the etcd of the last successful restore drill served.');
    this.replayLastSuccess = gauge('replay_last_success_timestamp_seconds', 'Unix time the last successful replay drill finished (a full backup plus its segments replayed to the next full backup\'s revision gave exactly that backup).');
    this.replayRevisions = gauge('replay_revisions', 'Revisions the last successful replay drill replayed.');

    for (const result of ['success', 'failed'] as const) for (const kind of DRILL_KINDS) this.runs.inc({ kind, result }, 0);
    for (const reason of DRILL_FAILURE_REASONS) this.failures.inc({ kind: 'restore', reason }, 0);
    for (const reason of REPLAY_DRILL_FAILURE_REASONS) this.failures.inc({ kind: 'replay', reason }, 0);
  }

  /** Seconds between two scheduled drills (the longest gap for an irregular schedule). */
  setInterval(seconds: number): void {
    this.interval.set(seconds);
  }

  /** Drills are no longer scheduled: the Missing alert must not wait for one. */
  clearInterval(): void {
    this.interval.remove();
  }

  /** Brings back what a restart forgets (from the daemon's state file). */
  restoreState(s: DrillState): void {
    const attempt = isoSeconds(s.lastAttempt);
    if (attempt !== undefined) this.lastAttempt.set(attempt);
    const success = isoSeconds(s.lastSuccess);
    if (success !== undefined) this.lastSuccess.set(success);
    if (s.consecutiveFailures !== undefined) this.consecutiveFailures.set(s.consecutiveFailures);
    if (s.lastFailureReason && (DRILL_FAILURE_REASONS as readonly string[]).includes(s.lastFailureReason)) this.setFailed('restore', s.lastFailureReason);
  }

  /** The replay drill's verdict, as the state file kept it. */
  restoreReplayState(s: ReplayDrillState): void {
    const success = isoSeconds(s.lastSuccess);
    if (success !== undefined) this.replayLastSuccess.set(success);
    if (s.revisions !== undefined) this.replayRevisions.set(s.revisions);
    if (s.lastFailureReason && (REPLAY_DRILL_FAILURE_REASONS as readonly string[]).includes(s.lastFailureReason)) this.setFailed('replay', s.lastFailureReason);
  }

  recordDrill(r: DrillResult): void {
    const started = isoSeconds(r.startedAt);
    const finished = isoSeconds(r.finishedAt) ?? Date.now() / 1000;
    this.runs.inc({ kind: 'restore', result: r.result });
    if (started !== undefined) {
      this.lastAttempt.set(started);
      this.duration.set(Math.max(0, finished - started));
    }
    for (const s of r.steps) {
      if (DRILL_STEPS.includes(s.name) && Number.isFinite(s.seconds)) this.stepDuration.set({ step: s.name }, s.seconds);
    }
    if (r.result === 'success') {
      this.setFailed('restore', undefined);
      this.lastSuccess.set(finished);
      this.consecutiveFailures.set(0);
      if (r.revision !== undefined) this.revision.set(r.revision);
      if (r.liveKeys !== undefined) this.keys.set(r.liveKeys);
      return;
    }
    const reason = r.reason ?? 'internal';
    this.failures.inc({ kind: 'restore', reason });
    // Stopped by a shutdown: it proves nothing either way, so the verdict of the drill before stands.
    if (reason === 'drill-aborted') return;
    this.setFailed('restore', reason);
    this.consecutiveFailures.inc();
  }

  /** A replay drill's result; a skipped one (no pair to drill) is not a run. */
  recordReplayDrill(r: ReplayDrillResult): void {
    if (r.result === 'skipped') return;
    this.runs.inc({ kind: 'replay', result: r.result });
    if (r.result === 'success') {
      this.setFailed('replay', undefined);
      this.replayLastSuccess.set(isoSeconds(r.finishedAt) ?? Date.now() / 1000);
      if (r.revisionsReplayed !== undefined) this.replayRevisions.set(r.revisionsReplayed);
      return;
    }
    const reason = r.reason ?? 'internal';
    this.failures.inc({ kind: 'replay', reason });
    if (reason !== 'drill-aborted') this.setFailed('replay', reason);
  }

  /** last_failed of one kind: set to this reason, or removed (undefined). */
  private setFailed(kind: DrillKind, reason: string | undefined): void {
    const before = this.failedReason.get(kind);
    if (before !== undefined) this.lastFailed.remove({ kind, reason: before });
    this.failedReason.delete(kind);
    if (reason === undefined) return;
    this.lastFailed.set({ kind, reason }, 1);
    this.failedReason.set(kind, reason);
  }
}
