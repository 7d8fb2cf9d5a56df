import type { Config } from '../config/load.js';
import { planChains, type ChainDecision, type ChainInfo } from '../retention/chains.js';
import { messageOf } from '../errors.js';
import { continuousPrefix } from '../layout.js';
import type { Logger } from '../log.js';
import type { Store } from '../storage/store.js';
import type { Catalog } from './catalog.js';
import type { ListedBackup } from './listing.js';
import { clearOfLocks, type LockWait } from './locks.js';

/*
 * `continuous.keepWithin` applied to one store (the choice is
 * src/retention/chains.ts): whole chains of segments of kept bases go
 * once their newest segment is older than keepWithin. Listing a chain costs
 * as many objects as it holds, so only what the choice needs is listed:
 * bases taken within keepWithin are only probed (one object: has it a chain
 * at all?) until the newest chain is found, older bases are listed whole
 * (their keys are what would be deleted). Nothing is listed when
 * keepWithin is unset.
 */

/** Most objects one chain is expected to hold (a year of 10 s segments, twice): the listing loop's bound. */
const MAX_SEGMENT_KEYS = 7_000_000;

export interface ListedChain {
  keys: string[];
  /** When the newest / oldest object was stored; undefined when the store gave no time for one of them. */
  newestAt?: Date;
  oldestAt?: Date;
}

/** Every object under `<cluster>/continuous/<id>/` (segments and their manifests), with the times they were stored. */
export async function listChain(store: Store, cluster: string, id: string): Promise<ListedChain> {
  const keys: string[] = [];
  let newest: Date | undefined;
  let oldest: Date | undefined;
  let timeless = false;
  for await (const o of store.list(`${continuousPrefix(cluster)}${id}/`)) {
    keys.push(o.key);
    if (keys.length > MAX_SEGMENT_KEYS) throw new Error(`more than ${MAX_SEGMENT_KEYS} objects under ${continuousPrefix(cluster)}${id}/`);
    if (!o.modifiedAt) timeless = true;
    else {
      if (!newest || o.modifiedAt > newest) newest = o.modifiedAt;
      if (!oldest || o.modifiedAt < oldest) oldest = o.modifiedAt;
    }
  }
  return timeless ? { keys } : { keys, ...(newest ? { newestAt: newest } : {}), ...(oldest ? { oldestAt: oldest } : {}) };
}

/** Whether a base has a chain at all: one object listed, then the listing is let go. */
async function hasChain(store: Store, cluster: string, id: string): Promise<boolean> {
  for await (const _ of store.list(`${continuousPrefix(cluster)}${id}/`)) return true;
  return false;
}

export interface ChainOutcome extends ChainDecision {
  /** Its objects were deleted (never on a dry run). */
  deleted?: boolean;
}

/** The id a chain's lock wait and errors are reported under: it is not a backup. */
export const chainLabel = (base: string) => `continuous/${base}`;

/**
 * Decides and (unless `dryRun`) deletes chains per keepWithin among the
 * committed backups of `candidates` (the series this node plans, minus what
 * retention prunes with its chain anyway). Manifests go before objects, so
 * a crash leaves objects no reader takes for segments; under Object Lock a
 * chain waits, whole, until none of its objects is locked.
 */
export async function pruneChains(
  cfg: Pick<Config, 'cluster' | 'continuous'>,
  store: Store,
  log: Logger,
  catalog: Pick<Catalog, 'listed'>,
  candidates: ListedBackup[],
  out: { errors: string[]; waitingForLock: LockWait[] },
  opts: { dryRun: boolean; now: Date },
): Promise<ChainOutcome[]> {
  const keepWithinSeconds = cfg.continuous.keepWithinSeconds;
  if (keepWithinSeconds <= 0) return [];
  const cutoff = opts.now.getTime() - keepWithinSeconds * 1000;
  const byTime = (a: ListedBackup, b: ListedBackup) => (b.time?.getTime() ?? 0) - (a.time?.getTime() ?? 0) || (a.id < b.id ? 1 : -1);
  const newestBase = catalog.listed.filter((b) => b.manifest && b.time).sort(byTime)[0]?.id;
  const chains: ChainInfo[] = [];
  const listed = new Map<string, ListedChain>();
  let seenChain = false;
  for (const b of candidates.filter((x) => x.manifest && x.time).sort(byTime)) {
    try {
      if (b.time!.getTime() >= cutoff || b.id === newestBase) {
        // Too young to go (or the newest): only whether the newest chain is here.
        if (!seenChain && (await hasChain(store, cfg.cluster, b.id))) {
          seenChain = true;
          chains.push({ base: b.id, baseTime: b.time!, objects: 1 });
        }
        continue;
      }
      const c = await listChain(store, cfg.cluster, b.id);
      if (!c.keys.length) continue;
      seenChain = true;
      listed.set(b.id, c);
      chains.push({ base: b.id, baseTime: b.time!, objects: c.keys.length, ...(c.newestAt ? { newestAt: c.newestAt } : {}) });
    } catch (e) {
      // Which chain is the newest is then not known: nothing is decided on a guess.
      out.errors.push(`${chainLabel(b.id)}: listing its continuous-backup segments: ${messageOf(e)}`);
      return [];
    }
  }
  const decisions: ChainOutcome[] = planChains(chains, { keepWithinSeconds, newestBase, now: opts.now });
  for (const d of decisions) {
    if (d.keep) continue;
    const c = listed.get(d.base)!;
    if (store.caps.objectLock && !(await clearOfLocks(store, { id: chainLabel(d.base), keys: c.keys, ...(c.oldestAt ? { writtenAt: c.oldestAt } : {}) }, out, log))) continue;
    if (opts.dryRun) continue;
    try {
      await store.delete(c.keys.filter((k) => k.endsWith('.json')));
      await store.delete(c.keys.filter((k) => !k.endsWith('.json')));
      d.deleted = true;
      log.info({ store: store.name, base: d.base, objects: c.keys.length, newestAt: d.newestAt?.toISOString() }, 'pruned a continuous-backup chain older than continuous.keepWithin (its base is kept)');
    } catch (e) {
      out.errors.push(`${chainLabel(d.base)}: ${messageOf(e)}`);
      log.error({ store: store.name, base: d.base, err: messageOf(e) }, 'pruning a continuous-backup chain failed');
    }
  }
  return decisions;
}
