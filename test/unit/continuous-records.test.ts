import { describe, expect, it } from 'vitest';
import { chainNext, flushDue, groupEvents, WatchProgress, writerAction, type WatchEvent } from '../../src/continuous/records.js';
import { waitMsFor } from '../../src/continuous/election.js';

const put = (rev: number, key: string, value = 'v', lease = '0'): WatchEvent => ({ type: 'PUT', key: Buffer.from(key), value: Buffer.from(value), modRevision: String(rev), lease });
const del = (rev: number, key: string): WatchEvent => ({ type: 'DELETE', key: Buffer.from(key), value: Buffer.alloc(0), modRevision: String(rev), lease: '0' });
const T = new Date('2026-11-26T23:00:00.000Z');

describe('groupEvents', () => {
  const cases: { name: string; next: number; events: WatchEvent[]; want: { revs: number[][]; next: number } | { expected: number; got: number } }[] = [
    { name: 'one put', next: 5, events: [put(5, 'a')], want: { revs: [[5]], next: 6 } },
    { name: 'a txn shares one revision', next: 5, events: [put(5, 'a'), del(5, 'b'), put(5, 'c')], want: { revs: [[5, 5, 5]], next: 6 } },
    { name: 'several revisions in one response', next: 5, events: [put(5, 'a'), put(6, 'a'), del(7, 'a')], want: { revs: [[5], [6], [7]], next: 8 } },
    { name: 'nothing', next: 5, events: [], want: { revs: [], next: 5 } },
    { name: 'a jump is a gap', next: 5, events: [put(5, 'a'), put(7, 'a')], want: { expected: 6, got: 7 } },
    { name: 'a first event past next is a gap', next: 5, events: [put(6, 'a')], want: { expected: 5, got: 6 } },
    { name: 'revisions seen before are dropped', next: 5, events: [put(3, 'a'), put(4, 'a'), put(5, 'b')], want: { revs: [[5]], next: 6 } },
    { name: 'a bad revision is a gap', next: 5, events: [put(0, 'a')], want: { expected: 5, got: 0 } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = groupEvents(c.next, c.events, T);
      if ('expected' in c.want) {
        expect(r).toEqual({ ok: false, ...c.want });
        return;
      }
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.next).toBe(c.want.next);
      expect(r.records.map((x) => x.ops.map(() => x.rev))).toEqual(c.want.revs);
      for (const x of r.records) expect(x.time).toBe(T.toISOString());
    });
  }

  it('keeps values, leases and deletes byte-exact, in order', () => {
    const r = groupEvents(9, [put(9, 'k\u0000', '\u00ff\u0001', '7587'), del(9, 'gone')], T);
    expect(r.ok && r.records[0]!.ops).toEqual([
      { put: Buffer.from('k\u0000'), value: Buffer.from('\u00ff\u0001'), lease: '7587' },
      { del: Buffer.from('gone') },
    ]);
  });
});

describe('flushDue', () => {
  const opts = { intervalMs: 1000, maxBytes: 100 };
  const cases: { name: string; p: { records: number; bytes: number; startedAt: number }; now: number; stopping?: boolean; want: string | undefined }[] = [
    { name: 'empty: never', p: { records: 0, bytes: 0, startedAt: 0 }, now: 99_999, stopping: true, want: undefined },
    { name: 'young and small: wait', p: { records: 1, bytes: 10, startedAt: 0 }, now: 999, want: undefined },
    { name: 'an interval old', p: { records: 1, bytes: 10, startedAt: 0 }, now: 1000, want: 'interval' },
    { name: 'full', p: { records: 3, bytes: 100, startedAt: 0 }, now: 1, want: 'size' },
    { name: 'stopping', p: { records: 1, bytes: 1, startedAt: 0 }, now: 1, stopping: true, want: 'stop' },
  ];
  for (const c of cases) it(c.name, () => expect(flushDue(c.p, c.now, { ...opts, stopping: c.stopping })).toBe(c.want));
});

