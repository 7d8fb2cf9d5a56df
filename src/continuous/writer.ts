/**
 * The continuous writer (docs/continuous.md): on the elected node, follow
 * the whole keyspace from the newest full backup's revision + 1, cut
 * segments every interval (or past maxSegmentBytes), seal them into the
 * segment outbox and let it deliver them to every store. A gap or a
 * compaction past the watcher ends the chain: a full backup (through the
 * daemon's runner, label continuous-rebase) starts a new one. A newer full
 * backup becomes the base once committed. At shutdown: the segment in
 * progress is sealed and delivered (bounded), the writer key is released.
 */
import type { Etcd3 } from 'etcd3';
import type { Config } from '../config/load.js';
import { loadSigningKey, type SigningKey } from '../bundle/sign.js';
import { findBackup, loadCatalogFor } from '../catalog/catalog.js';
import { loadTrust, type Trust } from '../catalog/trust.js';
import { sleep } from '../coord/etcd-calls.js';
import { CoordKeys, parseManual, parseResult } from '../coord/keys.js';
import type { Members } from '../etcd/client.js';
import { messageOf, reasonOf, type Reason } from '../errors.js';
import { catalogCacheDir } from '../layout.js';
import type { Logger } from '../log.js';
import { parseDurationSeconds } from '../units/duration.js';
import type { Store } from '../storage/store.js';
import { listCommittedRanges } from './deliver.js';
import { becomeWriter, type WriterHold } from './election.js';
import type { ContinuousMetrics } from './metrics.js';
import { SegmentOutbox } from './outbox.js';
import { chainNext, flushDue, groupEvents, WatchProgress, type WatchEvent } from './records.js';
import { OpenSegment } from './seal.js';
import { headRevision, watchWholeKeyspace, type WatchEnd } from './watch.js';

export interface WriterDeps {
  cfg: Config;
  log: Logger;
  stores: Store[];
  client: Etcd3;
  members?: Members | undefined;
  metrics: ContinuousMetrics;
  /** A segment of `bytes` (before compression) went through: the daemon may give memory back (src/daemon/reclaim.ts). */
  reclaim?(bytes: number): void;
  /** Takes a full backup now through the daemon's runner; true when one was committed. */
  rebase(why: Reason, signal: AbortSignal): Promise<boolean>;
}

interface Chain {
  baseId: string;
  baseRev: number;
  baseCreatedAt: string;
  /** The first revision the chain does not hold yet. */
  next: number;
}

type FollowEnd = { kind: 'stopped' } | { kind: 'new-base'; base: Chain } | { kind: 'gap'; error: string } | WatchEnd;

/** The loop that ticks flushes, the lag and base checks. */
const TICK_MS = 250;
/**
 * How often the catalog is asked for a newer full backup anyway. Usually one
 * is heard of at once: the daemon's own runs say so, and the watch sees
 * every node's slot results and manual records in etcd go by.
 */
const BASE_CHECK_MS = 5 * 60_000;
/** Rebases (full backups) no more often than this: a cluster compacting faster than a backup commits must not loop. */
const REBASE_MIN_MS = 60_000;
/** Without any full backup, wait this long for one (the daemon's catch-up run) before taking one; look this often. */
const NO_BASE_WAIT_MS = 120_000;
const NO_BASE_POLL_MS = 3_000;
/** How often etcd's revision is read to tell a stalled watch from an idle cluster. */
const PROGRESS_MS = 5_000;
/** What shutdown waits for the last segment to reach the stores. */
const FLUSH_WAIT_MS = 10_000;

export class ContinuousWriter {
  private readonly stopAc = new AbortController();
  private readonly outbox: SegmentOutbox;
  private readonly intervalMs: number;
  private loop: Promise<void> | undefined;
  private trust: Trust | undefined;
  private signingKey: SigningKey | undefined;
  private newBaseHint = false;
  private readonly skipBases = new Set<string>();
  private readonly keys: CoordKeys;
  private lastRebase = 0;
  // The chain being written: the segment streaming now (none while idle), the first revision not recorded.
  private open: OpenSegment | undefined;
  private next = 0;
  private sealing: Promise<void> = Promise.resolve();
  private sealFailed: string | undefined;
  /** Whether the watch keeps up with etcd's revision (read every PROGRESS_MS). */
  private progress = new WatchProgress();
  /** A watch that delivers nothing etcd had this long ago is restarted. */
  private readonly stuckMs: number;
  /** The last findChain could not read the store (as opposed to: it holds no full backup). */
  private unreadable = false;

