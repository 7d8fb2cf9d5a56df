import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupError } from '../errors.js';
import type { SourceArtifacts } from './source.js';

const SNAPSHOT_RE = /^snapshot_(.+?)(__POSSIBLY_DIRTY__)?\.db$/;
const STATIC_RE = /^static_kuberesources_(.+?)(__POSSIBLY_DIRTY__)?\.tar\.gz$/;

/** Picks up the two files the script leaves, insisting on exactly one pair, non-empty. */
export async function findArtifacts(dir: string, producer: string): Promise<SourceArtifacts> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const snaps = names.filter((n) => SNAPSHOT_RE.test(n));
  const statics = names.filter((n) => STATIC_RE.test(n));
  if (snaps.length !== 1) {
    throw new BackupError(
      'source-missing-artifact',
      snaps.length === 0 ? `${producer} exited 0 but left no snapshot_*.db in ${dir}` : `${producer} left ${snaps.length} snapshot files in ${dir}: ${snaps.join(', ')}`,
    );
  }
  if (statics.length !== 1) {
    throw new BackupError(
      'source-missing-artifact',
      statics.length === 0
        ? `${producer} exited 0 but left no static_kuberesources_*.tar.gz in ${dir}`
        : `${producer} left ${statics.length} static resource archives in ${dir}: ${statics.join(', ')}`,
    );
  }
  const out: SourceArtifacts = {
    snapshot: join(dir, snaps[0]!),
    staticResources: join(dir, statics[0]!),
    possiblyDirty: SNAPSHOT_RE.exec(snaps[0]!)![2] !== undefined,
  };
  for (const p of [out.snapshot, out.staticResources]) {
    const st = await stat(p);
    if (!st.isFile() || st.size === 0) throw new BackupError('source-empty-artifact', `${producer} left an empty or non-regular file: ${p}`);
  }
  return out;
}

const LEFTOVER_RE = /^(snapshot_.*\.db(\.part)?|static_kuberesources_.*\.tar\.gz)$/;

/**
 * Removes what a failed or killed source left in its run directory: the
 * `.part` the real script's trap keeps, and any half-written file. Snapshots
 * and the archive's private keys must not linger on the node.
 */
export async function removeLeftovers(dir: string): Promise<string[]> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => LEFTOVER_RE.test(n));
  await Promise.all(names.map((n) => rm(join(dir, n), { force: true })));
  return names;
}
