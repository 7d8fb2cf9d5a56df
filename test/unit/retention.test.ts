import { describe, expect, it } from 'vitest';
import {
  formatPlanTable,
  isEmptyPolicy,
  parseDuration,
  parseSimulationInput,
  planRetention,
  planToJson,
  type RetentionItem,
  type RetentionPlan,
  type RetentionPolicy,
} from '../../src/retention/plan.js';
import { isoWeek, wallClockIn } from '../../src/retention/calendar.js';
import { rng } from '../support/rng.js';

const NONE: RetentionPolicy = { keepLast: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0, keepWithinSeconds: 0 };
const P = (p: Partial<RetentionPolicy>): RetentionPolicy => ({ ...NONE, ...p });
const NOW = new Date('2030-01-01T00:00:00Z');
const DAY = 86_400;

/** Items named by their own ISO time, e.g. id "2024-05-01T10:00:00Z". */
function items(...times: string[]): RetentionItem[] {
  return times.map((t) => ({ id: t, time: new Date(t) }));
}
const keptIds = (p: RetentionPlan): string[] => p.keep.map((k) => k.id);
const prunedIds = (p: RetentionPlan): string[] => p.prune.map((k) => k.id);
const reasonsOf = (p: RetentionPlan, id: string): string[] | undefined => p.keep.find((k) => k.id === id)?.reasons;

describe('planRetention: basics', () => {
  it('empty input gives an empty plan', () => {
    expect(planRetention([], P({ keepLast: 3 }), NOW)).toEqual({ keep: [], prune: [] });
    expect(planRetention([], NONE, NOW)).toEqual({ keep: [], prune: [] });
  });

  it('sorts output newest first regardless of input order and partitions the input', () => {
    const input = items('2024-01-02T00:00:00Z', '2024-01-05T00:00:00Z', '2024-01-01T00:00:00Z', '2024-01-04T00:00:00Z', '2024-01-03T00:00:00Z');
    const plan = planRetention(input, P({ keepLast: 2 }), NOW);
    expect(keptIds(plan)).toEqual(['2024-01-05T00:00:00Z', '2024-01-04T00:00:00Z']);
    expect(prunedIds(plan)).toEqual(['2024-01-03T00:00:00Z', '2024-01-02T00:00:00Z', '2024-01-01T00:00:00Z']);
  });

  it('is deterministic and does not alias or mutate its input', () => {
    const input = items('2024-01-02T00:00:00Z', '2024-01-01T00:00:00Z');
    const copy = structuredClone(input);
    const a = planRetention(input, P({ daily: 1 }), NOW);
    const b = planRetention(input, P({ daily: 1 }), NOW);
    expect(a).toEqual(b);
    expect(input).toEqual(copy);
    input[0]!.time.setTime(0);
    expect(a.keep[0]!.time.toISOString()).toBe('2024-01-02T00:00:00.000Z');
  });
});

