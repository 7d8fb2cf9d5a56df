import type { Logger } from '../log.js';
import type { CronSchedule } from '../schedule/cron.js';
import type { Store } from '../storage/store.js';
import type { DrillSchedule } from '../drill/schedule.js';
import type { OutboxRetries } from './outbox-retry.js';
import type { BackupRunner } from './runner.js';
import type { SlotCoordinator } from './coordinator.js';

export interface RunningServices {
  log: Logger;
  runner: BackupRunner;
  schedule: CronSchedule;
  drills: DrillSchedule;
  retries: OutboxRetries;
  control: { close(): Promise<void> };
  metricsServer: { close(): Promise<void> };
  stores: Store[];
  coord?: SlotCoordinator | undefined;
}

/**
 * A clean shutdown: nothing new starts; drills and outbox retries are aborted
 * at once (both resume or start over cheaply), the backup in progress gets
 * shutdownTimeout to finish; then the sockets and stores close.
 */
export async function shutDown(s: RunningServices): Promise<void> {
  s.runner.beginStop();
  s.schedule.stop();
  s.drills.stop();
  s.retries.stop();
  await s.runner.finish();
  await s.drills.idle();
  // After the run and the drill: their claims are released (or abandoned) before the etcd client closes.
  await s.coord?.close().catch(() => undefined);
  await s.control.close().catch(() => undefined);
  await s.metricsServer.close().catch(() => undefined);
  await Promise.all(s.stores.map((st) => st.close?.().catch(() => undefined)));
  s.log.info('etcd-backupd daemon stopped');
}
