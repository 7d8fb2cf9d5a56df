import { describe, expect, it } from 'vitest';
import { MemoryReclaimer, RECLAIM_POLICY, reclaimDue } from '../../src/daemon/reclaim.js';
import { createLogger } from '../../src/log.js';

const MiB = 1 << 20;

describe('reclaimDue: when the daemon gives memory back', () => {
  it.each([
    ['steady work, 10 s after the last', 2 * MiB, 10_000, true],
    ['steady work, too soon', 2 * MiB, 9_999, false],
    ['a trickle (under 1 MiB) however long ago', MiB - 1, 3_600_000, false],
    ['exactly 1 MiB after 10 s', MiB, 10_000, true],
    ['a burst of 8 MiB after 1 s', 8 * MiB, 1_000, true],
    ['7 MiB after 9 s: neither', 7 * MiB, 9_000, false],
    ['a burst right after the last one', 64 * MiB, 999, false],
    ['a finished run (Infinity) after 1 s', Infinity, 1_000, true],
    ['nothing at all', 0, 3_600_000, false],
  ])('%s', (_, bytes, since, due) => {
    expect(reclaimDue(bytes, since, RECLAIM_POLICY)).toBe(due);
  });
});

describe('MemoryReclaimer', () => {
  const log = createLogger({ level: 'silent' });
  it('runs a memory-reducing major GC when due, counting the work since the last one', () => {
    let now = 0;
    const calls: unknown[] = [];
    const r = new MemoryReclaimer(log, (o) => void calls.push(o), () => now);
    now = 5_000;
    expect(r.after(3 * MiB)).toBe(false); // neither 10 s nor a burst
    now = 10_000;
    expect(r.after(MiB)).toBe(true); // 4 MiB over 10 s
    expect(calls).toEqual([{ type: 'major', execution: 'sync', flavor: 'last-resort' }]);
    now = 19_000;
    expect(r.after(5 * MiB)).toBe(false); // the count started over at 10 s
    now = 20_500;
    expect(r.after(0)).toBe(true);
    now = 21_000;
    expect(r.after(Infinity)).toBe(false); // a burst, but within 1 s of the last
    now = 21_600;
    expect(r.after(0)).toBe(true); // the run's Infinity is still owed
    expect(calls).toHaveLength(3);
  });
  it('without --expose-gc it does nothing and says so', () => {
    const r = new MemoryReclaimer(log, undefined, () => 1e9);
    expect(r.available).toBe(false);
    expect(r.after(Infinity)).toBe(false);
  });
});
