import type { Config } from '../config/load.js';
import { BackupError, messageOf, reasonOf } from '../errors.js';
import { loadTrust } from '../catalog/trust.js';
import type { Logger } from '../log.js';
import { pruneStore, type PruneOutcome } from '../catalog/prune.js';
import type { Store } from '../storage/store.js';
import type { BackupRequest, RunResult } from './backup.js';
import { acquireRunLock } from './lock.js';
import { runBackupWithRetry, type RetryDeps } from './retry.js';
import { outboxStatus, retryOutbox, trimOutbox, type OutboxSummary, type RetryDelivery } from './outbox.js';

export interface CycleResult {
  run: RunResult;
  retried: RetryDelivery[];
  pruned: PruneOutcome[];
  outbox: OutboxSummary;
  dropped: string[];
}

/**
 * What happens around one backup, for the daemon and the CLI alike: the run,
 * then the outbox's debts, then retention. Retention runs only after a
 * successful run: a failing node keeps everything it has.
 */
export async function runCycle(cfg: Config, deps: RetryDeps, req: BackupRequest, hooks: { /** The backup itself is over; upkeep (outbox, retention) follows. */ onRunDone?: (run: RunResult) => void } = {}): Promise<CycleResult> {
  const run = await runBackupWithRetry(cfg, deps, req);
  hooks.onRunDone?.(run);
  const delivered = await deliverOutbox(cfg, deps.stores, deps.log);
  const pruned: PruneOutcome[] = [];
  if (run.result === 'success') {
    // Without its trusted keys retention could not tell a planted backup from a real one: it waits.
    const trust = await loadTrust(cfg).catch((e: unknown) => {
      deps.log.error({ err: messageOf(e) }, 'retention skipped: cannot read signing.trustedKeys');
      return undefined;
    });
    for (const store of trust ? deps.stores : []) {
      try {
        pruned.push(await pruneStore(cfg, store, deps.log, { dryRun: false, protect: [run.id], trust }));
      } catch (e) {
        deps.log.error({ store: store.name, reason: reasonOf(e), err: messageOf(e) }, 'retention failed');
      }
    }
  }
  const outbox = await outboxStatus(cfg, deps.stores.map((s) => s.name));
  return { run, retried: delivered.retried, pruned, outbox, dropped: delivered.dropped };
}

/**
 * Retries undelivered bundles and trims the outbox, under the outbox lock
 * (not the run lock: a store that hangs must not block the next backup).
 * If another delivery holds the lock, this one simply skips its turn.
 */
export async function deliverOutbox(
  cfg: Config,
  stores: Store[],
  log: Logger,
  opts: { force?: boolean; signal?: AbortSignal } = {},
): Promise<{ retried: RetryDelivery[]; dropped: string[] }> {
  let lock;
  try {
    lock = await acquireRunLock(cfg.workDir, 'outbox delivery', 'outbox.lock');
  } catch (e) {
    if (e instanceof BackupError && e.reason === 'lock-busy') return { retried: [], dropped: [] };
    throw e;
  }
  try {
    const retried = await retryOutbox(cfg, stores, log, opts);
    const { dropped } = await trimOutbox(cfg, stores.map((s) => s.name), log);
    return { retried, dropped };
  } finally {
    await lock.release();
  }
}
