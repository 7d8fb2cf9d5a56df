import { readFileSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupError } from '../errors.js';
import { mkdirPrivate } from '../fsutil.js';

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

/**
 * One run at a time per node: an O_EXCL lock file holding the owner's pid.
 * A lock left by a process that died (SIGKILL, power loss) is taken over,
 * otherwise a crashed daemon would block every later backup.
 */
export async function acquireRunLock(workDir: string, what: string, name: 'run.lock' | 'outbox.lock' = 'run.lock'): Promise<RunLock> {
  await mkdirPrivate(workDir);
  const path = join(workDir, name);
  for (let attempt = 0; attempt < 2; attempt++) {
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
      let holder: { pid?: number; startTime?: string; what?: string; since?: string } = {};
      try {
        holder = JSON.parse(await readFile(path, 'utf8'));
      } catch {
        /* half-written by a process that died right after creating it */
      }
      if (holder.pid && alive(holder.pid, holder.startTime)) {
        throw new BackupError('lock-busy', `${name === 'run.lock' ? 'another backup is running' : 'another outbox delivery is running'} on this node (pid ${holder.pid}, ${holder.what ?? 'run'} since ${holder.since ?? '?'})`, {
          hint: 'wait for it to finish; a running daemon executes CLI backups itself when asked through its control socket',
        });
      }
      await rm(path, { force: true });
    }
  }
  throw new BackupError('lock-busy', `cannot take the run lock ${path}`);
}

/** Whether a live process holds the lock (without taking it). */
export async function isLockHeld(workDir: string, name: 'run.lock' | 'outbox.lock' = 'run.lock'): Promise<boolean> {
  try {
    const holder = JSON.parse(await readFile(join(workDir, name), 'utf8')) as { pid?: number; startTime?: string };
    return holder.pid !== undefined && alive(holder.pid, holder.startTime);
  } catch {
    return false;
  }
}
