import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import type { Logger } from '../log.js';
import { captureCommand } from '../source/exec.js';

export interface PrioritySettings {
  /** CPU niceness to run at (0-19); 0 leaves it as it is. */
  nice: number;
  /** I/O scheduling class: best-effort (with ioLevel), idle, or none (leave it). */
  ioClass: 'best-effort' | 'idle' | 'none';
  /** best-effort level, 0 (highest) to 7 (lowest). */
  ioLevel: number;
}

/** How long `ionice` may take; it is a local syscall wrapper. */
const IONICE_TIMEOUT_MS = 5_000;

/** The ids of this process's threads: Linux keeps nice and I/O priority per thread. */
function threadIds(): number[] {
  try {
    return readdirSync('/proc/self/task').map(Number).filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [process.pid];
  }
}

/**
 * Lowers this process's CPU and I/O priority, as the systemd unit does with
 * Nice=/IOSchedulingClass=, so that etcd's fsyncs and request handling win
 * over the backup on a busy master. The DaemonSet has no such field (and a
 * manual `backup` none at all), so the process does it itself. Linux keeps
 * both per thread: every existing thread is changed, and threads started
 * later (libuv's pool that runs zstd and hashing) inherit it. Only ever
 * lowers; a failure (no ionice in the image, a seccomp profile) is logged
 * and the backup runs at the priority it has.
 */
export async function lowerOwnPriority(p: PrioritySettings, log: Logger): Promise<void> {
  const tids = threadIds();
  if (p.nice > 0) {
    let changed = 0;
    for (const tid of tids) {
      try {
        if (getPriority(tid) < p.nice) {
          setPriority(tid, p.nice);
          changed++;
        }
      } catch {
        // A thread that ended meanwhile, or no permission: nothing to do.
      }
    }
    if (changed) log.debug({ nice: p.nice, threads: changed }, 'CPU priority lowered');
  }
  if (p.ioClass === 'none') return;
  const args = p.ioClass === 'idle' ? ['-c', '3'] : ['-c', '2', '-n', String(p.ioLevel)];
  const argv = ['ionice', ...args, '-p', ...tids.map(String)];
  const opts = { env: process.env, cwd: process.cwd(), signal: AbortSignal.timeout(IONICE_TIMEOUT_MS), log, what: 'ionice' };
  const failed = await captureCommand(argv, opts).then(
    (r) => (r.code === 0 ? undefined : r.tail.join('; ') || `exit ${r.code ?? r.signal}`),
    (e: NodeJS.ErrnoException) => e.code ?? e.message,
  );
  if (failed) log.warn({ err: failed, ioClass: p.ioClass }, 'could not lower the I/O priority (ionice); the backup runs at the I/O priority it has');
  else log.debug({ ioClass: p.ioClass, ioLevel: p.ioLevel }, 'I/O priority lowered');
}
