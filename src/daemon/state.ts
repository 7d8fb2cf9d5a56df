import { readFile } from 'node:fs/promises';
import type { DrillResult } from '../drill/drill.js';
import type { DrillState, ReplayDrillState } from '../drill/metrics.js';
import type { ReplayDrillResult } from '../drill/replay-result.js';
import { UNCOUNTED_FAILURE_REASONS, messageOf, reasonOf } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { statePath } from '../layout.js';
import type { Logger } from '../log.js';
import type { RunResult } from '../run/backup.js';
import type { RetryDelivery } from '../run/outbox.js';

/** What the daemon must remember across restarts: enough to decide on a catch-up run and to restore metrics. */
export interface DaemonState {
  lastAttempt?: string;
  lastSuccess?: string;
  lastResult?: 'success' | 'failed';
  lastReason?: string;
  lastId?: string;
  consecutiveFailures: number;
  stores: Record<string, { lastAttempt?: string; lastSuccess?: string; lastFailure?: string; lastReason?: string }>;
  /** Restore drills run by this node. */
  drill?: DrillState & { lastId?: string };
  /** Replay drills (continuous backups) run by this node: their verdict, for the metrics after a restart. */
  replayDrill?: ReplayDrillState;
  /** The etcd members (name, peer URLs) the last preflight saw, and when: the recovery kit's restore commands. */
  members?: { name: string; peerURLs: string[] }[];
  membersSeenAt?: string;
}

async function loadState(workDir: string): Promise<DaemonState> {
  try {
    const s = JSON.parse(await readFile(statePath(workDir), 'utf8')) as Partial<DaemonState>;
    return { consecutiveFailures: 0, stores: {}, ...s };
  } catch {
    // Missing or unreadable state only costs a catch-up run, which is the safe direction.
    return { consecutiveFailures: 0, stores: {} };
  }
}

function applyRun(state: DaemonState, r: RunResult): DaemonState {
  const next: DaemonState = { ...state, stores: { ...state.stores } };
  next.lastAttempt = r.startedAt;
  next.lastResult = r.result;
  next.lastId = r.id;
  if (r.members?.length) {
    next.members = r.members;
    next.membersSeenAt = r.startedAt;
  }
  if (r.result === 'success') {
    next.lastSuccess = r.finishedAt;
    next.consecutiveFailures = 0;
    delete next.lastReason;
  } else {
    // Same rule as the metric: refusals of a busy cluster (and lock-busy) are not failures in a row.
    const counted = !r.reason || !UNCOUNTED_FAILURE_REASONS.includes(r.reason);
    next.consecutiveFailures = state.consecutiveFailures + (counted ? 1 : 0);
    next.lastReason = r.reason;
  }
  for (const [name, o] of Object.entries(r.stores)) {
    const s = { ...next.stores[name], lastAttempt: r.startedAt };
    if (o.result === 'success') s.lastSuccess = r.finishedAt || new Date().toISOString();
    else {
      s.lastFailure = r.finishedAt || new Date().toISOString();
      s.lastReason = o.reason;
    }
    next.stores[name] = s;
  }
  return next;
}

function applyDrill(state: DaemonState, r: DrillResult): DaemonState {
  const prev = state.drill ?? {};
  return {
    ...state,
    drill: {
      lastAttempt: r.startedAt,
      lastId: r.id,
      lastSuccess: r.result === 'success' ? r.finishedAt : prev.lastSuccess,
      consecutiveFailures: r.result === 'success' ? 0 : (prev.consecutiveFailures ?? 0) + 1,
      ...(r.result === 'failed' ? { lastFailureReason: r.reason } : {}),
    },
  };
}

/** A skipped replay drill (no pair yet) and one stopped by a shutdown prove nothing: the verdict before stands. */
function applyReplayDrill(state: DaemonState, r: ReplayDrillResult): DaemonState {
  if (r.result === 'skipped' || r.reason === 'drill-aborted') return state;
  const prev = state.replayDrill ?? {};
  if (r.result === 'success') return { ...state, replayDrill: { lastSuccess: r.finishedAt, ...(r.revisionsReplayed !== undefined ? { revisions: r.revisionsReplayed } : {}) } };
  return { ...state, replayDrill: { ...prev, lastFailureReason: r.reason ?? 'internal' } };
}

/** A bundle the outbox delivered late is a success of its store: the store's last success is now. */
function applyDeliveries(state: DaemonState, retried: readonly RetryDelivery[]): DaemonState {
  const next: DaemonState = { ...state, stores: { ...state.stores } };
  for (const r of retried) {
    if (r.outcome.result !== 'success') continue;
    next.stores[r.store] = { ...next.stores[r.store], lastSuccess: new Date().toISOString() };
  }
  return next;
}

/**
 * The daemon's state and `workDir/state.json`: the record* methods are the
 * only way to change it, and each saves the file.
 *
 * One error policy for every save: a failed write is logged as a warning
 * (with its reason) and the daemon keeps running on the state in memory.
 * The file only decides the catch-up run and restores metrics after a
 * restart; failing a verified backup, a delivery or a drill because of it
 * would report a good copy as bad, and a stale file costs at most one extra
 * catch-up run, the safe direction (see loadState).
 */
export class DaemonStateFile {
  private constructor(
    private readonly workDir: string,
    private readonly log: Logger,
    private state: DaemonState,
  ) {}

  static async load(workDir: string, log: Logger): Promise<DaemonStateFile> {
    return new DaemonStateFile(workDir, log, await loadState(workDir));
  }

  get current(): Readonly<DaemonState> {
    return this.state;
  }

  async recordRun(r: RunResult): Promise<void> {
    this.state = applyRun(this.state, r);
    await this.save();
  }

  /** Records the outbox's late deliveries; returns those that succeeded (nothing is saved without one). */
  async recordRetries(retried: readonly RetryDelivery[]): Promise<RetryDelivery[]> {
    const delivered = retried.filter((r) => r.outcome.result === 'success');
    if (delivered.length === 0) return delivered;
    this.state = applyDeliveries(this.state, delivered);
    await this.save();
    return delivered;
  }

  async recordDrill(r: DrillResult): Promise<void> {
    this.state = applyDrill(this.state, r);
    await this.save();
  }

  async recordReplayDrill(r: ReplayDrillResult): Promise<void> {
    const next = applyReplayDrill(this.state, r);
    if (next === this.state) return;
    this.state = next;
    await this.save();
  }

  private async save(): Promise<void> {
    try {
      await writeFileAtomic(statePath(this.workDir), JSON.stringify(this.state, null, 2) + '\n');
    } catch (e) {
      this.log.warn({ reason: reasonOf(e), err: messageOf(e) }, 'cannot save the daemon state (state.json); keeping it in memory');
    }
  }
}
