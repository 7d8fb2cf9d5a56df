import type { Readable } from 'node:stream';
import { BackupError } from '../errors.js';

export interface ObjectInfo {
  key: string;
  size: number;
  modifiedAt?: Date;
}

export interface PutResult {
  key: string;
  size: number;
  /** The object is the very file given to putFile (a hard link), not a copy of it. */
  sameFile?: boolean;
}

/**
 * A flat key/value object store. Keys use '/' separators. Implementations
 * must make `put` atomic from a reader's point of view: an object is either
 * absent or whole (temp name + rename, or multipart complete).
 */
export interface Store {
  readonly name: string;
  readonly type: string;
  put(key: string, body: Readable, size?: number): Promise<PutResult>;
  head(key: string): Promise<ObjectInfo | undefined>;
  get(key: string): Promise<Readable>;
  /**
   * Stores a local file. Optional: a store that can do better than streaming
   * it (a hard link or a kernel copy on the same machine) implements this.
   */
  putFile?(key: string, path: string, signal?: AbortSignal): Promise<PutResult>;
  /**
   * The sha256 of the object as computed by the server from what it holds,
   * or undefined when the server cannot compute one. Optional: lets delivery
   * prove a remote copy without pulling every byte back over the wire.
   */
  serverSha256?(key: string, signal?: AbortSignal): Promise<string | undefined>;
  /**
   * Reads the whole object back and hashes it, the cheapest way this store
   * can (a local file into one reused buffer). Optional: get() is the default.
   */
  readBackSha256?(key: string): Promise<{ bytes: number; sha256: string }>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Removes missing keys silently. */
  delete(keys: string[]): Promise<void>;
  /**
   * Removes leftovers of interrupted writes older than `olderThan` under
   * `prefix`: unfinished multipart uploads (where the server can list
   * them), temp files of an SFTP/local rename that never happened. Returns
   * a description of each removed item, for the log.
   */
  cleanupIncomplete?(prefix: string, olderThan: Date): Promise<string[]>;
  close?(): Promise<void>;
}

/** The one error every store and delivery step gives when a daemon shutdown cuts it short. */
export function abortedByShutdown(store: string, what: string): BackupError {
  return new BackupError('upload-failed', `store ${store}: ${what} aborted because the daemon is shutting down`);
}
