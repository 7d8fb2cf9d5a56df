import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupError } from '../errors.js';
import { mkdirPrivate } from '../fsutil.js';

export interface RunLock {
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One run at a time per node: an O_EXCL lock file holding the owner's pid.
 * A lock left by a process that died (SIGKILL, power loss) is taken over,
 * otherwise a crashed daemon would block every later backup.
 */
export async function acquireRunLock(workDir: string, what: string): Promise<RunLock> {
  await mkdirPrivate(workDir);
  const path = join(workDir, 'run.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(JSON.stringify({ pid: process.pid, what, since: new Date().toISOString() }));
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
      let holder: { pid?: number; what?: string; since?: string } = {};
      try {
        holder = JSON.parse(await readFile(path, 'utf8'));
      } catch {
        /* half-written by a process that died right after creating it */
      }
      if (holder.pid && alive(holder.pid)) {
        throw new BackupError('lock-busy', `another backup is running on this node (pid ${holder.pid}, ${holder.what ?? 'run'} since ${holder.since ?? '?'})`, {
          hint: 'wait for it to finish; a running daemon executes CLI backups itself when asked through its control socket',
        });
      }
      await rm(path, { force: true });
    }
  }
  throw new BackupError('lock-busy', `cannot take the run lock ${path}`);
}
