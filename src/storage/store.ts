import type { Readable } from 'node:stream';

export interface ObjectInfo {
  key: string;
  size: number;
  modifiedAt?: Date;
}

export interface PutResult {
  key: string;
  size: number;
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
