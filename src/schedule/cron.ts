import cron, { type ScheduledTask } from 'node-cron';

/**
 * Cron semantics we expose: standard (Vixie) cron. When both day-of-month and
 * day-of-week are restricted, a day matches if EITHER matches ("0 2 1 * 1" =
 * 02:00 on the 1st and on every Monday). node-cron ANDs them, so such an
 * expression is split into two node-cron patterns whose ticks are merged.
 * A 6-field expression has seconds first, as in node-cron.
 */
export function toNodeCronPatterns(expr: string): string[] {
  const fields = expr.trim().split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) {
    throw new Error(`"${expr}" is not a cron expression: expected 5 fields (min hour day-of-month month day-of-week) or 6 with seconds first`);
  }
  const off = fields.length - 5;
  const dom = fields[off + 2]!;
  const dow = fields[off + 4]!;
  const restricted = (f: string) => f !== '*' && f !== '?';
  const patterns =
    restricted(dom) && restricted(dow)
      ? [withField(fields, off + 4, '*'), withField(fields, off + 2, '*')]
      : [fields.join(' ')];
  for (const p of patterns) {
    if (!cron.validate(p)) throw new Error(`"${expr}" is not a valid cron expression`);
  }
  return patterns;
}

function withField(fields: string[], i: number, v: string): string {
  const copy = [...fields];
  copy[i] = v;
  return copy.join(' ');
}

function gaps(runs: Date[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < runs.length; i++) out.push(runs[i]!.getTime() - runs[i - 1]!.getTime());
  return out;
}

export interface CronSchedule {
  /** The next slot, or undefined when stopped. */
  next(): Date | undefined;
  /** The next `n` slots after now, merged across patterns. */
  nextRuns(n: number): Date[];
  /** The latest slot at or before `at` (the catch-up run's slot), or undefined when none is found within twice the longest gap (at most ~139 days back). */
  previous(at: Date): Date | undefined;
  /** Shortest gap between upcoming slots: what "one interval" means for catch-up. */
  intervalSeconds(): number;
  /** Longest gap between upcoming slots: what alerts must allow (a weekday schedule has a 3-day weekend gap). */
  longestGapSeconds(): number;
  start(): void;
  stop(): void;
}

/** How far `previous` looks back at most: ~139 days (about 2 s of matching). */
const MAX_MINUTES_BACK = 200_000;

/** Calls `onSlot` once per slot, even when both split patterns match the same instant. */
export function createCronSchedule(expr: string, timezone: string, onSlot: (slot: Date) => void): CronSchedule {
  let lastSlot = 0;
  const fire = (date: Date) => {
    const t = Math.floor(date.getTime() / 1000) * 1000;
    if (t === lastSlot) return;
    lastSlot = t;
    onSlot(new Date(t));
  };
  const patterns = toNodeCronPatterns(expr);
  const tasks: ScheduledTask[] = patterns.map((p) =>
    cron.createTask(p, (ctx) => fire(ctx.date), { timezone, noOverlap: false, suppressMissedWarning: true }),
  );
  let running = false;
  // Seconds a slot can fall on, latest first (5-field expressions: second 0).
  const seconds = [...new Set(patterns.flatMap((p) => cron.parse(p).second))].sort((a, b) => b - a);
  const nextRuns = (n: number) => {
    const all = tasks.flatMap((t) => t.getNextRuns(n)).map((d) => d.getTime());
    return [...new Set(all)].sort((a, b) => a - b).slice(0, n).map((t) => new Date(t));
  };
  const longestGapSeconds = () => {
    const g = gaps(nextRuns(32));
    return g.length ? Math.max(...g) / 1000 : 86400;
  };
  const previous = (at: Date): Date | undefined => {
    // Walks back minute by minute (node-cron has no "previous"); match() is the task's own, in its time zone.
    const end = at.getTime();
    const minutes = Math.min(Math.ceil((2 * longestGapSeconds()) / 60) + 2, MAX_MINUTES_BACK);
    for (let i = 0, m = Math.floor(end / 60_000) * 60_000; i <= minutes; i++, m -= 60_000) {
      for (const s of seconds) {
        const t = m + s * 1000;
        if (t <= end && tasks.some((task) => task.match(new Date(t)))) return new Date(t);
      }
    }
    return undefined;
  };
  return {
    next: () => (running ? nextRuns(1)[0] : undefined),
    nextRuns,
    previous,
    intervalSeconds: () => gaps(nextRuns(16)).reduce((a, b) => Math.min(a, b), Infinity) / 1000 || 86400,
    longestGapSeconds,
    start: () => {
      running = true;
      for (const t of tasks) void t.start();
    },
    stop: () => {
      running = false;
      for (const t of tasks) void t.destroy();
    },
  };
}
