import type { Config } from '../config/load.js';
import { startControlServer, type ControlHandler } from '../control/server.js';
import { BackupError } from '../errors.js';
import type { Logger } from '../log.js';
import { BackupMetrics } from '../metrics/metrics.js';
import { startMetricsServer } from '../metrics/server.js';
import { configWarnings } from '../config/warnings.js';
import { catchUpDue } from '../schedule/catch-up.js';
import { createCronSchedule } from '../schedule/cron.js';
import { createSource } from '../source/index.js';
import { createStores } from '../storage/index.js';
import { VERSION } from '../version.js';
import { DrillMetrics } from '../drill/metrics.js';
import { startDrillSchedule } from '../drill/schedule.js';
import { scheduledReplayDrill } from '../continuous/replay-drill.js';
import type { DaemonContext } from './context.js';
import { controlHandler } from './control.js';
import { refreshInventory, refreshOutbox } from './inventory.js';
import { startOutboxRetries } from './outbox-retry.js';
import { BackupRunner } from './runner.js';
import { SlotCoordinator } from './coordinator.js';
import { shutDown } from './shutdown.js';
import { DaemonStateFile } from './state.js';
import { lowerOwnPriority } from '../run/priority.js';
import { KitRefresher } from './recovery-kit.js';
import { startContinuous } from './continuous.js';
import { MemoryReclaimer } from './reclaim.js';

export interface DaemonHandle {
  /** Resolves when the daemon has shut down. */
  done: Promise<void>;
  stop(): Promise<void>;
  metricsPort: number;
}

/**
 * The long-running service: schedule + catch-up, one run at a time, the
 * outbox retry loop, metrics, the control socket, and a clean shutdown.
 */
export async function startDaemon(cfg: Config, log: Logger): Promise<DaemonHandle> {
  // First: the socket is also the guard against a second daemon on this node.
  let handler: ControlHandler = async () => {
    throw new BackupError('lock-busy', 'the daemon is still starting');
  };
  const control = await startControlServer(cfg.control.socket, (req, emit) => handler(req, emit));
  try {
    await lowerOwnPriority(cfg.priority, log);
    return await startServices(cfg, log, control, (h) => (handler = h));
  } catch (e) {
    await control.close().catch(() => undefined);
    throw e;
  }
}

/** Wiring: each service lives in its own module of src/daemon/ (and src/drill/schedule.ts). */
async function startServices(
  cfg: Config,
  log: Logger,
  control: { close(): Promise<void> },
  setControlHandler: (h: ControlHandler) => void,
): Promise<DaemonHandle> {
  const stores = await createStores(cfg.stores);
  const storeNames = stores.map((s) => s.name);
  const source = createSource(cfg);
  const metrics = new BackupMetrics({ cluster: cfg.cluster, node: cfg.node });
  metrics.initStores(storeNames);
  const state = await DaemonStateFile.load(cfg.workDir, log);
  metrics.restoreState(state.current);
  const ctx: DaemonContext = { cfg, log, stores, storeNames, metrics, state, reclaim: new MemoryReclaimer(log) };
  if (cfg.recovery.dir) ctx.kit = new KitRefresher(ctx);

  // Coordination (mode etcd): one etcd3 client for the daemon's life; mode none makes none.
  const coord = SlotCoordinator.fromConfig(cfg, log);
  const deadlineOf = (slot: Date) => schedule.nextRuns(2).find((t) => t.getTime() > slot.getTime()) ?? new Date(slot.getTime() + interval * 1000);
  const runner = new BackupRunner(ctx, source, () => schedule.next(), coord, deadlineOf);
  const schedule = createCronSchedule(cfg.schedule, cfg.timezone, (slot) => runner.onSlot(slot));
  schedule.start();
  const interval = schedule.intervalSeconds();
  metrics.setScheduleInterval(schedule.longestGapSeconds());
  metrics.setNextRun(schedule.next());

  const metricsServer = await startMetricsServer({
    listen: cfg.metrics.listen,
    metrics,
    readiness: () =>
      runner.isStopping
        ? { ready: false, reason: 'shutting down' }
        : state.current.consecutiveFailures >= cfg.readyFailureThreshold
          ? { ready: false, reason: `last ${state.current.consecutiveFailures} runs failed (${state.current.lastReason ?? 'unknown'})` }
          : { ready: true },
  });
  log.info(
    { version: VERSION, cluster: cfg.cluster, node: cfg.node, coordination: cfg.coordination.mode, schedule: cfg.schedule, timezone: cfg.timezone, next: schedule.next()?.toISOString(), metrics: `${metricsServer.address}:${metricsServer.port}`, control: cfg.control.socket, stores: storeNames, memoryReclaim: ctx.reclaim.available },
    'etcd-backupd daemon started',
  );
  for (const w of configWarnings(cfg)) log.warn(w);
  setControlHandler(controlHandler(ctx, runner, schedule, coord));
  // The config loaded: the kit follows it now, not only after the next run (not awaited: the executable is ~125 MiB).
  void ctx.kit?.refresh('start');

  const retries = startOutboxRetries(ctx, () => !runner.running && !runner.isStopping);
  const drillMetrics = new DrillMetrics(metrics.registry);
  if (state.current.drill) drillMetrics.restoreState(state.current.drill);
  if (state.current.replayDrill) drillMetrics.restoreReplayState(state.current.replayDrill);
  const drills = startDrillSchedule({ cfg, stores, log, metrics: drillMetrics, record: (r) => state.recordDrill(r), coord, onMissedSlot: (slot, why) => metrics.recordMissedSlot('drill', slot, why), replayDrill: cfg.continuous.enabled ? (store, signal) => scheduledReplayDrill(cfg, log, store, signal) : undefined, recordReplay: (r) => state.recordReplayDrill(r) });
  // Continuous backups (off by default): the writer election starts now; a node that wins follows etcd.
  const continuous = startContinuous(ctx, runner);
  if (continuous) ctx.continuous = continuous;

  // Start-up: deliver what a previous life left behind, then catch up a missed slot.
  await refreshOutbox(ctx).catch(() => undefined);
  void refreshInventory(ctx);
  if (catchUpDue(state.current.lastSuccess, new Date(), interval)) {
    // With coordination the catch-up is claimed for the missed tick (the same slot on every node): usually another node has it.
    const slot = coord ? schedule.previous(new Date()) : undefined;
    log.info(
      { lastSuccess: state.current.lastSuccess ?? 'never', intervalSeconds: interval, ...(slot ? { slot: slot.toISOString() } : {}) },
      coord ? 'no success of this node within one schedule interval: approaching the missed slot for a catch-up backup' : 'no success within one schedule interval: running a catch-up backup now',
    );
    if (coord && !slot) {
      log.warn('no previous schedule tick found: no catch-up backup (the next tick is claimed as usual)');
      retries.deliverAtStart();
    } else {
      // A coordinated catch-up that another node has runs no cycle: then deliver what the outbox owes.
      runner.catchUp(slot, () => retries.deliverAtStart());
    }
  } else {
    retries.deliverAtStart();
  }

  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const stop = async () => {
    if (runner.isStopping) return done;
    await shutDown({ log, runner, schedule, drills, retries, control, metricsServer, stores, coord, continuous });
    resolveDone();
    return done;
  };
  return { done, stop, metricsPort: metricsServer.port };
}
