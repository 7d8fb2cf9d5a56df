/**
 * The segment outbox (docs/continuous.md): every sealed segment waits under
 * `workDir/continuous-outbox/<base>/<from>-<to>/` until every store has
 * committed it, then its entry goes. A store that fails keeps its entries
 * for later, with a backoff; nothing is dropped. Delivery runs beside the
 * watch and never blocks it: a slow store only makes the outbox grow, and
 * past a limit that is logged and exported (the lag alert fires too).
 *
 * Order: entries are delivered oldest first, and a store that failed (or
 * waits out its backoff) takes no later entry in that pass, so each store's
 * chain grows without holes and "committed to every store" is a prefix of
 * what was sealed.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import { continuousOutboxDir, continuousOutboxEntryDir, continuousOutboxOpenDir } from '../layout.js';
import type { Logger } from '../log.js';
import { messageOf } from '../errors.js';
import type { Store } from '../storage/store.js';
import { deliverSegment, readSealed, type SegmentOutcome } from './deliver.js';
import { sealedPaths, type SealedSegment } from './seal.js';
import { readFile } from 'node:fs/promises';

/** Past this many segments waiting, the backlog is logged (once per crossing) and exported. */
export const OUTBOX_WARN_SEGMENTS = 1000;
/** Backoff of a store that failed: doubles from the first to the last, never more. */
const BACKOFF_MIN_MS = 2_000;
const BACKOFF_MAX_MS = 5 * 60_000;

interface Entry {
  seg: SealedSegment;
  /** Store names that have not committed it yet. */
  owed: Set<string>;
  attempts: number;
  nextAt: number;
}

export interface OutboxEvents {
  /** Every store has committed this segment (in sealing order). */
  committed(seg: SealedSegment): void;
  /** One store's attempt at one segment. */
  attempt(store: string, seg: SealedSegment, outcome: SegmentOutcome): void;
  /** Segments waiting, after any change. */
  backlog(segments: number, bytes: number): void;
}

export function backoffMs(attempts: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(20, Math.max(0, attempts - 1)));
}

export class SegmentOutbox {
  private readonly entries: Entry[] = [];
  private pumping: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private warned = false;
  private readonly ac = new AbortController();

  constructor(
    private readonly workDir: string,
    private readonly stores: readonly Store[],
    private readonly log: Logger,
    private readonly on: OutboxEvents,
  ) {}

  /** The entry directory a segment is sealed into. */
  dirFor(baseId: string, fromRev: number, toRev: number): string {
    return continuousOutboxEntryDir(this.workDir, baseId, fromRev, toRev);
  }

  /** Where a segment starting at `fromRev` streams while it is open (seal.ts OpenSegment). */
  openDirFor(baseId: string, fromRev: number): string {
    return continuousOutboxOpenDir(this.workDir, baseId, fromRev);
  }

  /** Segments left by a previous life, oldest first, back in the queue (their status says which stores still owe them). */
  async load(): Promise<void> {
    const root = continuousOutboxDir(this.workDir);
    const bases = await readdir(root).catch(() => [] as string[]);
    const found: Entry[] = [];
    for (const base of bases.sort()) {
      const stems = await readdir(join(root, base)).catch(() => [] as string[]);
      for (const stem of stems.sort()) {
        const dir = join(root, base, stem);
        const files = await readdir(dir).catch(() => [] as string[]);
        const manifestName = files.find((f) => f === `${stem}.json`);
        if (!manifestName) {
          await rm(dir, { recursive: true, force: true }); // sealing never finished: not a segment
          continue;
        }
        try {
          const probe = await readSealed(dir, join(dir, manifestName), '');
          const seg = { ...probe, objectPath: sealedPaths(dir, probe.manifest).object };
          const owed = await readOwed(dir, this.stores);
          found.push({ seg, owed, attempts: 0, nextAt: 0 });
        } catch (e) {
          this.log.warn({ dir, err: messageOf(e) }, 'continuous outbox: an entry cannot be read; left in place');
        }
      }
    }
    this.entries.push(...found);
    this.report();
    if (found.length) this.kick();
  }

  /** Queues a sealed segment for every store and starts delivering. */
  async add(seg: SealedSegment): Promise<void> {
    const owed = new Set(this.stores.map((s) => s.name));
    await writeOwed(seg.dir, owed);
    // The same range sealed again (a writer that started over from the store's chain while its own
    // outbox still held it): the new files replaced the old ones in that directory; one entry for them.
    const same = this.entries.findIndex((e) => e.seg.dir === seg.dir);
    if (same >= 0) this.entries.splice(same, 1);
    this.entries.push({ seg, owed, attempts: 0, nextAt: 0 });
    this.report();
    this.kick();
  }

