import { constants, createReadStream } from 'node:fs';
import { chmod, copyFile, link, opendir, readdir, rm, rmdir, stat, utimes } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { sha256Of } from '../../bundle/hash.js';
import type { Readable } from 'node:stream';
import { fileChunks } from '../file-chunks.js';
import { BackupError } from '../../errors.js';
import { commitTemp, fsyncPath, mkdirPrivate, tempNameFor, writeFileAtomic } from '../../fsutil.js';
import {
  abortedByShutdown,
  checkListExclude,
  DEFAULT_STORE_SETTINGS,
  ObjectExistsError,
  type ListOptions,
  type ObjectInfo,
  type OpOptions,
  type PutOptions,
  type PutResult,
  type Store,
  type StoreSettings,
  type TransferOptions,
} from '../store.js';
import { LOCAL_CAPABILITIES } from './index.js';

/**
 * The filesystem's own "there is no such file": ENOENT, or ENOTDIR (a path
 * component is a file, so nothing can be below it). Anything else (EIO,
 * EACCES, a stale NFS handle) is an error, never "absent".
 */
function isAbsent(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * A directory on this node or a mounted NFS share. Objects are files under
 * `root`; writes are temp-name + fsync + rename, so a crash leaves either the
 * old state or the whole new file, plus at worst a dot-temp file that list
 * ignores.
 */
export class LocalStore implements Store {
  readonly type = 'local';
  readonly caps = LOCAL_CAPABILITIES;
  constructor(
    readonly name: string,
    private readonly root: string,
    readonly settings: StoreSettings = DEFAULT_STORE_SETTINGS,
  ) {}

  private pathOf(key: string): string {
    const p = resolve(this.root, key);
    if (key.startsWith('/') || key.split('/').some((seg) => seg === '..' || seg === '.' || seg === '') || !p.startsWith(resolve(this.root) + sep)) {
      throw new BackupError('internal', `refusing object key outside the store: ${JSON.stringify(key)}`);
    }
    return p;
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<PutResult> {
    const path = this.pathOf(key);
    try {
      const size = await writeFileAtomic(path, body, { exclusive: opts.ifAbsent === true });
      return { key, size };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && opts.ifAbsent) throw new ObjectExistsError(this.name, key);
      throw this.writeFailed(path, e);
    }
  }

  /**
   * On the same filesystem the sealed bundle is hard-linked into the store:
   * no second gigabyte of writes on a master whose etcd is waiting on the same
   * disk, and the object is the very file whose sha256 was taken while it was
   * written. Across filesystems (an NFS mount) it is a kernel copy (reflink
   * where the filesystem has one) with fsync. Either way temp name + rename.
   */
  async putFile(key: string, from: string, opts: PutOptions = {}): Promise<PutResult> {
    const { signal } = opts;
    const path = this.pathOf(key);
    if (signal?.aborted) throw abortedByShutdown(this.name, `upload of ${key}`);
    const tmp = tempNameFor(path);
    try {
      await mkdirPrivate(dirname(path));
      let sameFile = true;
      try {
        await link(from, tmp);
        // A link keeps the bundle's seal time; prune judges a manifest-less object by its age
        // (incompleteGrace), so an outbox retry of an old bundle must not look like an abandoned upload.
        const now = new Date();
        await utimes(tmp, now, now);
      } catch {
        // EXDEV across filesystems; EPERM/ENOTSUP where hard links are not allowed. A copy works wherever a link could not.
        sameFile = false;
        await copyFile(from, tmp, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
        await chmod(tmp, 0o600);
        await fsyncPath(tmp);
      }
      if (signal?.aborted) throw abortedByShutdown(this.name, `upload of ${key}`);
      await commitTemp(tmp, path, opts.ifAbsent === true);
      return { key, size: (await stat(path)).size, sameFile };
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && opts.ifAbsent) throw new ObjectExistsError(this.name, key);
      throw e instanceof BackupError ? e : this.writeFailed(path, e);
    }
  }

  private writeFailed(path: string, e: unknown): BackupError {
    const code = (e as NodeJS.ErrnoException).code;
    return new BackupError('upload-failed', `store ${this.name}: writing ${path} failed: ${code ?? (e as Error).message}`, {
      cause: e,
      hint: code === 'ENOSPC' ? 'the store is full: free space or prune' : code === 'EACCES' || code === 'EROFS' ? 'the store directory is not writable' : undefined,
    });
  }

  async head(key: string, _opts?: OpOptions): Promise<ObjectInfo | undefined> {
    try {
      const st = await stat(this.pathOf(key));
      return st.isFile() ? { key, size: st.size, modifiedAt: st.mtime } : undefined;
    } catch (e) {
      if (isAbsent(e)) return undefined;
      throw e;
    }
  }

  async get(key: string, opts: TransferOptions = {}): Promise<Readable> {
    const path = this.pathOf(key);
    // Open eagerly so a missing object fails here, not on the first read.
    await stat(path).catch((e: NodeJS.ErrnoException) => {
      throw new BackupError(isAbsent(e) ? 'not-found' : 'store-unavailable', `store ${this.name}: cannot read ${key}: ${e.code}`);
    });
    return createReadStream(path, { highWaterMark: 1 << 20, ...(opts.signal ? { signal: opts.signal } : {}) });
  }

  async readBackSha256(key: string, opts: TransferOptions = {}): Promise<{ bytes: number; sha256: string }> {
    const path = this.pathOf(key);
    const { signal, onProgress } = opts;
    const name = this.name;
    async function* chunks(): AsyncGenerator<Buffer> {
      for await (const c of fileChunks(path, 1 << 20, signal, () => abortedByShutdown(name, `reading back ${key}`))) {
        onProgress?.(c.length);
        yield c;
      }
    }
    try {
      return await sha256Of(chunks());
    } catch (e) {
      if (e instanceof BackupError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new BackupError(code === 'ENOENT' ? 'not-found' : 'store-unavailable', `store ${this.name}: cannot read ${key}: ${code ?? (e as Error).message}`, { cause: e });
    }
  }

  /** A local disk has no server to ask: the read-back is as cheap. */
  async serverSha256(_key: string, _opts?: OpOptions): Promise<undefined> {
    return undefined;
  }

  async *list(prefix: string, opts: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const signal = opts.signal;
    // The excluded subtree is one directory: never opened.
    const exclude = checkListExclude(this.name, prefix, opts.exclude);
    const start = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const root = resolve(this.root);
    const walk = async function* (dir: string): AsyncIterable<ObjectInfo> {
      let handle;
      try {
        handle = await opendir(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      const entries: string[] = [];
      for await (const d of handle) {
        signal?.throwIfAborted();
        if (d.name.startsWith('.')) continue; // temp files of unfinished writes
        entries.push(d.name);
        if (d.isDirectory()) entries[entries.length - 1] += '/';
      }
      entries.sort();
      for (const name of entries) {
        const full = join(dir, name);
        if (name.endsWith('/')) {
          if (exclude !== undefined && `${relative(root, full).split(sep).join('/')}/` === exclude) continue;
          yield* walk(full);
          continue;
        }
        const key = relative(root, full).split(sep).join('/');
        if (!key.startsWith(prefix)) continue;
        const st = await stat(full).catch(() => undefined);
        if (st?.isFile()) yield { key, size: st.size, modifiedAt: st.mtime };
      }
    };
    yield* walk(start ? join(root, start) : root);
  }

  async cleanupIncomplete(prefix: string, olderThan: Date, opts: OpOptions = {}): Promise<string[]> {
    const signal = opts.signal;
    const removed: string[] = [];
    const root = resolve(this.root);
    const start = join(root, prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '');
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const d of entries) {
        signal?.throwIfAborted();
        const full = join(dir, d.name);
        if (d.isDirectory()) await walk(full);
        else if (/^\..+\.tmp-[0-9a-f]+$/.test(d.name)) {
          const st = await stat(full).catch(() => undefined);
          if (st && st.mtime < olderThan) {
            await rm(full, { force: true });
            removed.push(relative(root, full).split(sep).join('/'));
          }
        }
      }
    };
    await walk(start);
    return removed;
  }

  async delete(keys: string[], opts: OpOptions = {}): Promise<void> {
    const dirs = new Set<string>();
    for (const key of keys) {
      opts.signal?.throwIfAborted();
      const p = this.pathOf(key);
      await rm(p, { force: true });
      dirs.add(dirname(p));
    }
    // Remove directories left empty, so a pruned backup leaves no trace.
    for (const d of dirs) {
      let dir = d;
      while (dir.startsWith(resolve(this.root) + sep)) {
        try {
          await rmdir(dir);
        } catch {
          break;
        }
        dir = dirname(dir);
      }
    }
  }

  /** Nothing to release. */
  async close(): Promise<void> {}
}
