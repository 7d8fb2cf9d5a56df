import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PreflightCheck } from '../etcd/health.js';
import { UNCOUNTED_FAILURE_REASONS, type Reason } from '../errors.js';
import type { RunResult, Trigger } from '../run/backup.js';
import { VERSION } from '../version.js';
import { SLOT_KINDS, type SlotKind } from '../coord/keys.js';
import { MISSED_WHYS, type MissedWhy } from '../coord/missed.js';

/**
 * Every series the daemon exposes, on a registry of its own (never the
 * global one, so tests and a CLI in the same process never collide).
 *
 * Rules of the house (DESIGN.md, Metrics):
 * - prefix `etcd_backup_`; counters end in `_total`, times `_seconds`, sizes `_bytes`;
 * - labels are bounded: store (config), result, reason (`Reason`), phase (code),
 *   trigger, check (`PreflightCheck['name']`). Never a backup id, never free text;
 * - cluster and node are NOT labels of every series: the scrape target's labels
 *   (instance, pod, ...) already tell nodes apart. They appear once, on
 *   `etcd_backup_info{cluster,node,version} 1`, for joins and dashboards.
 *
 * Absent versus zero. A series that is absent is "not known yet"; a series at 0
 * is a statement. So:
 * - counters start at 0 for the label values we know up front (runs by
 *   result x trigger, failures by the run reasons, per-store failure reasons,
 *   pruned per store, skipped ticks, outbox drops). `increase()` only sees an
 *   increment if it saw the series before it; a counter born at 1 is an
 *   increment no alert ever notices. EtcdBackupRemoteVerificationFailed relies
 *   on this for `store_failures_total{reason="remote-verify-failed"}`.
 * - timestamps and "last value" gauges stay absent until the daemon knows them
 *   (a run, `restoreState` from the state file, an inventory, an outbox scan).
 *   A last-success timestamp of 0 reads as "56 years ago": it would fire
 *   EtcdBackupMissing (and any user rule on `time() - last_success`) on every
 *   daemon restart and on a fresh install before the first scheduled run had
 *   a chance. The "never succeeded" case is caught by the alert instead: it
 *   fires when no node has a last-success series while the oldest daemon has
 *   been up for longer than 1.5 schedule intervals (`start_time_seconds`).
 *   Inventory counts (`backups{store}`) are gauges of what a store holds: 0
 *   before the first listing would be a false "the store is empty".
 */

/** Why the scheduler did not start a run at a tick. */
/** busy: a run was in progress; slot-given-up: coordination gave the slot up (deadline, attempts, no quorum with onNoQuorum skip). */
export type SkipReason = 'busy' | 'slot-given-up';

/** The per-store part of `setInventory`: verified backups of this (cluster, node) series on one store. */
export interface StoreInventory {
  count: number;
  pinned: number;
  /** Committed backups of the cluster (any node) without a signature by a trusted key; 0 without trusted keys. */
  untrusted?: number;
  oldest?: Date;
  newest?: Date;
}

/** Bundles in the local outbox that some configured store does not hold yet. */
export interface OutboxStatus {
  count: number;
  bytes: number;
  oldest?: Date;
}

/** What survives a restart (structurally the daemon's state file, `src/daemon/state.ts`). */
export interface RestorableState {
  lastAttempt?: string;
  lastSuccess?: string;
  consecutiveFailures?: number;
  stores?: Record<string, { lastSuccess?: string; lastFailure?: string }>;
}

export interface BackupMetricsOptions {
  cluster: string;
  node: string;
  /** When this daemon started; default: construction time. */
  startTime?: Date;
}

const TRIGGERS: readonly Trigger[] = ['schedule', 'manual', 'catch-up'];
const RESULTS = ['success', 'failed'] as const;
const SKIP_REASONS: readonly SkipReason[] = ['busy', 'slot-given-up'];

/** Reasons a backup run can end with; `failures_total{reason}` starts at 0 for each. */
export const RUN_FAILURE_REASONS = [
  'lock-busy',
  'preflight-unhealthy',
  'preflight-no-quorum',
  'preflight-no-leader',
  'preflight-member-unreachable',
  'preflight-disk-space',
  'source-failed',
  'source-rollout-in-progress',
  'source-apiserver-unavailable',
  'source-stalled',
  'source-timeout',
  'source-missing-artifact',
  'source-empty-artifact',
  'snapshot-corrupt',
  'bundle-failed',
  'upload-failed',
  'remote-verify-failed',
  'store-unavailable',
  'internal',
] as const satisfies readonly Reason[];

