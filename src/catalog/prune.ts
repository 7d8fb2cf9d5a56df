import type { Manifest } from '../bundle/manifest.js';
import type { Config } from '../config/load.js';
import { parseDurationSeconds } from '../units/duration.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { catalogCacheDir, clusterPrefix, manifestKey, nodeOfId, objectKeys } from '../layout.js';
import { loadCatalog, type Catalog } from './catalog.js';
import { counts, type Trust } from './trust.js';
import { clearOfLocks, type LockWait } from './locks.js';
import type { Store } from '../storage/store.js';
import { planRetention, type RetentionPlan } from '../retention/plan.js';
import { listChain, pruneChains, type ChainOutcome } from './prune-chains.js';

export interface PruneOutcome {
  store: string;
  plan: RetentionPlan;
  /** Ids whose objects were deleted (empty on a dry run). */
  deleted: string[];
  /** Manifest-less leftovers removed (or, on a dry run, that would be). */
  incomplete: string[];
  errors: string[];
  /** Planned for removal but still under Object Lock (stores with caps.objectLock): removed by a prune after `until`. */
  waitingForLock: LockWait[];
  /** Chains of segments of kept bases decided by continuous.keepWithin (empty when it is unset). */
  chains: ChainOutcome[];
  catalog: Catalog;
}

/**
 * Whose backups one retention plan covers: with coordination (one backup per
 * slot for the cluster) the cluster's series, planned by the node that won
 * the slot; without (`coordination.mode: none`, every node backs up alone)
 * each node's own series. A node absent from an id (not an id) counts as
 * nobody's: never planned, never pruned.
 */
export function inSeries(cfg: Pick<Config, 'node' | 'coordination'>, node: string | undefined): boolean {
  if (node === undefined) return false;
  return cfg.coordination.mode === 'etcd' || node === cfg.node;
}

/**
 * The retention plan for a series (see inSeries) in one store: only committed
 * (verified) backups count. With trusted keys, a backup without a trusted
 * signature takes no part in the plan (it must not push a real backup out of
 * its slot, nor count as the newest verified) and is kept as evidence, with
 * reason `untrusted`: retention never deletes it.
 */
export function planForCatalog(cfg: Config, backups: Manifest[], now: Date, trust?: Trust): RetentionPlan {
  const series = backups.filter((m) => inSeries(cfg, m.node));
  const plan = planRetention(
    series.filter((m) => counts(m, trust)).map((m) => ({ id: m.id, time: new Date(m.createdAt), pinned: m.pinned, verified: true })),
    { ...cfg.retention, keepWithinSeconds: cfg.retention.keepWithinSeconds },
    now,
    cfg.timezone,
  );
  const untrusted = series.filter((m) => !counts(m, trust)).map((m) => ({ id: m.id, time: new Date(m.createdAt), reasons: ['untrusted'] }));
  if (!untrusted.length) return plan;
  return { ...plan, keep: [...plan.keep, ...untrusted].sort((a, b) => b.time.getTime() - a.time.getTime()) };
}

/** Moves the protected ids from prune to keep, with reason `current-run`. */
export function protectIds(plan: RetentionPlan, ids: string[]): RetentionPlan {
  if (!ids.length) return plan;
  const moved = plan.prune.filter((p) => ids.includes(p.id));
  if (!moved.length) return plan;
  const keep = [...plan.keep, ...moved.map((p) => ({ ...p, reasons: ['current-run'] }))].sort((a, b) => b.time.getTime() - a.time.getTime());
  return { keep, prune: plan.prune.filter((p) => !ids.includes(p.id)) };
}

/**
 * Applies the retention plan to one store. The manifest goes first: if we die
 * between the deletes, what is left is an incomplete backup that a later
 * prune removes, never a committed manifest pointing at nothing. Plans from
 * one listing plus this node's manifests, which the cache holds after the
 * first run: a warm plan reads no manifest.
 */
