/**
 * Which pair of full backups the replay drill proves (pure; tested from a
 * table in test/unit/drill-replay-pair.test.ts). The replay drill replays
 * the chain of continuous-backup segments under one full backup B1 up to the
 * revision of the next full backup B2 and compares the result with B2
 * (replay-drill.ts).
 *
 * Rules:
 * - Pairs are consecutive usable full backups in the order they were taken
 *   (createdAt, then revision), newest pair first; only the newest
 *   MAX_REPLAY_PAIRS are considered (each costs a listing of B1's segments).
 * - A pair needs rev(B2) > rev(B1): with no revision between them there is
 *   nothing to replay (and a lower revision is another cluster's history).
 * - The newest pair whose chain under B1 reaches rev(B2) is drilled: the
 *   newest chain is the one a restore to a recent TIME would use. Not
 *   "the newest not drilled yet": the drill remembers nothing between runs,
 *   and a weekly drill of the newest pair proves what a restore needs now.
 * - A chain that simply ends before rev(B2) (the writer was off, or etcd
 *   compacted past it and a new chain started at B2) is not a failure: the
 *   next older pair is tried. A GAP (a revision at or below rev(B2) missing
 *   while a later one is there) is the drill's failure, never skipped over
 *   to an older pair.
 * - The plan holds only the segments that start at or below rev(B2) and has
 *   no time bound: replay stops at rev(B2) exactly (ReplayPlan.untilRev).
 */
import { chainFor, type BaseRef, type ReplayPlan, type SegmentRef } from './plan.js';

/** How many of the newest pairs are looked at. */
export const MAX_REPLAY_PAIRS = 3;

/** No time bound: the latest Date there is. */
const NO_TIME_BOUND = new Date(8.64e15);

export interface ReplayPair {
  b1: BaseRef;
  b2: BaseRef;
}

export type PairChoice =
  | { ok: true; b1: BaseRef; b2: BaseRef; plan: ReplayPlan }
  | { ok: false; reason: 'no-pair'; message: string }
  | { ok: false; reason: 'segment-gap'; message: string; b1: BaseRef; b2: BaseRef; missingFrom: number; missingTo: number };

const byTime = (a: BaseRef, b: BaseRef) => a.createdAt.getTime() - b.createdAt.getTime() || a.revision - b.revision;

/**
 * The consecutive pairs, newest first, at most MAX_REPLAY_PAIRS; with
 * `endingAt` only the pair whose B2 is that backup. The caller lists the
 * segments of these pairs' B1 only.
 */
export function candidatePairs(bases: readonly BaseRef[], endingAt?: string): ReplayPair[] {
  const sorted = [...bases].sort(byTime);
  const pairs: ReplayPair[] = [];
  for (let i = sorted.length - 1; i >= 1 && pairs.length < MAX_REPLAY_PAIRS; i--) {
    const b1 = sorted[i - 1]!;
    const b2 = sorted[i]!;
    if (endingAt !== undefined && b2.id !== endingAt) continue;
    if (b2.revision > b1.revision) pairs.push({ b1, b2 });
  }
  return pairs;
}

/** The pair to drill and its plan, or why there is none; see the file comment. */
export function chooseReplayPair(pairs: readonly ReplayPair[], segmentsOf: (baseId: string) => readonly SegmentRef[]): PairChoice {
  for (const { b1, b2 } of pairs) {
    const upTo = segmentsOf(b1.id).filter((s) => s.fromRev <= b2.revision);
    const r = chainFor(b1, upTo, NO_TIME_BOUND);
    if (!r.ok && r.reason === 'segment-gap') {
      return {
        ok: false,
        reason: 'segment-gap',
        b1,
        b2,
        missingFrom: r.missingFrom,
        missingTo: r.missingTo,
        message: `the chain of base ${b1.id} misses revisions ${r.missingFrom}-${r.missingTo}, below the revision ${b2.revision} of the next full backup ${b2.id}`,
      };
    }
    if (r.ok && r.plan.maxRev >= b2.revision) return { ok: true, b1, b2, plan: { ...r.plan, untilRev: b2.revision } };
  }
  const looked = pairs.map((p) => `${p.b1.id}..${p.b2.id}`).join(', ');
  return {
    ok: false,
    reason: 'no-pair',
    message: pairs.length
      ? `no chain of continuous-backup segments reaches the next full backup's revision (pairs looked at: ${looked})`
      : 'no two consecutive full backups with revisions between them',
  };
}