describe('planRetention: each rule alone', () => {
  it('keepLast keeps the N newest', () => {
    const input = items('2024-01-01T00:00:00Z', '2024-01-01T01:00:00Z', '2024-01-01T02:00:00Z', '2024-01-01T03:00:00Z');
    const plan = planRetention(input, P({ keepLast: 3 }), NOW);
    expect(keptIds(plan)).toEqual(['2024-01-01T03:00:00Z', '2024-01-01T02:00:00Z', '2024-01-01T01:00:00Z']);
    expect(plan.keep.map((k) => k.reasons)).toEqual([['last', 'newest-verified'], ['last'], ['last']]);
    expect(prunedIds(plan)).toEqual(['2024-01-01T00:00:00Z']);
  });

  it('keepLast larger than the list keeps everything', () => {
    const input = items('2024-01-01T00:00:00Z', '2024-01-02T00:00:00Z');
    expect(planRetention(input, P({ keepLast: 10 }), NOW).prune).toEqual([]);
  });

  it('hourly keeps the newest item of each of the N newest hours', () => {
    const input = items(
      '2024-01-01T09:00:00Z',
      '2024-01-01T10:05:00Z',
      '2024-01-01T10:40:00Z',
      '2024-01-01T11:10:00Z',
      '2024-01-01T11:50:00Z',
      '2024-01-01T12:00:00Z',
    );
    const plan = planRetention(input, P({ hourly: 3 }), NOW);
    expect(keptIds(plan)).toEqual(['2024-01-01T12:00:00Z', '2024-01-01T11:50:00Z', '2024-01-01T10:40:00Z']);
    expect(reasonsOf(plan, '2024-01-01T11:50:00Z')).toEqual(['hourly']);
  });

  it('daily counts only days that have backups (gaps do not use up the count)', () => {
    const input = items('2024-01-01T05:00:00Z', '2024-01-05T05:00:00Z', '2024-01-05T23:59:59Z', '2024-01-10T00:00:00Z');
    const plan = planRetention(input, P({ daily: 2 }), NOW);
    expect(keptIds(plan)).toEqual(['2024-01-10T00:00:00Z', '2024-01-05T23:59:59Z']);
    expect(prunedIds(plan)).toEqual(['2024-01-05T05:00:00Z', '2024-01-01T05:00:00Z']);
  });

  it('weekly uses ISO weeks of the ISO week-year across the year boundary', () => {
    const input = items(
      '2020-12-27T10:00:00Z', // Sunday, 2020-W52
      '2020-12-28T10:00:00Z', // Monday, 2020-W53
      '2020-12-31T10:00:00Z', // Thursday, 2020-W53
      '2021-01-03T10:00:00Z', // Sunday, still 2020-W53
      '2021-01-04T10:00:00Z', // Monday, 2021-W01
    );
    expect(keptIds(planRetention(input, P({ weekly: 2 }), NOW))).toEqual(['2021-01-04T10:00:00Z', '2021-01-03T10:00:00Z']);
    const all = planRetention(input, P({ weekly: 10 }), NOW);
    expect(keptIds(all)).toEqual(['2021-01-04T10:00:00Z', '2021-01-03T10:00:00Z', '2020-12-27T10:00:00Z']);
    expect(prunedIds(all)).toEqual(['2020-12-31T10:00:00Z', '2020-12-28T10:00:00Z']);
  });

  it('weekly: 2019-12-30 belongs to 2020-W01, not to a 2019 week', () => {
    const input = items('2019-12-29T12:00:00Z', '2019-12-30T12:00:00Z', '2020-01-05T12:00:00Z');
    // 2020-01-05 (Sun) and 2019-12-30 (Mon) are both 2020-W01; 2019-12-29 is 2019-W52.
    expect(keptIds(planRetention(input, P({ weekly: 5 }), NOW))).toEqual(['2020-01-05T12:00:00Z', '2019-12-29T12:00:00Z']);
  });

  it('monthly keeps the newest item of each of the N newest months', () => {
    const input = items('2024-01-03T00:00:00Z', '2024-01-30T00:00:00Z', '2024-02-10T00:00:00Z', '2024-04-01T00:00:00Z', '2024-04-20T00:00:00Z');
    expect(keptIds(planRetention(input, P({ monthly: 2 }), NOW))).toEqual(['2024-04-20T00:00:00Z', '2024-02-10T00:00:00Z']);
    expect(keptIds(planRetention(input, P({ monthly: 3 }), NOW))).toEqual([
      '2024-04-20T00:00:00Z',
      '2024-02-10T00:00:00Z',
      '2024-01-30T00:00:00Z',
    ]);
  });

  it('yearly keeps the newest item of each of the N newest years', () => {
    const input = items('2019-06-01T00:00:00Z', '2020-01-01T00:00:00Z', '2020-12-31T23:59:59Z', '2021-03-01T00:00:00Z');
    expect(keptIds(planRetention(input, P({ yearly: 2 }), NOW))).toEqual(['2021-03-01T00:00:00Z', '2020-12-31T23:59:59Z']);
  });

  it('keepWithin is measured from the newest item, not from now, and the boundary is exclusive', () => {
    const input = items(
      '2024-05-10T12:00:00Z',
      '2024-05-09T00:00:00Z',
      '2024-05-07T12:00:01Z',
      '2024-05-07T12:00:00Z', // exactly newest - 3d: not "after", pruned (restic: cur.Time.After(t))
      '2024-05-01T00:00:00Z',
    );
    const plan = planRetention(input, P({ keepWithinSeconds: 3 * DAY }), new Date('2024-12-31T00:00:00Z'));
    expect(keptIds(plan)).toEqual(['2024-05-10T12:00:00Z', '2024-05-09T00:00:00Z', '2024-05-07T12:00:01Z']);
    expect(reasonsOf(plan, '2024-05-09T00:00:00Z')).toEqual(['within']);
    expect(reasonsOf(plan, '2024-05-10T12:00:00Z')).toEqual(['within', 'newest-verified']);
  });

  it('keepWithin ignores items in the future when choosing the reference (clock skew)', () => {
    const now = new Date('2024-05-10T00:00:00Z');
    const input = items('2024-05-20T00:00:00Z', '2024-05-09T00:00:00Z', '2024-05-08T00:00:01Z', '2024-05-05T00:00:00Z');
    const plan = planRetention(input, P({ keepWithinSeconds: DAY }), now);
    // Reference = 2024-05-09 (newest not after now); the future item is newer than it, so it is within too.
    expect(keptIds(plan)).toEqual(['2024-05-20T00:00:00Z', '2024-05-09T00:00:00Z', '2024-05-08T00:00:01Z']);
    // An item exactly at `now` is a valid reference.
    const atNow = planRetention(items('2024-05-10T00:00:00Z', '2024-05-08T00:00:00Z'), P({ keepWithinSeconds: DAY }), now);
    expect(keptIds(atNow)).toEqual(['2024-05-10T00:00:00Z']);
  });

  it('keepWithin keeps everything when every item is in the future', () => {
    const input = items('2024-05-20T00:00:00Z', '2024-01-01T00:00:00Z');
    const plan = planRetention(input, P({ keepWithinSeconds: DAY }), new Date('2023-01-01T00:00:00Z'));
    expect(plan.prune).toEqual([]);
  });

  it('-1 means unlimited (same as a count larger than the number of buckets)', () => {
    const input = items(
      '2024-01-01T01:00:00Z',
      '2024-01-01T02:00:00Z',
      '2024-01-02T01:00:00Z',
      '2024-01-04T01:00:00Z',
      '2024-01-04T05:00:00Z',
    );
    const unlimited = planRetention(input, P({ daily: -1 }), NOW);
    expect(keptIds(unlimited)).toEqual(['2024-01-04T05:00:00Z', '2024-01-02T01:00:00Z', '2024-01-01T02:00:00Z']);
    expect(unlimited).toEqual(planRetention(input, P({ daily: 1000 }), NOW));
    expect(planRetention(input, P({ keepLast: -1 }), NOW).prune).toEqual([]);
    for (const f of ['hourly', 'weekly', 'monthly', 'yearly'] as const) {
      expect(planRetention(input, P({ [f]: -1 }), NOW)).toEqual(planRetention(input, P({ [f]: 1000 }), NOW));
    }
  });
});

