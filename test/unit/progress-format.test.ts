import { describe, expect, it } from 'vitest';
import { addSample, etaSeconds, fmtSeconds, formatRow, rateOf, type Sample } from '../../src/progress/format.js';
import { throttled } from '../../src/progress/forward.js';
import { meter, type ProgressEvent } from '../../src/progress/model.js';

const MiB = 1024 * 1024;

describe('rateOf: bytes per second over the sliding window', () => {
  const cases: { name: string; samples: Sample[]; want: number | undefined }[] = [
    { name: 'no samples', samples: [], want: undefined },
    { name: 'one sample', samples: [{ t: 0, done: 5 }], want: undefined },
    { name: 'two samples too close (< 200 ms): noise', samples: [{ t: 0, done: 0 }, { t: 100, done: MiB }], want: undefined },
    { name: 'steady 10 MiB/s', samples: [{ t: 0, done: 0 }, { t: 500, done: 5 * MiB }, { t: 1000, done: 10 * MiB }], want: 10 * MiB },
    { name: 'only the last 5 s count: fast start, slow now', samples: [{ t: 0, done: 0 }, { t: 1000, done: 100 * MiB }, { t: 6000, done: 105 * MiB }], want: MiB },
    { name: 'a stall is rate 0, not undefined', samples: [{ t: 0, done: MiB }, { t: 2000, done: MiB }], want: 0 },
    { name: 'a counter that went back never gives a negative rate', samples: [{ t: 0, done: MiB }, { t: 1000, done: 0 }], want: 0 },
  ];
  for (const c of cases) it(c.name, () => expect(rateOf(c.samples)).toBe(c.want));
});

describe('addSample keeps what the window needs, no more', () => {
  it('drops samples that left the window, keeping one before it', () => {
    const s: Sample[] = [];
    for (let t = 0; t <= 20_000; t += 100) addSample(s, { t, done: t });
    expect(s.length).toBeLessThanOrEqual(52);
    expect(s.at(-1)!.t - s[1]!.t).toBeLessThan(5000);
    expect(rateOf(s)).toBeCloseTo(1000, 5);
  });

  it('a chunk every 0.1 ms (10,000 a second) keeps ~50 samples, the newest always last, the rate right', () => {
    const s: Sample[] = [];
    for (let i = 0; i <= 200_000; i++) addSample(s, { t: i / 10, done: i * 1000 });
    expect(s.length).toBeLessThanOrEqual(60);
    expect(s.at(-1)).toEqual({ t: 20_000, done: 200_000_000 });
    expect(rateOf(s)).toBeCloseTo(10_000_000, -3);
  });
});

describe('etaSeconds', () => {
  const cases: [number, number | undefined, number | undefined, number | undefined][] = [
    [0, 100, 10, 10],
    [50, 100, 10, 5],
    [100, 100, 10, 0],
    [120, 100, 10, 0], // the source's total is an estimate: never negative
    [0, undefined, 10, undefined],
    [0, 100, undefined, undefined],
    [0, 100, 0, undefined], // stalled: no ETA rather than infinity
  ];
  for (const [done, total, rate, want] of cases) it(`${done}/${total} at ${rate}/s -> ${want}`, () => expect(etaSeconds(done, total, rate)).toBe(want));
});

describe('fmtSeconds', () => {
  const cases: [number, string][] = [
    [0, '0s'],
    [7.4, '7s'],
    [59.6, '1m00s'],
    [245, '4m05s'],
    [3599, '59m59s'],
    [3720, '1h02m'],
  ];
  for (const [s, want] of cases) it(`${s} -> ${want}`, () => expect(fmtSeconds(s)).toBe(want));
});

