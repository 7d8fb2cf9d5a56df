/**
 * The replay stepper (pure; tested from a table in
 * test/unit/continuous-replay-step.test.ts): given a segment's records in
 * order and where the replay stands, decide for each record whether to
 * apply it, skip it (already applied: overlapping segments after a writer
 * failover), stop (seen after TIME), or fail. And the txn one record
 * becomes. The I/O that fetches records and sends txns is replay.ts.
 */
import { createHash } from 'node:crypto';
import type { RevisionRecord, SegmentOp } from './segment.js';

export interface StepState {
  /** The next revision the throwaway etcd must reach (its revision + 1). */
  nextRev: number;
  /** The revision of the previous record of this segment (its fromRev - 1 before the first). */
  prevInSegment: number;
}

export interface SegmentRange {
  fromRev: number;
  toRev: number;
}

export type StepDecision =
  | { action: 'apply' }
  | { action: 'skip' }
  | { action: 'stop' }
  | { action: 'error'; reason: 'segment-corrupt' | 'segment-gap'; message: string };

/** `00000000000000000005-00000000000000000012` is unreadable in a message: `5-12`. */
export function rangeText(s: SegmentRange): string {
  return `${s.fromRev}-${s.toRev}`;
}

/**
 * One record of segment `seg`. A segment holds consecutive revisions
 * fromRev..toRev, one record each, in order: anything else is a corrupt
 * segment (never papered over). An already-applied revision is skipped
 * before its time is looked at: the segment that applied it was seen by
 * TIME. A record seen after `until`, or past `untilRev` when given, stops
 * the replay (the records after it were seen later still).
 */
export function stepRecord(state: StepState, seg: SegmentRange, r: Pick<RevisionRecord, 'rev' | 'time'>, until: Date, untilRev?: number): StepDecision {
  if (r.rev !== state.prevInSegment + 1 || r.rev > seg.toRev) {
    return { action: 'error', reason: 'segment-corrupt', message: `segment ${rangeText(seg)}: record of revision ${r.rev} out of sequence (expected ${Math.min(state.prevInSegment + 1, seg.toRev + 1)}${state.prevInSegment + 1 > seg.toRev ? ', past the end of its range' : ''})` };
  }
  if (r.rev < state.nextRev) return { action: 'skip' };
  if (Date.parse(r.time) > until.getTime()) return { action: 'stop' };
  // The replay drill stops at the next full backup's revision, whenever it was seen.
  if (untilRev !== undefined && r.rev > untilRev) return { action: 'stop' };
  if (r.rev > state.nextRev) {
    return { action: 'error', reason: 'segment-gap', message: `segment ${rangeText(seg)} starts replay at revision ${r.rev}, but revisions ${state.nextRev}-${r.rev - 1} were never applied: the chain has a gap` };
  }
  return { action: 'apply' };
}

/** The state after a decision (an error or a stop leaves it as it was). */
export function advance(state: StepState, r: Pick<RevisionRecord, 'rev'>, d: StepDecision): StepState {
  if (d.action === 'apply') return { nextRev: r.rev + 1, prevInSegment: r.rev };
  if (d.action === 'skip') return { ...state, prevInSegment: r.rev };
  return state;
}

/** After the last record of a segment read to its end: it must have held every revision of its range. */
export function checkSegmentEnd(state: StepState, seg: SegmentRange): string | undefined {
  if (state.prevInSegment !== seg.toRev) {
    return `segment ${rangeText(seg)}: its records end at revision ${state.prevInSegment < seg.fromRev ? `${seg.fromRev - 1} (none)` : state.prevInSegment}, its manifest says ${seg.toRev}`;
  }
  return undefined;
}

export type TxnOp = { put: Buffer; value: Buffer } | { del: Buffer };

/**
 * The txn of one record: its puts and deletes in etcd's order. Puts go
 * WITHOUT their lease: a lease granted after the base is not in the
 * restored etcd, and a put naming an unknown lease fails the whole txn. The
 * lease holders (Kubernetes' endpoint leases, events) re-create or expire
 * their keys once the cluster runs again. `leaseless` counts the puts that
 * had a lease.
 */
export function txnOf(ops: readonly SegmentOp[]): { ops: TxnOp[]; leaseless: number } {
  let leaseless = 0;
  const out = ops.map((o): TxnOp => {
    if ('del' in o) return { del: o.del };
    if (o.lease !== '0') leaseless++;
    return { put: o.put, value: o.value };
  });
  return { ops: out, leaseless };
}

/**
 * What a revision did, without when it was seen: two writers that both
 * recorded a revision (a failover's overlap) must agree on it, or one of
 * them is not reading the same cluster. 16 bytes of sha256 (hex).
 */
export function opsDigest(ops: readonly SegmentOp[]): string {
  const h = createHash('sha256');
  for (const o of ops) {
    if ('del' in o) h.update(`d${o.del.length}:`).update(o.del);
    else h.update(`p${o.put.length}:`).update(o.put).update(`${o.value.length}:`).update(o.value).update(`l${o.lease};`);
  }
  return h.digest('hex').slice(0, 32);
}