describe('planRetention: combinations', () => {
  it('each rule walks the whole list independently; an item can count for several rules', () => {
    const input = items('2024-03-03T10:00:00Z', '2024-03-03T09:00:00Z', '2024-03-02T10:00:00Z', '2024-03-01T10:00:00Z');
    const plan = planRetention(input, P({ keepLast: 2, daily: 2 }), NOW);
    // last: 03T10, 03T09; daily: 03T10 (day 3), 02T10 (day 2) -> day 1 pruned.
    expect(plan.keep).toEqual([
      { id: '2024-03-03T10:00:00Z', time: new Date('2024-03-03T10:00:00Z'), reasons: ['last', 'daily', 'newest-verified'] },
      { id: '2024-03-03T09:00:00Z', time: new Date('2024-03-03T09:00:00Z'), reasons: ['last'] },
      { id: '2024-03-02T10:00:00Z', time: new Date('2024-03-02T10:00:00Z'), reasons: ['daily'] },
    ]);
    expect(prunedIds(plan)).toEqual(['2024-03-01T10:00:00Z']);
  });

  it('lists every reason in a fixed order', () => {
    const input = items('2024-03-03T10:00:00Z', '2023-12-01T00:00:00Z');
    const plan = planRetention(
      [...input.map((i) => ({ ...i, pinned: i.id.startsWith('2024') }))],
      P({ keepLast: 1, hourly: 1, daily: 1, weekly: 1, monthly: 1, yearly: 2, keepWithinSeconds: 60 }),
      NOW,
    );
    expect(reasonsOf(plan, '2024-03-03T10:00:00Z')).toEqual([
      'within',
      'last',
      'hourly',
      'daily',
      'weekly',
      'monthly',
      'yearly',
      'pinned',
      'newest-verified',
    ]);
    expect(reasonsOf(plan, '2023-12-01T00:00:00Z')).toEqual(['yearly']);
  });

  it('a GFS policy over a year of daily backups keeps the expected number', () => {
    const input: RetentionItem[] = [];
    for (let d = 0; d < 366; d++) {
      const t = new Date(Date.UTC(2023, 0, 1, 3, 0, 0) + d * DAY * 1000);
      input.push({ id: `b${d}`, time: t });
    }
    const plan = planRetention(input, P({ keepLast: 3, daily: 7, weekly: 4, monthly: 12 }), NOW);
    // Newest is 2024-01-01 (Monday, 2024-W01). daily: Jan 1 + Dec 31..26 (7);
    // weekly: 2024-W01 (Jan 1), Dec 31 (2023-W52), Dec 24, Dec 17;
    // monthly: Jan 1 2024, Dec 31, Nov 30, ..., Feb 28 2023 (12 months).
    const kept = new Set(plan.keep.map((k) => k.time.toISOString().slice(0, 10)));
    expect([...kept].sort()).toEqual(
      [
        '2024-01-01',
        '2023-12-31',
        '2023-12-30',
        '2023-12-29',
        '2023-12-28',
        '2023-12-27',
        '2023-12-26',
        '2023-12-24',
        '2023-12-17',
        '2023-11-30',
        '2023-10-31',
        '2023-09-30',
        '2023-08-31',
        '2023-07-31',
        '2023-06-30',
        '2023-05-31',
        '2023-04-30',
        '2023-03-31',
        '2023-02-28',
      ].sort(),
    );
    expect(plan.keep.length + plan.prune.length).toBe(366);
  });
});

