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
  /** The continuous writer: seals and delivers its last segment (bounded), releases the writer key. */
  continuous?: { stop(): Promise<void> } | undefined;
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
  // First: the next writer takes over from the last revision committed, while this node finishes its run.
  await s.continuous?.stop().catch(() => undefined);
  await s.runner.finish();
  await s.drills.idle();
  // After the run and the drill: their claims are released (or abandoned) before the etcd client closes.
  await s.coord?.close().catch(() => undefined);
  await s.control.close().catch(() => undefined);
  await s.metricsServer.close().catch(() => undefined);
  await Promise.all(s.stores.map((st) => st.close?.().catch(() => undefined)));
  s.log.info('etcd-backupd daemon stopped');
}
