/**
 * Replay planning for `fetch --at TIME` / `restore --at TIME` (pure; tested
 * from tables in test/unit/continuous-plan.test.ts). Given the cluster's full
 * backups (bases) and the committed segments under each base, choose the
 * base and the chain of segments that reach the last revision seen at or
 * before TIME, or say exactly which revisions are missing.
 *
 * Rules:
 * - A chain starts at its base's revision + 1 and has no gap. Segments may
 *   overlap (after a writer failover both writers may have written the same
 *   revisions; etcd gave them the same events): at each step the segment
 *   covering the next revision that reaches furthest is taken, and replay
 *   skips revisions already applied.
 * - A segment is used when the first revision it holds was seen at or
 *   before TIME; the last one used may be partial (replay stops at the last
 *   record seen at or before TIME).
 * - A missing revision while a later segment (seen at or before TIME)
 *   exists is a GAP: an error naming the range, never skipped.
 * - Bases taken at or before TIME are candidates. The newest one's chain
 *   must be whole (its gap is the error); an older base whose chain gets
 *   closer to TIME wins (the writer moves to a new base a little after the
 *   full backup is committed); a newer base on a tie: less to replay.
 */

export interface BaseRef {
  id: string;
  /** The full backup's etcd revision. */
  revision: number;
  /** When the snapshot was taken. */
  createdAt: Date;
}

export interface SegmentRef {
  /** The manifest's key (what to fetch and check). */
  key: string;
  fromRev: number;
  toRev: number;
  firstTime: Date;
  lastTime: Date;
}

export interface ReplayPlan {
  base: BaseRef;
  /** In replay order. */
  segments: SegmentRef[];
  /** Replay stops after the last record seen at or before this time. */
  until: Date;
  /** And, when set, after this revision (the replay drill: the next full backup's revision). */
  untilRev?: number;
  /** The revision the chain reaches at most (the last segment may stop earlier, at `until`). */
  maxRev: number;
  /** The wall time of the last revision the chain can reach by `until` (the base's time when no segment is used). */
  reachedTime: Date;
}

export type PlanResult =
  | { ok: true; plan: ReplayPlan }
  | { ok: false; reason: 'no-base'; message: string }
  | { ok: false; reason: 'segment-gap'; message: string; base: string; missingFrom: number; missingTo: number };

/** How many of the newest candidate bases are considered (each costs one listing of its segments). */
export const MAX_BASE_CANDIDATES = 3;

/** The bases planReplay considers, newest first: the caller lists the segments of these only. */
export function candidateBases(bases: readonly BaseRef[], until: Date): BaseRef[] {
  const t = until.getTime();
  return bases
    .filter((b) => b.createdAt.getTime() <= t)
    .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || b.revision - a.revision)
    .slice(0, MAX_BASE_CANDIDATES);
}

export function planReplay(bases: readonly BaseRef[], segmentsOf: (baseId: string) => readonly SegmentRef[], until: Date): PlanResult {
  const candidates = candidateBases(bases, until);
  if (candidates.length === 0) return { ok: false, reason: 'no-base', message: `no full backup taken at or before ${until.toISOString()}` };
  // The newest base's chain must be whole: a gap there is an error, never papered over with an older base.
  const newest = chainFor(candidates[0]!, segmentsOf(candidates[0]!.id), until);
  if (!newest.ok) return newest;
  let best = newest.plan;
  for (const base of candidates.slice(1)) {
    const r = chainFor(base, segmentsOf(base.id), until);
    if (r.ok && r.plan.reachedTime.getTime() > best.reachedTime.getTime()) best = r.plan;
  }
  return { ok: true, plan: best };
}

/** The chain of one base up to `until`. */
export function chainFor(base: BaseRef, segments: readonly SegmentRef[], until: Date): PlanResult {
  const t = until.getTime();
  const usable = segments.filter((s) => s.toRev > base.revision && s.firstTime.getTime() <= t);
  const chain: SegmentRef[] = [];
  // An empty keyspace's snapshot says revision 0, but etcd starts at revision 1, which no event has: the first change is 2.
  const start = Math.max(base.revision, 1);
  let next = start + 1;
  let reachedTime = base.createdAt;
  let maxRev = start;
  for (;;) {
    const covering = usable.filter((s) => s.fromRev <= next && s.toRev >= next);
    if (covering.length === 0) {
      const later = usable.filter((s) => s.fromRev > next);
      if (later.length > 0) {
        const nextFrom = Math.min(...later.map((s) => s.fromRev));
        return {
          ok: false,
          reason: 'segment-gap',
          base: base.id,
          missingFrom: next,
          missingTo: nextFrom - 1,
          message: `continuous backup of base ${base.id}: revisions ${next}-${nextFrom - 1} are in no committed segment, but later ones are: the chain has a gap`,
        };
      }
      break;
    }
    const s = covering.reduce((a, b) => (b.toRev > a.toRev ? b : a));
    chain.push(s);
    maxRev = s.toRev;
    if (s.lastTime.getTime() > t) {
      // Partial: replay stops inside it; the exact revision is known only from its records.
      reachedTime = until;
      break;
    }
    reachedTime = s.lastTime;
    next = s.toRev + 1;
  }
  return { ok: true, plan: { base, segments: chain, until, maxRev, reachedTime } };
}
