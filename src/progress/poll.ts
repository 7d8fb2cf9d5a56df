import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Meter } from './model.js';

/** The snapshot a source is writing (etcdctl's `.part`) or has written, in its run directory. */
const SNAPSHOT_FILE_RE = /^snapshot_.*\.db(\.part)?$/;

async function snapshotSize(dir: string): Promise<number | undefined> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => SNAPSHOT_FILE_RE.test(n));
  let total: number | undefined;
  for (const n of names) {
    const size = await stat(join(dir, n)).then((s) => s.size, () => undefined);
    if (size !== undefined) total = (total ?? 0) + size;
  }
  return total;
}

/**
 * The source runs as another program (etcdctl, cluster-backup.sh): its
 * progress is the snapshot file's growth, polled. Returns the stop function.
 */
export function pollSnapshotGrowth(dir: string, m: Meter, everyMs = 250): () => void {
  let busy = false;
  let stopped = false;
  const timer = setInterval(() => {
    if (busy || stopped) return;
    busy = true;
    void snapshotSize(dir)
      .then((size) => {
        if (size !== undefined && !stopped) m.set(size);
      })
      .finally(() => (busy = false));
  }, everyMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
