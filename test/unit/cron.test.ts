import { describe, expect, it } from 'vitest';
import { createCronSchedule, toNodeCronPatterns } from '../../src/schedule/cron.js';

describe('cron semantics (Vixie: day-of-month OR day-of-week)', () => {
  it('keeps an expression with at most one day field restricted as it is', () => {
    expect(toNodeCronPatterns('0 2 * * *')).toEqual(['0 2 * * *']);
    expect(toNodeCronPatterns('0 2 1 * *')).toEqual(['0 2 1 * *']);
    expect(toNodeCronPatterns('0 2 * * 1-5')).toEqual(['0 2 * * 1-5']);
    expect(toNodeCronPatterns('*/10 * * * * *')).toEqual(['*/10 * * * * *']);
  });

  it('splits day-of-month AND day-of-week into two patterns so either matches', () => {
    expect(toNodeCronPatterns('0 2 1 * 1')).toEqual(['0 2 1 * *', '0 2 * * 1']);
    expect(toNodeCronPatterns('30 0 2 15 * 0')).toEqual(['30 0 2 15 * *', '30 0 2 * * 0']);
  });

  it('fires on the 1st of the month and on every Monday, once when both fall together', () => {
    const s = createCronSchedule('0 2 1 * 1', 'UTC', () => undefined);
    const runs = s.nextRuns(40).map((d) => d.toISOString());
    expect(runs.every((r) => r.endsWith('T02:00:00.000Z'))).toBe(true);
    for (const r of runs) {
      const d = new Date(r);
      expect(d.getUTCDate() === 1 || d.getUTCDay() === 1).toBe(true);
    }
    expect(new Set(runs).size).toBe(runs.length);
    // Over 40 slots there are Mondays that are not the 1st and 1sts that are not Mondays.
    expect(runs.some((r) => new Date(r).getUTCDay() === 1 && new Date(r).getUTCDate() !== 1)).toBe(true);
    expect(runs.some((r) => new Date(r).getUTCDate() === 1 && new Date(r).getUTCDay() !== 1)).toBe(true);
    s.stop();
  });

  it('evaluates the expression in the configured time zone', () => {
    const s = createCronSchedule('0 2 * * *', 'Asia/Tokyo', () => undefined);
    for (const d of s.nextRuns(3)) expect(d.getUTCHours()).toBe(17); // 02:00 JST = 17:00 UTC
    s.stop();
  });

  it('derives the interval from the shortest gap between slots', () => {
    expect(createCronSchedule('0 2 * * *', 'UTC', () => undefined).intervalSeconds()).toBe(86400);
    expect(createCronSchedule('*/15 * * * *', 'UTC', () => undefined).intervalSeconds()).toBe(900);
    expect(createCronSchedule('*/5 * * * * *', 'UTC', () => undefined).intervalSeconds()).toBe(5);
    expect(createCronSchedule('0 2 * * 1-5', 'UTC', () => undefined).intervalSeconds()).toBe(86400);
    expect(createCronSchedule('0 2 * * 1-5', 'UTC', () => undefined).longestGapSeconds()).toBe(3 * 86400);
    expect(createCronSchedule('0 2 * * *', 'UTC', () => undefined).longestGapSeconds()).toBe(86400);
  });

  it('previous: the latest slot at or before a time (the catch-up slot), in the time zone, across split patterns', () => {
    const at = (iso: string) => new Date(iso);
    const prev = (expr: string, tz: string, iso: string) => createCronSchedule(expr, tz, () => undefined).previous(at(iso))?.toISOString();
    expect(prev('0 2 * * *', 'UTC', '2026-03-10T12:34:56.789Z')).toBe('2026-03-10T02:00:00.000Z');
    expect(prev('0 2 * * *', 'UTC', '2026-03-10T01:59:59.999Z')).toBe('2026-03-09T02:00:00.000Z');
    expect(prev('0 2 * * *', 'UTC', '2026-03-10T02:00:00.000Z')).toBe('2026-03-10T02:00:00.000Z');
    expect(prev('*/15 * * * *', 'UTC', '2026-03-10T12:44:59.000Z')).toBe('2026-03-10T12:30:00.000Z');
    expect(prev('*/5 * * * * *', 'UTC', '2026-03-10T12:44:59.500Z')).toBe('2026-03-10T12:44:55.000Z');
    expect(prev('0 2 * * *', 'Europe/Berlin', '2026-03-10T12:00:00.000Z')).toBe('2026-03-10T01:00:00.000Z');
    // Monday 2026-03-09 or the 1st: on Sunday the 8th the last slot was the 2nd (a Monday)
    expect(prev('0 2 1 * 1', 'UTC', '2026-03-08T12:00:00.000Z')).toBe('2026-03-02T02:00:00.000Z');
    expect(prev('0 2 1 * 1', 'UTC', '2026-04-01T12:00:00.000Z')).toBe('2026-04-01T02:00:00.000Z');
  });

  it('rejects what is not cron', () => {
    expect(() => toNodeCronPatterns('every day')).toThrow(/expected 5 fields/);
    expect(() => toNodeCronPatterns('0 25 * * *')).toThrow(/not a valid cron expression/);
    expect(() => toNodeCronPatterns('0 2 * * * * *')).toThrow(/expected 5 fields/);
  });
});
