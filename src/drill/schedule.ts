import { loadIdentities } from '../bundle/encrypt.js';
import type { Config } from '../config/load.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { findBackup, loadCatalogFor, type Catalog } from '../catalog/catalog.js';
import { catalogCacheDir } from '../layout.js';
import { loadTrust } from '../catalog/trust.js';
import { createCronSchedule, type CronSchedule } from '../schedule/cron.js';
import type { Store } from '../storage/store.js';
import { missedWhy, type MissedWhy, type SlotDecision } from '../coord/missed.js';
import type { SlotClaim } from '../coord/claims.js';
import { runRestoreDrill, type DrillResult } from './drill.js';
import type { ReplayDrillResult } from './replay-result.js';
import type { DrillMetrics } from './metrics.js';
import { drillNodeFor } from './turn.js';
import { drillSettings } from './settings.js';

/** What drills need of coordination (the daemon's SlotCoordinator). */
export interface DrillCoordination {
  readonly onNoQuorum: 'backup' | 'skip';
  approach(slot: Date, deadline: Date, signal: AbortSignal, kind: 'drill'): Promise<SlotDecision>;
  finishSlot(claim: SlotClaim, r: { result: 'success' | 'failed'; backupId?: string; reason?: string }): Promise<void>;
}

export interface DrillScheduleDeps {
  cfg: Config;
  stores: Store[];
  log: Logger;
  metrics: DrillMetrics;
  /** Remembers the drill's result across restarts (the daemon state). */
  record(r: DrillResult): Promise<void>;
  /** Coordination (mode etcd): each drill slot is claimed, and only its winner drills. Without it, nodes take turns (drillNodeFor). */
  coord?: DrillCoordination | undefined;
  /** A drill slot nobody drills (with coordination): counted for the cluster view. */
  onMissedSlot?: (slot: Date, why: MissedWhy) => void;
  /**
   * The replay drill (continuous/replay-drill.ts), run after the restore drill
   * under the same claim; set by the daemon when continuous backups are on.
   * Injected: continuous/ builds on drill/, not the reverse.
   */
  replayDrill?: ((store: Store, signal: AbortSignal) => Promise<ReplayDrillResult>) | undefined;
  /** Remembers the replay drill's verdict across restarts (the daemon state). */
  recordReplay?: ((r: ReplayDrillResult) => Promise<void>) | undefined;
}

export interface DrillSchedule {
  /** No new drill starts; the one in progress is aborted. */
  stop(): void;
  /** Resolves when no drill is in progress. */
  idle(): Promise<void>;
}

/**
 * Restore drills on `drill.schedule`: one node per slot, at low priority,
 * never on the node's etcd ports. With coordination the slot is claimed like
 * a backup slot (kind `drill`, docs/coordination.md); with `mode: none` the
 * nodes take turns (drillNodeFor). One drill at a time on a node: a slot that
 * comes while one runs is left out here (another node may claim it).
 * Without `drill.schedule`, nothing runs.
 */
export function startDrillSchedule(deps: DrillScheduleDeps): DrillSchedule {
  const { cfg, log } = deps;
  let drilling: Promise<void> | undefined;
  let stopped = false;
  // A drill proves nothing new if it is cut short, so shutdown aborts it at once (it cleans up after itself).
  const abort = new AbortController();
  const schedule = cfg.drill.schedule
    ? createCronSchedule(cfg.drill.schedule, cfg.timezone, (slot) => {
        if (stopped || drilling) return;
        drilling = runDrillSlot(deps, schedule!, slot, abort.signal)
          .catch((e) => log.error({ err: messageOf(e) }, 'restore drill crashed'))
          .finally(() => (drilling = undefined));
      })
    : undefined;
  if (schedule) {
    schedule.start();
    deps.metrics.setInterval(schedule.longestGapSeconds());
  }
  return {
    stop: () => {
      stopped = true;
      schedule?.stop();
      abort.abort();
    },
    idle: async () => {
      await drilling;
    },
  };
}

