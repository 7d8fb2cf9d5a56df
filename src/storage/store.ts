import type { Readable } from 'node:stream';
import { sha256Of } from '../bundle/hash.js';
import { BackupError } from '../errors.js';

export interface ObjectInfo {
  key: string;
  size: number;
  modifiedAt?: Date;
  /** The server's entity tag, where it keeps one (S3): a listing shows when an object changed. */
  etag?: string;
  /**
   * Object Lock (WORM): the object may not be deleted before this time
   * (S3 ObjectLockRetainUntilDate). Only `head` reports it, and only on a
   * store with `caps.objectLock`; listings do not carry it.
   */
  lockedUntil?: Date;
  /** The lock's mode when `lockedUntil` is set (S3: GOVERNANCE or COMPLIANCE). */
  lockMode?: string;
}

export interface PutResult {
  key: string;
  size: number;
  /** The object is the very file given to putFile (a hard link), not a copy of it. */
  sameFile?: boolean;
}

/**
 * Every store operation runs under a signal. Callers pass their own (a
 * daemon shutdown, Ctrl-C); the guard (guard.ts) adds the deadline and the
 * stall watchdog, so a backend sees one signal that ends the operation for
 * any of those causes. Backends hand it to every network call they make.
 */
export interface OpOptions {
  signal?: AbortSignal;
}

/** A listing may leave out one subtree, unread. */
export interface ListOptions extends OpOptions {
  /**
   * A key prefix under the listed one, ending in '/' (a directory of the
   * layout, e.g. `<cluster>/continuous/`), whose objects are not listed. The
   * store does not walk it (local, SFTP) or jumps past it (S3), so a listing
   * costs the same however many objects it holds: the catalog's listing of a
   * cluster does not pay for every continuous-backup segment.
   */
  exclude?: string;
}

/** A transfer reports the bytes it moves, so a stall can be told from slow progress. */
export interface TransferOptions extends OpOptions {
  onProgress?: (bytes: number) => void;
}

export interface PutOptions extends TransferOptions {
  /** The size the body will have, when known (part sizes, a short-body check). */
  size?: number;
  /**
   * Create the object only if the key is free: an `ObjectExistsError` otherwise.
   * Atomic on the server where it can be (S3 If-None-Match, a link or an
   * SFTP rename that refuses an existing target); callers still check first
   * (an S3-compatible server may ignore If-None-Match).
   */
  ifAbsent?: boolean;
}

/**
 * Settings of one store that callers act on (config keys of every store
 * type): they travel with the store, so no caller looks them up by name.
 */
export interface StoreSettings {
  /** How delivery proves the remote copy: every byte hashed back, or the size alone. */
  verify: 'readback' | 'size';
  /** Incomplete uploads and manifest-less backups older than this (a duration) are removed by prune. */
  incompleteGrace: string;
  /**
   * With `caps.objectLock`: how long each write is locked (a duration). No
   * object is unlocked before its write time plus this, so prune need not
   * ask the server about a backup younger than that.
   */
  lockRetain?: string;
}

/** The schema's defaults (src/storage/registry.ts), for stores built by hand. */
export const DEFAULT_STORE_SETTINGS: StoreSettings = { verify: 'readback', incompleteGrace: '24h' };

/**
 * What a store can do beyond the basics, as data: callers branch on these,
 * never on the store's type or on whether a method exists. A store without a
 * capability still has the method, and it says so (undefined, [], or the
 * plain way of doing it).
 */
export interface StoreCapabilities {
  /** putFile does better than streaming the file through put() (a hard link, a kernel copy, parts read straight from the file). */
  putFile: boolean;
  /** serverSha256 can answer: the server hashes what it holds, a proof without pulling every byte back. */
  serverHash: boolean;
  /** readBackSha256 reads back cheaper than get() (a local file into one reused buffer). */
  readBack: boolean;
  /** cleanupIncomplete finds leftovers of interrupted writes (unfinished multipart uploads, temp files). */
  cleanupIncomplete: boolean;
  /**
   * Every object written carries a retention lock (S3 Object Lock): `head`
   * reports `lockedUntil`, `delete` refuses (reason `object-locked`) an
   * object whose lock holds, and prune plans around the locks.
   */
  objectLock: boolean;
}

/**
 * A flat key/value object store. Keys use '/' separators. Implementations
 * must make `put` atomic from a reader's point of view: an object is either
 * absent or whole (temp name + rename, or multipart complete).
 *
 * `head` answers undefined only when the server said the key is absent: any
 * error throws. An error is never "absent".
 */
