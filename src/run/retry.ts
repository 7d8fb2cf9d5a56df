/**
 * Retrying a scheduled run within its slot. During an upgrade or any other
 * control-plane rollout the real cluster-backup.sh refuses (an operator is
 * progressing) or cannot ask the API server; both pass, often within
 * minutes. A scheduled run therefore tries again with backoff (30 s doubling
 * to 5 min, jittered) until the slot's deadline, the next scheduled tick. A
 * manual run has no deadline and does not retry. Shutdown ends the waiting
 * at once; the last failure is the run's result.
 */
import type { Config } from '../config/load.js';
import { TRANSIENT_SOURCE_REASONS } from '../source/script-failure.js';
import { runBackup, type BackupRequest, type RunDeps, type RunResult } from './backup.js';

export interface RetryDelays {
  firstMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY_DELAYS: RetryDelays = { firstMs: 30_000, maxMs: 300_000 };

/** Whether a failed run is worth another attempt in its slot: the cluster was busy, not broken. */
export function isRetryable(r: RunResult): boolean {
  return r.result === 'failed' && r.reason !== undefined && TRANSIENT_SOURCE_REASONS.includes(r.reason);
}

/**
 * When attempt `attempt + 1` starts after attempt `attempt` (1-based) failed
 * at `now`: the delay doubles from firstMs up to maxMs, times 0.8-1.2
 * (`random` in [0,1)) so the masters of a cluster do not retry in step.
 * Undefined when that is not before `until`. Pure.
 */
export function nextAttemptAt(now: Date, attempt: number, until: Date, random: number, d: RetryDelays = DEFAULT_RETRY_DELAYS): Date | undefined {
  const base = Math.min(d.maxMs, d.firstMs * 2 ** Math.max(0, attempt - 1));
  const at = new Date(now.getTime() + Math.round(base * (0.8 + 0.4 * random)));
  return at.getTime() < until.getTime() ? at : undefined;
}

export interface RetryDeps extends RunDeps {
  /** Aborted at shutdown: ends the wait between attempts at once. */
  stopRetries?: AbortSignal;
  retryDelays?: RetryDelays;
  random?: () => number;
}

/** runBackup, again while it fails for a transient reason and req.retryUntil leaves time. */
export async function runBackupWithRetry(cfg: Config, deps: RetryDeps, req: BackupRequest): Promise<RunResult> {
  const now = deps.now ?? (() => new Date());
  const random = deps.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    const run = await runBackup(cfg, deps, req);
    if (attempt > 1) run.attempts = attempt;
    if (!req.retryUntil || !isRetryable(run)) return run;
    const at = nextAttemptAt(now(), attempt, req.retryUntil, random(), deps.retryDelays);
    if (!at) {
      deps.log.warn({ reason: run.reason, attempts: attempt, retryUntil: req.retryUntil.toISOString() }, 'backup not retried: the slot ends before the next attempt');
      return run;
    }
    deps.log.warn({ reason: run.reason, attempt, nextAttempt: at.toISOString(), retryUntil: req.retryUntil.toISOString() }, 'backup failed for a transient reason; retrying within the slot');
    if (!(await waitUntil(at, now, deps.stopRetries))) {
      deps.log.info({ reason: run.reason, attempts: attempt }, 'retry abandoned: the daemon is shutting down');
      return run;
    }
  }
}

/** Sleeps until `at`; false when `stop` fires first. */
function waitUntil(at: Date, now: () => Date, stop?: AbortSignal): Promise<boolean> {
  if (stop?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onStop = () => {
      clearTimeout(t);
      resolve(false);
    };
    const t = setTimeout(() => {
      stop?.removeEventListener('abort', onStop);
      resolve(true);
    }, Math.max(0, at.getTime() - now().getTime()));
    stop?.addEventListener('abort', onStop, { once: true });
  });
}
