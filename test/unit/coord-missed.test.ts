import { describe, expect, it } from 'vitest';
import { missedWhy, type SlotDecision } from '../../src/coord/missed.js';

/** How an approach's end reads for the cluster view: missed (and why), or not. */
describe('missedWhy', () => {
  const claim = {} as never; // a won claim's details do not matter here
  const rows: [string, 'backup' | 'drill', SlotDecision, 'backup' | 'skip', string | undefined][] = [
    ['won', 'backup', { outcome: 'won', claim }, 'backup', undefined],
    ['done by another node', 'backup', { outcome: 'done', node: 'master-1', backupId: 'x' }, 'skip', undefined],
    ['no quorum, backups run alone', 'backup', { outcome: 'alone' }, 'backup', undefined],
    ['no quorum, drills never run alone', 'drill', { outcome: 'alone' }, 'backup', 'no-quorum'],
    ['no quorum, onNoQuorum skip', 'backup', { outcome: 'give-up', why: 'no-quorum' }, 'skip', 'no-quorum'],
    ['etcd does not answer, backups run alone', 'backup', { outcome: 'unavailable', error: 'e' }, 'backup', undefined],
    ['etcd does not answer, onNoQuorum skip', 'backup', { outcome: 'unavailable', error: 'e' }, 'skip', 'etcd-unavailable'],
    ['etcd does not answer, a drill', 'drill', { outcome: 'unavailable', error: 'e' }, 'backup', 'etcd-unavailable'],
    ['every attempt failed', 'backup', { outcome: 'give-up', why: 'attempts', lastHolder: 'master-2' }, 'backup', 'attempts'],
    ['deadline, nobody held it', 'backup', { outcome: 'give-up', why: 'deadline' }, 'backup', 'nobody-claimed'],
    ['deadline, a holder still runs: late, not missed', 'backup', { outcome: 'give-up', why: 'deadline', lastHolder: 'master-0', held: true }, 'backup', undefined],
    ['ended by a newer tick, nobody held it', 'backup', { outcome: 'give-up', why: 'aborted' }, 'backup', 'nobody-claimed'],
    ['ended by a newer tick, a holder still runs', 'drill', { outcome: 'give-up', why: 'aborted', held: true }, 'skip', undefined],
  ];
  it.each(rows)('%s', (_name, kind, d, onNoQuorum, want) => {
    expect(missedWhy(kind, d, onNoQuorum)).toBe(want);
  });
});
