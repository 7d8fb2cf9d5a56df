import { loadIdentities } from '../bundle/encrypt.js';
import type { Config } from '../config/load.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { findBackup, loadCatalogFor } from '../catalog/catalog.js';
import { catalogCacheDir } from '../layout.js';
import { loadTrust } from '../catalog/trust.js';
import { createCronSchedule, type CronSchedule } from '../schedule/cron.js';
import type { Store } from '../storage/store.js';
import { runRestoreDrill, type DrillResult } from './drill.js';
import type { DrillMetrics } from './metrics.js';
import { drillNodeFor } from './turn.js';
import { drillSettings } from './settings.js';

export interface DrillScheduleDeps {
  cfg: Config;
  stores: Store[];
  log: Logger;
  metrics: DrillMetrics;
  /** Remembers the drill's result across restarts (the daemon state). */
  record(r: DrillResult): Promise<void>;
}

export interface DrillSchedule {
  /** No new drill starts; the one in progress is aborted. */
  stop(): void;
  /** Resolves when no drill is in progress. */
  idle(): Promise<void>;
}

/**
 * Restore drills on `drill.schedule`: one node per slot (drillNodeFor), at low
 * priority, never on the node's etcd ports. One drill at a time: a slot that
 * comes while one runs is left out. Without `drill.schedule`, nothing runs.
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

async function runDrillSlot({ cfg, stores, log, metrics, record }: DrillScheduleDeps, schedule: CronSchedule, slot: Date, signal: AbortSignal): Promise<void> {
  const store = stores.find((s) => s.name === (cfg.drill.store ?? stores[0]?.name))!;
  const cat = await loadCatalogFor(store, cfg.cluster, 'latest', await loadTrust(cfg), { cacheDir: catalogCacheDir(cfg.workDir, store.name) });
  const turn = drillNodeFor(
    cat.listed.flatMap((b) => (b.manifest && b.node ? [b.node] : [])),
    slot,
    schedule.intervalSeconds(),
  );
  if (turn !== cfg.node) {
    log.info({ slot: slot.toISOString(), node: turn ?? 'none' }, 'restore drill: another node has this slot');
    return;
  }
  if (!cat.backups.length) return;
  // The backup a restore would take: with trusted keys, never one someone else planted.
  const m = findBackup(cat, 'latest', store.name);
  const identities = m.object?.encrypted && cfg.drill.identityFile ? await loadIdentities(cfg.drill.identityFile) : undefined;
  log.info({ id: m.id, store: store.name }, 'restore drill started');
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
}
