/**
 * Whether a slot is missed: the pure reading of how a node's approach to a
 * slot ended. See docs/coordination.md ("What each node shows").
 */
import type { AcquireOutcome } from './acquire.js';
import type { SlotKind } from './keys.js';

/** acquireSlot's outcomes, plus `unavailable`: etcd did not answer at all (acquireSlot threw coord-unavailable). */
export type SlotDecision = AcquireOutcome | { outcome: 'unavailable'; error: string };

/**
 * Why nobody will do a slot, as far as this node can tell when its approach
 * ends; undefined when somebody does (won, done, a backup alone without
 * quorum) or when the slot is late rather than missed (a holder's run is
 * still going on at the deadline). `aborted` is read as the deadline: the
 * callers end an approach early only for a newer tick, or at shutdown (and
 * then they do not ask). Backups run alone without quorum or etcd when
 * onNoQuorum is backup; drills never do (docs/coordination.md).
 */
export type MissedWhy = 'nobody-claimed' | 'no-quorum' | 'etcd-unavailable' | 'attempts';
export const MISSED_WHYS: readonly MissedWhy[] = ['nobody-claimed', 'no-quorum', 'etcd-unavailable', 'attempts'];

export function missedWhy(kind: SlotKind, d: SlotDecision, onNoQuorum: 'backup' | 'skip'): MissedWhy | undefined {
  const runsAlone = kind === 'backup' && onNoQuorum === 'backup';
  switch (d.outcome) {
    case 'won':
    case 'done':
      return undefined;
    case 'alone':
      return runsAlone ? undefined : 'no-quorum';
    case 'unavailable':
      return runsAlone ? undefined : 'etcd-unavailable';
    case 'give-up':
      if (d.why === 'attempts') return 'attempts';
      if (d.why === 'no-quorum') return 'no-quorum';
      return d.held ? undefined : 'nobody-claimed';
  }
}

