import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import type { BackupMetrics } from '../metrics/metrics.js';
import type { Store } from '../storage/store.js';
import type { MemoryReclaimer } from './reclaim.js';
import type { DaemonStateFile } from './state.js';

/** What the daemon's services share: built once at start (src/daemon/index.ts), never replaced. */
export interface DaemonContext {
  cfg: Config;
  log: Logger;
  stores: Store[];
  storeNames: string[];
  metrics: BackupMetrics;
  state: DaemonStateFile;
  /** Gives memory back after work (a finished run, the continuous writer's segments). */
  reclaim: MemoryReclaimer;
  /** The recovery kit (off when recovery.dir is ""): refreshed after each successful run. */
  kit?: { refresh(trigger: 'start' | 'run'): Promise<void> };
  /** The continuous writer (continuous.enabled): told when a run committed a full backup (a newer base). */
  continuous?: { baseCommitted(): void };
}
