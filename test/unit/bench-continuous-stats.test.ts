import { describe, expect, it } from 'vitest';
// The continuous-backup bench's pure figures (bench/lib/continuous-stats.mjs): plain JS, run by the bench with Node.
// @ts-expect-error -- an .mjs without types
import { parseDurationMs, rssFlatness, slope, windowStats, writeLags } from '../../bench/lib/continuous-stats.mjs';

type Write = [due: number, latMs: number, ok: 0 | 1, rev: number, ackMs: number];
const w = (rev: number, ack: number, ok: 0 | 1 = 1): Write => [ack - 5, 5, ok, rev, ack];

describe('writeLags: a write acked → the first commit of a segment holding its revision', () => {
  const segs = [
    { fromRev: 10, toRev: 19, committedMs: 5_000 },
    { fromRev: 20, toRev: 29, committedMs: 9_000 },
    { fromRev: 25, toRev: 34, committedMs: 8_000 }, // a failover overlap committed first for 25-29
  ];
  it.each([
    ['inside the first segment', w(10, 1_000), 4],
    ['its last revision', w(19, 4_000), 1],
    ['only in the second', w(21, 2_000), 7],
    ['in two overlapping segments: the earlier commit counts', w(27, 2_000), 6],
    ['only in the overlapping one', w(33, 7_500), 0.5],
  ])('%s', (_, write, lag) => {
    const r = writeLags([write], segs);
    expect(r.missing).toEqual([]);
    expect(r.lags).toEqual([lag]);
  });
  it('a revision in no segment is missing, failed writes are skipped, segments in any order', () => {
    const r = writeLags([w(9, 0), w(35, 0), w(12, 0, 0), w(11, 1_000)], [...segs].reverse());
    expect(r.missing.map((x: Write) => x[3])).toEqual([9, 35]);
    expect(r.lags).toEqual([4]);
  });
});

describe('windowStats', () => {
  it('counts the writes due in the window, errors apart', () => {
    const writes: Write[] = [[0, 1, 1, 1, 1], [10, 2, 1, 2, 12], [20, 100, 0, 0, 0], [30, 3, 1, 3, 33], [40, 9, 1, 4, 49]];
    expect(windowStats(writes, 10, 30)).toEqual({ n: 3, errors: 1, p50: 2, p99: 3, max: 3 });
  });
});

describe('slope and rssFlatness', () => {
  it.each([
    [[0, 1, 2], [5, 7, 9], 2],
    [[0, 1, 2, 3], [4, 4, 4, 4], 0],
    [[0], [1], NaN],
  ])('slope(%j, %j) = %d', (xs, ys, want) => expect(slope(xs, ys)).toBe(want));
  it('a steady climb shows in the second half slope; flat stays 0', () => {
    const min = 60_000;
    const climbing = Array.from({ length: 31 }, (_, i) => [i * min, 100 + i]); // +1 MiB a minute
    const r = rssFlatness(climbing);
    expect(r.slopePer10Min).toBeCloseTo(10, 6);
    expect(r.max).toBe(130);
    expect(r.edgeMinutes).toBe(5);
    expect(r.firstMedian).toBe(102.5); // 100..105
    expect(r.lastMedian).toBe(127.5); // 125..130
    const flat = rssFlatness(Array.from({ length: 31 }, (_, i) => [i * min, i < 3 ? 90 : 120])); // warm-up, then flat
    expect(flat.slopePer10Min).toBe(0);
  });
});

describe('parseDurationMs', () => {
  it.each([
    ['30m', 1_800_000],
    ['90s', 90_000],
    ['2m30s', 150_000],
    ['1h', 3_600_000],
    ['45', 45_000],
  ])('%s', (s, ms) => expect(parseDurationMs(s)).toBe(ms));
  it.each(['', '5x', 'm', '5m junk'])('refuses %j', (s) => expect(() => parseDurationMs(s)).toThrow(/cannot read duration/));
});
