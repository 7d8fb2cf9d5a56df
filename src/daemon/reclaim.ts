/**
 * Giving memory back after work (the daemon runs for months on a master).
 *
 * V8 frees the garbage of a busy stretch late: buffers that lived a few
 * seconds (a segment's data, a watch response, an upload) reach the old
 * generation and wait for a full GC, which a small heap rarely needs; and
 * the pages a GC frees stay in V8's page pool for reuse. Under the
 * continuous writer at 500 writes/s that kept the daemon at 200-225 MiB of
 * RSS with 30 MiB of live heap; a memory-reducing full GC (V8's
 * "last-resort" flavour: it also empties the page pool) every 10 s of such
 * work kept it at 145-160 MiB (bench/results/2026-11-27-continuous*.md).
 *
 * The daemon calls `after(bytes)` when a unit of work ends (a sealed
 * segment, a finished run); whether a GC runs is `reclaimDue`, pure. The GC
 * is V8's own (`--expose-gc`, a launcher flag); where it is missing (a node
 * started without the flag) nothing happens.
 */
import type { Logger } from '../log.js';

export interface ReclaimPolicy {
  /** A GC at most this often for steady work. */
  everyMs: number;
  /** ...and only when at least this much went through since the last one (a quiet cluster's trickle needs none). */
  minBytes: number;
  /** A burst (a writer catching up, a backup run) reclaims sooner: after this much... */
  burstBytes: number;
  /** ...but never twice within this gap. */
  burstGapMs: number;
}

export const RECLAIM_POLICY: ReclaimPolicy = { everyMs: 10_000, minBytes: 1 << 20, burstBytes: 8 << 20, burstGapMs: 1_000 };

/** Whether a memory-reducing GC is due, `bytes` of work after the last one, `sinceMs` after it. */
export function reclaimDue(bytes: number, sinceMs: number, p: ReclaimPolicy = RECLAIM_POLICY): boolean {
  if (bytes >= p.burstBytes) return sinceMs >= p.burstGapMs;
  return bytes >= p.minBytes && sinceMs >= p.everyMs;
}

type V8Gc = (opts: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** V8's gc() as --expose-gc installs it, or undefined. */
function exposedGc(): V8Gc | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? (gc as V8Gc) : undefined;
}

export class MemoryReclaimer {
  private bytes = 0;
  private last: number;

  constructor(
    private readonly log: Logger,
    private readonly gc: V8Gc | undefined = exposedGc(),
    private readonly now: () => number = Date.now,
    private readonly policy: ReclaimPolicy = RECLAIM_POLICY,
  ) {
    this.last = now();
  }

  /** Whether this process can reclaim at all (started with --expose-gc). */
  get available(): boolean {
    return this.gc !== undefined;
  }

  /** `bytes` of data went through (Infinity: a whole run ended); runs the GC when due. True when it ran. */
  after(bytes: number): boolean {
    this.bytes += bytes;
    const now = this.now();
    if (!this.gc || !reclaimDue(this.bytes, now - this.last, this.policy)) return false;
    const rss = process.memoryUsage.rss();
    this.gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    this.last = this.now();
    this.log.debug({ work: Number.isFinite(this.bytes) ? this.bytes : 'run', ms: this.last - now, rssBefore: rss, rssAfter: process.memoryUsage.rss() }, 'memory reclaimed');
    this.bytes = 0;
    return true;
  }
}
