import { parseDurationSeconds } from '../units/duration.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { BackupRequest } from '../run/backup.js';
import { runCycle, type CycleResult } from '../run/cycle.js';
import type { Source } from '../source/source.js';
import type { DaemonContext } from './context.js';
import { refreshInventory } from './inventory.js';
import { recordRetries } from './outbox-retry.js';

/** How long shutdown still waits for a run it has aborted. */
const ABORT_GRACE_MS = 5000;

/**
 * One backup cycle at a time (schedule, catch-up, control socket), its
 * results recorded in the state and the metrics, and its end at shutdown.
 */
export class BackupRunner {
  private current: Promise<CycleResult> | undefined;
  /** The cycle in progress has finished its backup and is doing upkeep (outbox, retention, inventory). */
  private inUpkeep = false;
  private stopping = false;
  /** Aborts the run in progress: only once shutdown has waited shutdownTimeout for it. */
  private readonly abort = new AbortController();
  private readonly jitterSeconds: number;

  constructor(
    private readonly ctx: DaemonContext,
    private readonly source: Source,
    /** The schedule's next slot (for etcd_backup_next_run_timestamp_seconds). */
    private readonly nextRun: () => Date | undefined,
  ) {
    this.jitterSeconds = parseDurationSeconds(ctx.cfg.jitter);
  }

  get running(): boolean {
    return this.current !== undefined;
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Starts a cycle, or returns undefined when one is running or the daemon is stopping. */
  trigger(req: BackupRequest, runLog: Logger = this.ctx.log): Promise<CycleResult> | undefined {
    if (this.current || this.stopping) return undefined;
    const { cfg, stores, metrics, state } = this.ctx;
    this.current = (async () => {
      metrics.setNextRun(this.nextRun());
      const cyc = await runCycle(cfg, { source: this.source, stores, log: runLog, signal: this.abort.signal }, req, { onRunDone: () => (this.inUpkeep = true) });
      await state.recordRun(cyc.run);
      metrics.recordRun(cyc.run);
      for (const p of cyc.pruned) metrics.recordPrune(p.store, p.deleted.length, p.waitingForLock.length);
      for (const _ of cyc.dropped) metrics.recordOutboxDropped();
      await recordRetries(this.ctx, cyc.retried);
      metrics.setOutbox(cyc.outbox);
      await refreshInventory(this.ctx);
      return cyc;
    })().finally(() => {
      this.current = undefined;
      this.inUpkeep = false;
      metrics.setNextRun(this.nextRun());
    });
    return this.current;
  }

  /** Waits for the cycle in progress when its backup is done and it only tidies up (outbox, retention). */
  async waitForUpkeep(): Promise<void> {
    if (this.current && this.inUpkeep) await this.current.catch(() => undefined);
  }

  /** A schedule tick: a run unless one is in progress (then the tick is skipped and counted, not queued). */
  onSlot(slot: Date): void {
    const { log, metrics } = this.ctx;
    if (this.stopping) return;
    if (this.current) {
      metrics.recordSkippedTick('busy');
      log.warn({ slot: slot.toISOString() }, 'schedule tick skipped: a run is still in progress');
      metrics.setNextRun(this.nextRun());
      return;
    }
    const delay = this.jitterSeconds > 0 ? Math.random() * this.jitterSeconds * 1000 : 0;
    setTimeout(() => void this.trigger({ trigger: 'schedule' })?.catch((e) => log.error({ err: messageOf(e) }, 'run crashed')), delay).unref();
  }

  /** No new run starts from now on. */
  beginStop(): void {
    this.stopping = true;
  }

  /** Waits up to shutdownTimeout for the run in progress, then aborts it. */
  async finish(): Promise<void> {
    const { cfg, log } = this.ctx;
    const current = this.current;
    if (!current) return;
    const timeout = parseDurationSeconds(cfg.shutdownTimeout) * 1000;
    log.info({ timeoutSeconds: timeout / 1000 }, 'shutdown: waiting for the run in progress');
    const settled = (ms: number) => Promise.race([current.then(() => true, () => true), sleep(ms).then(() => false)]);
    if (!(await settled(timeout))) {
      log.warn('shutdown: run did not finish in time; aborting it (nothing unverified is committed)');
      this.abort.abort();
      // A store that hangs may not notice the abort; its manifest can never be written after it,
      // so leaving without waiting loses nothing: the bundle stays in the outbox.
      if (!(await settled(ABORT_GRACE_MS))) log.warn('shutdown: the aborted run is still stuck in a store; exiting anyway');
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