  constructor(private readonly d: WriterDeps) {
    this.intervalMs = parseDurationSeconds(d.cfg.continuous.interval) * 1000;
    this.keys = new CoordKeys(d.cfg.cluster);
    this.stuckMs = Math.max(30_000, 3 * this.intervalMs);
    this.outbox = new SegmentOutbox(d.cfg.workDir, d.stores, d.log, {
      committed: () => d.metrics.recordCommitted(new Date()),
      attempt: (_store, seg, out) => d.metrics.recordAttempt(out.ok, seg.manifest.object.size),
      backlog: (n) => d.metrics.setOutbox(n),
    });
  }

  start(): void {
    this.loop = this.run().catch((e) => this.d.log.error({ err: messageOf(e) }, 'continuous: the writer stopped on an error'));
  }

  /** A full backup was committed (the daemon's own run): switch to it as the base. */
  baseCommitted(): void {
    this.newBaseHint = true;
  }

  /** Seals the segment in progress, waits (bounded) for the stores, releases the writer key. */
  async stop(): Promise<void> {
    this.stopAc.abort();
    await this.loop;
    await this.outbox.stop(FLUSH_WAIT_MS);
  }

  private async run(): Promise<void> {
    const { cfg, log } = this.d;
    this.trust = await loadTrust(cfg);
    if (cfg.signing.keyFile) this.signingKey = await loadSigningKey(cfg.signing.keyFile);
    await this.outbox.load();
    const ctx = { client: this.d.client, members: this.d.members, keys: this.keys, node: cfg.node, leaseTtlSec: leaseTtlOf(cfg) };
    const stop = this.stopAc.signal;
    while (!stop.aborted) {
      const hold = await becomeWriter(ctx, log, stop);
      if (!hold) break;
      this.d.metrics.setWriter(true);
      // A lapsed lease: another node may write from now on, whatever this one still has to finish.
      hold.lost.addEventListener('abort', () => this.d.metrics.setWriter(false), { once: true });
      log.info({ lease: hold.leaseId }, 'continuous: this node writes segments');
      try {
        await this.write(hold);
      } catch (e) {
        log.error({ reason: reasonOf(e), err: messageOf(e) }, 'continuous: writing stopped on an error; the writer key is released');
      } finally {
        await this.sealing;
        // Before the key goes: the last segment is on its way (bounded), so the next writer continues after it.
        if (stop.aborted) await this.outbox.stop(FLUSH_WAIT_MS);
        await hold.release();
        this.d.metrics.setWriter(false);
        log.info('continuous: writer key released');
      }
      if (hold.lost.aborted) log.warn('continuous: the writer lease may have lapsed; another node may write now');
      await sleep(1_000, stop);
    }
  }

  private async write(hold: WriterHold): Promise<void> {
    const { log } = this.d;
    const signal = AbortSignal.any([this.stopAc.signal, hold.lost]);
    let chain = await this.findChain(signal);
    const noBaseSince = Date.now();
    let fallback: Chain | undefined;
    while (!signal.aborted) {
      if (!chain) {
        // Usually the daemon's first (catch-up) backup is on its way: wait for it a while before taking one.
        if (this.unreadable || Date.now() - noBaseSince < NO_BASE_WAIT_MS) await sleep(NO_BASE_POLL_MS, signal);
        else await this.rebase('continuous-gap', 'no committed full backup to start a chain from', signal);
        chain = await this.findChain(signal);
        continue;
      }
      log.info({ base: chain.baseId, baseRevision: chain.baseRev, from: chain.next }, 'continuous: following etcd');
      const end = await this.follow(chain, signal);
      const reached: Chain = { ...chain, next: this.next };
      switch (end.kind) {
        case 'stopped':
          return;
        case 'new-base':
          log.info({ base: end.base.baseId, baseRevision: end.base.baseRev, oldBase: chain.baseId, oldChainTo: this.next - 1 }, 'continuous: a newer full backup is committed: new chain from it');
          fallback = reached;
          chain = end.base;
          break;
        case 'failed':
          log.warn({ err: end.error, from: this.next }, 'continuous: the watch ended; resuming from the next revision');
          chain = reached;
          await sleep(2_000, signal);
          break;
        case 'compacted':
          if (fallback) {
            // The new base's revisions are gone already: the old chain is whole, keep writing it.
            log.warn({ base: chain.baseId, err: end.error }, 'continuous: etcd compacted past the new base already; continuing the chain of the previous base');
            this.skipBases.add(chain.baseId);
            chain = fallback;
            fallback = undefined;
            break;
          }
          log.error({ reason: 'continuous-compacted', base: chain.baseId, from: this.next, err: end.error }, 'continuous: etcd compacted past the revision the writer needs; taking a full backup to start a new chain');
          fallback = undefined;
          chain = (await this.rebase('continuous-compacted', end.error, signal)) ? await this.findChain(signal) : reached;
          break;
        case 'gap':
          log.error({ reason: 'continuous-gap', base: chain.baseId, err: end.error }, 'continuous: a revision is missing; the chain ends here, taking a full backup to start a new one');
          fallback = undefined;
          chain = (await this.rebase('continuous-gap', end.error, signal)) ? await this.findChain(signal) : undefined;
          break;
      }
    }
  }

