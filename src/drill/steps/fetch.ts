import { join } from 'node:path';
import type { Manifest } from '../../bundle/manifest.js';
import { BackupError } from '../../errors.js';
import { inspectSnapshot } from '../../etcd/snapshot.js';
import type { Logger } from '../../log.js';
import { fetchBackup } from '../../catalog/fetch.js';
import { metered, type ProgressSink } from '../../progress/model.js';
import type { Store } from '../../storage/store.js';

/**
 * The fetch step: fetchBackup() checks every sha256 of the manifest (object
 * and artifacts), then the native inspection of the snapshot is compared
 * with what the manifest recorded at backup time.
 */
export async function fetchVerifiedSnapshot(
  store: Store,
  m: Manifest,
  dir: string,
  identities: string[] | undefined,
  signal: AbortSignal,
  log: Logger,
  progress?: ProgressSink,
): Promise<{ snapshot: string; totalKey: number }> {
  const fetched = await fetchBackup(store, m, join(dir, 'fetch'), identities, signal, progress);
  const snapshot = fetched.snapshot;
  const total = m.artifacts.find((a) => snapshot.endsWith(`/${a.name}`))?.size;
  const snap = await metered(progress, 'verify', { total }, (pm) => inspectSnapshot(snapshot, { onProgress: progress && pm.add }));
  const diffs: string[] = [];
  if (snap.trailer !== 'ok') diffs.push(`snapshot sha256 trailer ${snap.trailer}`);
  for (const k of ['hash', 'revision', 'totalKey', 'totalSize'] as const) {
    if (snap[k] !== m.etcd[k]) diffs.push(`${k} is ${snap[k]}, the manifest recorded ${m.etcd[k]} at backup time`);
  }
  if (diffs.length) {
    throw new BackupError('snapshot-corrupt', `backup ${m.id}: the fetched snapshot is not the one that was backed up (its sha256 values match the manifest, its content does not): ${diffs.join('; ')}`);
  }
  log.info({ files: fetched.files.length }, 'restore drill: fetched and verified the backup');
  return { snapshot, totalKey: snap.totalKey };
}
