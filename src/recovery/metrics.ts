import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Recovery kit series, on the daemon's registry (like DrillMetrics). House
 * rules of src/metrics/metrics.ts: the failure counter is 0 from the start
 * (an increase() must see its first failure); the timestamp and the
 * executable gauge stay absent until the first refresh says something.
 *
 *   etcd_backup_recovery_kit_last_refresh_timestamp_seconds  the last complete refresh
 *   etcd_backup_recovery_kit_refresh_failures_total          refreshes that failed
 *   etcd_backup_recovery_kit_executable                      1: the kit holds the single executable; 0: it does not
 *                                                            (the daemon runs under node, not as the SEA)
 */
export class RecoveryKitMetrics {
  private readonly lastRefresh: Gauge;
  private readonly failures: Counter;
  private readonly executable: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.lastRefresh = new Gauge({ name: 'etcd_backup_recovery_kit_last_refresh_timestamp_seconds', help: 'Unix time the recovery kit was last refreshed completely.', registers });
    this.lastRefresh.remove();
    this.failures = new Counter({ name: 'etcd_backup_recovery_kit_refresh_failures_total', help: 'Recovery kit refreshes that failed (the previous kit stays in place).', registers });
    this.executable = new Gauge({ name: 'etcd_backup_recovery_kit_executable', help: '1 if the recovery kit holds the single executable, 0 if the daemon does not run as one and the kit lacks it.', registers });
    this.executable.remove();
  }

  recordRefresh(at: Date, executable: boolean): void {
    this.lastRefresh.set(at.getTime() / 1000);
    this.executable.set(executable ? 1 : 0);
  }

  recordFailure(): void {
    this.failures.inc();
  }
}