  /** A full backup through the runner, at most once per REBASE_MIN_MS. */
  private async rebase(why: Reason, detail: string, signal: AbortSignal): Promise<boolean> {
    const wait = this.lastRebase + REBASE_MIN_MS - Date.now();
    if (wait > 0) await sleep(wait, signal);
    if (signal.aborted) return false;
    this.lastRebase = Date.now();
    this.d.log.info({ reason: why, detail }, 'continuous: full backup for a new chain (label continuous-rebase)');
    const ok = await this.d.rebase(why, signal).catch(() => false);
    if (!ok) this.d.log.warn({ reason: why }, 'continuous: the full backup for a new chain failed; trying again later');
    return ok;
  }

  /**
   * The newest committed full backup in the first store, and where its
   * chain continues; undefined when the store holds none, or cannot be read
   * now (then `unreadable` is set: no full backup is taken for that, it
   * would not reach the store either).
   */
  private async findChain(signal: AbortSignal): Promise<Chain | undefined> {
    this.unreadable = false;
    const { cfg, log } = this.d;
    const store = this.d.stores[0]!;
    try {
      const cat = await loadCatalogFor(store, cfg.cluster, 'latest', this.trust, { cacheDir: catalogCacheDir(cfg.workDir, store.name), signal });
      const m = findBackup(cat, 'latest', store.name);
      const rev = m.etcd?.revision;
      if (rev === undefined || rev < 1) return undefined;
      const ranges = await listCommittedRanges(store, cfg.cluster, m.id, signal);
      return { baseId: m.id, baseRev: rev, baseCreatedAt: m.createdAt, next: chainNext(rev, ranges) };
    } catch (e) {
      if (signal.aborted) return undefined;
      if (reasonOf(e) !== 'not-found') {
        this.unreadable = true;
        log.warn({ reason: reasonOf(e), err: messageOf(e) }, 'continuous: cannot read the newest full backup');
      }
      return undefined;
    }
  }

  /** Whether a newer full backup than the chain's base is committed (the catalog's latest). */
  private async newerBase(chain: Chain, signal: AbortSignal): Promise<Chain | undefined> {
    const c = await this.findChain(signal);
    if (!c || c.baseId === chain.baseId || this.skipBases.has(c.baseId) || c.baseCreatedAt <= chain.baseCreatedAt) return undefined;
    return c;
  }

