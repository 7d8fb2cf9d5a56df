/**
 * The retention planner: decides which backups of one series to keep and
 * which to prune. Pure and deterministic: no I/O, no clock (the caller passes
 * `now`), no environment (the caller passes the time zone).
 *
 * Semantics are restic's `forget` policy (internal/restic/snapshot_policy.go,
 * ApplyPolicy), which restic 0.14 is used to check in
 * test/integration/retention-restic.test.ts:
 *
 * - Items are sorted newest first (ties: input order).
 * - keepLast N keeps the N newest items.
 * - hourly/daily/weekly/monthly/yearly N walk the items newest -> oldest and
 *   keep an item whenever its bucket (hour, day, ISO week of the ISO
 *   week-year, month, year) differs from the bucket of the item this rule kept
 *   last, until the rule has kept N items. So each rule keeps the newest item
 *   of each of the N newest buckets that contain items. Every rule runs
 *   independently over the whole list: one item may satisfy several rules and
 *   then counts toward each of them.
 * - `-1` means "unlimited" for a count: that is how restic >= 0.16 represents
 *   `--keep-daily unlimited` internally. (restic 0.14 accepts -1 but then
 *   keeps nothing for that rule - with `--keep-daily -1` alone it removes
 *   every snapshot.) Other negative numbers are rejected.
 * - keepWithinSeconds keeps every item strictly newer than
 *   (reference - duration), where the reference is the NEWEST ITEM's time, not
 *   `now` (restic: "all snapshots within X of the newest"). So a series whose
 *   backups stopped a month ago does not lose everything to keepWithin. As in
 *   newer restic (not 0.14), items later than `now` (clock skew) are ignored
 *   when picking the reference; if every item is in the future all are
 *   "within". The duration is exact elapsed seconds; restic subtracts
 *   calendar years/months/days (Go AddDate) in the snapshot's zone, which
 *   differs for `y`/`mo` (see duration.ts) and for days spanning a DST change.
 * - Buckets use the wall clock of `timeZone` (default UTC). restic uses the
 *   zone recorded in each snapshot (normally the host's local zone).
 * - An all-zero policy (every count 0 and keepWithinSeconds 0) is "no policy":
 *   restic then removes nothing ("no policy was specified, no snapshots will
 *   be removed"), and neither does this planner: every item is kept with
 *   reason 'policy-empty'. It never means "delete everything".
 *
 * Additions to restic:
 * - `pinned: true` items are always kept (reason 'pinned'). Like restic's
 *   --keep-tag they still take part in the count rules.
 * - The newest verified item is always kept (reason 'newest-verified'). With
 *   any non-empty policy restic keeps the newest item anyway, so for all-
 *   verified input this never changes the result; it only adds the reason.
 * - `verified: false` items are not the planner's business: they never count
 *   toward or get kept by last/buckets/within, are not the reference for
 *   keepWithin, and can never be 'newest-verified' - but they are never
 *   pruned either. They are returned in `keep` with reason 'unverified' (plus
 *   'pinned'/'policy-empty' if those apply) so the caller sees them and deals
 *   with them elsewhere (re-verify, alert, delete by its own rule). Rationale:
 *   if verification is broken, every backup is unverified, and a planner that
 *   pruned unverified backups would delete all of them. Items without
 *   `verified` count as verified. Callers are expected to pass only finished
 *   backups; in-flight or half-written ones must not be passed in at all.
 *
 * Not implemented from newer restic: keep-within-hourly/daily/..., keep-tag
 * (see `pinned`), and newer restic's "also keep the oldest snapshot when a rule
 * has counts left" (restic 0.14, our oracle, does not do it).
 */

import { dayKey, hourKey, monthKey, wallClockIn, weekKey, yearKey, type WallClock } from './calendar.js';

export { parseDuration } from './duration.js';
export { parseSimulationInput } from './simulate.js';
export { formatPlanTable, planToJson, type RetentionPlanJson } from './format.js';

export interface RetentionPolicy {
  keepLast: number;
  hourly: number;
  daily: number;
  weekly: number;
  monthly: number;
  yearly: number;
  keepWithinSeconds: number;
}

export interface RetentionItem {
  id: string;
  time: Date;
  pinned?: boolean;
  verified?: boolean;
}

/**
 * Why an item is kept. Emitted in this fixed order (restic's order first):
 * 'policy-empty', 'within', 'last', 'hourly', 'daily', 'weekly', 'monthly',
 * 'yearly', 'pinned', 'newest-verified', 'unverified'.
 */
export type KeepReason = string;

export const KEEP_REASON_ORDER: readonly KeepReason[] = [
  'policy-empty',
  'within',
  'last',
  'hourly',
  'daily',
  'weekly',
  'monthly',
  'yearly',
  'pinned',
  'newest-verified',
  'unverified',
];

