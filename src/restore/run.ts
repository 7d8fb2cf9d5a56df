/**
 * The edge of `restore`: fetch and verify the backup into a private temp dir
 * next to the data dir, run the restore tool the plan names, and clean up
 * whatever happens. The decisions are in plan.ts.
 */
import { metered, type ProgressSink } from '../progress/model.js';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { checkSnapshot, fetchBackup } from '../catalog/fetch.js';
import { childEnv, toolError } from '../drill/tools.js';
import { BackupError, messageOf } from '../errors.js';
import { inspectSnapshot } from '../etcd/snapshot.js';
import { mkdirPrivate } from '../fsutil.js';
import type { Logger } from '../log.js';
import { captureCommand, type Captured } from '../source/exec.js';
import type { Store } from '../storage/store.js';
import { checkDataDir, restoreArgv, type DataDirState, type RestorePlan } from './plan.js';

/** What is at `dir`: restore goes only into a missing or empty directory. */
export async function dataDirState(dir: string): Promise<DataDirState> {
  const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) return 'missing';
  if (!st.isDirectory()) return 'not-a-directory';
  return (await readdir(dir)).length === 0 ? 'empty' : 'not-empty';
}

export interface RestoreRun {
  store: Store;
  manifest: Manifest;
  identities?: string[];
  plan: RestorePlan;
  signal: AbortSignal;
  log: Logger;
  /**
   * Writes the snapshot to restore into `dir` (the private fetch dir) instead
   * of fetching `manifest`'s: restore to a time replays segments onto the
   * base there (src/continuous/at-time.ts). A replayed snapshot is then
   * inspected (trailer, structure); the base alone is compared with its manifest.
   */
  produce?: (dir: string) => Promise<{ snapshot: string; replayed: boolean }>;
  /** Live progress of the download and the check (an interactive CLI). */
  progress?: ProgressSink;
}

export interface RestoreOutcome {
  /** The snapshot's revision (the restored one is this plus plan.bumpRevision). */
  revision: number;
  totalKey: number;
}

/**
 * Fetches into `<parent of data dir>/.etcd-backupd-restore-XXXX` (0700): the
 * same filesystem as the data dir, so a full disk shows before the restore,
 * and never a shared /tmp for a file holding every Secret. Removed afterwards
 * whatever happens; on a failed restore what the tool wrote goes too.
 */
export async function runRestore(r: RestoreRun): Promise<RestoreOutcome> {
  const { plan } = r;
  const parent = dirname(plan.dataDir);
  await mkdirPrivate(parent);
  const tmp = await mkdtemp(join(parent, '.etcd-backupd-restore-'));
  try {
    const fetched = r.produce ? await r.produce(join(tmp, 'backup')) : { ...(await fetchBackup(r.store, r.manifest, join(tmp, 'backup'), r.identities, r.signal, r.progress)), replayed: false };
    const snap = fetched.replayed ? await producedSnapshot(fetched.snapshot) : await checkSnapshot(r.manifest, fetched.snapshot, r.progress);
    // Checked again just before writing: the fetch can take minutes.
    const before = await dataDirState(plan.dataDir);
    checkDataDir(plan.dataDir, before);
    // etcdctl 3.4 refuses an existing data dir, even an empty one (etcdutl takes an empty one):
    // the empty dir goes, and comes back with its mode if the restore fails.
    const emptyMode = before === 'empty' && plan.tool === 'etcdctl' ? (await stat(plan.dataDir)).mode & 0o7777 : undefined;
    if (emptyMode !== undefined) await rmdir(plan.dataDir);
    try {
      await metered(r.progress, 'restore', {}, () => runTool(r, fetched.snapshot, tmp));
    } catch (e) {
      await undoRestore(plan.dataDir, before, emptyMode);
      throw e;
    }
    return { revision: snap.revision, totalKey: snap.totalKey };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** A snapshot made here (a replay): its own sha256 trailer and structure must hold; there is no manifest to compare with. */
async function producedSnapshot(path: string): Promise<{ revision: number; totalKey: number }> {
  const snap = await inspectSnapshot(path);
  if (snap.trailer !== 'ok') throw new BackupError('snapshot-corrupt', `the replayed snapshot ${path}: sha256 trailer ${snap.trailer}`);
  return snap;
}

async function runTool(r: RestoreRun, snapshot: string, cwd: string): Promise<void> {
  const { plan } = r;
  let c: Captured;
  try {
    // ETCDCTL_API=3 for etcdctl 3.4; the caller's ETCD_*/ETCDCTL_* are dropped: they would act as flags.
    c = await captureCommand(restoreArgv(plan, snapshot), { env: childEnv({ ETCDCTL_API: '3' }), cwd, signal: r.signal, log: r.log, what: `restore-${plan.tool}` });
  } catch (e) {
    throw new BackupError('restore-tool-missing', `cannot run ${plan.toolPath}: ${messageOf(e)}`, { hint: 'check the path given with --etcdutl / --etcdctl' });
  }
  if (r.signal.aborted) throw new BackupError('restore-failed', `restore of ${r.manifest.id} was interrupted; nothing was left in ${plan.dataDir}`);
  if (c.code !== 0) {
    throw new BackupError('restore-failed', `\`${plan.tool} snapshot restore\` of backup ${r.manifest.id} failed (${c.code !== null ? `exit ${c.code}` : `signal ${c.signal}`}): ${toolError(c.tail)}`, {
      hint: `the data dir was left as it was; check that ${plan.tool} matches the cluster's etcd version and that the disk has room for the snapshot`,
    });
  }
  if (!existsSync(join(plan.dataDir, 'member'))) {
    throw new BackupError('restore-failed', `\`${plan.tool} snapshot restore\` exited 0 but wrote no ${join(plan.dataDir, 'member')}`, {
      hint: `check that ${plan.toolPath} is etcdutl/etcdctl and not a wrapper that ignores --data-dir`,
    });
  }
}

/** Puts the target back as it was: removed when it was missing, emptied (or made again, same mode) when it was empty. */
async function undoRestore(dataDir: string, before: DataDirState, emptyMode: number | undefined): Promise<void> {
  if (before === 'missing') {
    await rm(dataDir, { recursive: true, force: true });
  } else if (before === 'empty') {
    for (const n of await readdir(dataDir).catch(() => [])) await rm(join(dataDir, n), { recursive: true, force: true });
    if (emptyMode !== undefined) {
      await mkdir(dataDir, { recursive: true });
      await chmod(dataDir, emptyMode);
    }
  }
}
