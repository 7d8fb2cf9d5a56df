/**
 * The drill's directory below scratchDir: a fresh 0700 dir per drill with an
 * owner file, enough free space, and the leftovers of a drill interrupted by
 * a crash removed (its etcd killed) by the next one.
 */
import { chmod, mkdtemp, readdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { BackupError } from '../errors.js';
import { mkdirPrivate } from '../fsutil.js';
import type { Logger } from '../log.js';
import { killGroup } from '../source/exec.js';

const OWNER_FILE = 'drill-owner.json';
const DIR_PREFIX = 'drill-';
const MIB = 1024 * 1024;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes drill dirs in scratchDir whose owning process is gone, first
 * killing an etcd that still serves from one (only a process whose command
 * line names that very dir). Dirs of a live drill (another process, e.g. the
 * CLI while the daemon drills) are left alone.
 */
async function cleanupStaleDrills(scratchDir: string, log: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(scratchDir);
  } catch {
    return;
  }
  for (const name of names.filter((n) => n.startsWith(DIR_PREFIX))) {
    const dir = join(scratchDir, name);
    let owner: { pid?: number; etcdPid?: number } = {};
    try {
      owner = JSON.parse(await readFile(join(dir, OWNER_FILE), 'utf8')) as typeof owner;
    } catch {
      // No owner file: a drill that crashed right after creating its dir, or one
      // (in another process) that is about to write it: leave young ones alone.
      const st = await stat(dir).catch(() => undefined);
      if (!st || Date.now() - st.mtimeMs < 10 * 60_000) continue;
    }
    if (typeof owner.pid === 'number' && owner.pid !== process.pid && processAlive(owner.pid)) continue;
    if (owner.pid === process.pid) continue; // a concurrent drill in this process
    if (typeof owner.etcdPid === 'number' && processAlive(owner.etcdPid)) {
      const cmdline = await readFile(`/proc/${owner.etcdPid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(dir)) {
        log.warn({ dir, pid: owner.etcdPid }, 'killing the etcd of an interrupted restore drill');
        killGroup(owner.etcdPid, 'SIGKILL');
        try {
          process.kill(owner.etcdPid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    log.warn({ dir }, 'removing the files of an interrupted restore drill');
    await rm(dir, { recursive: true, force: true });
  }
}

function safeName(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80);
}

async function checkFreeSpace(dir: string, m: Manifest): Promise<void> {
  const need = (m.object?.size ?? 0) + Math.ceil(m.etcd.totalSize * 1.2) + 128 * MIB;
  let free: number;
  try {
    const st = await statfs(dir);
    free = st.bavail * st.bsize;
  } catch {
    return; // cannot tell: let the writes fail if they must
  }
  if (free < need) {
    throw new BackupError(
      'preflight-disk-space',
      `restore drill of ${m.id}: ${dir} has ${Math.floor(free / MIB)} MiB free, the drill needs about ${Math.ceil(need / MIB)} MiB (bundle + restored data dir + WAL)`,
      { hint: 'free space there or point the drill at a larger scratch directory' },
    );
  }
}

/** Records who owns a drill dir (this process, and the drill etcd once it runs) for cleanupStaleDrills. */
export async function writeOwner(dir: string, startedAt: string, etcdPid?: number): Promise<void> {
  await writeFile(join(dir, OWNER_FILE), JSON.stringify({ pid: process.pid, etcdPid, startedAt }), { mode: 0o600 });
}

/**
 * Creates this drill's 0700 dir below scratchDir (created 0700 if missing)
 * after removing what interrupted drills left there; `onCreated` learns the
 * dir before anything can fail, so that the caller removes it in any case.
 * Then checks the free space the drill needs.
 */
export async function createDrillDir(scratchDir: string, m: Manifest, startedAt: string, log: Logger, onCreated: (dir: string) => void): Promise<string> {
  await mkdirPrivate(scratchDir);
  await cleanupStaleDrills(scratchDir, log);
  const dir = await mkdtemp(join(scratchDir, `${DIR_PREFIX}${safeName(m.id)}-`));
  onCreated(dir);
  await chmod(dir, 0o700);
  await writeOwner(dir, startedAt);
  await checkFreeSpace(dir, m);
  return dir;
}