export interface RetentionPlan {
  keep: { id: string; time: Date; reasons: KeepReason[] }[];
  prune: { id: string; time: Date }[];
}

const COUNT_FIELDS = ['keepLast', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;

function validatePolicy(policy: RetentionPolicy): void {
  for (const f of COUNT_FIELDS) {
    const v = policy[f];
    if (!Number.isInteger(v) || v < -1) {
      throw new Error(`retention policy: ${f} must be an integer >= 0, or -1 for unlimited; got ${String(v)}`);
    }
  }
  const w = policy.keepWithinSeconds;
  if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) {
    throw new Error(`retention policy: keepWithinSeconds must be a finite number >= 0; got ${String(w)}`);
  }
}

/** True when the policy specifies nothing: restic then keeps everything. */
export function isEmptyPolicy(policy: RetentionPolicy): boolean {
  return COUNT_FIELDS.every((f) => policy[f] === 0) && policy.keepWithinSeconds === 0;
}

interface Entry {
  item: RetentionItem;
  ms: number;
  index: number;
  reasons: Set<KeepReason>;
}

interface CountRule {
  reason: KeepReason;
  count: number;
  key: (w: WallClock, nr: number) => number;
  last: number | undefined;
}

export function planRetention(
  items: readonly RetentionItem[],
  policy: RetentionPolicy,
  now: Date,
  timeZone: string = 'UTC',
): RetentionPlan {
  validatePolicy(policy);
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw new Error('planRetention: now must be a valid Date');
  const wallClock = wallClockIn(timeZone);

  const ids = new Set<string>();
  const entries: Entry[] = items.map((item, index) => {
    if (!(item.time instanceof Date) || Number.isNaN(item.time.getTime())) {
      throw new Error(`planRetention: item ${item.id ? `"${item.id}"` : `#${index}`} has an invalid time`);
    }
    if (item.id !== '') {
      if (ids.has(item.id)) throw new Error(`planRetention: duplicate item id "${item.id}"`);
      ids.add(item.id);
    }
    return { item, ms: item.time.getTime(), index, reasons: new Set<KeepReason>() };
  });
  entries.sort((a, b) => b.ms - a.ms || a.index - b.index);

  const verified = entries.filter((e) => e.item.verified !== false);

  if (isEmptyPolicy(policy)) {
    for (const e of entries) e.reasons.add('policy-empty');
  } else {
    // keepWithin reference: the newest verified item not later than `now`.
    let reference = -Infinity;
    for (const e of verified) {
      if (e.ms <= now.getTime()) {
        reference = e.ms;
        break;
      }
    }
    const withinMs = policy.keepWithinSeconds * 1000;

    const rules: CountRule[] = [
      { reason: 'last', count: policy.keepLast, key: (_w, nr) => nr, last: undefined },
      { reason: 'hourly', count: policy.hourly, key: hourKey, last: undefined },
      { reason: 'daily', count: policy.daily, key: dayKey, last: undefined },
      { reason: 'weekly', count: policy.weekly, key: weekKey, last: undefined },
      { reason: 'monthly', count: policy.monthly, key: monthKey, last: undefined },
      { reason: 'yearly', count: policy.yearly, key: yearKey, last: undefined },
    ];
    const needClock = rules.some((r) => r.reason !== 'last' && r.count !== 0);

    verified.forEach((e, nr) => {
      if (withinMs > 0 && e.ms > reference - withinMs) e.reasons.add('within');
      const w: WallClock = needClock ? wallClock(e.item.time) : { year: 0, month: 0, day: 0, hour: 0 };
      for (const r of rules) {
        if (r.count > 0 || r.count === -1) {
          const k = r.key(w, nr);
          if (k !== r.last) {
            r.last = k;
            if (r.count > 0) r.count--;
            e.reasons.add(r.reason);
          }
        }
      }
    });
  }

  for (const e of entries) {
    if (e.item.pinned === true) e.reasons.add('pinned');
    if (e.item.verified === false) e.reasons.add('unverified');
  }
  const newestVerified = verified[0];
  if (newestVerified !== undefined) newestVerified.reasons.add('newest-verified');

  const plan: RetentionPlan = { keep: [], prune: [] };
  for (const e of entries) {
    if (e.reasons.size > 0) {
      const reasons = KEEP_REASON_ORDER.filter((r) => e.reasons.has(r));
      plan.keep.push({ id: e.item.id, time: new Date(e.ms), reasons });
    } else {
      plan.prune.push({ id: e.item.id, time: new Date(e.ms) });
    }
  }
  return plan;
}
