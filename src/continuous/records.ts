/**
 * The writer's pure core (docs/continuous.md): watch events into revision
 * records with the contiguity check, when to cut a segment, and what the
 * election key says this node should do. No I/O; tested from tables in
 * test/unit/continuous-records.test.ts.
 */
import type { RevisionRecord, SegmentOp } from './segment.js';
import type { WriterValue } from '../coord/keys.js';

/** One watch event as etcd gives it (etcd3's IEvent, reduced to what a record holds). */
export interface WatchEvent {
  type: 'PUT' | 'DELETE';
  key: Buffer;
  value: Buffer;
  /** mod_revision of the event (decimal string, as etcd3 gives int64). */
  modRevision: string;
  /** The lease (decimal string; "0" none). */
  lease: string;
}

export type GroupResult =
  | { ok: true; records: RevisionRecord[]; next: number }
  | { ok: false; expected: number; got: number };

/**
 * Groups one watch response's events into one record per revision (a txn's
 * events share its revision, in etcd's order) and checks that revisions run
 * on from `next` with no hole. A watch over the whole keyspace sees every
 * revision (each one is made by a write), so a jump is a missed revision: a
 * gap, never skipped. Events of revisions before `next` were recorded
 * already (a watch that resumed a little early) and are dropped. etcd never
 * splits one revision across watch responses (without fragmenting, which
 * the writer does not ask for), so a response ends its last revision.
 */
export function groupEvents(next: number, events: readonly WatchEvent[], time: Date): GroupResult {
  const records: RevisionRecord[] = [];
  let cur: RevisionRecord | undefined;
  const at = time.toISOString();
  for (const ev of events) {
    const rev = Number(ev.modRevision);
    if (!Number.isSafeInteger(rev) || rev < 1) return { ok: false, expected: next, got: rev };
    if (cur && rev === cur.rev) {
      cur.ops.push(opOf(ev));
      continue;
    }
    if (rev < next) continue; // seen before this response
    if (rev !== next) return { ok: false, expected: next, got: rev };
    cur = { rev, time: at, ops: [opOf(ev)] };
    records.push(cur);
    next = rev + 1;
  }
  return { ok: true, records, next };
}

function opOf(ev: WatchEvent): SegmentOp {
  return ev.type === 'DELETE' ? { del: ev.key } : { put: ev.key, value: ev.value, lease: ev.lease || '0' };
}

export interface PendingSegment {
  records: number;
  /** NDJSON bytes before compression. */
  bytes: number;
  /** When the first record of the segment was received (ms since epoch). */
  startedAt: number;
}

/**
 * Whether the segment being built is cut now: `size` once its records
 * reach maxBytes, `interval` once its first record has waited an interval
 * (the RPO), `stop` at shutdown or a base switch; undefined to keep
 * collecting. An empty segment is never cut: nothing is written while idle.
 */
export function flushDue(p: PendingSegment, now: number, opts: { intervalMs: number; maxBytes: number; stopping?: boolean }): 'size' | 'interval' | 'stop' | undefined {
  if (p.records === 0) return undefined;
  if (p.bytes >= opts.maxBytes) return 'size';
  if (opts.stopping) return 'stop';
  if (now - p.startedAt >= opts.intervalMs) return 'interval';
  return undefined;
}

export type WriterAction =
  /** The key is free: try the create-if-absent txn. */
  | { action: 'claim' }
  /** This node's lease holds it: write. */
  | { action: 'write' }
  /** Another holder (another node, or this node's previous life whose lease has not expired): watch the key. */
  | { action: 'wait'; holder: WriterValue | undefined };

/**
 * What the election key says this node does. `holder` is the key's value
 * (undefined with `present` true: a value we cannot read still holds the
 * key, until its lease expires). Only this very lease counts as ours: a
 * key left by this node's previous life waits out its lease like any other.
 */
export function writerAction(present: boolean, holder: WriterValue | undefined, me: { node: string; lease?: string }): WriterAction {
  if (!present) return { action: 'claim' };
  if (holder && me.lease !== undefined && holder.node === me.node && holder.lease === me.lease) return { action: 'write' };
  return { action: 'wait', holder };
}

/**
 * Where the chain of a base continues: after the highest committed segment
 * that the chain reaches from the base's revision + 1 with no gap (segments
 * may overlap after a failover); the base's revision + 1 when none. A hole
 * ends the walk: what lies beyond it is unreachable for a reader, so the
 * writer cannot build on it (it starts over from the hole's start and the
 * reader's planner takes the segment that reaches furthest).
 */
export function chainNext(baseRevision: number, segments: readonly { fromRev: number; toRev: number }[]): number {
  let next = baseRevision + 1;
  const sorted = [...segments].sort((a, b) => a.fromRev - b.fromRev);
  for (const s of sorted) {
    if (s.fromRev > next) break;
    if (s.toRev + 1 > next) next = s.toRev + 1;
  }
  return next;
}

/**
 * Whether the watch keeps up with etcd, from etcd's own revision read now
 * and then (a watch that silently stalls would otherwise look like an idle
 * cluster: nothing pending, no lag). `behind` remembers a revision etcd had
 * that the watch had not delivered yet, and since when; once the watch has
 * passed it, the next reading starts over. Pure: fed by the caller.
 */
export class WatchProgress {
  private behind: { rev: number; since: number } | undefined;
  private head = 0;

  /** etcd's revision `headRev` read at `now`, while the watch's next revision is `next`. */
  observe(headRev: number, next: number, now: number): void {
    this.head = Math.max(this.head, headRev);
    if (headRev < next) this.behind = undefined;
    else if (!this.behind || next > this.behind.rev) this.behind = { rev: headRev, since: now };
  }

  /** At least how old the oldest revision is that etcd has and the watch has not delivered (0: none known). */
  unseenAgeMs(next: number, now: number): number {
    return this.behind && next <= this.behind.rev ? now - this.behind.since : 0;
  }

  /** Revisions etcd had at the last reading that the watch has not delivered. */
  unseenRevisions(next: number): number {
    return Math.max(0, this.head - next + 1);
  }

  /** The watch has not delivered a revision etcd had `limitMs` ago: it is stuck. */
  stuck(next: number, now: number, limitMs: number): boolean {
    return this.unseenAgeMs(next, now) > limitMs;
  }
}
