/**
 * Calendar arithmetic for the retention planner: wall-clock fields of an
 * instant in an IANA time zone (via Intl, no dependency) and ISO-8601 weeks.
 *
 * Bucket keys are integers shaped like restic's (`YYYYMMDDHH`, `YYYYMMDD`,
 * `YYYYWW` with the ISO week-year, `YYYYMM`, `YYYY`), so they compare the same
 * way restic's `ymdh`/`ymd`/`yw`/`ym`/`y` do.
 */

export interface WallClock {
  year: number;
  /** 1-12 */
  month: number;
  /** 1-31 */
  day: number;
  /** 0-23 */
  hour: number;
}

export type WallClockFn = (date: Date) => WallClock;

const cache = new Map<string, WallClockFn>();

function utcWallClock(d: Date): WallClock {
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), hour: d.getUTCHours() };
}

/**
 * Returns a function giving the wall-clock fields of an instant in `timeZone`.
 * Throws an Error naming the zone when it is not a valid IANA time zone.
 */
export function wallClockIn(timeZone: string): WallClockFn {
  const hit = cache.get(timeZone);
  if (hit) return hit;
  let fn: WallClockFn;
  if (timeZone === 'UTC' || timeZone === 'Etc/UTC') {
    fn = utcWallClock;
  } else {
    let fmt: Intl.DateTimeFormat;
    try {
      fmt = new Intl.DateTimeFormat('en-US', {
        timeZone,
        era: 'short',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        hourCycle: 'h23',
      });
    } catch (e) {
      throw new Error(`unknown time zone "${timeZone}" (expected an IANA name such as "UTC" or "Europe/Berlin")`, {
        cause: e,
      });
    }
    fn = (d: Date): WallClock => {
      let year = NaN;
      let month = NaN;
      let day = NaN;
      let hour = NaN;
      let bc = false;
      for (const p of fmt.formatToParts(d)) {
        switch (p.type) {
          case 'year':
            year = Number(p.value);
            break;
          case 'month':
            month = Number(p.value);
            break;
          case 'day':
            day = Number(p.value);
            break;
          case 'hour':
            hour = Number(p.value) % 24; // some ICU versions print midnight as 24
            break;
          case 'era':
            bc = /^B/i.test(p.value);
            break;
          default:
            break;
        }
      }
      if (bc) year = 1 - year; // proleptic: 1 BC is year 0
      if (![year, month, day, hour].every(Number.isFinite)) {
        throw new Error(`cannot compute the calendar date of ${d.toISOString()} in time zone "${timeZone}"`);
      }
      return { year, month, day, hour };
    };
  }
  cache.set(timeZone, fn);
  return fn;
}

/** ISO-8601 week-numbering year and week (1-53) of a calendar date. */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const DAY = 86_400_000;
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  const dow = (d.getUTCDay() + 6) % 7; // Monday = 0 ... Sunday = 6
  // The Thursday of the same ISO week decides the ISO year.
  const thursday = new Date(d.getTime() + (3 - dow) * DAY);
  const isoYear = thursday.getUTCFullYear();
  const jan1 = new Date(0);
  jan1.setUTCFullYear(isoYear, 0, 1);
  const week = Math.floor((thursday.getTime() - jan1.getTime()) / DAY / 7) + 1;
  return { year: isoYear, week };
}

/** Bucket keys, as restic computes them (see snapshot_policy.go). */
export function hourKey(w: WallClock): number {
  return w.year * 1_000_000 + w.month * 10_000 + w.day * 100 + w.hour;
}
export function dayKey(w: WallClock): number {
  return w.year * 10_000 + w.month * 100 + w.day;
}
export function weekKey(w: WallClock): number {
  const { year, week } = isoWeek(w.year, w.month, w.day);
  return year * 100 + week;
}
export function monthKey(w: WallClock): number {
  return w.year * 100 + w.month;
}
export function yearKey(w: WallClock): number {
  return w.year;
}
