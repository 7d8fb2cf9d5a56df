import { describe, expect, it } from 'vitest';
import { isRetryable, nextAttemptAt } from '../../src/run/retry.js';
import type { RunResult } from '../../src/run/backup.js';

const T0 = Date.parse('2026-05-01T02:00:00Z');
const at = (ms: number) => new Date(T0 + ms);

describe('nextAttemptAt: 30 s doubling to 5 min, jittered 0.8-1.2, before the deadline', () => {
  const H = 3600_000;
  const cases: [string, number, number, number | undefined][] = [
    // attempt, random, expected delay (ms) or undefined
    ['first retry, middle jitter', 1, 0.5, 30_000],
    ['first retry, lowest jitter', 1, 0, 24_000],
    ['second retry doubles', 2, 0.5, 60_000],
    ['fourth retry', 4, 0.5, 240_000],
    ['capped at 5 min', 5, 0.5, 300_000],
    ['capped, highest jitter', 12, 0.999999, 360_000],
  ];
  it.each(cases)('%s', (_n, attempt, random, delay) => {
    expect(nextAttemptAt(at(0), attempt, at(H), random)?.getTime()).toBe(delay === undefined ? undefined : T0 + delay);
  });

  it('no attempt at or after the deadline', () => {
    expect(nextAttemptAt(at(0), 1, at(30_000), 0.5)).toBeUndefined();
    expect(nextAttemptAt(at(0), 1, at(30_001), 0.5)?.getTime()).toBe(T0 + 30_000);
  });
});

describe('isRetryable', () => {
  const run = (result: RunResult['result'], reason?: RunResult['reason']): RunResult => ({ id: 'x', result, reason, trigger: 'schedule', startedAt: '', finishedAt: '', phases: {}, stores: {} });
  it.each([
    ['source-rollout-in-progress', true],
    ['source-apiserver-unavailable', true],
    ['source-stalled', false],
    ['source-failed', false],
    ['lock-busy', false],
  ] as const)('%s → %s', (reason, want) => expect(isRetryable(run('failed', reason))).toBe(want));
  it('a success is never retried', () => expect(isRetryable(run('success'))).toBe(false));
});