describe('planRetention: ISO weeks', () => {
  it.each([
    ['2020-12-31', 2020, 53],
    ['2021-01-01', 2020, 53],
    ['2021-01-03', 2020, 53],
    ['2021-01-04', 2021, 1],
    ['2019-12-30', 2020, 1],
    ['2018-12-31', 2019, 1],
    ['2016-01-03', 2015, 53],
    ['2024-12-30', 2025, 1],
    ['2026-12-31', 2026, 53],
    ['2027-01-03', 2026, 53],
    ['2024-06-15', 2024, 24],
  ])('%s is ISO week %i-W%i', (date, year, week) => {
    const [y, m, d] = date.split('-').map(Number) as [number, number, number];
    expect(isoWeek(y, m, d)).toEqual({ year, week });
  });

  it('matches a brute-force ISO week count for every day 2015-2030', () => {
    // Independent definition: week 1 is the week (Mon-Sun) containing Jan 4.
    const DAYMS = 86_400_000;
    const mondayOfWeek1 = (y: number): number => {
      const jan4 = Date.UTC(y, 0, 4);
      return jan4 - ((new Date(jan4).getUTCDay() + 6) % 7) * DAYMS;
    };
    for (let t = Date.UTC(2015, 0, 1); t < Date.UTC(2031, 0, 1); t += DAYMS) {
      const d = new Date(t);
      let y = d.getUTCFullYear() + 1;
      while (mondayOfWeek1(y) > t) y--;
      const week = Math.floor((t - mondayOfWeek1(y)) / (7 * DAYMS)) + 1;
      expect(isoWeek(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate())).toEqual({ year: y, week });
    }
  });
});

describe('planRetention: time zones', () => {
  const input = items('2024-03-10T23:30:00Z', '2024-03-10T12:00:00Z', '2024-03-10T01:00:00Z');

  it('defaults to UTC', () => {
    expect(planRetention(input, P({ daily: 5 }), NOW)).toEqual(planRetention(input, P({ daily: 5 }), NOW, 'UTC'));
    expect(keptIds(planRetention(input, P({ daily: 5 }), NOW))).toEqual(['2024-03-10T23:30:00Z']);
  });

  it('23:30 UTC is the next day in Asia/Tokyo', () => {
    // Tokyo: 03-11 08:30, 03-10 21:00, 03-10 10:00
    expect(keptIds(planRetention(input, P({ daily: 5 }), NOW, 'Asia/Tokyo'))).toEqual([
      '2024-03-10T23:30:00Z',
      '2024-03-10T12:00:00Z',
    ]);
  });

  it('01:00 UTC is the previous day in America/New_York', () => {
    // New York: 03-10 19:30 EDT, 03-10 08:00 EDT, 03-09 20:00 EST
    expect(keptIds(planRetention(input, P({ daily: 5 }), NOW, 'America/New_York'))).toEqual([
      '2024-03-10T23:30:00Z',
      '2024-03-10T01:00:00Z',
    ]);
  });

  it('month, year and ISO week boundaries move with the zone', () => {
    const m = items('2024-01-31T20:00:00Z', '2024-01-31T10:00:00Z'); // Tokyo: Feb 1 05:00, Jan 31 19:00
    expect(keptIds(planRetention(m, P({ monthly: 5 }), NOW))).toEqual(['2024-01-31T20:00:00Z']);
    expect(keptIds(planRetention(m, P({ monthly: 5 }), NOW, 'Asia/Tokyo'))).toHaveLength(2);

    const y = items('2020-12-31T23:30:00Z', '2020-12-31T10:00:00Z');
    expect(keptIds(planRetention(y, P({ yearly: 5 }), NOW))).toHaveLength(1);
    expect(keptIds(planRetention(y, P({ yearly: 5 }), NOW, 'Asia/Tokyo'))).toHaveLength(2);

    const w = items('2021-01-03T16:00:00Z', '2021-01-03T10:00:00Z'); // Tokyo: Mon Jan 4 01:00 (2021-W01) vs Sun Jan 3 (2020-W53)
    expect(keptIds(planRetention(w, P({ weekly: 5 }), NOW))).toHaveLength(1);
    expect(keptIds(planRetention(w, P({ weekly: 5 }), NOW, 'Asia/Tokyo'))).toHaveLength(2);
  });

  it('the repeated hour at a DST fall-back is one hourly bucket (wall-clock hour, as restic does)', () => {
    // Europe/Berlin 2024-10-27: 02:00-02:59 happens twice (CEST, then CET).
    const dst = items('2024-10-27T00:10:00Z', '2024-10-27T00:50:00Z', '2024-10-27T01:10:00Z', '2024-10-27T01:50:00Z');
    expect(keptIds(planRetention(dst, P({ hourly: 10 }), NOW, 'Europe/Berlin'))).toEqual(['2024-10-27T01:50:00Z']);
    expect(keptIds(planRetention(dst, P({ hourly: 10 }), NOW, 'UTC'))).toEqual(['2024-10-27T01:50:00Z', '2024-10-27T00:50:00Z']);
  });

  it('wall clock helper agrees with the zone', () => {
    expect(wallClockIn('Asia/Tokyo')(new Date('2024-03-10T23:30:00Z'))).toEqual({ year: 2024, month: 3, day: 11, hour: 8 });
    expect(wallClockIn('Asia/Kolkata')(new Date('2024-03-10T18:29:00Z'))).toEqual({ year: 2024, month: 3, day: 10, hour: 23 });
    expect(wallClockIn('America/New_York')(new Date('2024-01-01T04:59:59Z'))).toEqual({ year: 2023, month: 12, day: 31, hour: 23 });
    expect(wallClockIn('Europe/Berlin')(new Date('2024-06-30T22:00:00Z'))).toEqual({ year: 2024, month: 7, day: 1, hour: 0 });
  });

  it('rejects an unknown time zone with a clear message', () => {
    expect(() => planRetention(input, P({ daily: 1 }), NOW, 'Mars/Olympus_Mons')).toThrow(/unknown time zone "Mars\/Olympus_Mons"/);
  });
});

