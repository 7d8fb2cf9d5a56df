/**
 * One node's whole approach to a slot: read, decide (decide.ts), then claim,
 * wait, watch the holder, or stop, until the node holds the slot, the slot is
 * done, or its deadline passes. Failover is this loop: a node watching a
 * holder that dies sees the claim key go (lease expiry) and claims the next
 * attempt. Bounded: every step waits, changes state, or ends, and no step
 * runs past the slot's deadline by more than one call's timeout.
 */
import { BackupError, reasonOf } from '../errors.js';
import { claimSlot, readSlot, waitForSlotChange, type CoordContext, type SlotClaim, type SlotRead } from './claims.js';
import { decide, type CoordPolicy, type LocalRole } from './decide.js';
import { sleep } from './etcd-calls.js';
import type { SlotKind } from './keys.js';

export interface AcquireRequest {
  kind: SlotKind;
  slot: Date;
  /** The slot is given up at this time (normally the next tick). */
  deadline: Date;
  policy: CoordPolicy;
  /** This node's member role and the cluster's quorum, asked before every step (the health check). Must bound its own time; if it throws, acquireSlot throws that. */
  probe: () => Promise<{ role: LocalRole; quorum: boolean }>;
  /** Ends the approach early (shutdown): the outcome is give-up 'aborted'. */
  signal?: AbortSignal;
  /** The longest single watch before reading again (default 30 s): a watch that missed something is only a delay. */
  maxWatchMs?: number;
}

export type AcquireOutcome =
  /** This node holds the slot: back up, then `claim.release(...)`. */
  | { outcome: 'won'; claim: SlotClaim }
  /** The slot has a successful result from `node`. */
  | { outcome: 'done'; node: string; backupId?: string }
  /** No quorum, onNoQuorum backup: back up without a claim, labelled no-quorum. */
  | { outcome: 'alone' }
  /**
   * Stop trying. `held`: a node held the slot at the last read (its run may
   * still be going on: the slot is late, not missed).
   */
  | { outcome: 'give-up'; why: 'deadline' | 'attempts' | 'no-quorum' | 'aborted'; lastHolder?: string; held?: boolean };

/** Far more steps than a slot can take honestly; a guard against a loop, never reached in practice. */
const MAX_STEPS = 10_000;

/** Throws only for coord-unavailable (etcd does not answer at all): the caller decides. */
export async function acquireSlot(ctx: CoordContext, req: AcquireRequest): Promise<AcquireOutcome> {
  let leaderDelayDone = false;
  let noQuorumSeen = false;
  let lastHolder: string | undefined;
  let lastRead: SlotRead | undefined;
  const giveUp = (why: 'deadline' | 'attempts' | 'no-quorum' | 'aborted'): AcquireOutcome => ({
    outcome: 'give-up',
    why,
    ...(lastHolder !== undefined ? { lastHolder } : {}),
    ...(lastRead?.claim ? { held: true } : {}),
  });
  for (let step = 0; step < MAX_STEPS; step++) {
    if (req.signal?.aborted) return giveUp('aborted');
    const health = await req.probe();
    const quorum = health.quorum && !noQuorumSeen;
    let seen: SlotRead | undefined;
    if (quorum && Date.now() < req.deadline.getTime()) {
      try {
        seen = await readSlot(ctx, req.kind, req.slot);
        lastRead = seen;
      } catch (err) {
        noQuorumSeen = rethrowUnlessNoQuorum(err);
        continue;
      }
    }
    const action = decide({ now: new Date(), deadline: req.deadline, role: health.role, quorum, view: seen ?? {}, leaderDelayDone, policy: req.policy });
    switch (action.do) {
      case 'done':
        return action.backupId !== undefined ? { outcome: 'done', node: action.node, backupId: action.backupId } : { outcome: 'done', node: action.node };
      case 'alone':
        return { outcome: 'alone' };
      case 'give-up':
        return giveUp(action.why);
      case 'wait':
        await sleep(action.ms, req.signal);
        if (action.why === 'leader-delay') leaderDelayDone = true;
        continue;
      case 'watch': {
        lastHolder = action.holder;
        const until = new Date(Math.min(req.deadline.getTime(), Date.now() + (req.maxWatchMs ?? 30_000)));
        await waitForSlotChange(ctx, req.kind, req.slot, seen!.rev, until, req.signal);
        continue;
      }
      case 'claim': {
        try {
          const r = await claimSlot(ctx, req.kind, req.slot, action.attempt, seen!);
          if (r.won) return { outcome: 'won', claim: r.claim };
          lastHolder = r.seen.claim?.node ?? lastHolder; // lost the race: read again, then watch the winner
        } catch (err) {
          noQuorumSeen = rethrowUnlessNoQuorum(err);
        }
        continue;
      }
    }
  }
  return giveUp('deadline');
}

/** A no-quorum failure turns the rest of the approach into the no-quorum path; anything else is the caller's. */
function rethrowUnlessNoQuorum(err: unknown): true {
  if (reasonOf(err) === 'coord-no-quorum') return true;
  if (err instanceof BackupError) throw err;
  throw new BackupError('coord-unavailable', `coordination: ${String(err)}`, { cause: err });
}