async function runDrillSlot(deps: DrillScheduleDeps, schedule: CronSchedule, slot: Date, signal: AbortSignal): Promise<void> {
  const { cfg, stores, log } = deps;
  const store = stores.find((s) => s.name === (cfg.drill.store ?? stores[0]?.name))!;
  const cat = await loadCatalogFor(store, cfg.cluster, 'latest', await loadTrust(cfg), { cacheDir: catalogCacheDir(cfg.workDir, store.name) });
  if (!cat.backups.length) {
    log.info({ slot: slot.toISOString(), store: store.name }, 'restore drill: no committed backup to drill yet');
    return;
  }
  if (!deps.coord) {
    const turn = drillNodeFor(
      cat.listed.flatMap((b) => (b.manifest && b.node ? [b.node] : [])),
      slot,
      schedule.intervalSeconds(),
    );
    if (turn !== cfg.node) {
      log.info({ slot: slot.toISOString(), node: turn ?? 'none' }, 'restore drill: another node has this slot');
      return;
    }
    await drillLatest(deps, store, cat, slot, signal);
    await replayDrill(deps, store, signal);
    return;
  }
  const deadline = schedule.nextRuns(2).find((t) => t.getTime() > slot.getTime()) ?? new Date(slot.getTime() + schedule.intervalSeconds() * 1000);
  const d = await deps.coord.approach(slot, deadline, signal, 'drill');
  if (d.outcome !== 'won') {
    if (d.outcome === 'give-up' && d.why === 'aborted') return; // shutdown
    const missed = missedWhy('drill', d, deps.coord.onNoQuorum);
    if (missed) deps.onMissedSlot?.(slot, missed);
    log.info({ slot: slot.toISOString(), ...drillSkipped(d) }, 'restore drill: not this node\'s slot');
    return;
  }
  let r: DrillResult | undefined;
  try {
    r = await drillLatest(deps, store, cat, slot, signal);
    // Under the same claim: one node per slot replays too. The slot's recorded result stays the restore drill's.
    await replayDrill(deps, store, signal);
  } finally {
    await deps.coord.finishSlot(
      d.claim,
      r === undefined
        ? { result: 'failed', reason: 'the drill crashed' }
        : r.result === 'success'
          ? { result: 'success', backupId: r.id }
          : { result: 'failed', backupId: r.id, reason: r.reason ?? 'failed' },
    );
  }
}

/**
 * Why a node does not drill a slot it approached. Without quorum or without
 * etcd nobody drills: a drill proves an old backup, and a degraded cluster
 * needs its masters' CPU and disks for itself.
 */
function drillSkipped(d: Exclude<SlotDecision, { outcome: 'won' }>): Record<string, string | undefined> {
  switch (d.outcome) {
    case 'done':
      return { node: d.node, why: 'done' };
    case 'give-up':
      return { why: d.why, lastHolder: d.lastHolder };
    case 'alone':
      return { why: 'no-quorum' };
    case 'unavailable':
      return { why: 'etcd-unavailable', err: d.error };
  }
}

async function drillLatest({ cfg, log, metrics, record }: DrillScheduleDeps, store: Store, cat: Catalog, slot: Date, signal: AbortSignal): Promise<DrillResult> {
  // The backup a restore would take: with trusted keys, never one someone else planted.
  const m = findBackup(cat, 'latest', store.name);
  const identities = m.object?.encrypted && cfg.drill.identityFile ? await loadIdentities(cfg.drill.identityFile) : undefined;
  log.info({ id: m.id, store: store.name, slot: slot.toISOString() }, 'restore drill: this node drills the slot');
  const r = await runRestoreDrill({
    store,
    manifest: m,
    ...drillSettings(cfg),
    log,
    signal,
    ...(identities ? { identities } : {}),
  });
  metrics.recordDrill(r);
  await record(r);
  if (r.result === 'success') log.info({ id: r.id, steps: r.steps, revision: r.revision }, 'restore drill passed');
  else log.error({ id: r.id, reason: r.reason, err: r.error, steps: r.steps }, 'restore drill FAILED');
  return r;
}

/**
 * With continuous backups, the slot also proves the newest chain of segments
 * (continuous/replay-drill.ts): replayed onto its full backup up to the next one's
 * revision, it must give that backup. No pair yet (a new install, a chain
 * that never reached a next full backup): nothing runs, nothing is counted.
 */
async function replayDrill({ log, metrics, replayDrill: run, recordReplay }: DrillScheduleDeps, store: Store, signal: AbortSignal): Promise<void> {
  if (!run || signal.aborted) return;
  const r = await run(store, signal);
  metrics.recordReplayDrill(r);
  await recordReplay?.(r);
  if (r.result === 'failed') log.error({ base: r.base, id: r.id, reason: r.reason, err: r.error }, 'replay drill FAILED');
}
