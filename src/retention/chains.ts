/**
 * `continuous.keepWithin`: which chains of segments retention deletes while
 * their base is kept (docs/continuous.md#retention). Pure: the caller lists
 * the chains and deletes what this returns.
 *
 * A chain (every segment under `continuous/<base-id>/`) replays only as a
 * whole from its base, so it is kept or deleted whole. One goes when
 * - keepWithin is set (> 0),
 * - its base is not the newest committed backup (the writer starts every new
 *   chain there),
 * - it is not the newest chain that has segments (the writer keeps extending
 *   an older base's chain when etcd compacted the newest base's revisions,
 *   and writes nothing while etcd is idle: its newest segment may be old),
 * - and its newest segment was stored before now - keepWithin (the store's
 *   own time of the object, never earlier than the wall time its revisions
 *   were seen).
 * A chain whose age is not known (the store gave no times) is kept.
 */

export interface ChainInfo {
  /** The base backup's id. */
  base: string;
  /** When the base was taken (its manifest's createdAt): orders the chains. */
  baseTime: Date;
  /** Objects under its directory (0: no chain; segments and manifests alike). */
  objects: number;
  /** When the newest of them was stored; undefined when not known (not listed in full, or no times). */
  newestAt?: Date;
}

export type ChainKeepReason = 'newest-base' | 'live' | 'within' | 'age-unknown' | 'no-policy';

export interface ChainDecision {
  base: string;
  objects: number;
  newestAt?: Date;
  /** Undefined when it goes. */
  keep?: ChainKeepReason;
}

/**
 * Decides every chain of `chains` that has objects, newest base first.
 * `newestBase` is the newest committed backup of the cluster in the store
 * (whatever series or trust: protecting too much is safe).
 */
export function planChains(chains: ChainInfo[], opts: { keepWithinSeconds: number; newestBase: string | undefined; now: Date }): ChainDecision[] {
  const cutoff = opts.now.getTime() - opts.keepWithinSeconds * 1000;
  const ordered = chains.filter((c) => c.objects > 0).sort((a, b) => b.baseTime.getTime() - a.baseTime.getTime() || (a.base < b.base ? 1 : -1));
  return ordered.map((c, i): ChainDecision => {
    const d = { base: c.base, objects: c.objects, ...(c.newestAt ? { newestAt: c.newestAt } : {}) };
    if (opts.keepWithinSeconds <= 0) return { ...d, keep: 'no-policy' };
    if (c.base === opts.newestBase) return { ...d, keep: 'newest-base' };
    if (i === 0) return { ...d, keep: 'live' };
    if (!c.newestAt) return { ...d, keep: 'age-unknown' };
    if (c.newestAt.getTime() >= cutoff) return { ...d, keep: 'within' };
    return d;
  });
}
