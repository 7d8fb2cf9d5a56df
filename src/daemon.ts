import type { Config } from './config/load.js';
import { parseDurationSeconds } from './config/duration.js';
import { startControlServer, type ControlHandler } from './control/server.js';
import type { ControlEvent, ControlRequest } from './control/protocol.js';
import { BackupError, messageOf } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { BackupMetrics } from './metrics/metrics.js';
import { startMetricsServer } from './metrics/server.js';
import type { BackupRequest, Trigger } from './run/backup.js';
import { findBackup, loadCatalog, untrustedBackups } from './catalog/catalog.js';
import { loadTrust } from './catalog/trust.js';
import { configWarnings } from './config/warnings.js';
import { deliverOutbox, runCycle, type CycleResult } from './run/cycle.js';
import { listOutbox, summarizeOutbox } from './run/outbox.js';
import { setPinned } from './catalog/pin.js';
import { backupJson } from './run/report.js';
import { applyRun, loadState, saveState, type DaemonState } from './run/state.js';
import { createCronSchedule } from './schedule/cron.js';
import { createSource } from './source/index.js';
import { createStores } from './storage/index.js';
import { VERSION } from './version.js';
import { join } from 'node:path';
import { loadIdentities } from './bundle/encrypt.js';
import { runRestoreDrill } from './drill/drill.js';
import { DrillMetrics } from './drill/metrics.js';
import { drillNodeFor } from './drill/turn.js';

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
    return await startServices(cfg, log, control, (h) => (handler = h));
  } catch (e) {
    await control.close().catch(() => undefined);
    throw e;
  }
}

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
  let state: DaemonState = await loadState(cfg.workDir);
  metrics.restoreState(state);
  const abort = new AbortController();
  let current: Promise<CycleResult> | undefined;
  /** The cycle in progress has finished its backup and is doing upkeep (outbox, retention, inventory). */
  let inUpkeep = false;
  let stopping = false;

  const refreshInventory = async () => {
    const trust = await loadTrust(cfg).catch(() => undefined);
    for (const store of stores) {
      try {
        const cat = await loadCatalog(store, cfg.cluster, trust);
        const untrusted = untrustedBackups(cat);
        const mine = cat.backups.filter((m) => m.node === cfg.node && !untrusted.includes(m));
        metrics.setInventory(store.name, {
          count: mine.length,
          pinned: mine.filter((m) => m.pinned).length,
          untrusted: untrusted.length,
          oldest: mine.length ? new Date(mine[mine.length - 1]!.createdAt) : undefined,
          newest: mine.length ? new Date(mine[0]!.createdAt) : undefined,
        });
      } catch (e) {
        log.warn({ store: store.name, err: messageOf(e) }, 'cannot list store for the inventory metrics');
      }
    }
  };
  const refreshOutbox = async () => metrics.setOutbox(summarizeOutbox(await listOutbox(cfg), storeNames));

  const trigger = (req: BackupRequest, runLog: Logger = log): Promise<CycleResult> | undefined => {
    if (current || stopping) return undefined;
    current = (async () => {
      metrics.setNextRun(schedule.next());
      const cyc = await runCycle(cfg, { source, stores, log: runLog, signal: abort.signal }, req, { onRunDone: () => (inUpkeep = true) });
      state = applyRun(state, cyc.run);
      await saveState(cfg.workDir, state).catch((e) => log.error({ err: messageOf(e) }, 'cannot save state'));
      metrics.recordRun(cyc.run);
      for (const p of cyc.pruned) metrics.recordPrune(p.store, p.deleted.length);
      for (const _ of cyc.dropped) metrics.recordOutboxDropped();
      recordRetries(cyc);
      metrics.setOutbox(cyc.outbox);
      await refreshInventory();
      return cyc;
    })().finally(() => {
      current = undefined;
      inUpkeep = false;
      metrics.setNextRun(schedule.next());
    });
    return current;
  };

  const recordRetries = (cyc: Pick<CycleResult, 'retried'>) => {
    let changed = false;
    for (const r of cyc.retried) {
      if (r.outcome.result !== 'success') continue;
      const at = new Date().toISOString();
      state.stores[r.store] = { ...state.stores[r.store], lastSuccess: at };
      changed = true;
      log.info({ id: r.id, store: r.store }, 'outbox backlog delivered');
    }
    if (changed) {
      metrics.restoreState(state);
      void saveState(cfg.workDir, state).catch(() => undefined);
    }
  };

  const jitterSeconds = parseDurationSeconds(cfg.jitter);
  const onSlot = (slot: Date) => {
    if (stopping) return;
    if (current) {
      metrics.recordSkippedTick('busy');
      log.warn({ slot: slot.toISOString() }, 'schedule tick skipped: a run is still in progress');
      metrics.setNextRun(schedule.next());
      return;
    }
    const delay = jitterSeconds > 0 ? Math.random() * jitterSeconds * 1000 : 0;
    setTimeout(() => void trigger({ trigger: 'schedule' })?.catch((e) => log.error({ err: messageOf(e) }, 'run crashed')), delay).unref();
  };
  const schedule = createCronSchedule(cfg.schedule, cfg.timezone, onSlot);
  schedule.start();
  const interval = schedule.intervalSeconds();
  metrics.setScheduleInterval(schedule.longestGapSeconds());
  metrics.setNextRun(schedule.next());

  const server = await startMetricsServer({
    listen: cfg.metrics.listen,
    metrics,
    readiness: () =>
      stopping
        ? { ready: false, reason: 'shutting down' }
        : state.consecutiveFailures >= cfg.readyFailureThreshold
          ? { ready: false, reason: `last ${state.consecutiveFailures} runs failed (${state.lastReason ?? 'unknown'})` }
          : { ready: true },
  });
  log.info(
    { version: VERSION, cluster: cfg.cluster, node: cfg.node, schedule: cfg.schedule, timezone: cfg.timezone, next: schedule.next()?.toISOString(), metrics: `${server.address}:${server.port}`, control: cfg.control.socket, stores: storeNames },
    'etcd-backupd daemon started',
  );
  for (const w of configWarnings(cfg)) log.warn(w);

  setControlHandler(handleControl);
  async function handleControl(req: ControlRequest, emit: (e: ControlEvent) => void): Promise<{ data: unknown; exitCode: number }> {
    switch (req.op) {
      case 'backup': {
        const runLog = createLogger({ tee: (line) => emit({ type: 'log', ...(safeParse(line) as { level: string; msg: string }) }) });
        // A cycle whose backup is done only tidies up (outbox, retention): wait for it rather than refuse.
        if (current && inUpkeep) await current.catch(() => undefined);
        const p = trigger({ trigger: 'manual', label: req.label, reason: req.reason, pin: req.pin, force: req.force }, runLog);
        if (!p) {
          throw new BackupError('lock-busy', stopping ? 'the daemon is shutting down' : 'a backup is already running in the daemon', {
            hint: 'wait for it to finish (its result shows in the log and in etcd_backup_last_attempt_timestamp_seconds), then try again',
          });
        }
        const cyc = await p;
        return { data: backupJson(cyc.run), exitCode: cyc.run.result === 'success' ? 0 : 1 };
      }
      case 'pin':
      case 'unpin': {
        const r = await setPinned(cfg, stores, req.id, req.op === 'pin', req.op === 'pin' ? req.reason : undefined);
        await refreshInventory();
        return { data: r, exitCode: 0 };
      }
      case 'status':
        return {
          data: { version: VERSION, running: current !== undefined, next: schedule.next()?.toISOString(), state, outbox: summarizeOutbox(await listOutbox(cfg), storeNames) },
          exitCode: 0,
        };
      default:
        throw new BackupError('usage', `unknown control op ${JSON.stringify((req as { op: unknown }).op)}`);
    }
  }

  // The outbox retry loop: every retryMin, deliver what stores still lack (each pair keeps its own backoff).
  const retryEvery = Math.max(1, parseDurationSeconds(cfg.local.retryMin)) * 1000;
  // Retries are cheap to resume (the bundle stays in the outbox), so shutdown aborts them at once.
  const deliveryAbort = new AbortController();
  const retryTimer = setInterval(() => {
    if (current || stopping) return;
    void deliverOutbox(cfg, stores, log, { signal: deliveryAbort.signal })
      .then(async ({ retried, dropped }) => {
        for (const _ of dropped) metrics.recordOutboxDropped();
        if (retried.length === 0 && dropped.length === 0) return;
        recordRetries({ retried });
        await refreshOutbox();
        await refreshInventory();
      })
      .catch((e) => log.error({ err: messageOf(e) }, 'outbox delivery failed'));
  }, retryEvery);
  retryTimer.unref();

  // Restore drills: one node per slot (drillNodeFor), at low priority, never on the node's etcd ports.
  const drillMetrics = new DrillMetrics(metrics.registry);
  if (state.drill) drillMetrics.restoreState(state.drill);
  let drilling: Promise<void> | undefined;
  // A drill proves nothing new if it is cut short, so shutdown aborts it at once (it cleans up after itself).
  const drillAbort = new AbortController();
  const drillSchedule = cfg.drill.schedule
    ? createCronSchedule(cfg.drill.schedule, cfg.timezone, (slot) => {
        if (stopping || drilling) return;
        drilling = runDrillSlot(slot)
          .catch((e) => log.error({ err: messageOf(e) }, 'restore drill crashed'))
          .finally(() => (drilling = undefined));
      })
    : undefined;
  if (drillSchedule) {
    drillSchedule.start();
    drillMetrics.setInterval(drillSchedule.longestGapSeconds());
  }
  async function runDrillSlot(slot: Date): Promise<void> {
    const store = stores.find((s) => s.name === (cfg.drill.store ?? storeNames[0]))!;
    const cat = await loadCatalog(store, cfg.cluster, await loadTrust(cfg));
    const turn = drillNodeFor(
      cat.backups.map((b) => b.node),
      slot,
      drillSchedule!.intervalSeconds(),
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
      scratchDir: join(cfg.workDir, 'drill'),
      etcdBinary: cfg.drill.etcd,
      etcdctlBinary: cfg.drill.etcdctl,
      timeoutSeconds: parseDurationSeconds(cfg.drill.timeout),
      sampleKeys: cfg.drill.sampleKeys,
      log,
      signal: drillAbort.signal,
      ...(identities ? { identities } : {}),
    });
    drillMetrics.recordDrill(r);
    const prev = state.drill ?? {};
    state.drill = {
      lastAttempt: r.startedAt,
      lastId: r.id,
      lastSuccess: r.result === 'success' ? r.finishedAt : prev.lastSuccess,
      consecutiveFailures: r.result === 'success' ? 0 : (prev.consecutiveFailures ?? 0) + 1,
      ...(r.result === 'failed' ? { lastFailureReason: r.reason } : {}),
    };
    await saveState(cfg.workDir, state).catch(() => undefined);
    if (r.result === 'success') log.info({ id: r.id, steps: r.steps, revision: r.revision }, 'restore drill passed');
    else log.error({ id: r.id, reason: r.reason, err: r.error, steps: r.steps }, 'restore drill FAILED');
  }

  // Start-up: deliver what a previous life left behind, then catch up a missed slot.
  await refreshOutbox().catch(() => undefined);
  void refreshInventory();
  const last = state.lastSuccess ? Date.parse(state.lastSuccess) : undefined;
  const catchUp = last === undefined || Date.now() - last > interval * 1000;
  if (catchUp) {
    log.info({ lastSuccess: state.lastSuccess ?? 'never', intervalSeconds: interval }, 'no success within one schedule interval: running a catch-up backup now');
    void trigger({ trigger: 'catch-up' as Trigger })?.catch((e) => log.error({ err: messageOf(e) }, 'run crashed'));
  } else {
    void deliverOutbox(cfg, stores, log, { force: true, signal: deliveryAbort.signal })
      .then(({ retried }) => {
        recordRetries({ retried });
        return refreshOutbox();
      })
      .catch((e) => log.error({ err: messageOf(e) }, 'outbox delivery failed'));
  }

  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const stop = async () => {
    if (stopping) return done;
    stopping = true;
    schedule.stop();
    drillSchedule?.stop();
    drillAbort.abort();
    deliveryAbort.abort();
    clearInterval(retryTimer);
    if (current) {
      const timeout = parseDurationSeconds(cfg.shutdownTimeout) * 1000;
      log.info({ timeoutSeconds: timeout / 1000 }, 'shutdown: waiting for the run in progress');
      const settled = (ms: number) => Promise.race([current!.then(() => true, () => true), sleep(ms).then(() => false)]);
      if (!(await settled(timeout))) {
        log.warn('shutdown: run did not finish in time; aborting it (nothing unverified is committed)');
        abort.abort();
        // A store that hangs may not notice the abort; its manifest can never be written after it,
        // so leaving without waiting loses nothing: the bundle stays in the outbox.
        if (!(await settled(ABORT_GRACE_MS))) log.warn('shutdown: the aborted run is still stuck in a store; exiting anyway');
      }
    }
    await drilling;
    await control.close().catch(() => undefined);
    await server.close().catch(() => undefined);
    await Promise.all(stores.map((s) => s.close?.().catch(() => undefined)));
    log.info('etcd-backupd daemon stopped');
    resolveDone();
    return done;
  };
  return { done, stop, metricsPort: server.port };
}

const ABORT_GRACE_MS = 5000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function safeParse(line: string): Record<string, unknown> {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { level: 'info', msg: line };
  }
}