describe('planRetention: pinned and newest-verified', () => {
  it('pinned items are always kept and still take part in the count rules', () => {
    const input: RetentionItem[] = [
      { id: 'new', time: new Date('2024-05-03T00:00:00Z'), pinned: true },
      { id: 'mid', time: new Date('2024-05-02T00:00:00Z') },
      { id: 'old', time: new Date('2024-05-01T00:00:00Z'), pinned: true },
    ];
    const plan = planRetention(input, P({ keepLast: 1 }), NOW);
    expect(plan.keep).toEqual([
      { id: 'new', time: new Date('2024-05-03T00:00:00Z'), reasons: ['last', 'pinned', 'newest-verified'] },
      { id: 'old', time: new Date('2024-05-01T00:00:00Z'), reasons: ['pinned'] },
    ]);
    expect(prunedIds(plan)).toEqual(['mid']);
  });

  it('the newest verified item is kept and marked even when a rule keeps it too', () => {
    const input = items('2024-05-03T00:00:00Z', '2024-05-02T00:00:00Z');
    expect(reasonsOf(planRetention(input, P({ daily: 1 }), NOW), '2024-05-03T00:00:00Z')).toEqual(['daily', 'newest-verified']);
  });

  it('unverified items never satisfy a rule, are never pruned, and are marked "unverified"', () => {
    const input: RetentionItem[] = [
      { id: 'u-new', time: new Date('2024-05-10T12:00:00Z'), verified: false },
      { id: 'v-10', time: new Date('2024-05-10T06:00:00Z'), verified: true },
      { id: 'v-08', time: new Date('2024-05-08T00:00:00Z') },
      { id: 'v-06', time: new Date('2024-05-06T00:00:00Z') },
      { id: 'u-pin', time: new Date('2024-05-01T00:00:00Z'), verified: false, pinned: true },
    ];
    const plan = planRetention(input, P({ keepLast: 1, daily: 2 }), NOW);
    expect(plan.keep).toEqual([
      { id: 'u-new', time: new Date('2024-05-10T12:00:00Z'), reasons: ['unverified'] },
      { id: 'v-10', time: new Date('2024-05-10T06:00:00Z'), reasons: ['last', 'daily', 'newest-verified'] },
      { id: 'v-08', time: new Date('2024-05-08T00:00:00Z'), reasons: ['daily'] },
      { id: 'u-pin', time: new Date('2024-05-01T00:00:00Z'), reasons: ['pinned', 'unverified'] },
    ]);
    expect(prunedIds(plan)).toEqual(['v-06']);
  });

  it('unverified items are not the keepWithin reference', () => {
    const input: RetentionItem[] = [
      { id: 'u', time: new Date('2024-05-10T00:00:00Z'), verified: false },
      { id: 'a', time: new Date('2024-05-08T00:00:00Z') },
      { id: 'b', time: new Date('2024-05-07T12:00:00Z') },
      { id: 'c', time: new Date('2024-05-06T00:00:00Z') },
    ];
    const plan = planRetention(input, P({ keepWithinSeconds: DAY }), NOW);
    expect(keptIds(plan)).toEqual(['u', 'a', 'b']);
    expect(reasonsOf(plan, 'b')).toEqual(['within']);
    expect(prunedIds(plan)).toEqual(['c']);
  });

  it('with no verified item there is no newest-verified and nothing unverified is pruned', () => {
    const input: RetentionItem[] = [
      { id: 'a', time: new Date('2024-05-10T00:00:00Z'), verified: false },
      { id: 'b', time: new Date('2024-05-09T00:00:00Z'), verified: false },
    ];
    const plan = planRetention(input, P({ keepLast: 1 }), NOW);
    expect(plan.keep.map((k) => k.reasons)).toEqual([['unverified'], ['unverified']]);
    expect(plan.prune).toEqual([]);
  });
});

