import { describe, expect, it } from 'vitest';
import { advance, checkSegmentEnd, opsDigest, stepRecord, txnOf, type StepState } from '../../src/continuous/replay-step.js';

const T = (s: number) => new Date(Date.UTC(2026, 10, 26, 10, 0, s)).toISOString();
const UNTIL = new Date(Date.UTC(2026, 10, 26, 10, 0, 30));

describe('stepRecord: apply, skip, stop or fail, record by record', () => {
  // [name, segment, state before, records (rev, second), decisions wanted, state after]
  const rows: [string, { fromRev: number; toRev: number }, StepState, [number, number][], string[], StepState, number?][] = [
    ['a whole segment applied in order', { fromRev: 11, toRev: 13 }, { nextRev: 11, prevInSegment: 10 }, [[11, 1], [12, 2], [13, 3]], ['apply', 'apply', 'apply'], { nextRev: 14, prevInSegment: 13 }],
    ['overlap: revisions already applied are skipped, then applied', { fromRev: 11, toRev: 14 }, { nextRev: 13, prevInSegment: 10 }, [[11, 1], [12, 2], [13, 3], [14, 4]], ['skip', 'skip', 'apply', 'apply'], { nextRev: 15, prevInSegment: 14 }],
    ['stops at the first record seen after TIME', { fromRev: 11, toRev: 14 }, { nextRev: 11, prevInSegment: 10 }, [[11, 10], [12, 30], [13, 31]], ['apply', 'apply', 'stop'], { nextRev: 13, prevInSegment: 12 }],
    ['an already-applied record after TIME is skipped, not a stop', { fromRev: 11, toRev: 12 }, { nextRev: 12, prevInSegment: 10 }, [[11, 40]], ['skip'], { nextRev: 12, prevInSegment: 11 }],
    ['a record out of sequence is corrupt', { fromRev: 11, toRev: 14 }, { nextRev: 11, prevInSegment: 10 }, [[11, 1], [13, 2]], ['apply', 'error:segment-corrupt'], { nextRev: 12, prevInSegment: 11 }],
    ['a repeated record is corrupt', { fromRev: 11, toRev: 14 }, { nextRev: 11, prevInSegment: 10 }, [[11, 1], [11, 1]], ['apply', 'error:segment-corrupt'], { nextRev: 12, prevInSegment: 11 }],
    ['a record past the range is corrupt', { fromRev: 11, toRev: 11 }, { nextRev: 11, prevInSegment: 10 }, [[11, 1], [12, 2]], ['apply', 'error:segment-corrupt'], { nextRev: 12, prevInSegment: 11 }],
    ['a segment starting past the next revision is a gap', { fromRev: 15, toRev: 16 }, { nextRev: 11, prevInSegment: 14 }, [[15, 1]], ['error:segment-gap'], { nextRev: 11, prevInSegment: 14 }],
    // The replay drill: up to the next full backup's revision exactly, whenever the records were seen.
    ['untilRev: stops right after that revision', { fromRev: 11, toRev: 14 }, { nextRev: 11, prevInSegment: 10 }, [[11, 1], [12, 2], [13, 3]], ['apply', 'apply', 'stop'], { nextRev: 13, prevInSegment: 12 }, 12],
    ['untilRev: with no time bound, records seen late still count up to it', { fromRev: 11, toRev: 12 }, { nextRev: 11, prevInSegment: 10 }, [[11, 40], [12, 50]], ['apply', 'apply'], { nextRev: 13, prevInSegment: 12 }, 12],
    ['untilRev: already applied revisions past it are still skipped', { fromRev: 11, toRev: 14 }, { nextRev: 14, prevInSegment: 10 }, [[11, 1], [12, 2], [13, 3], [14, 4]], ['skip', 'skip', 'skip', 'stop'], { nextRev: 14, prevInSegment: 13 }, 12],
    ['untilRev: a gap below it is still a gap', { fromRev: 15, toRev: 16 }, { nextRev: 11, prevInSegment: 14 }, [[15, 1]], ['error:segment-gap'], { nextRev: 11, prevInSegment: 14 }, 20],
  ];
  it.each(rows)('%s', (_name, seg, start, recs, want, end, untilRev) => {
    let state = start;
    const got: string[] = [];
    for (const [rev, s] of recs) {
      const d = stepRecord(state, seg, { rev, time: T(s) }, untilRev === undefined ? UNTIL : new Date(8.64e15), untilRev);
      got.push(d.action === 'error' ? `error:${d.reason}` : d.action);
      if (d.action === 'error') {
        expect(d.message).toContain(`segment ${seg.fromRev}-${seg.toRev}`);
        break;
      }
      state = advance(state, { rev }, d);
      if (d.action === 'stop') break;
    }
    expect(got).toEqual(want);
    expect(state).toEqual(end);
  });

  it('a segment read to its end must have held its whole range', () => {
    expect(checkSegmentEnd({ nextRev: 14, prevInSegment: 13 }, { fromRev: 11, toRev: 13 })).toBeUndefined();
    expect(checkSegmentEnd({ nextRev: 13, prevInSegment: 12 }, { fromRev: 11, toRev: 13 })).toMatch(/11-13: its records end at revision 12, its manifest says 13/);
    expect(checkSegmentEnd({ nextRev: 11, prevInSegment: 10 }, { fromRev: 11, toRev: 13 })).toMatch(/none/);
  });
});

describe('txnOf: one record, one txn', () => {
  it('keeps the order, drops leases and counts them', () => {
    const k = (s: string) => Buffer.from(s);
    const t = txnOf([
      { put: k('a'), value: k('1'), lease: '0' },
      { del: k('b') },
      { put: k('c'), value: Buffer.from([0, 255]), lease: '7587869523423' },
    ]);
    expect(t.leaseless).toBe(1);
    expect(t.ops).toEqual([{ put: k('a'), value: k('1') }, { del: k('b') }, { put: k('c'), value: Buffer.from([0, 255]) }]);
  });
});

describe('opsDigest: what a revision did, not when it was seen', () => {
  const k = (s: string) => Buffer.from(s);
  const a = [{ put: k('a'), value: k('1'), lease: '0' }, { del: k('b') }];
  it.each([
    ['the same ops', [{ put: k('a'), value: k('1'), lease: '0' }, { del: k('b') }], true],
    ['another value', [{ put: k('a'), value: k('2'), lease: '0' }, { del: k('b') }], false],
    ['another lease', [{ put: k('a'), value: k('1'), lease: '7' }, { del: k('b') }], false],
    ['another order', [{ del: k('b') }, { put: k('a'), value: k('1'), lease: '0' }], false],
    ['bytes moved between key and value', [{ put: k('a1'), value: k(''), lease: '0' }, { del: k('b') }], false],
    ['a put instead of a delete', [{ put: k('a'), value: k('1'), lease: '0' }, { put: k('b'), value: k(''), lease: '0' }], false],
  ] as const)('%s', (_n, ops, same) => {
    expect(opsDigest(ops as never) === opsDigest(a)).toBe(same);
  });
});
