import { readFileSync } from 'node:fs';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { BackupError } from '../errors.js';
import { mkdirPrivate } from '../fsutil.js';
import { lockPath, type LockName } from '../layout.js';

export interface RunLock {
  release(): Promise<void>;
}

/** The kernel's start time of a process (clock ticks since boot), to tell a pid from its reuse. */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22; the command name (field 2) may hold spaces, so count from its closing parenthesis.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * A lock is held if its process is alive AND is the same process that took
 * it: in a container every life of the daemon is pid 1, so a pid alone would
 * make the lock of a killed predecessor look held forever.
 */
function alive(pid: number, startTime?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (startTime === undefined) return true;
  const now = startTimeOf(pid);
  return now === undefined || now === startTime;
}

type Holder = { pid?: number; startTime?: string; what?: string; since?: string };

async function readHolder(path: string): Promise<{ text: string; holder: Holder } | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return { text, holder: JSON.parse(text) as Holder };
  } catch {
    return { text, holder: {} }; // half-written by a process that died right after creating it
  }
}

/** A takeover guard older than this was left by a process that died inside the few statements it covers. */
const TAKEOVER_STALE_MS = 10_000;

/**
 * Removes a stale lock, but only the very one we judged stale: two starters
 * that both saw it stale would otherwise each remove it, and the second
 * would remove the first one's fresh lock. Only the holder of the takeover
 * guard (an O_EXCL file) may remove it, after checking it is unchanged.
 */
async function removeStale(path: string, staleText: string): Promise<void> {
  const guard = `${path}.takeover`;
  let fh;
  try {
    fh = await open(guard, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const st = await stat(guard).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > TAKEOVER_STALE_MS) await rm(guard, { force: true });
    return; // someone else is taking over: our next attempt sees what they did
  }
  try {
    const now = await readHolder(path);
    if (now && now.text === staleText) await rm(path, { force: true });
  } finally {
    await fh.close();
    await rm(guard, { force: true });
  }
}

/**
 * One run at a time per node: an O_EXCL lock file holding the owner's pid.
 * A lock left by a process that died (SIGKILL, power loss) is taken over,
 * otherwise a crashed daemon would block every later backup.
 */
export async function acquireRunLock(workDir: string, what: string, name: LockName = 'run.lock'): Promise<RunLock> {
  await mkdirPrivate(workDir);
  const path = lockPath(workDir, name);
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(JSON.stringify({ pid: process.pid, startTime: startTimeOf(process.pid), what, since: new Date().toISOString() }));
      await fh.close();
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          await rm(path, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const seen = await readHolder(path);
      if (!seen) continue; // released meanwhile
      const holder = seen.holder;
      // A file without a pid may be one that its creator has not written yet: young means busy.
      const young = !holder.pid && Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? 0) < 5000;
      if (young || (holder.pid && alive(holder.pid, holder.startTime))) {
        throw new BackupError('lock-busy', `${name === 'run.lock' ? 'another backup is running' : 'another outbox delivery is running'} on this node (pid ${holder.pid ?? '?'}, ${holder.what ?? 'run'} since ${holder.since ?? '?'})`, {
          hint: 'wait for it to finish; a running daemon executes CLI backups itself when asked through its control socket',
        });
      }
      await removeStale(path, seen.text);
      await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
    }
  }
  throw new BackupError('lock-busy', `cannot take the run lock ${path}: it keeps changing hands`);
}

/** Whether a live process holds the lock (without taking it). */
export async function isLockHeld(workDir: string, name: LockName = 'run.lock'): Promise<boolean> {
  const seen = await readHolder(lockPath(workDir, name)).catch(() => undefined);
  return seen?.holder.pid !== undefined && alive(seen.holder.pid, seen.holder.startTime);
}
