import { describe, expect, it } from 'vitest';
import { planChains, type ChainInfo } from '../../src/retention/chains.js';

const NOW = new Date('2026-11-27T12:00:00Z');
const H = 3600;
const ago = (hours: number) => new Date(NOW.getTime() - hours * H * 1000);
/** A chain of base `b<n>` taken `baseHours` ago whose newest object was stored `newestHours` ago (undefined: not known). */
const chain = (n: number, baseHours: number, newestHours: number | undefined, objects = 10): ChainInfo => ({
  base: `b${n}`,
  baseTime: ago(baseHours),
  objects,
  ...(newestHours === undefined ? {} : { newestAt: ago(newestHours) }),
});

/** base -> keep reason, or 'delete'. */
function decide(chains: ChainInfo[], keepWithinHours: number, newestBase: string | undefined = 'b1'): Record<string, string> {
  const out = planChains(chains, { keepWithinSeconds: keepWithinHours * H, newestBase, now: NOW });
  return Object.fromEntries(out.map((d) => [d.base, d.keep ?? 'delete']));
}

describe('continuous.keepWithin: which chains go', () => {
  it.each([
    ['unset (0): every chain lives as long as its base', [chain(1, 1, 0.1), chain(2, 30, 25), chain(3, 60, 50)], 0, 'b1', { b1: 'no-policy', b2: 'no-policy', b3: 'no-policy' }],
    ['a chain whose newest segment is older than keepWithin goes; a younger one stays', [chain(1, 1, 0.1), chain(2, 30, 25), chain(3, 60, 50)], 26, 'b1', { b1: 'newest-base', b2: 'within', b3: 'delete' }],
    ['the newest base keeps its chain however old its newest segment (an idle cluster)', [chain(1, 100, 99), chain(2, 200, 150)], 24, 'b1', { b1: 'newest-base', b2: 'delete' }],
    ['the newest base has no chain (compacted): the newest chain is the live one, kept', [chain(1, 2, undefined, 0), chain(2, 100, 90), chain(3, 200, 150)], 24, 'b1', { b2: 'live', b3: 'delete' }],
    ['a chain with no objects is not decided at all', [chain(1, 1, 0.1), chain(2, 100, undefined, 0)], 1, 'b1', { b1: 'newest-base' }],
    ['an age the store did not give: kept', [chain(1, 1, 0.1), chain(2, 100, undefined)], 1, 'b1', { b1: 'newest-base', b2: 'age-unknown' }],
    ['exactly at the cut-off: kept (strictly older goes)', [chain(1, 1, 0.1), chain(2, 30, 24)], 24, 'b1', { b1: 'newest-base', b2: 'within' }],
    ['order comes from the base times, not from the input order', [chain(3, 60, 50), chain(1, 1, 0.1), chain(2, 30, 25)], 26, 'b1', { b1: 'newest-base', b2: 'within', b3: 'delete' }],
    ['no committed base known: the newest chain is still kept as live', [chain(2, 30, 25), chain(3, 60, 50)], 1, undefined, { b2: 'live', b3: 'delete' }],
  ])('%s', (_what, chains, hours, newest, want) => {
    expect(decide(chains as ChainInfo[], hours as number, newest as string | undefined)).toEqual(want);
  });

  it('reports each chain with its objects and newest time, newest base first', () => {
    const out = planChains([chain(2, 30, 25, 7), chain(1, 1, 0.1, 3)], { keepWithinSeconds: H, newestBase: 'b1', now: NOW });
    expect(out).toEqual([
      { base: 'b1', objects: 3, newestAt: ago(0.1), keep: 'newest-base' },
      { base: 'b2', objects: 7, newestAt: ago(25) },
    ]);
  });
});