describe('writerAction', () => {
  const mine = { node: 'm0', since: 't', lease: '42' };
  const cases: { name: string; present: boolean; holder?: typeof mine; me: { node: string; lease?: string }; want: string }[] = [
    { name: 'free: claim', present: false, me: { node: 'm0' }, want: 'claim' },
    { name: 'held by this lease: write', present: true, holder: mine, me: { node: 'm0', lease: '42' }, want: 'write' },
    { name: "this node's previous life: wait for its lease", present: true, holder: mine, me: { node: 'm0', lease: '43' }, want: 'wait' },
    { name: 'no lease of ours yet: wait', present: true, holder: mine, me: { node: 'm0' }, want: 'wait' },
    { name: 'another node: wait', present: true, holder: { ...mine, node: 'm1' }, me: { node: 'm0', lease: '42' }, want: 'wait' },
    { name: 'unreadable value: wait', present: true, me: { node: 'm0', lease: '42' }, want: 'wait' },
  ];
  for (const c of cases) it(c.name, () => expect(writerAction(c.present, c.holder, c.me).action).toBe(c.want));
});

describe('chainNext', () => {
  const cases: { name: string; base: number; segs: [number, number][]; want: number }[] = [
    { name: 'no segment', base: 10, segs: [], want: 11 },
    { name: 'a chain', base: 10, segs: [[11, 20], [21, 30]], want: 31 },
    { name: 'unsorted, overlapping (failover)', base: 10, segs: [[21, 30], [11, 25], [15, 22]], want: 31 },
    { name: 'a hole ends the walk', base: 10, segs: [[11, 20], [25, 30]], want: 21 },
    { name: 'segments of an older base revision are ignored past the start', base: 10, segs: [[5, 9]], want: 11 },
    { name: 'a segment starting past the base is a hole', base: 10, segs: [[12, 20]], want: 11 },
  ];
  for (const c of cases) it(c.name, () => expect(chainNext(c.base, c.segs.map(([fromRev, toRev]) => ({ fromRev, toRev })))).toBe(c.want));
});

describe('waitMsFor (how long a non-writer watches before it reads the writer key again)', () => {
  it.each([
    [1, 1_000],
    [2, 1_000],
    [4, 2_000],
    [15, 7_500],
    [300, 30_000],
  ])('lease TTL %i s: %i ms', (ttl, ms) => expect(waitMsFor(ttl)).toBe(ms));
});

describe('WatchProgress', () => {
  // Steps: [etcd revision read, the watch's next revision, now]; then what is asked at the last step.
  const cases: { name: string; steps: [number, number, number][]; age: number; unseen: number; stuck: boolean }[] = [
    { name: 'caught up', steps: [[10, 11, 0], [12, 13, 5_000]], age: 0, unseen: 0, stuck: false },
    { name: 'a little behind, moving', steps: [[20, 15, 0], [30, 25, 5_000], [40, 35, 10_000]], age: 0, unseen: 6, stuck: false },
    { name: 'behind, not moving', steps: [[20, 15, 0], [30, 15, 5_000], [40, 15, 40_000]], age: 40_000, unseen: 26, stuck: true },
    { name: 'behind for a moment only', steps: [[20, 15, 0], [20, 15, 20_000]], age: 20_000, unseen: 6, stuck: false },
    { name: 'caught up resets', steps: [[20, 15, 0], [20, 21, 40_000]], age: 0, unseen: 0, stuck: false },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const p = new WatchProgress();
      for (const [h, n, t] of c.steps) p.observe(h, n, t);
      const [, next, now] = c.steps[c.steps.length - 1]!;
      expect([p.unseenAgeMs(next, now), p.unseenRevisions(next), p.stuck(next, now, 30_000)]).toEqual([c.age, c.unseen, c.stuck]);
    });
  }
});
