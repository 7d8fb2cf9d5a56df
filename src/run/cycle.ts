import type { Config } from '../config/load.js';
import { BackupError, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { pruneStore, type PruneOutcome } from '../retention/apply.js';
import type { Store } from '../storage/store.js';
import { runBackup, type BackupRequest, type RunDeps, type RunResult } from './backup.js';
import { acquireRunLock } from './lock.js';
import { listOutbox, retryOutbox, summarizeOutbox, trimOutbox, type OutboxSummary, type RetryDelivery } from './outbox.js';

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
export async function runCycle(cfg: Config, deps: RunDeps, req: BackupRequest): Promise<CycleResult> {
  const run = await runBackup(cfg, deps, req);
  const retried = await deliverOutbox(cfg, deps.stores, deps.log);
  const pruned: PruneOutcome[] = [];
  if (run.result === 'success') {
    for (const store of deps.stores) {
      try {
        pruned.push(await pruneStore(cfg, store, deps.log, { dryRun: false }));
      } catch (e) {
        deps.log.error({ store: store.name, err: messageOf(e) }, 'retention failed');
      }
    }
  }
  const { dropped } = await trimOutbox(cfg, deps.stores.map((s) => s.name), deps.log);
  const outbox = summarizeOutbox(await listOutbox(cfg), deps.stores.map((s) => s.name));
  return { run, retried, pruned, outbox, dropped };
}

/** Retries undelivered bundles if no run holds the lock; a busy node simply tries at the next chance. */
export async function deliverOutbox(cfg: Config, stores: Store[], log: Logger, opts: { force?: boolean } = {}): Promise<RetryDelivery[]> {
  let lock;
  try {
    lock = await acquireRunLock(cfg.workDir, 'outbox delivery');
  } catch (e) {
    if (e instanceof BackupError && e.reason === 'lock-busy') return [];
    throw e;
  }
  try {
    return await retryOutbox(cfg, stores, log, opts);
  } finally {
    await lock.release();
  }
}
