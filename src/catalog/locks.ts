import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../storage/store.js';

/** A backup retention would remove, held back until its Object Lock expires. */
export interface LockWait {
  id: string;
  /** The latest lock expiry among the backup's objects: prune can delete it after this. */
  until: Date;
  /** A manifest-less leftover (an interrupted upload), not a committed backup. */
  incomplete?: boolean;
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
  for (const key of keys) {
    const until = (await store.head(key))?.lockedUntil;
    if (until && until > now && (!latest || until > latest)) latest = until;
  }
  return latest;
}

/**
 * Whether prune may go on with a backup: false when one of its objects is
 * still locked (recorded in `waiting` and logged at info: a lock is the
 * policy working, not a failure) or when the locks could not be read (an
 * error: nothing is deleted on a guess).
 */
export async function clearOfLocks(
  store: Store,
  item: { id: string; keys: string[]; incomplete?: boolean },
  out: { waitingForLock: LockWait[]; errors: string[] },
  log: Logger,
): Promise<boolean> {
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
  log.info({ store: store.name, id: item.id, until: until.toISOString() }, 'backup waits for its object lock to expire before prune removes it');
  return false;
}