export async function pruneStore(
  cfg: Config,
  store: Store,
  log: Logger,
  opts: { dryRun: boolean; now?: Date; /** Ids never pruned now: the backup this run just took (the clock may have gone back). */ protect?: string[]; trust?: Trust },
): Promise<PruneOutcome> {
  const now = opts.now ?? new Date();
  // Only the series planned here is read: without coordination, not the other nodes' manifests (the id names the node).
  const catalog = await loadCatalog(store, cfg.cluster, opts.trust, {
    cacheDir: catalogCacheDir(cfg.workDir, store.name),
    want: (b) => inSeries(cfg, b.node),
  });
  const plan = protectIds(planForCatalog(cfg, catalog.backups, now, opts.trust), opts.protect ?? []);
  const out: PruneOutcome = { store: store.name, plan, deleted: [], incomplete: [], errors: [], waitingForLock: [], chains: [], catalog };
  const byId = new Map(catalog.backups.map((m) => [m.id, m]));
  const listed = new Map(catalog.listed.map((b) => [b.id, b]));
  for (const p of plan.prune) {
    const m = byId.get(p.id)!;
    const manifest = manifestKey(cfg.cluster, m.id);
    const object = m.object?.key ?? objectKeys(cfg.cluster, m.id, { encrypted: false }).object;
    // The manifest first, then the object, then whatever else the directory holds (pin markers): all of it is this backup's.
    const keys = [manifest, object, ...(listed.get(m.id)?.keys ?? []).filter((k) => k !== manifest && k !== object)];
    let segments: string[];
    try {
      segments = (await listChain(store, cfg.cluster, m.id)).keys;
    } catch (e) {
      out.errors.push(`${m.id}: listing its continuous-backup segments: ${messageOf(e)}`);
      continue;
    }
    // Every object of it free of its lock, or none of it deleted (a dry run reports the waiting too).
    if (store.caps.objectLock && !(await clearOfLocks(store, { id: m.id, keys: [...keys, ...segments], writtenAt: new Date(m.createdAt) }, out, log))) continue;
    if (opts.dryRun) continue;
    try {
      // Its continuous-backup segments go first: they replay onto this base only. A crash after them
      // leaves the base whole (without its chain), never segments nobody will ever delete.
      if (segments.length) {
        await store.delete(segments.filter((k) => k.endsWith('.json')));
        await store.delete(segments.filter((k) => !k.endsWith('.json')));
        log.info({ store: store.name, id: m.id, segments: segments.length }, 'pruned the continuous-backup segments of a pruned backup');
      }
      await store.delete([manifest]);
      await store.delete(keys.slice(1));
      out.deleted.push(m.id);
      log.info({ store: store.name, id: m.id }, 'pruned backup');
    } catch (e) {
      out.errors.push(`${m.id}: ${messageOf(e)}`);
      log.error({ store: store.name, id: m.id, err: messageOf(e) }, 'prune failed');
    }
  }
  // Segments of the bases kept: continuous.keepWithin may bound them tighter than their base.
  const pruned = new Set(plan.prune.map((p) => p.id));
  const kept = catalog.listed.filter((b) => b.manifest && inSeries(cfg, b.node) && !pruned.has(b.id));
  out.chains = await pruneChains(cfg, store, log, catalog, kept, out, { dryRun: opts.dryRun, now });
  // Leftovers of failed or interrupted uploads: only this node's, only after the grace period,
  // so an upload in progress on this node (or another) is never touched.
  const cutoff = new Date(now.getTime() - parseDurationSeconds(store.settings.incompleteGrace) * 1000);
  for (const inc of catalog.incomplete) {
    // The node from the parsed id: a suffix match would let node master-0 clean ocp-master-0's uploads.
    if (nodeOfId(inc.id) !== cfg.node) continue;
    if (inc.newest && inc.newest > cutoff) continue;
    if (store.caps.objectLock && !(await clearOfLocks(store, { id: inc.id, keys: inc.keys, incomplete: true }, out, log))) continue;
    out.incomplete.push(inc.id);
    if (opts.dryRun) continue;
    try {
      await store.delete(inc.keys);
      log.warn({ store: store.name, id: inc.id, keys: inc.keys.length }, 'removed incomplete backup (no manifest)');
    } catch (e) {
      out.errors.push(`${inc.id}: ${messageOf(e)}`);
    }
  }
  if (out.waitingForLock.length) {
    const next = out.waitingForLock.reduce((a, b) => (b.until < a.until ? b : a));
    log.info(
      { store: store.name, waiting: out.waitingForLock.length, next: next.id, until: next.until.toISOString() },
      'backups wait for their object locks to expire before prune removes them',
    );
  }
  if (!opts.dryRun && store.caps.cleanupIncomplete) {
    try {
      for (const what of await store.cleanupIncomplete(clusterPrefix(cfg.cluster), cutoff)) {
        log.warn({ store: store.name, what }, 'removed leftover of an interrupted upload');
      }
    } catch (e) {
      out.errors.push(`cleanup: ${messageOf(e)}`);
    }
  }
  return out;
}