describe('planRetention: all-zero policy', () => {
  it('is "no policy": nothing is pruned (restic: no snapshots will be removed)', () => {
    const input: RetentionItem[] = [
      ...items('2024-05-03T00:00:00Z', '2024-05-02T00:00:00Z', '2024-05-01T00:00:00Z'),
      { id: 'u', time: new Date('2024-04-01T00:00:00Z'), verified: false },
    ];
    expect(isEmptyPolicy(NONE)).toBe(true);
    expect(isEmptyPolicy(P({ keepWithinSeconds: 1 }))).toBe(false);
    expect(isEmptyPolicy(P({ daily: -1 }))).toBe(false);
    const plan = planRetention(input, NONE, NOW);
    expect(plan.prune).toEqual([]);
    expect(plan.keep.map((k) => k.reasons)).toEqual([
      ['policy-empty', 'newest-verified'],
      ['policy-empty'],
      ['policy-empty'],
      ['policy-empty', 'unverified'],
    ]);
  });
});

describe('planRetention: duplicates and validation', () => {
  it('items at the same timestamp are ordered by input order', () => {
    const t = new Date('2024-05-01T00:00:00Z');
    const ab: RetentionItem[] = [
      { id: 'a', time: t },
      { id: 'b', time: new Date(t) },
      { id: 'old', time: new Date('2024-04-01T00:00:00Z') },
    ];
    const ba: RetentionItem[] = [ab[1]!, ab[0]!, ab[2]!];
    expect(keptIds(planRetention(ab, P({ keepLast: 1 }), NOW))).toEqual(['a']);
    expect(keptIds(planRetention(ba, P({ keepLast: 1 }), NOW))).toEqual(['b']);
    expect(keptIds(planRetention(ab, P({ daily: 5 }), NOW))).toEqual(['a', 'old']);
    expect(prunedIds(planRetention(ab, P({ daily: 5 }), NOW))).toEqual(['b']);
    expect(keptIds(planRetention(ab, P({ keepLast: 2 }), NOW))).toEqual(['a', 'b']);
    // within keeps both duplicates
    expect(keptIds(planRetention(ab, P({ keepWithinSeconds: 1 }), NOW))).toEqual(['a', 'b']);
  });

  it('items without ids may share a timestamp', () => {
    const t = '2024-05-01T00:00:00Z';
    const plan = planRetention(
      [
        { id: '', time: new Date(t) },
        { id: '', time: new Date(t) },
      ],
      P({ daily: 1 }),
      NOW,
    );
    expect(plan.keep).toHaveLength(1);
    expect(plan.prune).toHaveLength(1);
  });

  it('rejects bad policies, items and now', () => {
    const input = items('2024-05-01T00:00:00Z');
    expect(() => planRetention(input, P({ daily: -2 }), NOW)).toThrow(/daily must be an integer >= 0, or -1/);
    expect(() => planRetention(input, P({ keepLast: 1.5 }), NOW)).toThrow(/keepLast/);
    expect(() => planRetention(input, P({ weekly: Number.NaN }), NOW)).toThrow(/weekly/);
    expect(() => planRetention(input, P({ keepWithinSeconds: -1 }), NOW)).toThrow(/keepWithinSeconds/);
    expect(() => planRetention(input, P({ keepWithinSeconds: Infinity }), NOW)).toThrow(/keepWithinSeconds/);
    expect(() => planRetention(input, P({ daily: 1 }), new Date(Number.NaN))).toThrow(/now/);
    expect(() => planRetention([{ id: 'x', time: new Date('nope') }], P({ daily: 1 }), NOW)).toThrow(/"x" has an invalid time/);
    expect(() =>
      planRetention(
        [
          { id: 'x', time: new Date('2024-01-01T00:00:00Z') },
          { id: 'x', time: new Date('2024-01-02T00:00:00Z') },
        ],
        P({ daily: 1 }),
        NOW,
      ),
    ).toThrow(/duplicate item id "x"/);
  });
});

