import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../storage/store.js';
import { parseDurationSeconds } from '../units/duration.js';

/** A backup retention would remove, held back until its Object Lock expires. */
export interface LockWait {
  id: string;
  /** The latest lock expiry among the backup's objects: prune can delete it after this. */
  until: Date;
  /** A manifest-less leftover (an interrupted upload), not a committed backup. */
  incomplete?: boolean;
  /**
   * `until` is the backup's time plus the store's lockRetain, a lower bound:
   * the store was not asked, because no lock written then can have expired yet.
   */
  estimated?: boolean;
}

/**
 * The latest Object Lock expiry still ahead among `keys`, or undefined when
 * none of them is locked now (always, on a store without `caps.objectLock`).
 * One HEAD per key: prune asks only for the backups it is about to delete,
 * and asks before deleting any of their objects, so a backup is never left
 * half deleted (its manifest gone, its bundle locked).
 */
export async function lockedUntil(store: Store, keys: string[], now = new Date()): Promise<Date | undefined> {
  if (!store.caps.objectLock) return undefined;
  let latest: Date | undefined;
  for (let i = 0; i < keys.length; i += 8) {
    for (const info of await Promise.all(keys.slice(i, i + 8).map((k) => store.head(k)))) {
      const until = info?.lockedUntil;
      if (until && until > now && (!latest || until > latest)) latest = until;
    }
  }
  return latest;
}

/**
 * Whether prune may go on with a backup: false when one of its objects is
 * still locked (recorded in `waitingForLock`, which prune logs at info: a
 * lock is the policy working, not a failure) or when the locks could not be
 * read (an error: nothing is deleted on a guess).
 */
export async function clearOfLocks(
  store: Store,
  item: { id: string; keys: string[]; incomplete?: boolean; /** When its objects were written, at the earliest. */ writtenAt?: Date },
  out: { waitingForLock: LockWait[]; errors: string[] },
  log: Logger,
): Promise<boolean> {
  // A backup younger than the lock period is locked for sure: no HEAD per object on every run for
  // the hundreds a policy shorter than the lock leaves waiting.
  const floor = item.writtenAt && store.settings.lockRetain ? new Date(item.writtenAt.getTime() + parseDurationSeconds(store.settings.lockRetain) * 1000) : undefined;
  if (floor && floor > new Date()) {
    out.waitingForLock.push({ id: item.id, until: floor, estimated: true, ...(item.incomplete ? { incomplete: true } : {}) });
    return false;
  }
  let until: Date | undefined;
  try {
    // The lock is on the server's clock, which ours follows: the real now, never a planning time.
    until = await lockedUntil(store, item.keys, new Date());
  } catch (e) {
    out.errors.push(`${item.id}: cannot read its object locks: ${messageOf(e)}`);
    log.error({ store: store.name, id: item.id, err: messageOf(e) }, 'prune skipped a backup: cannot read its object locks');
    return false;
  }
  if (!until) return true;
  out.waitingForLock.push({ id: item.id, until, ...(item.incomplete ? { incomplete: true } : {}) });
  return false;
}