export interface Store {
  readonly name: string;
  readonly type: string;
  readonly caps: StoreCapabilities;
  readonly settings: StoreSettings;
  put(key: string, body: Readable, opts?: PutOptions): Promise<PutResult>;
  head(key: string, opts?: OpOptions): Promise<ObjectInfo | undefined>;
  get(key: string, opts?: TransferOptions): Promise<Readable>;
  /**
   * Stores a local file. With `caps.putFile` the store does better than
   * streaming it (a hard link or a kernel copy on the same machine);
   * without, it streams the file through put().
   */
  putFile(key: string, path: string, opts?: PutOptions): Promise<PutResult>;
  /**
   * The sha256 of the object as computed by the server from what it holds,
   * or undefined when the server cannot compute one (always, without
   * `caps.serverHash`). Lets delivery prove a remote copy without pulling
   * every byte back over the wire.
   */
  serverSha256(key: string, opts?: OpOptions): Promise<string | undefined>;
  /**
   * Reads the whole object back and hashes it, the cheapest way this store
   * can (with `caps.readBack`: a local file into one reused buffer; without: get()).
   */
  readBackSha256(key: string, opts?: TransferOptions): Promise<{ bytes: number; sha256: string }>;
  /**
   * Every object under `prefix`, in key order, but none under `opts.exclude`
   * (checkListExclude). A server whose listing never ends is an error, never a hang.
   */
  list(prefix: string, opts?: ListOptions): AsyncIterable<ObjectInfo>;
  /**
   * Removes missing keys silently. With `caps.objectLock`, a key whose lock
   * has not expired fails the call with reason `object-locked` before any of
   * `keys` is deleted.
   */
  delete(keys: string[], opts?: OpOptions): Promise<void>;
  /**
   * Removes leftovers of interrupted writes older than `olderThan` under
   * `prefix`: unfinished multipart uploads (where the server can list
   * them), temp files of an SFTP/local rename that never happened. Returns
   * a description of each removed item, for the log ([] without `caps.cleanupIncomplete`).
   */
  cleanupIncomplete(prefix: string, olderThan: Date, opts?: OpOptions): Promise<string[]>;
  /** Releases connections and clients; a no-op where there are none. */
  close(): Promise<void>;
}

/**
 * The exclude of a listing, checked: a directory strictly under `prefix`
 * (a backend that walks directories skips exactly that one). Undefined when
 * there is none. A wrong one is a programming error, never a listing that
 * silently leaves out something else.
 */
export function checkListExclude(storeName: string, prefix: string, exclude: string | undefined): string | undefined {
  if (exclude === undefined) return undefined;
  if (!exclude.endsWith('/') || !exclude.startsWith(prefix) || exclude.length <= prefix.length || exclude.split('/').some((seg, i, a) => seg === '' && i < a.length - 1)) {
    throw new BackupError('internal', `store ${storeName}: listing ${JSON.stringify(prefix)} cannot exclude ${JSON.stringify(exclude)} (a directory under the prefix, ending in '/')`);
  }
  return exclude;
}

/** Whether a listed key lies in the excluded subtree (every backend filters with this too). */
export function isExcluded(key: string, exclude: string | undefined): boolean {
  return exclude !== undefined && key.startsWith(exclude);
}

/** readBackSha256 of a store without `caps.readBack`: the object through get(), hashed, reporting progress. */
export async function readBackByGet(store: Pick<Store, 'get'>, key: string, opts: TransferOptions = {}): Promise<{ bytes: number; sha256: string }> {
  const body = await store.get(key, { signal: opts.signal });
  async function* counted(): AsyncGenerator<Buffer> {
    for await (const c of body) {
      opts.onProgress?.((c as Buffer).length);
      yield c as Buffer;
    }
  }
  return sha256Of(counted());
}

/** The one error every store and delivery step gives when a daemon shutdown cuts it short. */
export function abortedByShutdown(store: string, what: string): BackupError {
  return new BackupError('upload-failed', `store ${store}: ${what} aborted because the daemon is shutting down`);
}

/** A put with `ifAbsent` met an existing object. */
export class ObjectExistsError extends BackupError {
  constructor(store: string, key: string) {
    super('id-conflict', `store ${store}: ${key} already exists; it is never overwritten`);
    this.name = 'ObjectExistsError';
  }
}

/**
 * What ended an operation whose signal fired: the signal's own reason when it
 * is one of ours (deadline, stall, shutdown), else `fallback`.
 */
export function abortReason(signal: AbortSignal | undefined, fallback: () => Error): Error {
  const r = signal?.reason;
  return r instanceof BackupError ? r : fallback();
}

/** Rejects as soon as `signal` fires, whatever `p` does: a backend that ignores its signal cannot hang the caller. */
export function raceSignal<T>(p: Promise<T>, signal: AbortSignal | undefined, onAbort: () => Error): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(abortReason(signal, onAbort));
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => {
      p.catch(() => undefined);
      reject(abortReason(signal, onAbort));
    };
    signal.addEventListener('abort', abort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', abort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', abort);
        reject(signal.aborted ? abortReason(signal, () => e as Error) : e);
      },
    );
  });
}
