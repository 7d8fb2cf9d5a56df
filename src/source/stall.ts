/**
 * The stall watchdog: with etcd not answering, the real cluster-backup.sh
 * does not fail, its etcdctl waits on a `.part` that never grows, until
 * source.timeout (30 min by default). Watching the snapshot file's size ends
 * such a run after source.stallTimeout instead. The decision is pure
 * (stallStep); watchStall polls the run directory.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The snapshot being written: etcdctl (3.4 to 3.6) saves into `<file>.part`
 * and renames it when the save is done. Only that file is watched: after the
 * rename the script runs `snapshot status`, which on a large database may
 * take longer than stallTimeout without any file changing size.
 */
export const SNAPSHOT_PART_RE = /^snapshot_.*\.db\.part$/;

export interface StallState {
  /** Bytes last seen. */
  size: number;
  /** When that size was first seen (ms). */
  since: number;
}

/**
 * One observation. `size` is undefined while there is no `.part`: the
 * watchdog arms only once etcdctl has created one, so the script's earlier
 * steps (operator check, archive, an etcdctl download) are bounded by
 * source.timeout alone, and disarms when it is gone (the save finished and
 * renamed it; what follows is bounded by source.timeout too).
 */
export function stallStep(prev: StallState | undefined, size: number | undefined, now: number, stallMs: number): { next: StallState | undefined; stalled: boolean } {
  if (size === undefined) return { next: undefined, stalled: false };
  if (prev === undefined) return { next: { size, since: now }, stalled: false };
  if (size !== prev.size) return { next: { size, since: now }, stalled: false };
  return { next: prev, stalled: now - prev.since >= stallMs };
}

/** Total size of the snapshot `.part` files in `dir`, or undefined when there is none. */
export async function snapshotBytes(dir: string): Promise<number | undefined> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => SNAPSHOT_PART_RE.test(n));
  if (names.length === 0) return undefined;
  let total = 0;
  for (const n of names) total += await stat(join(dir, n)).then((s) => s.size, () => 0);
  return total;
}

/** Polls `dir` until stopped; calls `onStall` once when the snapshot has not grown for `stallMs`. */
export function watchStall(dir: string, stallMs: number, onStall: () => void, pollMs = Math.min(5000, Math.max(100, stallMs / 4))): () => void {
  let state: StallState | undefined;
  let stopped = false;
  let busy = false;
  const timer = setInterval(() => {
    if (busy || stopped) return;
    busy = true;
    void snapshotBytes(dir)
      .then((size) => {
        if (stopped) return;
        const r = stallStep(state, size, Date.now(), stallMs);
        state = r.next;
        if (r.stalled) {
          stopped = true;
          clearInterval(timer);
          onStall();
        }
      })
      .finally(() => (busy = false));
  }, pollMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
