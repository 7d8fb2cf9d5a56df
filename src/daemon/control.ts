import type { ControlHandler } from '../control/server.js';
import { BackupError } from '../errors.js';
import { createLogger } from '../log.js';
import { throttled } from '../progress/forward.js';
import { outboxStatus } from '../run/outbox.js';
import { setPinned } from '../catalog/pin.js';
import { backupJson } from '../run/report.js';
import type { CronSchedule } from '../schedule/cron.js';
import { VERSION } from '../version.js';
import type { DaemonContext } from './context.js';
import { refreshInventory } from './inventory.js';
import type { BackupRunner } from './runner.js';
import type { SlotCoordinator } from './coordinator.js';

/** What the daemon answers on its control socket (the CLI's backup, pin, unpin and status when a daemon runs). */
export function controlHandler(ctx: DaemonContext, runner: BackupRunner, schedule: CronSchedule, coord?: SlotCoordinator): ControlHandler {
  const { cfg, stores, storeNames, state } = ctx;
  return async (req, emit) => {
    switch (req.op) {
      case 'backup': {
        const runLog = createLogger({ tee: (line) => emit({ type: 'log', ...(safeParse(line) as { level: string; msg: string }) }) });
        // A cycle whose backup is done only tidies up (outbox, retention): wait for it rather than refuse.
        await runner.waitForUpkeep();
        // Only for a client that shows it (a terminal), and a few lines a second at most.
        const progress = req.progress === true ? throttled((e) => emit({ type: 'progress', ...e })) : undefined;
        const p = runner.trigger({ trigger: 'manual', label: req.label, reason: req.reason, pin: req.pin, force: req.force }, runLog, progress);
        if (!p) {
          throw new BackupError('lock-busy', runner.isStopping ? 'the daemon is shutting down' : 'a backup is already running in the daemon', {
            hint: 'wait for it to finish (its result shows in the log and in etcd_backup_last_attempt_timestamp_seconds), then try again',
          });
        }
        const cyc = await p;
        progress?.flush();
        // Manual backups are not claimed; a success is recorded for the cluster view (best effort, bounded).
        await coord?.recordManual(cyc.run);
        return { data: backupJson(cyc.run), exitCode: cyc.run.result === 'success' ? 0 : 1 };
      }
      case 'pin':
      case 'unpin': {
        const r = await setPinned(cfg, stores, req.id, req.op === 'pin', req.op === 'pin' ? req.reason : undefined);
        await refreshInventory(ctx);
        return { data: r, exitCode: 0 };
      }
      case 'status':
        return {
          data: { version: VERSION, running: runner.running, next: schedule.next()?.toISOString(), state: state.current, outbox: await outboxStatus(cfg, storeNames) },
          exitCode: 0,
        };
      default:
        throw new BackupError('usage', `unknown control op ${JSON.stringify((req as { op: unknown }).op)}`);
    }
  };
}

function safeParse(line: string): Record<string, unknown> {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { level: 'info', msg: line };
  }
}
