/**
 * Catch-up at start: when the last success is older than one schedule
 * interval (the shortest gap between upcoming slots, CronSchedule.intervalSeconds)
 * or there never was one, a slot was missed and the daemon backs up at once
 * (trigger `catch-up`). A fresh install therefore takes its first backup
 * right away, which also proves the configuration works.
 */
export function catchUpDue(lastSuccess: string | undefined, now: Date, intervalSeconds: number): boolean {
  const last = lastSuccess ? Date.parse(lastSuccess) : undefined;
  return last === undefined || now.getTime() - last > intervalSeconds * 1000;
}
