import { describe, expect, it } from 'vitest';
import type { BaseRef, SegmentRef } from '../../src/continuous/plan.js';
import { candidatePairs, chooseReplayPair, MAX_REPLAY_PAIRS } from '../../src/continuous/replay-pair.js';

const T0 = Date.UTC(2026, 10, 26, 10, 0, 0);
const at = (s: number) => new Date(T0 + s * 1000);
const base = (id: string, revision: number, s: number): BaseRef => ({ id, revision, createdAt: at(s) });
const seg = (fromRev: number, toRev: number, first = 0, last = 0): SegmentRef => ({ key: `${fromRev}-${toRev}`, fromRev, toRev, firstTime: at(first), lastTime: at(last) });

const B1 = base('b1', 100, 0);
const B2 = base('b2', 500, 3600);
const B3 = base('b3', 900, 7200);
const chain1 = [seg(101, 300), seg(301, 520)];
const chain2 = [seg(501, 700), seg(701, 950)];

describe('candidatePairs', () => {
  const rows: [string, BaseRef[], string | undefined, string[]][] = [
    ['none from a single backup', [B1], undefined, []],
    ['consecutive pairs, newest first, in the order they were taken (not listed)', [B3, B1, B2], undefined, ['b2..b3', 'b1..b2']],
    ['a pair without revisions between them is left out', [B1, base('b1b', 100, 60), B2], undefined, ['b1b..b2']],
    ['a pair going back in revision (another cluster history) is left out', [B1, base('r', 50, 60)], undefined, []],
    ['endingAt: the pair whose B2 is that backup only', [B1, B2, B3], 'b2', ['b1..b2']],
    ['endingAt the oldest backup: no pair', [B1, B2, B3], 'b1', []],
    [`at most ${MAX_REPLAY_PAIRS} pairs`, Array.from({ length: 10 }, (_, i) => base(`x${i}`, 100 * (i + 1), i * 60)), undefined, ['x8..x9', 'x7..x8', 'x6..x7']],
  ];
  it.each(rows)('%s', (_name, bases, endingAt, want) => {
    expect(candidatePairs(bases, endingAt).map((p) => `${p.b1.id}..${p.b2.id}`)).toEqual(want);
  });
});

describe('chooseReplayPair', () => {
  const of = (m: Record<string, SegmentRef[]>) => (id: string) => m[id] ?? [];
  // [name, bases, segments by base, want: the pair and its segments, or the reason (and the missing range)]
  const rows: [string, BaseRef[], Record<string, SegmentRef[]>, { pair: string; keys: string[]; untilRev: number } | { reason: string; pair?: string; from?: number; to?: number }][] = [
    ['the newest pair whose chain reaches B2', [B1, B2, B3], { b1: chain1, b2: chain2 }, { pair: 'b2..b3', keys: ['501-700', '701-950'], untilRev: 900 }],
    ['segments starting past rev(B2) are not part of the plan', [B1, B2], { b1: [...chain1, seg(521, 600)] }, { pair: 'b1..b2', keys: ['101-300', '301-520'], untilRev: 500 }],
    ['a chain ending exactly at rev(B2) reaches it', [B1, B2], { b1: [seg(101, 500)] }, { pair: 'b1..b2', keys: ['101-500'], untilRev: 500 }],
    ['a chain ending short (writer off): the older pair', [B1, B2, B3], { b1: chain1, b2: [seg(501, 800)] }, { pair: 'b1..b2', keys: ['101-300', '301-520'], untilRev: 500 }],
    ['no segments under the newest B1: the older pair', [B1, B2, B3], { b1: chain1 }, { pair: 'b1..b2', keys: ['101-300', '301-520'], untilRev: 500 }],
    ['a gap below rev(B2) fails, never hidden by an older pair', [B1, B2, B3], { b1: chain1, b2: [seg(501, 600), seg(611, 950)] }, { reason: 'segment-gap', pair: 'b2..b3', from: 601, to: 610 }],
    ['a gap past rev(B2) does not matter', [B1, B2], { b1: [seg(101, 520), seg(531, 600)] }, { pair: 'b1..b2', keys: ['101-520'], untilRev: 500 }],
    ['overlapping segments (writer failover): the one reaching furthest', [B1, B2], { b1: [seg(101, 300), seg(101, 200), seg(250, 510)] }, { pair: 'b1..b2', keys: ['101-300', '250-510'], untilRev: 500 }],
    ['no chain reaches any B2', [B1, B2], { b1: [seg(101, 300)] }, { reason: 'no-pair' }],
    ['a single backup: no pair', [B1], {}, { reason: 'no-pair' }],
    ['an empty first base (revision 0): the chain starts at 2', [base('e', 0, 0), base('f', 9, 60)], { e: [seg(2, 9)] }, { pair: 'e..f', keys: ['2-9'], untilRev: 9 }],
  ];
  it.each(rows)('%s', (_name, bases, segs, want) => {
    const r = chooseReplayPair(candidatePairs(bases), of(segs));
    if ('reason' in want) {
      expect(r.ok).toBe(false);
      if (r.ok) return;
      expect(r.reason).toBe(want.reason);
      if (r.reason === 'segment-gap') {
        expect(`${r.b1.id}..${r.b2.id}`).toBe(want.pair);
        expect([r.missingFrom, r.missingTo]).toEqual([want.from, want.to]);
        expect(r.message).toContain(`${want.from}-${want.to}`);
      }
      return;
    }
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(`${r.b1.id}..${r.b2.id}`).toBe(want.pair);
    expect(r.plan.segments.map((s) => s.key)).toEqual(want.keys);
    expect(r.plan.untilRev).toBe(want.untilRev);
    expect(r.plan.base.id).toBe(r.b1.id);
  });
});
