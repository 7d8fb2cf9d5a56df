import { parseDurationSeconds } from '../units/duration.js';
import { messageOf } from '../errors.js';
import { parseBackupId } from '../layout.js';
import type { Logger } from '../log.js';
import type { ProgressSink } from '../progress/model.js';
import type { BackupRequest } from '../run/backup.js';
import { runCycle, type CycleResult } from '../run/cycle.js';
import type { Source } from '../source/source.js';
import type { DaemonContext } from './context.js';
import { missedWhy, type SlotCoordinator } from './coordinator.js';
import { refreshInventory } from './inventory.js';
import { recordRetries } from './outbox-retry.js';

/** How long shutdown still waits for a run it has aborted. */
const ABORT_GRACE_MS = 5000;
/** How long shutdown waits for coordinated slots to end (an aborted approach, a release) after the run. */
const SLOT_WAIT_MS = 15_000;

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
  /** Ends the wait between attempts of a run retrying in its slot: at once when shutdown begins. */
  private readonly stopRetries = new AbortController();
  private readonly jitterSeconds: number;
  /** Ends the approach to a slot in progress (a newer tick, or shutdown). */
  private approaching: AbortController | undefined;
  /** Coordinated slots in progress (approach, run, release): shutdown waits for them before the etcd client closes. */
  private readonly slots = new Set<Promise<boolean>>();

  constructor(
    private readonly ctx: DaemonContext,
    private readonly source: Source,
    /** The schedule's next slot (for etcd_backup_next_run_timestamp_seconds). */
    private readonly nextRun: () => Date | undefined,
    /** Coordination (mode etcd): each scheduled and catch-up run is claimed for its slot first. */
    private readonly coord?: SlotCoordinator,
    /** The time a slot is given up at: the tick after it. */
    private readonly deadlineOf: (slot: Date) => Date = (slot) => new Date(slot.getTime() + 60_000),
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
  trigger(req: BackupRequest, runLog: Logger = this.ctx.log, progress?: ProgressSink): Promise<CycleResult> | undefined {
    if (this.current || this.stopping) return undefined;
    const { cfg, stores, metrics, state } = this.ctx;
    this.current = (async () => {
      metrics.setNextRun(this.nextRun());
      const deps = { source: this.source, stores, log: runLog, signal: this.abort.signal, stopRetries: this.stopRetries.signal, progress };
      const cyc = await runCycle(cfg, deps, req, { onRunDone: () => (this.inUpkeep = true) });
      await state.recordRun(cyc.run);
      metrics.recordRun(cyc.run);
      if (cyc.run.result === 'success') this.ctx.continuous?.baseCommitted();
      for (const p of cyc.pruned) metrics.recordPrune(p.store, p.deleted.length, p.waitingForLock.length);
      for (const _ of cyc.dropped) metrics.recordOutboxDropped();
      await recordRetries(this.ctx, cyc.retried);
      metrics.setOutbox(cyc.outbox);
      await refreshInventory(this.ctx);
      // Best effort (it never throws): the kit follows the newest member list and config.
      if (cyc.run.result === 'success') await this.ctx.kit?.refresh('run');
      // A run streams the whole database through this process: its garbage goes now, not at the next full GC.
      this.ctx.reclaim.after(Infinity);
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
    if (this.coord) {
      // No jitter: the claim decides who runs, and the leader delay keeps the leader's member out of it.
      void this.trackSlot(this.runSlot('schedule', slot)).catch((e) => log.error({ err: messageOf(e) }, 'run crashed'));
      return;
    }
    const delay = this.jitterSeconds > 0 ? Math.random() * this.jitterSeconds * 1000 : 0;
    const retryUntil = this.deadlineOf(slot);
    setTimeout(() => void this.trigger({ trigger: 'schedule', retryUntil })?.catch((e) => log.error({ err: messageOf(e) }, 'run crashed')), delay).unref();
  }

  /** The catch-up run at start; with coordination it is claimed for `slot`, the missed tick. */
  catchUp(slot: Date | undefined, noRun: () => void = () => undefined): void {
    const { log } = this.ctx;
    const crashed = (e: unknown) => log.error({ err: messageOf(e) }, 'run crashed');
    if (this.coord && slot) void this.trackSlot(this.runSlot('catch-up', slot)).then((ran) => ran || this.stopping || noRun(), crashed);
    else {
      // The missed slot has no deadline of its own: retry until the next tick at most.
      const next = this.nextRun();
      void this.trigger({ trigger: 'catch-up', ...(next ? { retryUntil: next } : {}) })?.catch(crashed);
    }
  }

  /**
   * A coordinated run: approach the slot (acquireSlot), then run only if this
   * node won it (or is alone without quorum), and record the result. A newer
   * tick ends the approach to an older slot (its deadline has come).
   */
  private async runSlot(trigger: 'schedule' | 'catch-up', slot: Date): Promise<boolean> {
    const coord = this.coord!;
    const { log, metrics } = this.ctx;
    this.approaching?.abort();
    const ac = new AbortController();
    this.approaching = ac;
    const at = slot.toISOString();
    let d;
    try {
      d = await coord.approach(slot, this.deadlineOf(slot), ac.signal);
    } finally {
      if (this.approaching === ac) this.approaching = undefined;
    }
    switch (d.outcome) {
      case 'done': {
        log.info({ slot: at, node: d.node, backupId: d.backupId }, 'slot already backed up by another node');
        metrics.recordSlotWinner(slot, d.node);
        const taken = d.backupId ? parseBackupId(d.backupId)?.time : undefined;
        if (taken) metrics.recordClusterSuccess(taken);
        return false;
      }
      case 'give-up': {
        if (d.why === 'aborted' && this.stopping) return false;
        metrics.recordSkippedTick('slot-given-up');
        const missed = missedWhy('backup', d, coord.onNoQuorum);
        if (missed) metrics.recordMissedSlot('backup', slot, missed);
        const why = d.why === 'aborted' ? 'deadline' : d.why;
        if (missed) log.warn({ slot: at, why, lastHolder: d.lastHolder }, 'slot given up: no node backs it up (missed slot)');
        else log.info({ slot: at, why, lastHolder: d.lastHolder }, 'slot given up at its deadline: the node holding it is still running');
        return false;
      }
      case 'unavailable':
        if (coord.onNoQuorum === 'skip') {
          metrics.recordSkippedTick('slot-given-up');
          metrics.recordMissedSlot('backup', slot, 'etcd-unavailable');
          log.warn({ slot: at, err: d.error }, 'slot given up: etcd does not answer (coordination.onNoQuorum: skip)');
          return false;
        }
        log.warn({ slot: at, err: d.error }, 'etcd does not answer: backing up without a claim (label no-quorum)');
        return (await this.trigger(noQuorumRequest(trigger, slot))) !== undefined;
      case 'alone':
        log.warn({ slot: at }, 'etcd has no quorum: backing up without a claim (label no-quorum)');
        return (await this.trigger(noQuorumRequest(trigger, slot))) !== undefined;
      case 'won': {
        log.info({ slot: at, attempt: d.claim.attempt }, 'slot claimed: backing up');
        const p = this.trigger({ trigger, slot, retryUntil: this.deadlineOf(slot) });
        if (!p) {
          if (!this.stopping) metrics.recordSkippedTick('busy');
          await coord.finishSlot(d.claim, { result: 'failed', reason: this.stopping ? 'the daemon is shutting down' : 'a run was already in progress on this node' });
          return false;
        }
        let cyc;
        try {
          cyc = await p;
        } catch (e) {
          await coord.finishSlot(d.claim, { result: 'failed', reason: messageOf(e) });
          throw e;
        }
        const run = cyc.run;
        if (run.result === 'success') metrics.recordSlotWinner(slot, this.ctx.cfg.node);
        await coord.finishSlot(d.claim, run.result === 'success' ? { result: 'success', backupId: run.id } : { result: 'failed', reason: run.reason ?? run.error ?? 'failed' });
        return true;
      }
    }
  }

  private trackSlot(p: Promise<boolean>): Promise<boolean> {
    this.slots.add(p);
    void p.catch(() => undefined).finally(() => this.slots.delete(p));
    return p;
  }

  /** No new run starts from now on; an approach to a slot ends. */
  beginStop(): void {
    this.stopping = true;
    this.approaching?.abort();
    this.stopRetries.abort();
  }

  /** Waits up to shutdownTimeout for the run in progress, then aborts it. */
  async finish(): Promise<void> {
    await this.finishRun();
    // Aborted approaches end within one etcd call; a won slot still records its result.
    if (this.slots.size > 0) await Promise.race([Promise.allSettled([...this.slots]), sleep(SLOT_WAIT_MS)]);
  }

  private async finishRun(): Promise<void> {
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

/**
 * A run without quorum (coordination.onNoQuorum: backup): the preflight's
 * quorum checks fail by definition, and a degraded cluster is when a backup
 * matters most, so it goes ahead as an operator's --force would. The manifest
 * records it (label no-quorum, preflight forced with the failed checks) and
 * cluster-backup.sh marks its files possibly dirty.
 */
function noQuorumRequest(trigger: 'schedule' | 'catch-up', slot: Date): BackupRequest {
  return { trigger, slot, label: 'no-quorum', force: true };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
