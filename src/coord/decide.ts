/**
 * The pure core of coordination: what a node does about a slot given what it
 * sees, and which old slots to prune. No I/O, no clock: `now` is an input.
 * src/coord/claims.ts reads etcd, calls `decide`, and acts. See docs/coordination.md.
 */
import type { ClaimValue, ResultValue } from './keys.js';

/** How this node's local etcd member stands, from the health check. */
export type LocalRole = 'leader' | 'follower' | 'unhealthy';

export interface CoordPolicy {
  /** Without quorum no claim is possible: `backup` = every node backs up alone (labelled no-quorum); `skip` = nobody does. */
  onNoQuorum: 'backup' | 'skip';
  /** How long a node whose member is the etcd leader waits before it claims, so a healthy follower takes the snapshot load. */
  leaderDelayMs: number;
  /** Claims per slot, counting failed attempts and holders that died. */
  maxAttempts: number;
  /** How often a node re-checks when it waits without a watch (its member unhealthy). */
  recheckMs: number;
}

export const DEFAULT_POLICY: CoordPolicy = { onNoQuorum: 'backup', leaderDelayMs: 5000, maxAttempts: 3, recheckMs: 5000 };

export interface SlotView {
  /** The claim key's value, when the key exists (someone holds the slot). */
  claim?: ClaimValue;
  /** The result key's value: the slot's latest attempt. */
  result?: ResultValue;
}

export interface DecideInput {
  now: Date;
  /** The slot gives up at this time (normally the next tick). */
  deadline: Date;
  role: LocalRole;
  /** Whether the cluster has quorum (a leader that a majority follows). */
  quorum: boolean;
  /** What etcd holds for the slot; ignored without quorum. */
  view: SlotView;
  /** This node already waited its leader delay for this slot. */
  leaderDelayDone: boolean;
  policy: CoordPolicy;
}

export type Action =
  /** Try the create-if-absent claim, as attempt `attempt`. */
  | { do: 'claim'; attempt: number }
  /** Sleep `ms` (never past the deadline), then look again. */
  | { do: 'wait'; ms: number; why: 'leader-delay' | 'unhealthy' }
  /** Someone holds the slot: watch it until it changes or the deadline. */
  | { do: 'watch'; holder: string; attempt: number }
  /** The slot has a successful result: nothing to do. */
  | { do: 'done'; node: string; backupId?: string }
  /** No quorum and onNoQuorum is backup: back up without a claim, labelled no-quorum. */
  | { do: 'alone' }
  /** Stop trying this slot. */
  | { do: 'give-up'; why: 'deadline' | 'attempts' | 'no-quorum' };

/** One step of the slot state machine; see the table in test/unit/coord-decide.test.ts. */
export function decide(input: DecideInput): Action {
  const { now, deadline, role, quorum, view, policy } = input;
  const left = deadline.getTime() - now.getTime();
  if (left <= 0) return { do: 'give-up', why: 'deadline' };
  if (!quorum) return policy.onNoQuorum === 'backup' ? { do: 'alone' } : { do: 'give-up', why: 'no-quorum' };
  const { claim, result } = view;
  if (result?.result === 'success') {
    return result.backupId !== undefined ? { do: 'done', node: result.node, backupId: result.backupId } : { do: 'done', node: result.node };
  }
  if (claim) return { do: 'watch', holder: claim.node, attempt: claim.attempt };
  // No holder: the latest attempt (running = its holder died, failed) used one try.
  const used = result?.attempt ?? 0;
  if (used >= policy.maxAttempts) return { do: 'give-up', why: 'attempts' };
  if (role === 'unhealthy') return { do: 'wait', ms: Math.min(policy.recheckMs, left), why: 'unhealthy' };
  if (role === 'leader' && !input.leaderDelayDone && policy.leaderDelayMs > 0) {
    return { do: 'wait', ms: Math.min(policy.leaderDelayMs, left), why: 'leader-delay' };
  }
  return { do: 'claim', attempt: used + 1 };
}

/**
 * Which of a kind's slot names (keys' last segment, sortable) to delete so that
 * at most `keep` remain: the oldest ones, in ascending order. Names that are not
 * slot names are never chosen. `keep` below 1 is treated as 1, so the slot in
 * progress survives.
 */
export function slotsToPrune(names: readonly string[], keep: number): string[] {
  return oldestBeyond(names.filter((n) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/.test(n)), keep);
}

/** Manual records: backup ids start with their UTC time, so they sort the same way. */
export function manualToPrune(ids: readonly string[], keep: number): string[] {
  return oldestBeyond(ids.filter((n) => /^\d{8}T\d{6}Z-/.test(n)), keep);
}

function oldestBeyond(names: string[], keep: number): string[] {
  const k = Math.max(1, Math.floor(keep));
  const sorted = [...new Set(names)].sort();
  return sorted.length > k ? sorted.slice(0, sorted.length - k) : [];
}