describe('formatRow', () => {
  const cases: { name: string; row: Parameters<typeof formatRow>[0]; want: string }[] = [
    {
      name: 'a store delivery under way: bar, bytes, percent, rate, ETA',
      row: { phase: 'deliver', store: 's3', done: 256 * MiB, total: 1024 * MiB, rate: 64 * MiB },
      want: 'deliver s3             [#####---------------]  256.0 MiB / 1.0 GiB   25%  64.0 MiB/s  ETA 12s',
    },
    {
      name: 'no rate yet: no ETA',
      row: { phase: 'bundle', done: 0, total: 10 * MiB },
      want: 'bundle                 [--------------------]  0 B / 10.0 MiB    0%  -- /s',
    },
    {
      name: 'past an estimated total: capped at 100 %',
      row: { phase: 'source', done: 12 * MiB, total: 10 * MiB, rate: MiB },
      want: 'source                 [####################]  12.0 MiB / 10.0 MiB  100%  1.0 MiB/s  ETA 0s',
    },
    {
      name: 'no total: bytes and rate only',
      row: { phase: 'download', store: 'vault', done: 3 * MiB, rate: 1.5 * MiB },
      want: 'download vault         3.0 MiB  1.5 MiB/s',
    },
    {
      name: 'finished: size, time and average rate',
      row: { phase: 'read-back', store: 's3', done: 1024 * MiB, total: 1024 * MiB, end: 'ok', elapsedMs: 16_000 },
      want: 'read-back s3           done 1.0 GiB in 16s, 64.0 MiB/s',
    },
    {
      name: 'a phase without bytes (the restore tool): its time, running and done',
      row: { phase: 'restore', done: 0, elapsedMs: 12_400 },
      want: 'restore                running 12s',
    },
    {
      name: 'a phase without bytes, done',
      row: { phase: 'restore', done: 0, elapsedMs: 65_000, end: 'ok' },
      want: 'restore                done in 1m05s',
    },
    {
      name: 'failed: how far it got',
      row: { phase: 'deliver', store: 's3', done: 5 * MiB, total: 10 * MiB, end: 'failed', elapsedMs: 1000 },
      want: 'deliver s3             FAILED after 5.0 MiB of 10.0 MiB',
    },
  ];
  for (const c of cases) it(c.name, () => expect(formatRow(c.row)).toBe(c.want));

  const wide = { phase: 'read-back', store: 'vault-eu-west', done: 1000 * MiB, total: 1023 * MiB, rate: 999 * MiB };
  const widths: [number, string][] = [
    [200, 'read-back vault-eu-west [###################-]  1000.0 MiB / 1023.0 MiB   97%  999.0 MiB/s  ETA 0s'],
    [79, 'read-back vault-eu-west 1000.0 MiB / 1023.0 MiB   97%  999.0 MiB/s  ETA 0s'],
    [40, 'read-back vault-eu-west 1000.0 MiB / 10'],
  ];
  for (const [w, want] of widths) {
    it(`within ${w} columns: the bar goes first, then the end is cut`, () => {
      const got = formatRow(wide, w);
      expect(got).toBe(want);
      expect(got.length).toBeLessThanOrEqual(w);
    });
  }
});

describe('meter', () => {
  it('without a sink is a no-op; with one reports cumulative bytes, the total, and one end', () => {
    meter(undefined, 'x').add(5); // nothing to see: it must simply not throw
    const seen: ProgressEvent[] = [];
    const m = meter((e) => seen.push(e), 'deliver', { store: 's3', total: 10 });
    m.add(4);
    m.add(6);
    m.end();
    m.end(false);
    m.add(1);
    expect(seen).toEqual([
      { phase: 'deliver', store: 's3', done: 0, total: 10 },
      { phase: 'deliver', store: 's3', done: 4, total: 10 },
      { phase: 'deliver', store: 's3', done: 10, total: 10 },
      { phase: 'deliver', store: 's3', done: 10, total: 10, end: 'ok' },
    ]);
  });
});

describe('throttled (the control socket forwarder)', () => {
  it('sends a new row and an end at once, at most the newest of the rest per period, and what is pending on flush', () => {
    const sent: ProgressEvent[] = [];
    const t = throttled((e) => sent.push(e), 60_000);
    t({ phase: 'bundle', done: 0, total: 100 });
    for (let i = 1; i <= 1000; i++) t({ phase: 'bundle', done: i / 10, total: 100 });
    t({ phase: 'deliver', store: 's3', done: 0 });
    t({ phase: 'deliver', store: 's3', done: 7 });
    expect(sent).toEqual([
      { phase: 'bundle', done: 0, total: 100 },
      { phase: 'deliver', store: 's3', done: 0 },
    ]);
    t({ phase: 'bundle', done: 100, total: 100, end: 'ok' });
    expect(sent.at(-1)).toEqual({ phase: 'bundle', done: 100, total: 100, end: 'ok' });
    t.flush();
    // The bundle's pending update was superseded by its end; the delivery's newest goes out.
    expect(sent.slice(3)).toEqual([{ phase: 'deliver', store: 's3', done: 7 }]);
    t.flush();
    expect(sent).toHaveLength(4);
  });
});