/** Reasons one store's delivery can fail with; `store_failures_total{store,reason}` starts at 0 for each. */
export const STORE_FAILURE_REASONS = ['upload-failed', 'remote-verify-failed', 'store-unavailable', 'internal'] as const satisfies readonly Reason[];

/** 0.1 s (a preflight) .. 2 h (a 10 GiB snapshot to a slow store). */
export const DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];

/** Phase names come from the code (`runBackup`), but a label value must stay boring whatever happens. */
const PHASE_RE = /^[a-z][a-z0-9-]{0,31}$/;

const P = 'etcd_backup_';

function seconds(d: Date): number {
  return d.getTime() / 1000;
}

/** Seconds since the epoch of an ISO time, for timestamp gauges; undefined when absent or not a date. */
export function isoSeconds(iso: string | undefined): number | undefined {
  if (!iso) return undefined;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? undefined : t / 1000;
}

export class BackupMetrics {
  readonly registry: Registry;

  private readonly info: Gauge;
  private readonly startTime: Gauge;
  private readonly scheduleInterval: Gauge;
  private readonly lastAttempt: Gauge;
  private readonly lastRunSuccess: Gauge;
  private readonly lastSuccess: Gauge<'store'>;
  private readonly lastFailure: Gauge<'store'>;
  private readonly nextRun: Gauge;
  private readonly runs: Counter<'result' | 'trigger'>;
  private readonly failures: Counter<'reason'>;
  private readonly storeFailures: Counter<'store' | 'reason'>;
  private readonly consecutiveFailures: Gauge;
  private readonly phaseDuration: Histogram<'phase'>;
  private readonly lastPhaseDuration: Gauge<'phase'>;
  private readonly runDuration: Histogram;
  private readonly size: Gauge;
  private readonly lastPossiblyDirty: Gauge;
  private readonly snapshotSize: Gauge;
  private readonly etcdRevision: Gauge;
  private readonly etcdKeys: Gauge;
  private readonly uploadDuration: Gauge<'store'>;
  private readonly remoteVerifyDuration: Gauge<'store'>;
  private readonly skippedTicks: Counter<'reason'>;
  private readonly backups: Gauge<'store'>;
  private readonly backupsPinned: Gauge<'store'>;
  private readonly untrustedBackups: Gauge<'store'>;
  private readonly oldestBackup: Gauge<'store'>;
  private readonly newestBackup: Gauge<'store'>;
  private readonly outboxBacklog: Gauge;
  private readonly outboxBacklogBytes: Gauge;
  private readonly outboxOldest: Gauge;
  private readonly outboxDropped: Counter;
  private readonly preflightCheckOk: Gauge<'check'>;
  private readonly membersUnreachable: Gauge;
  private readonly pruned: Counter<'store'>;
  private readonly waitingForLock: Gauge<'store'>;
  private readonly clusterLastSuccess: Gauge;
  private readonly missedSlots: Counter<'kind' | 'why'>;
  private readonly lastMissedSlot: Gauge<'kind' | 'why'>;
  private readonly lastSlot: Gauge<'winner'>;
  private clusterSuccessSeconds = 0;
  // Restore drills (later): etcd_backup_drill_* families go here, registered on this.registry.