describe('planRetention: properties against an independent set-based model (UTC)', () => {
  const bucketOf: Record<string, (d: Date) => string> = {
    hourly: (d) => d.toISOString().slice(0, 13),
    daily: (d) => d.toISOString().slice(0, 10),
    weekly: (d) => {
      const w = isoWeek(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate());
      return `${w.year}-W${w.week}`;
    },
    monthly: (d) => d.toISOString().slice(0, 7),
    yearly: (d) => d.toISOString().slice(0, 4),
  };

  it('kept set = last N ∪ newest of N newest buckets per rule ∪ within ∪ newest', () => {
    const r = rng(42);
    for (let round = 0; round < 200; round++) {
      const n = Math.floor(r() * 40);
      const base = Date.UTC(2020, 10, 1);
      const input: RetentionItem[] = [];
      for (let i = 0; i < n; i++) {
        const spread = r() < 0.5 ? 3 * 86_400_000 : 800 * 86_400_000;
        input.push({ id: `i${i}`, time: new Date(base + Math.floor(r() * spread / 60_000) * 60_000) });
      }
      const pick = (): number => (r() < 0.4 ? 0 : r() < 0.1 ? -1 : Math.floor(r() * 6));
      const policy: RetentionPolicy = {
        keepLast: pick(),
        hourly: pick(),
        daily: pick(),
        weekly: pick(),
        monthly: pick(),
        yearly: pick(),
        keepWithinSeconds: r() < 0.5 ? 0 : Math.floor(r() * 5 * DAY),
      };
      const plan = planRetention(input, policy, NOW);

      // Every item exactly once.
      expect([...keptIds(plan), ...prunedIds(plan)].sort()).toEqual(input.map((i) => i.id).sort());

      const sorted = input
        .map((it, idx) => ({ it, idx }))
        .sort((a, b) => b.it.time.getTime() - a.it.time.getTime() || a.idx - b.idx)
        .map((x) => x.it);
      const expected = new Set<string>();
      if (isEmptyPolicy(policy)) sorted.forEach((i) => expected.add(i.id));
      const lim = (c: number): number => (c === -1 ? Infinity : c);
      sorted.slice(0, lim(policy.keepLast)).forEach((i) => expected.add(i.id));
      for (const rule of ['hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const) {
        const seen = new Set<string>();
        for (const i of sorted) {
          const b = bucketOf[rule]!(i.time);
          if (seen.has(b)) continue;
          if (seen.size >= lim(policy[rule])) break;
          seen.add(b);
          expected.add(i.id);
        }
      }
      if (policy.keepWithinSeconds > 0 && sorted.length > 0) {
        const ref = sorted[0]!.time.getTime();
        sorted.filter((i) => i.time.getTime() > ref - policy.keepWithinSeconds * 1000).forEach((i) => expected.add(i.id));
      }
      if (sorted.length > 0) expected.add(sorted[0]!.id);
      expect(new Set(keptIds(plan))).toEqual(expected);
      // Output is newest first.
      const times = plan.keep.map((k) => k.time.getTime());
      expect(times).toEqual([...times].sort((a, b) => b - a));
    }
  });
});

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['0s', 0],
    ['0d', 0],
    ['90s', 90],
    ['7d', 7 * DAY],
    ['2w', 14 * DAY],
    ['36h', 36 * 3600],
    ['1h30min', 5400],
    ['30min', 1800],
    ['2mo', 60 * DAY],
    ['1y', 365 * DAY],
    ['1y2mo3d4h', (365 + 60 + 3) * DAY + 4 * 3600],
    ['4h3d', 3 * DAY + 4 * 3600],
    ['  7d\n', 7 * DAY],
  ])('%j -> %i seconds', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
  });

  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['7', /the number 7 has no unit/],
    ['30m', /"m" is ambiguous.*"30mo" for months or "30min" for minutes/],
    ['1y2m3d4h', /"m" is ambiguous/],
    ['-1d', /negative/],
    ['1.5d', /unexpected/],
    ['7 d', /unexpected/],
    ['d', /unexpected "d"/],
    ['1d1d', /unit "d" appears more than once/],
    ['7x', /unknown unit "x"/],
    ['1D', /unknown unit "D"/],
    ['1d7', /the number 7 has no unit/],
    ['99999999999999y', /too large/],
  ])('%j is rejected', (text, message) => {
    expect(() => parseDuration(text)).toThrow(message);
    expect(() => parseDuration(text)).toThrow(/invalid duration/);
  });
});