  get size(): number {
    return this.entries.length;
  }

  /** The oldest segment not yet in every store (its first revision's wall time is the lag). */
  get oldest(): SealedSegment | undefined {
    return this.entries[0]?.seg;
  }

  /** Whether this very range of this base is sealed and waiting: sealing it again would write into its directory. */
  holds(baseId: string, fromRev: number, toRev: number): boolean {
    const dir = this.dirFor(baseId, fromRev, toRev);
    return this.entries.some((e) => e.seg.dir === dir);
  }

  /** Revisions sealed and not yet in every store. */
  waitingRevisions(): number {
    return this.entries.reduce((n, e) => n + e.seg.manifest.revisions, 0);
  }

  kick(): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = this.pump()
      .catch((e) => this.log.error({ err: messageOf(e) }, 'continuous outbox: delivery pass failed'))
      .finally(() => {
        this.pumping = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        } else this.schedule();
      });
  }

  /** Waits up to `ms` for the queue to empty (shutdown's flush), then stops delivering; what is left stays on disk. */
  async stop(ms: number): Promise<void> {
    if (this.stopped) return;
    const until = Date.now() + ms;
    while (this.entries.length > 0 && Date.now() < until) {
      this.kick();
      await new Promise((r) => setTimeout(r, 100).unref());
    }
    this.stopped = true;
    clearTimeout(this.timer);
    this.ac.abort();
    await this.pumping;
  }

  private schedule(): void {
    clearTimeout(this.timer);
    if (this.stopped || this.entries.length === 0) return;
    const at = Math.min(...this.entries.map((e) => e.nextAt));
    this.timer = setTimeout(() => this.kick(), Math.max(50, at - Date.now()));
    this.timer.unref();
  }

  private async pump(): Promise<void> {
    const blocked = new Set<string>();
    const now = Date.now();
    for (const e of [...this.entries]) {
      if (this.stopped) return;
      if (!this.entries.includes(e)) continue; // replaced by a new sealing of the same range meanwhile
      if (e.nextAt > now) {
        for (const s of e.owed) blocked.add(s);
        continue;
      }
      let failed = false;
      for (const store of this.stores) {
        if (!e.owed.has(store.name) || blocked.has(store.name)) continue;
        const out = await deliverSegment(store, e.seg, this.log, this.ac.signal);
        this.on.attempt(store.name, e.seg, out);
        if (out.ok) e.owed.delete(store.name);
        else {
          failed = true;
          blocked.add(store.name);
          this.log.warn({ store: store.name, segment: e.seg.manifest.object.key, reason: out.reason, err: out.error, attempts: e.attempts + 1 }, 'continuous: segment not delivered to a store; kept in the outbox for a retry');
        }
      }
      const at = this.entries.indexOf(e);
      if (at < 0) continue; // replaced while it was delivered: the directory is the new entry's now
      if (e.owed.size === 0) {
        // Removed from disk first: while it is listed, holds() keeps a new sealing out of its directory.
        await rm(e.seg.dir, { recursive: true, force: true });
        this.entries.splice(this.entries.indexOf(e), 1);
        this.on.committed(e.seg);
      } else {
        if (failed) {
          e.attempts++;
          e.nextAt = Date.now() + backoffMs(e.attempts);
        }
        await writeOwed(e.seg.dir, e.owed).catch(() => undefined);
      }
    }
    this.report();
  }

  private report(): void {
    const bytes = this.entries.reduce((n, e) => n + e.seg.manifest.object.size, 0);
    this.on.backlog(this.entries.length, bytes);
    if (this.entries.length > OUTBOX_WARN_SEGMENTS && !this.warned) {
      this.warned = true;
      this.log.warn({ segments: this.entries.length, bytes }, 'continuous outbox: more segments wait than the limit; a store is not taking them (they are kept on this node)');
    } else if (this.entries.length <= OUTBOX_WARN_SEGMENTS) this.warned = false;
  }
}

const STATUS = 'status.json';

async function writeOwed(dir: string, owed: Set<string>): Promise<void> {
  await writeFileAtomic(join(dir, STATUS), `${JSON.stringify({ owed: [...owed] })}\n`);
}

async function readOwed(dir: string, stores: readonly Store[]): Promise<Set<string>> {
  const names = new Set(stores.map((s) => s.name));
  try {
    const v = JSON.parse(await readFile(join(dir, STATUS), 'utf8')) as { owed?: unknown };
    if (Array.isArray(v.owed)) return new Set(v.owed.filter((n): n is string => typeof n === 'string' && names.has(n)));
  } catch {
    // no status: every store owes it
  }
  return names;
}