  constructor(opts: BackupMetricsOptions) {
    const registers = [(this.registry = new Registry())];
    const gauge = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], known = false): Gauge<L> => {
      const g = new Gauge<L>({ name: P + name, help, labelNames, registers });
      // prom-client shows an unlabelled gauge as 0 from the start; "not known yet" must be absent instead.
      if (labelNames.length === 0 && !known) g.remove();
      return g;
    };
    const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> =>
      new Counter<L>({ name: P + name, help, labelNames, registers });

    this.info = gauge('info', 'Always 1; labels name the cluster and node this daemon backs up and its version.', ['cluster', 'node', 'version'] as const);
    this.startTime = gauge('start_time_seconds', 'Unix time this daemon started.');
    this.scheduleInterval = gauge('schedule_interval_seconds', 'Longest gap between two scheduled runs of the configured schedule; alert thresholds are multiples of it.');
    this.lastAttempt = gauge('last_attempt_timestamp_seconds', 'Unix time the last backup run started, whatever its result.');
    this.lastRunSuccess = gauge('last_run_success_timestamp_seconds', 'Unix time the last backup run finished with a verified copy on every store.');
    this.lastSuccess = gauge('last_success_timestamp_seconds', 'Unix time of the last verified, committed copy on this store.', ['store'] as const);
    this.lastFailure = gauge('last_failure_timestamp_seconds', 'Unix time of the last failed delivery to this store.', ['store'] as const);
    this.nextRun = gauge('next_run_timestamp_seconds', 'Unix time of the next scheduled backup run.');
    this.runs = counter('runs_total', 'Backup runs by result and trigger.', ['result', 'trigger'] as const);
    this.failures = counter('failures_total', 'Failed backup runs by reason (one per failed run).', ['reason'] as const);
    this.storeFailures = counter('store_failures_total', 'Failed deliveries to a store by reason.', ['store', 'reason'] as const);
    this.consecutiveFailures = gauge('consecutive_failures', 'Backup runs that failed in a row; 0 after a success.', [], true);
    this.phaseDuration = new Histogram({
      name: P + 'phase_duration_seconds',
      help: 'Duration of the phases of backup runs.',
      labelNames: ['phase'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.lastPhaseDuration = gauge('last_phase_duration_seconds', 'Duration of the phase the last time it ran.', ['phase'] as const);
    this.runDuration = new Histogram({ name: P + 'run_duration_seconds', help: 'Duration of backup runs, start to end.', buckets: DURATION_BUCKETS, registers });
    this.size = gauge('size_bytes', 'Size of the backup object (bundle) of the last successful run.');
    this.lastPossiblyDirty = gauge(
      'last_possibly_dirty',
      '1 when the last successful run was taken with the operator check skipped (cluster-backup.sh --force: files __POSSIBLY_DIRTY__, maybe mid-rollout), else 0.',
    );
    this.snapshotSize = gauge('snapshot_size_bytes', 'Size of the etcd snapshot file in the last successful run.');
    this.etcdRevision = gauge('etcd_revision', 'etcd revision of the snapshot of the last successful run.');
    this.etcdKeys = gauge('etcd_keys', 'Keys in the snapshot of the last successful run.');
    this.uploadDuration = gauge('upload_duration_seconds', 'Time the last upload to this store took.', ['store'] as const);
    this.remoteVerifyDuration = gauge('remote_verify_duration_seconds', 'Time the last verification of the remote copy on this store took.', ['store'] as const);
    this.skippedTicks = counter('skipped_ticks_total', 'Scheduled ticks that started no run, by reason (busy: a run was in progress; slot-given-up: coordination gave the slot up without a backup by any node known to this one). A slot another node backed up is not a skipped tick.', ['reason'] as const);
    this.backups = gauge('backups', 'Verified backups of the series this node plans (the cluster\'s with coordination, else this node\'s) on the store at the last listing.', ['store'] as const);
    this.backupsPinned = gauge('backups_pinned', 'Pinned backups of that series on the store at the last listing.', ['store'] as const);
    this.untrustedBackups = gauge(
      'untrusted_backups',
      'Committed backups of the cluster in the store that carry no signature by a trusted key (signing.trustedKeys), at the last listing: planted or altered by someone who can write the store, or written before signing was turned on.',
      ['store'] as const,
    );
    this.oldestBackup = gauge('oldest_backup_timestamp_seconds', 'Creation time of the oldest verified backup of that series on the store.', ['store'] as const);
    this.newestBackup = gauge('newest_backup_timestamp_seconds', 'Creation time of the newest verified backup of that series on the store.', ['store'] as const);
    this.outboxBacklog = gauge('outbox_backlog', 'Sealed bundles in the local outbox that some store does not hold yet.');
    this.outboxBacklogBytes = gauge('outbox_backlog_bytes', 'Bytes of the bundles in the outbox backlog.');
    this.outboxOldest = gauge('outbox_oldest_timestamp_seconds', 'Creation time of the oldest bundle in the outbox backlog; absent when the backlog is empty.');
    this.outboxDropped = counter('outbox_dropped_total', 'Undelivered bundles removed from the outbox (lost to some store).');
    this.preflightCheckOk = gauge('preflight_check_ok', '1 if the preflight check passed in the last run, 0 if it failed.', ['check'] as const);
    this.membersUnreachable = gauge('etcd_members_unreachable', 'etcd members that did not answer in the last preflight.');
    this.pruned = counter('pruned_total', 'Backups deleted from the store by retention.', ['store'] as const);
    this.clusterLastSuccess = gauge(
      'cluster_last_success_timestamp_seconds',
      "Unix time of the newest committed backup of the cluster known to this node, whichever node took it: its own runs, slot results in etcd, the stores' catalog. Absent until one is known.",
    );
    this.missedSlots = counter(
      'missed_slots_total',
      'With coordination: slots (kind backup or drill) this node saw end with no node doing them. why: nobody-claimed (no node held the slot by its deadline), no-quorum / etcd-unavailable (no claim possible and no run without one), attempts (every attempt failed). Every node counts the same slot: aggregate with max.',
      ['kind', 'why'] as const,
    );
    this.lastMissedSlot = gauge('last_missed_slot_timestamp_seconds', 'With coordination: the time of the newest slot this node saw missed, by kind and why (see missed_slots_total). Absent until one is.', ['kind', 'why'] as const);
    this.lastSlot = gauge('last_slot_timestamp_seconds', 'With coordination: the time of the last slot this node saw backed up, labelled with the node that took it.', ['winner'] as const);
    this.waitingForLock = gauge('prune_waiting_for_lock', 'Backups the last prune would have deleted but left for their S3 Object Lock to expire.', ['store'] as const);

    this.info.set({ cluster: opts.cluster, node: opts.node, version: VERSION }, 1);
    this.startTime.set(seconds(opts.startTime ?? new Date()));
    for (const result of RESULTS) for (const trigger of TRIGGERS) this.runs.inc({ result, trigger }, 0);
    for (const reason of RUN_FAILURE_REASONS) this.failures.inc({ reason }, 0);
    for (const reason of SKIP_REASONS) this.skippedTicks.inc({ reason }, 0);
    for (const kind of SLOT_KINDS) for (const why of MISSED_WHYS) this.missedSlots.inc({ kind, why }, 0);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  /**
   * Per-store series that have a true value from the start: the counters at
   * 0. Timestamps, durations and inventory stay absent until known (see the
   * comment at the top of this file).
   */
  initStores(names: string[]): void {
    for (const store of names) {
      for (const reason of STORE_FAILURE_REASONS) this.storeFailures.inc({ store, reason }, 0);
      this.pruned.inc({ store }, 0);
    }
  }

  /**
   * Seconds between two scheduled runs. For an irregular schedule (weekdays
   * only, say) pass the longest gap, or EtcdBackupMissing fires over a weekend.
   */
  setScheduleInterval(secs: number): void {
    this.scheduleInterval.set(secs);
  }

  /** Brings back what a restart forgets, from the state file, so a restart neither hides nor invents a missed backup. */
  restoreState(s: RestorableState): void {
    const attempt = isoSeconds(s.lastAttempt);
    if (attempt !== undefined) this.lastAttempt.set(attempt);
    const success = isoSeconds(s.lastSuccess);
    if (success !== undefined) {
      this.lastRunSuccess.set(success);
      // This node's own success is one of the cluster's, known before any store or etcd answers.
      this.recordClusterSuccess(new Date(success * 1000));
    }
    if (s.consecutiveFailures !== undefined) this.consecutiveFailures.set(s.consecutiveFailures);
    for (const [store, st] of Object.entries(s.stores ?? {})) {
      const ok = isoSeconds(st.lastSuccess);
      if (ok !== undefined) this.lastSuccess.set({ store }, ok);
      const bad = isoSeconds(st.lastFailure);
      if (bad !== undefined) this.lastFailure.set({ store }, bad);
    }
  }

  recordRun(r: RunResult): void {
    const trigger = r.trigger;
    const started = isoSeconds(r.startedAt);
    const finished = isoSeconds(r.finishedAt) ?? Date.now() / 1000;
    this.runs.inc({ result: r.result, trigger });

    if (r.result === 'failed') {
      const reason = r.reason ?? 'internal';
      this.failures.inc({ reason });
      // Refused because another run holds the lock: no backup was attempted and
      // the other run speaks for this node. Counted above, nothing else.
      if (reason === 'lock-busy') return;
      // A refusal during a rollout is no sign of a broken backup: it must not page as EtcdBackupFailing
      // through every upgrade (see UNCOUNTED_FAILURE_REASONS); EtcdBackupMissing still watches the age.
      if (!UNCOUNTED_FAILURE_REASONS.includes(reason)) this.consecutiveFailures.inc();
    } else {
      this.consecutiveFailures.set(0);
      this.lastRunSuccess.set(finished);
      this.recordClusterSuccess(new Date(finished * 1000));
    }
    if (started !== undefined) {
      this.lastAttempt.set(started);
      this.runDuration.observe(Math.max(0, finished - started));
    }

    for (const [phase, secs] of Object.entries(r.phases)) {
      if (!PHASE_RE.test(phase) || !Number.isFinite(secs)) continue;
      this.phaseDuration.observe({ phase }, secs);
      this.lastPhaseDuration.set({ phase }, secs);
    }

    for (const [store, o] of Object.entries(r.stores)) {
      if (o.result === 'success') {
        this.lastSuccess.set({ store }, finished);
      } else {
        this.lastFailure.set({ store }, finished);
        this.storeFailures.inc({ store, reason: o.reason ?? 'upload-failed' });
      }
      if (o.uploadSeconds !== undefined) this.uploadDuration.set({ store }, o.uploadSeconds);
      if (o.verifySeconds !== undefined) this.remoteVerifyDuration.set({ store }, o.verifySeconds);
    }

    if (r.preflight) this.recordPreflight(r.preflight.checks);

    if (r.result === 'success' && r.manifest) {
      const m = r.manifest;
      if (m.object) this.size.set(m.object.size);
      this.lastPossiblyDirty.set(m.source.possiblyDirty ? 1 : 0);
      const snap = m.artifacts.find((a) => a.name.endsWith('.db')) ?? m.artifacts.find((a) => a.name.startsWith('snapshot'));
      if (snap) this.snapshotSize.set(snap.size);
      this.etcdRevision.set(m.etcd.revision);
      this.etcdKeys.set(m.etcd.totalKey);
    }
  }

  /** The last run's checks replace the previous ones: a check that did not run is not known to pass. */
  private recordPreflight(checks: PreflightCheck[]): void {
    this.preflightCheckOk.reset();
    for (const c of checks) this.preflightCheckOk.set({ check: c.name }, c.ok ? 1 : 0);
    const reach = checks.find((c) => c.name === 'members-reachable');
    if (!reach) {
      this.membersUnreachable.remove();
    } else if (reach.ok) {
      this.membersUnreachable.set(0);
    } else {
      // health.ts words it "unreachable: a, b"; at least one member is down whatever the wording.
      const m = /unreachable:\s*(.+)$/.exec(reach.detail);
      const n = m ? m[1]!.split(',').filter((s) => s.trim() !== '').length : 0;
      this.membersUnreachable.set(Math.max(1, n));
    }
  }

  recordSkippedTick(reason: SkipReason): void {
    this.skippedTicks.inc({ reason });
  }

  setNextRun(d: Date | undefined): void {
    if (d) this.nextRun.set(seconds(d));
    else this.nextRun.remove();
  }

  /** A committed backup of the cluster at `at`, this node's or another's: the gauge only moves forward. */
  recordClusterSuccess(at: Date): void {
    const t = seconds(at);
    // A time ahead of this clock (a skewed node, a planted manifest) would hold the gauge up for ever and hide a missed backup.
    if (!Number.isFinite(t) || t <= this.clusterSuccessSeconds || t > Date.now() / 1000 + 300) return;
    this.clusterSuccessSeconds = t;
    this.clusterLastSuccess.set(t);
  }

  /** With coordination: a slot nobody does (missedWhy in src/daemon/coordinator.ts). */
  recordMissedSlot(kind: SlotKind, slot: Date, why: MissedWhy): void {
    this.missedSlots.inc({ kind, why });
    this.lastMissedSlot.set({ kind, why }, seconds(slot));
  }

  /** With coordination: `winner` backed up the slot at `slot` (one series at a time: the last slot's winner). */
  recordSlotWinner(slot: Date, winner: string): void {
    this.lastSlot.reset();
    this.lastSlot.set({ winner }, seconds(slot));
  }

  setInventory(store: string, inv: StoreInventory): void {
    this.backups.set({ store }, inv.count);
    this.backupsPinned.set({ store }, inv.pinned);
    this.untrustedBackups.set({ store }, inv.untrusted ?? 0);
    if (inv.oldest) this.oldestBackup.set({ store }, seconds(inv.oldest));
    else this.oldestBackup.remove({ store });
    if (inv.newest) this.newestBackup.set({ store }, seconds(inv.newest));
    else this.newestBackup.remove({ store });
  }

  setOutbox(o: OutboxStatus): void {
    this.outboxBacklog.set(o.count);
    this.outboxBacklogBytes.set(o.bytes);
    if (o.oldest && o.count > 0) this.outboxOldest.set(seconds(o.oldest));
    else this.outboxOldest.remove();
  }

  recordOutboxDropped(): void {
    this.outboxDropped.inc();
  }

  /** One prune of a store: `n` backups deleted, `waitingForLock` left until their Object Lock expires. */
  recordPrune(store: string, n: number, waitingForLock = 0): void {
    this.pruned.inc({ store }, Math.max(0, n));
    this.waitingForLock.set({ store }, Math.max(0, waitingForLock));
  }
}