describe('parseSimulationInput', () => {
  it('parses one timestamp per line, ignoring blanks and comments', () => {
    const text = [
      '# backups of the last days',
      '',
      '2024-05-01T13:45:30Z',
      '   2024-05-02 13:45   # trailing comment',
      '2024-05-03T02:00:00+02:00',
      '2024-05-04T02:00:00-0130',
      '2024-05-05T10:00:00.5+09',
      '2024-05-06',
      '2024-05-07T00:00:00,123456z',
      '\t',
    ].join('\r\n');
    const out = parseSimulationInput(text);
    expect(out.map((i) => i.id)).toEqual(Array(7).fill(''));
    expect(out.map((i) => i.time.toISOString())).toEqual([
      '2024-05-01T13:45:30.000Z',
      '2024-05-02T13:45:00.000Z',
      '2024-05-03T00:00:00.000Z',
      '2024-05-04T03:30:00.000Z',
      '2024-05-05T01:00:00.500Z',
      '2024-05-06T00:00:00.000Z',
      '2024-05-07T00:00:00.123Z',
    ]);
  });

  it('an empty or comment-only input gives no items', () => {
    expect(parseSimulationInput('')).toEqual([]);
    expect(parseSimulationInput('# nothing\n\n')).toEqual([]);
  });

  it.each([
    ['2024-05-01T00:00:00Z\nyesterday\n', 2, 'yesterday'],
    ['\n\n2024-02-30T00:00:00Z', 3, '2024-02-30T00:00:00Z'],
    ['2023-02-29', 1, '2023-02-29'],
    ['# c\n2024-05-01T24:00:00Z', 2, '2024-05-01T24:00:00Z'],
    ['2024-05-01T10:60Z', 1, '2024-05-01T10:60Z'],
    ['2024-13-01', 1, '2024-13-01'],
    ['2024-05-01T10:00:00+25:00', 1, '2024-05-01T10:00:00+25:00'],
    ['1714571130', 1, '1714571130'],
    ['2024-05-01T10:00:00Z extra', 1, '2024-05-01T10:00:00Z extra'],
    ['2024-5-1', 1, '2024-5-1'],
  ])('%j fails naming line %i', (text, line, bad) => {
    expect(() => parseSimulationInput(text)).toThrow(`line ${line}: "${bad}" is not an ISO-8601 timestamp`);
  });

  it('accepts leap days', () => {
    expect(parseSimulationInput('2024-02-29T12:00:00Z')[0]!.time.toISOString()).toBe('2024-02-29T12:00:00.000Z');
  });
});

describe('planToJson and formatPlanTable', () => {
  const plan = planRetention(
    [
      { id: 'b-3', time: new Date('2024-05-03T00:00:00Z') },
      { id: 'b-2', time: new Date('2024-05-02T00:00:00Z') },
      { id: 'b-1', time: new Date('2024-05-01T00:00:00Z'), pinned: true },
    ],
    P({ keepLast: 1 }),
    NOW,
  );

  it('names entries by id', () => {
    expect(JSON.stringify(planToJson(plan))).toBe(
      '{"keep":[{"id":"b-3","reasons":["last","newest-verified"]},{"id":"b-1","reasons":["pinned"]}],"prune":[{"id":"b-2"}]}',
    );
  });

  it('names entries by ISO-8601 UTC time when they have no id (simulate mode)', () => {
    const sim = planRetention(parseSimulationInput('2024-05-03T09:00:00+09:00\n2024-05-02T00:00:00Z\n'), P({ keepLast: 1 }), NOW);
    expect(planToJson(sim)).toEqual({
      keep: [{ time: '2024-05-03T00:00:00.000Z', reasons: ['last', 'newest-verified'] }],
      prune: [{ time: '2024-05-02T00:00:00.000Z' }],
    });
  });

  it('formats a table newest first with reasons and a summary', () => {
    expect(formatPlanTable(plan)).toBe(
      [
        'ACTION  ID   TIME (UTC)                REASONS',
        'keep    b-3  2024-05-03T00:00:00.000Z  last, newest-verified',
        'prune   b-2  2024-05-02T00:00:00.000Z  -',
        'keep    b-1  2024-05-01T00:00:00.000Z  pinned',
        '',
        '3 backups: keep 2, prune 1',
        '',
      ].join('\n'),
    );
  });

  it('leaves out the ID column when no entry has an id', () => {
    const sim = planRetention(parseSimulationInput('2024-05-02T00:00:00Z\n2024-05-01T00:00:00Z'), P({ keepLast: 1 }), NOW);
    expect(formatPlanTable(sim)).toBe(
      [
        'ACTION  TIME (UTC)                REASONS',
        'keep    2024-05-02T00:00:00.000Z  last, newest-verified',
        'prune   2024-05-01T00:00:00.000Z  -',
        '',
        '2 backups: keep 1, prune 1',
        '',
      ].join('\n'),
    );
    expect(formatPlanTable({ keep: [], prune: [] })).toBe('no backups\n');
  });
});