  /** Follows etcd for one chain until it ends; the records held are sealed before it returns. */
  private follow(chain: Chain, signal: AbortSignal): Promise<FollowEnd> {
    this.next = chain.next;
    this.open = undefined;
    this.sealFailed = undefined;
    return new Promise<FollowEnd>((resolve) => {
      let ended = false;
      let checking = false;
      let lastCheck = Date.now();
      let reading = false;
      let lastRead = 0;
      this.progress = new WatchProgress();
      const finish = (end: FollowEnd) => {
        if (ended) return;
        ended = true;
        clearInterval(tick);
        signal.removeEventListener('abort', onAbort);
        void (async () => {
          await watch.cancel();
          this.seal(chain);
          await this.sealing;
          // A segment that could not be sealed is a hole, whatever else ended the watch: resuming after
          // it (a watch failure, a new base with this chain as fallback) would build on the hole.
          const failed = this.sealFailed ?? this.open?.failed;
          resolve(failed && end.kind !== 'stopped' && end.kind !== 'gap' ? { kind: 'gap', error: `a segment could not be sealed on this node: ${failed}` } : end);
        })();
      };
      const onAbort = () => finish({ kind: 'stopped' });
      const watch = watchWholeKeyspace(this.d.client, chain.next, {
        next: () => this.next,
        ended: (end) => finish(end),
        events: (events) => {
          if (ended) return;
          const r = groupEvents(this.next, events, new Date());
          if (!r.ok) return finish({ kind: 'gap', error: `revision ${r.expected} expected, the watch gave ${r.got}` });
          for (const rec of r.records) {
            this.open ??= new OpenSegment(this.outbox.openDirFor(chain.baseId, rec.rev), this.sealOptions(chain));
            this.open.append(rec);
          }
          this.next = r.next;
          if (events.some((ev) => announcesBackup(this.keys, ev))) this.newBaseHint = true;
          if (flushDue(this.pendingState(), Date.now(), this.flushOpts()) === 'size') this.seal(chain);
        },
      });
      const tick = setInterval(() => {
        const failed = this.sealFailed ?? this.open?.failed;
        if (failed) return finish({ kind: 'gap', error: `a segment could not be sealed on this node: ${failed}` });
        if (flushDue(this.pendingState(), Date.now(), this.flushOpts())) this.seal(chain);
        this.reportLag();
        if (this.progress.stuck(this.next, Date.now(), this.stuckMs)) return finish({ kind: 'failed', error: `the watch has not delivered revision ${this.next} for ${Math.round(this.stuckMs / 1000)} s while etcd has it` });
        if (!reading && Date.now() - lastRead >= PROGRESS_MS) {
          reading = true;
          lastRead = Date.now();
          void headRevision(this.d.client)
            .then((h) => this.progress.observe(h, this.next, Date.now()), () => undefined)
            .finally(() => (reading = false));
        }
        if (!checking && (this.newBaseHint || Date.now() - lastCheck >= BASE_CHECK_MS)) {
          checking = true;
          this.newBaseHint = false;
          lastCheck = Date.now();
          void this.newerBase(chain, signal)
            .then((b) => b && finish({ kind: 'new-base', base: b }))
            .finally(() => (checking = false));
        }
      }, TICK_MS);
      tick.unref();
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private pendingState() {
    return { records: this.open?.records ?? 0, bytes: this.open?.rawBytes ?? 0, startedAt: this.open?.startedAt ?? 0 };
  }

  private sealOptions(chain: Chain) {
    const { cfg } = this.d;
    return {
      cluster: cfg.cluster,
      node: cfg.node,
      baseId: chain.baseId,
      codec: cfg.compression.codec,
      level: cfg.compression.level,
      recipients: cfg.encryption.recipients,
      signingKey: this.signingKey,
    };
  }

  private flushOpts() {
    return { intervalMs: this.intervalMs, maxBytes: this.d.cfg.continuous.maxSegmentBytes };
  }

  /** Cuts the segment streaming now: sealed in order, one after the other, then queued for the stores. */
  private seal(chain: Chain): void {
    const seg = this.open;
    if (!seg || seg.records === 0) return;
    this.open = undefined;
    const { log } = this.d;
    this.sealing = this.sealing.then(async () => {
      const first = seg.firstRev!;
      const last = seg.lastRev!;
      if (this.outbox.holds(chain.baseId, first, last)) {
        // Sealed before (this node started over from the store's chain while its outbox still held
        // these revisions): etcd gave the same events, the waiting segment has them.
        log.info({ base: chain.baseId, fromRev: first, toRev: last }, 'continuous: segment already sealed and waiting in the outbox');
        await seg.discard();
        return;
      }
      try {
        const sealed = await seg.seal(this.outbox.dirFor(chain.baseId, first, last));
        await this.outbox.add(sealed);
        log.debug({ base: chain.baseId, fromRev: first, toRev: last, size: sealed.manifest.object.size }, 'continuous: segment sealed');
        this.d.reclaim?.(sealed.manifest.object.rawSize);
      } catch (e) {
        // These revisions are not kept anywhere now: the chain cannot go on past them.
        this.sealFailed = messageOf(e);
        log.error({ reason: 'continuous-gap', fromRev: first, toRev: last, err: messageOf(e) }, 'continuous: cannot seal a segment on this node');
      }
    });
  }

  /** Lag: the oldest revision not yet in every store, whether sealed, held, or still unseen (etcd has it, the watch not yet). */
  private reportLag(): void {
    const now = Date.now();
    const oldest = this.outbox.oldest?.manifest.firstTime ?? this.open?.firstTime;
    const heldMs = oldest ? now - Date.parse(oldest) : 0;
    const waiting = this.outbox.waitingRevisions() + (this.open?.records ?? 0) + this.progress.unseenRevisions(this.next);
    this.d.metrics.setLag(Math.max(heldMs, this.progress.unseenAgeMs(this.next, now)) / 1000, waiting);
  }
}

function leaseTtlOf(cfg: Config): number {
  return Math.max(2, Math.round(parseDurationSeconds(cfg.coordination.leaseTtl)));
}

/** A put of a backup slot's success or of a manual backup's record: a full backup was just committed somewhere. */
function announcesBackup(keys: CoordKeys, ev: WatchEvent): boolean {
  if (ev.type !== 'PUT') return false;
  const key = ev.key.toString();
  if (key.startsWith(keys.resultPrefix('backup'))) return parseResult(ev.value)?.result === 'success';
  if (key.startsWith(keys.manualPrefix)) return parseManual(ev.value)?.result === 'success';
  return false;
}
