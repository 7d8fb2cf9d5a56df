import type { Config } from '../config/load.js';
import { BackupError, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { RecoveryKitMetrics } from './metrics.js';
import { planKit } from './plan.js';
import { restoreText, type KitMember } from './restore-text.js';
import { writeKit } from './write.js';

/** Whether this process is the single executable (scripts/package.mjs): only then is process.execPath the program. */
export function runningAsSea(): boolean {
  try {
    // getBuiltinModule works in the ESM build and the CJS bundle alike; node:sea exists from Node 20.
    const sea = process.getBuiltinModule?.('node:sea') as { isSea?: () => boolean } | undefined;
    return sea?.isSea?.() === true;
  } catch {
    return false;
  }
}

export interface RefreshDeps {
  cfg: Config;
  log: Logger;
  metrics?: RecoveryKitMetrics;
  members?: KitMember[];
  membersSeenAt?: string;
  /** The executable to put in the kit; default: process.execPath when running as the SEA. */
  executable?: string;
  /** What led to this refresh: the daemon's start (config loaded) or a successful run. */
  trigger: 'start' | 'run';
}

/**
 * Refreshes the recovery kit, best effort: a failure is logged and counted,
 * never thrown (a kit must never fail a backup). Returns whether it worked;
 * false also when recovery.dir is "" (off).
 */
export async function refreshRecoveryKit(d: RefreshDeps): Promise<boolean> {
  const dir = d.cfg.recovery.dir;
  if (!dir) return false;
  const executable = d.executable ?? (runningAsSea() ? process.execPath : undefined);
  try {
    const plan = planKit(d.cfg);
    const now = new Date();
    const text = restoreText({ cfg: d.cfg, plan, kitDir: dir, executable: executable !== undefined, members: d.members, membersSeenAt: d.membersSeenAt, now });
    await writeKit(dir, { plan, restoreText: text, executable });
    d.metrics?.recordRefresh(now, executable !== undefined);
    const fields = { dir, trigger: d.trigger, files: plan.files.length, members: d.members?.length ?? 0, executable: executable !== undefined };
    d.log.info(fields, 'recovery kit refreshed');
    if (!executable) d.log.warn({ dir }, 'recovery kit has no executable: the daemon does not run as the single executable (RESTORE.txt says so)');
    return true;
  } catch (e) {
    d.metrics?.recordFailure();
    // Anything unexpected here is still a kit problem, not the program's: one stable reason for it.
    const reason = e instanceof BackupError ? e.reason : 'recovery-kit-failed';
    const hint = e instanceof BackupError ? e.hint : 'recovery.dir and its parent must be directories the daemon can write (and not a mount point)';
    d.log.warn({ dir, trigger: d.trigger, reason, err: messageOf(e), hint }, 'recovery kit refresh failed (the backup is not affected; the previous kit stays)');
    return false;
  }
}
