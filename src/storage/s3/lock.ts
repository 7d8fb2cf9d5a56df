import type { ChecksumAlgorithm, ObjectLockMode } from '@aws-sdk/client-s3';
import type { S3ObjectLock, S3StoreConfig } from './index.js';
import { BackupError } from '../../errors.js';
import { parseDurationSeconds } from '../../units/duration.js';
import type { ObjectInfo } from '../store.js';

/**
 * S3 Object Lock (WORM) as the S3 store uses it: what every write carries,
 * and how a lock reads back. The retention is set per object at write time
 * (not left to a bucket default) so the daemon knows, from a HEAD, until when
 * each object it wrote stays locked.
 */
export interface LockParams {
  ObjectLockMode?: ObjectLockMode;
  ObjectLockRetainUntilDate?: Date;
  /**
   * AWS refuses a write to a lock bucket without an integrity header
   * (Content-MD5 or x-amz-checksum-*). The client computes checksums only when
   * required (S3-compatible servers break on the SDK's default): naming the
   * algorithm makes it send x-amz-checksum-crc32 over each (buffered) body.
   */
  ChecksumAlgorithm?: ChecksumAlgorithm;
}

/** The lock parameters of a write starting at `now`: retain-until rounded up to a whole second. */
export function lockParams(lock: S3ObjectLock | undefined, now = Date.now()): LockParams {
  if (!lock) return {};
  const until = Math.ceil((now + parseDurationSeconds(lock.retain) * 1000) / 1000) * 1000;
  return { ObjectLockMode: lock.mode, ObjectLockRetainUntilDate: new Date(until), ChecksumAlgorithm: 'CRC32' };
}

/** What a HEAD said about the lock, for ObjectInfo (nothing when the object has none). */
export function lockInfo(r: { ObjectLockMode?: string; ObjectLockRetainUntilDate?: Date }): { lockedUntil?: Date; lockMode?: string } {
  const until = r.ObjectLockRetainUntilDate;
  if (!(until instanceof Date) || Number.isNaN(until.getTime())) return {};
  return { lockedUntil: until, ...(r.ObjectLockMode ? { lockMode: r.ObjectLockMode } : {}) };
}

/**
 * The hint for an error that comes of Object Lock, or undefined: a bucket
 * without a lock configuration refuses lock headers (AWS: 400 InvalidRequest
 * "Bucket is missing Object Lock Configuration"); a lock bucket refuses a
 * write without Content-MD5 or x-amz-checksum-* (400 InvalidRequest).
 */
export function lockHint(cfg: Pick<S3StoreConfig, 'bucket' | 'objectLock'>, code: string, detail: string | undefined): string | undefined {
  if (code !== 'InvalidRequest' && code !== 'InvalidBucketState') return undefined;
  // AWS's integrity message mentions "Object Lock parameters" too: it is tested first.
  if (/content-md5|x-amz-checksum/i.test(detail ?? '')) {
    return cfg.objectLock
      ? 'the server wants an integrity header the client did not send; report this as a bug'
      : `bucket ${cfg.bucket} looks like an Object Lock bucket (it requires Content-MD5 or a checksum on every write): set stores[].objectLock`;
  }
  if (/object lock/i.test(detail ?? '')) {
    return `bucket ${cfg.bucket} has no Object Lock configuration: Object Lock is enabled when a bucket is created (it turns on versioning); use such a bucket or remove stores[].objectLock`;
  }
  return undefined;
}

/**
 * Throws `object-locked`, naming the key and the date, when any of `keys` is
 * locked now, before anything is deleted. On a lock bucket S3 answers a plain
 * DELETE of a locked object with a delete marker: the object vanishes from
 * listings while its locked version stays (and costs), so a backup would be
 * hidden without anything being freed. A lock only ever expires later, so a
 * key found unlocked here stays deletable.
 */
export async function assertUnlocked(keys: string[], head: (key: string) => Promise<ObjectInfo | undefined>, describe: (key: string) => string): Promise<void> {
  const now = Date.now();
  for (const key of keys) {
    const info = await head(key);
    if (info?.lockedUntil && info.lockedUntil.getTime() > now) {
      throw new BackupError('object-locked', `${describe(key)} is under Object Lock${info.lockMode ? ` (${info.lockMode})` : ''} until ${info.lockedUntil.toISOString()}: not deleted`, {
        hint: 'a locked object can be deleted once its lock expires; prune plans around locks and reports the backups that wait for one',
      });
    }
  }
}
