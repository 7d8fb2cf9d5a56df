import { describe, expect, it } from 'vitest';
import { decide, DEFAULT_POLICY, manualToPrune, slotsToPrune, type Action, type DecideInput, type SlotView } from '../../src/coord/decide.js';

const now = new Date('2025-03-04T02:00:10Z');
const deadline = new Date('2025-03-04T03:00:00Z');
const policy = { ...DEFAULT_POLICY, leaderDelayMs: 5000, maxAttempts: 3, recheckMs: 4000 };
const claim = (node: string, attempt = 1) => ({ node, attempt, startedAt: 'x', lease: '1' });
const result = (r: 'running' | 'success' | 'failed', attempt = 1, backupId?: string) => ({ node: 'm1', attempt, result: r, startedAt: 'x', ...(backupId ? { backupId } : {}) });

function input(over: Partial<DecideInput> & { view?: SlotView } = {}): DecideInput {
  return { now, deadline, role: 'follower', quorum: true, view: {}, leaderDelayDone: false, policy, ...over };
}

describe('decide', () => {
  const cases: Array<[string, Partial<DecideInput>, Action]> = [
    ['a free slot: a follower claims attempt 1', {}, { do: 'claim', attempt: 1 }],
    ['a free slot: the leader waits its delay first', { role: 'leader' }, { do: 'wait', ms: 5000, why: 'leader-delay' }],
    ['a free slot: the leader claims once it has waited', { role: 'leader', leaderDelayDone: true }, { do: 'claim', attempt: 1 }],
    ['the leader with no delay configured claims at once', { role: 'leader', policy: { ...policy, leaderDelayMs: 0 } }, { do: 'claim', attempt: 1 }],
    ['the leader delay never runs past the deadline', { role: 'leader', deadline: new Date(now.getTime() + 1200) }, { do: 'wait', ms: 1200, why: 'leader-delay' }],
    ['an unhealthy member does not claim: it re-checks', { role: 'unhealthy' }, { do: 'wait', ms: 4000, why: 'unhealthy' }],
    ['held by another node: watch', { view: { claim: claim('m2'), result: result('running') } }, { do: 'watch', holder: 'm2', attempt: 1 }],
    ['held, even by an unhealthy node\'s view: watch', { role: 'unhealthy', view: { claim: claim('m2', 2) } }, { do: 'watch', holder: 'm2', attempt: 2 }],
    ['a success is final', { view: { result: result('success', 1, 'id-1') } }, { do: 'done', node: 'm1', backupId: 'id-1' }],
    ['a success is final even with a stale claim', { view: { claim: claim('m2'), result: result('success', 2) } }, { do: 'done', node: 'm1' }],
    ['a failed attempt 1 of 3: claim attempt 2', { view: { result: result('failed', 1) } }, { do: 'claim', attempt: 2 }],
    ['a holder that died (running, no claim): claim the next attempt', { view: { result: result('running', 2) } }, { do: 'claim', attempt: 3 }],
    ['attempts exhausted after failures', { view: { result: result('failed', 3) } }, { do: 'give-up', why: 'attempts' }],
    ['attempts exhausted after a dead holder', { view: { result: result('running', 3) } }, { do: 'give-up', why: 'attempts' }],
    ['the deadline passed', { now: deadline }, { do: 'give-up', why: 'deadline' }],
    ['the deadline wins over a held slot', { now: new Date(deadline.getTime() + 1), view: { claim: claim('m2') } }, { do: 'give-up', why: 'deadline' }],
    ['no quorum, onNoQuorum backup: alone', { quorum: false }, { do: 'alone' }],
    ['no quorum, onNoQuorum backup, the view is ignored', { quorum: false, view: { result: result('success') } }, { do: 'alone' }],
    ['no quorum, onNoQuorum skip: give up', { quorum: false, policy: { ...policy, onNoQuorum: 'skip' } }, { do: 'give-up', why: 'no-quorum' }],
    ['no quorum after the deadline: give up for the deadline', { quorum: false, now: deadline }, { do: 'give-up', why: 'deadline' }],
    ['maxAttempts 1: one failure ends the slot', { policy: { ...policy, maxAttempts: 1 }, view: { result: result('failed', 1) } }, { do: 'give-up', why: 'attempts' }],
  ];
  it.each(cases)('%s', (_what, over, want) => {
    expect(decide(input(over))).toEqual(want);
  });
});

describe('slotsToPrune', () => {
  const names = Array.from({ length: 10 }, (_, i) => `2025-03-${String(i + 1).padStart(2, '0')}T02:00:00Z`);
  it.each([
    [3, names.slice(0, 7)],
    [10, []],
    [50, []],
    [0, names.slice(0, 9)],
  ])('keep %i', (keep, want) => {
    expect(slotsToPrune([...names].reverse(), keep)).toEqual(want);
  });
  it('never chooses a name that is not a slot, and counts duplicates once', () => {
    expect(slotsToPrune(['junk', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z'], 1)).toEqual(['2025-01-01T00:00:00Z']);
  });
  it('stays bounded: after pruning 200 slots to 16, 16 remain', () => {
    const many = Array.from({ length: 200 }, (_, i) => new Date(Date.UTC(2025, 0, 1) + i * 3600_000).toISOString().replace('.000Z', 'Z'));
    const doomed = new Set(slotsToPrune(many, 16));
    expect(many.filter((n) => !doomed.has(n))).toEqual(many.slice(-16));
  });
});

describe('manualToPrune', () => {
  it('keeps the newest backup ids', () => {
    const ids = ['20250103T000000Z-m1', '20250101T000000Z-m0', '20250102T000000Z-m2', 'not-an-id'];
    expect(manualToPrune(ids, 2)).toEqual(['20250101T000000Z-m0']);
  });
});
