import { describe, expect, it } from 'vitest';
import { drillNodeFor } from '../../src/drill/turn.js';

describe('drillNodeFor', () => {
  const week = 7 * 86400;
  const slot = (n: number) => new Date(n * week * 1000);

  it('gives each slot to exactly one node, every node in turn', () => {
    const nodes = ['master-2', 'master-0', 'master-1'];
    const picked = [0, 1, 2, 3, 4, 5].map((n) => drillNodeFor(nodes, slot(n), week));
    expect(picked).toEqual(['master-0', 'master-1', 'master-2', 'master-0', 'master-1', 'master-2']);
  });

  it('is the same answer whatever order or duplicates each node sees', () => {
    expect(drillNodeFor(['b', 'a', 'a', 'c'], slot(4), week)).toBe(drillNodeFor(['c', 'b', 'a'], slot(4), week));
  });

  it('has no one to pick before any backup exists', () => {
    expect(drillNodeFor([], slot(1), week)).toBeUndefined();
  });

  it('tolerates a zero interval', () => {
    expect(drillNodeFor(['a'], slot(1), 0)).toBe('a');
  });
});
