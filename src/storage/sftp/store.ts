import { randomBytes } from 'node:crypto';
import { stat as statLocal } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import type { FileEntryWithStats, SFTPWrapper, Stats } from 'ssh2';
import { parseDurationSeconds } from '../../units/duration.js';
import { BackupError, type Reason } from '../../errors.js';
import { fileChunks } from '../file-chunks.js';
import { settingsOf } from '../registry.js';
import { abortedByShutdown, checkListExclude, ObjectExistsError, readBackByGet, type ListOptions, type ObjectInfo, type OpOptions, type PutOptions, type PutResult, type Store, type TransferOptions } from '../store.js';
import { sftpCapabilities, type SftpStoreConfig } from './index.js';
import { hasExtension, ioLen, SftpReadStream, writeBody } from './io.js';
import { execOn, shellQuote } from './remote-exec.js';
import { FindListing, startOfPrefix } from './find-list.js';
import { walkTree } from './walk.js';
import { call, ConnectionLost, describe, errCode, SftpConnection, type Session } from './session.js';

export type { SftpStoreConfig };

/** SFTP status codes (draft-ietf-secsh-filexfer-02) that we act on. */
const SFTP_NO_SUCH_FILE = 2;
const SFTP_PERMISSION_DENIED = 3;

/** Temp files of unfinished puts: `.<basename>.tmp-<hex>`. list() skips every dot-file. */
const TEMP_RE = /^\..+\.tmp-[0-9a-f]+$/;

function isNoSuchFile(e: unknown): boolean {
  return errCode(e) === SFTP_NO_SUCH_FILE || errCode(e) === 'ENOENT';
}

interface PutState {
  /** Set once body bytes were consumed: a retry on a fresh connection is no longer possible. */
  bodyTouched: boolean;
  bodyFailed(): boolean;
  ifAbsent: boolean;
  onProgress?: (bytes: number) => void;
}

/**
 * An OpenSSH (or other SFTP) server. Objects are files under `path`; a put is
 * written to `.<name>.tmp-<random>` next to its final name and renamed over
 * it (posix-rename@openssh.com replaces atomically), so a reader sees either
 * the old object or the whole new one. The server's host key must match the
 * pin (hostKey or knownHostsFile) before anything else is sent.
 */
export class SftpStore implements Store {
  readonly type = 'sftp';
  readonly name: string;
  readonly caps;
  readonly settings;
  private readonly root: string;
  private readonly where: string;
  private readonly timeoutMs: number;
  private readonly conn: SftpConnection;
  private readonly finder: FindListing;

  constructor(private readonly cfg: SftpStoreConfig) {
    this.name = cfg.name;
    this.caps = sftpCapabilities(cfg);
    this.settings = settingsOf(cfg);
    const p = posix.normalize(cfg.path);
    this.root = p.length > 1 ? p.replace(/\/+$/, '') : p;
    this.where = `${cfg.host}:${cfg.port}`;
    this.timeoutMs = Math.max(1, parseDurationSeconds(cfg.timeout) * 1000);
    this.conn = new SftpConnection(cfg, this.where, this.timeoutMs);
    this.finder = new FindListing(this.where, Math.max(5_000, this.timeoutMs));
  }

  // ---------------------------------------------------------------- paths

  private checkKey(key: string, what = 'object key'): void {
    if (
      key === '' ||
      key.startsWith('/') ||
      key.includes('\0') ||
      key.split('/').some((seg) => seg === '..' || seg === '.' || seg === '')
    ) {
      throw new BackupError('internal', `store ${this.name}: refusing ${what} outside the store: ${JSON.stringify(key)}`);
    }
  }

  private remote(rel: string): string {
    return rel === '' ? this.root : posix.join(this.root, rel);
  }

  private call<T>(s: Session, fn: (sftp: SFTPWrapper, cb: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> {
    return call(s, this.where, fn);
  }

  /** Maps a failed request to a BackupError naming store, server and remote path. */
  private opError(reason: Reason, what: string, path: string, e: unknown, s?: Session): BackupError {
    if (e instanceof BackupError) return e;
    const dead = e instanceof ConnectionLost || (s !== undefined && !s.alive) || /No response from server/.test(describe(e));
    const code = errCode(e);
    const detail = dead ? `connection to ${this.where} lost (${s?.lostReason ?? describe(e)})` : describe(e);
    return new BackupError(dead ? 'store-unavailable' : reason, `store ${this.name}: ${what} ${this.where}:${path} failed: ${detail}`, {
      cause: e,
      hint: dead
        ? `check that the server ${this.where} is up and reachable; the next attempt reconnects`
        : code === SFTP_PERMISSION_DENIED
          ? `user ${this.cfg.username} may not access ${path} on ${this.where}`
          : undefined,
    });
  }

  // -------------------------------------------------------- SFTP helpers

  private stat(s: Session, path: string): Promise<Stats | undefined> {
    return this.call<Stats>(s, (sftp, cb) => sftp.stat(path, cb)).catch((e) => {
      if (isNoSuchFile(e)) return undefined;
      throw e;
    });
  }

  /** mkdir -p with mode 0700; tolerates a concurrent put creating the same directory. */
  private async mkdirp(s: Session, dir: string): Promise<void> {
    const st = await this.stat(s, dir);
    if (st) {
      if (!st.isDirectory()) throw new Error(`${dir} exists and is not a directory`);
      return;
    }
    const parent = posix.dirname(dir);
    if (parent !== dir && parent !== '.' && parent !== '') await this.mkdirp(s, parent);
    try {
      await this.call<void>(s, (sftp, cb) => sftp.mkdir(dir, { mode: 0o700 }, cb));
    } catch (e) {
      const again = await this.stat(s, dir);
      if (!again?.isDirectory()) throw e;
    }
  }

  private async unlinkQuiet(s: Session, path: string): Promise<void> {
    await this.call<void>(s, (sftp, cb) => sftp.unlink(path, cb)).catch(() => undefined);
  }

  private closeHandle(s: Session, handle: Buffer): Promise<void> {
    return this.call<void>(s, (sftp, cb) => sftp.close(handle, cb));
  }

  // ---------------------------------------------------------------- Store

  close(): Promise<void> {
    return this.conn.close();
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<PutResult> {
    this.checkKey(key);
    let bodyFailed = false;
    body.once('error', () => (bodyFailed = true));
    const state: PutState = { bodyTouched: false, bodyFailed: () => bodyFailed, ifAbsent: opts.ifAbsent === true, onProgress: opts.onProgress };
    try {
      return await this.conn.withSession((s) => this.putOn(s, key, body, opts.size, state), () => !state.bodyTouched, opts.signal);
    } catch (e) {
      body.destroy();
      throw e;
    }
  }

  /**
   * Uploads a local file (the sealed bundle) read into one reused buffer:
   * ssh2 copies each request into its packet before returning, so nothing
   * needs a fresh buffer per chunk (half the CPU of a read stream).
   */
  async putFile(key: string, path: string, opts: PutOptions = {}): Promise<PutResult> {
    const { signal } = opts;
    this.checkKey(key);
    const readFailed = (e: unknown) =>
      new BackupError('upload-failed', `store ${this.name}: upload of ${key}: reading ${path} failed: ${(errCode(e) as string | undefined) ?? describe(e)}`, { cause: e });
    const size = await statLocal(path).then(
      (st) => st.size,
      (e: unknown) => {
        throw readFailed(e);
      },
    );
    const aborted = () => abortedByShutdown(this.name, `upload of ${key}`);
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        yield* fileChunks(path, 1 << 20, signal, aborted);
      } catch (e) {
        throw e instanceof BackupError ? e : readFailed(e);
      }
    }
    const state: PutState = { bodyTouched: false, bodyFailed: () => false, ifAbsent: opts.ifAbsent === true, onProgress: opts.onProgress };
    return this.conn.withSession((s) => this.putOn(s, key, chunks(), size, state), () => !state.bodyTouched, signal);
  }

  private async putOn(s: Session, key: string, body: Readable | AsyncIterable<Buffer>, size: number | undefined, state: PutState): Promise<PutResult> {
    const final = this.remote(key);
    const dir = posix.dirname(final);
    const tmp = posix.join(dir, `.${posix.basename(final)}.tmp-${randomBytes(6).toString('hex')}`);
    let handle: Buffer | undefined;
    let created = false;
    let step = 'creating directory';
    try {
      await this.mkdirp(s, dir);
      step = 'creating';
      handle = await this.call<Buffer>(s, (sftp, cb) => sftp.open(tmp, 'wx', { mode: 0o600 }, cb));
      created = true;
      step = 'writing';
      state.bodyTouched = true;
      const written = await writeBody(s, this.where, handle, body, state.onProgress);
      if (size !== undefined && written !== size) {
        throw new BackupError('upload-failed', `store ${this.name}: ${key}: the body held ${written} bytes, ${size} were announced`);
      }
      step = 'syncing';
      if (hasExtension(s, 'fsync@openssh.com')) {
        // The object must be on the server's disk before it is reported as stored.
        const h = handle;
        await this.call<void>(s, (sftp, cb) => sftp.ext_openssh_fsync(h, cb)).catch((e) => {
          if (!/does not support/.test(describe(e))) throw e;
        });
      }
      step = 'closing';
      const h = handle;
      handle = undefined;
      await this.closeHandle(s, h);
      step = 'renaming';
      if (state.ifAbsent) await this.renameIfAbsent(s, tmp, final, key);
      else await this.renameOver(s, tmp, final);
      created = false;
      return { key, size: written };
    } catch (e) {
      if (state.bodyTouched && body instanceof Readable) body.destroy();
      if (handle) await this.closeHandle(s, handle).catch(() => undefined);
      if (created) await this.unlinkQuiet(s, tmp);
      if (state.bodyFailed() && !(e instanceof BackupError)) {
        throw new BackupError('upload-failed', `store ${this.name}: upload of ${key} to ${this.where}:${final} failed: reading the data to upload failed: ${describe(e)}`, { cause: e });
      }
      const target = step === 'creating directory' ? dir : step === 'renaming' ? `${tmp} -> ${final}` : tmp;
      throw this.opError('upload-failed', `upload of ${key}: ${step}`, target, e, s);
    }
  }

  /**
   * Create-if-absent: plain SFTP rename refuses an existing target (OpenSSH's
   * sftp-server links, then unlinks), so a name someone else created in the
   * meantime is never replaced.
   */
  private async renameIfAbsent(s: Session, from: string, to: string, key: string): Promise<void> {
    try {
      await this.call<void>(s, (sftp, cb) => sftp.rename(from, to, cb));
    } catch (e) {
      if (await this.stat(s, to).catch(() => undefined)) throw new ObjectExistsError(this.name, key);
      throw e;
    }
  }

  /** Atomic replace: posix-rename@openssh.com; plain SFTP rename refuses an existing target, so remove it first there. */
  private async renameOver(s: Session, from: string, to: string): Promise<void> {
    if (hasExtension(s, 'posix-rename@openssh.com')) {
      try {
        await this.call<void>(s, (sftp, cb) => sftp.ext_openssh_rename(from, to, cb));
        return;
      } catch (e) {
        if (!/does not support/.test(describe(e))) throw e;
      }
    }
    await this.call<void>(s, (sftp, cb) => sftp.unlink(to, cb)).catch((e) => {
      if (!isNoSuchFile(e)) throw e;
    });
    await this.call<void>(s, (sftp, cb) => sftp.rename(from, to, cb));
  }

  async head(key: string, opts: OpOptions = {}): Promise<ObjectInfo | undefined> {
    this.checkKey(key);
    const path = this.remote(key);
    return this.conn.withSession(
      async (s) => {
        try {
          const st = await this.stat(s, path);
          return st?.isFile() ? { key, size: st.size, modifiedAt: new Date(st.mtime * 1000) } : undefined;
        } catch (e) {
          throw this.opError('store-unavailable', 'stat', path, e, s);
        }
      },
      undefined,
      opts.signal,
    );
  }

  /** The stream is ended by the guard when the operation's signal fires (destroying it closes the handle). */
  async get(key: string, opts: TransferOptions = {}): Promise<Readable> {
    this.checkKey(key);
    const stream = await this.conn.withSession((s) => this.getOn(s, key), undefined, opts.signal);
    const s = this.conn.current;
    // The session stays tied to the stream: a deadline or stall while reading drops it.
    if (s && opts.signal) {
      const unwatch = this.conn.dropOnAbort(s, opts.signal);
      stream.once('close', unwatch);
    }
    return stream;
  }

  /**
   * Asks the server to hash the object with its own tools over an exec
   * channel of the same connection: proving a copy then costs one read of
   * the server's disk instead of the whole object back through the cipher.
   * Undefined wherever that is not possible (ForceCommand internal-sftp, a
   * chroot, no shell, neither openssl nor sha256sum): the caller reads back.
   */
  async serverSha256(key: string, opts: OpOptions = {}): Promise<string | undefined> {
    const { signal } = opts;
    this.checkKey(key);
    if (this.cfg.serverHash === false) return undefined;
    return this.conn.withSession(async (s) => {
      // The absolute path the SFTP server resolved (its start directory may not be the shell's $HOME).
      const path = await this.call<string>(s, (sftp, cb) => sftp.realpath(this.remote(key), cb));
      if (!path.startsWith('/')) return undefined;
      const cmd = `f=${shellQuote(path)}; if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r "$f"; else sha256sum -b "$f"; fi`;
      const out = await execOn(s, cmd, { where: this.where, limitMs: Math.max(10 * 60_000, 20 * this.timeoutMs), signal });
      return /^([0-9a-f]{64})\b/i.exec(out.trim())?.[1]?.toLowerCase();
    }, undefined, signal);
  }

  readBackSha256(key: string, opts?: TransferOptions): Promise<{ bytes: number; sha256: string }> {
    return readBackByGet(this, key, opts);
  }

  private async getOn(s: Session, key: string): Promise<Readable> {
    const path = this.remote(key);
    let handle: Buffer;
    let size: number;
    try {
      // Open eagerly so a missing object fails here, not on the first read.
      handle = await this.call<Buffer>(s, (sftp, cb) => sftp.open(path, 'r', cb));
    } catch (e) {
      if (isNoSuchFile(e)) {
        throw new BackupError('not-found', `store ${this.name}: ${key} does not exist (${this.where}:${path})`, { cause: e });
      }
      throw this.opError('store-unavailable', 'open', path, e, s);
    }
    try {
      const st = await this.call<Stats>(s, (sftp, cb) => sftp.fstat(handle, cb));
      if (!st.isFile()) throw new BackupError('not-found', `store ${this.name}: ${key} is not a file (${this.where}:${path})`);
      size = st.size;
    } catch (e) {
      await this.closeHandle(s, handle).catch(() => undefined);
      throw this.opError('store-unavailable', 'stat', path, e, s);
    }
    return new SftpReadStream({
      size,
      piece: ioLen(s, 'read'),
      read: (buf, at, cb) => {
        if (!s.alive) return cb(new ConnectionLost(`connection to ${this.where} lost: ${s.lostReason ?? 'closed'}`), 0);
        try {
          s.sftp.read(handle, buf, 0, buf.length, at, (err, n) => cb(err ?? undefined, n));
        } catch (e) {
          cb(e as Error, 0);
        }
      },
      close: () => this.closeHandle(s, handle),
      wrapError: (e) => this.opError('store-unavailable', 'reading', path, e, s),
    });
  }

  /** Directory entries, dot-files included, sorted so that keys come out in lexicographic order. */
  private async readdir(s: Session, dir: string): Promise<FileEntryWithStats[] | undefined> {
    try {
      const entries = await this.call<FileEntryWithStats[]>(s, (sftp, cb) => sftp.readdir(dir, cb));
      const sortName = (e: FileEntryWithStats): string => (e.attrs.isDirectory() ? `${e.filename}/` : e.filename);
      return entries.sort((a, b) => (sortName(a) < sortName(b) ? -1 : sortName(a) > sortName(b) ? 1 : 0));
    } catch (e) {
      if (isNoSuchFile(e)) return undefined;
      throw this.opError('store-unavailable', 'listing', dir, e, s);
    }
  }

  /** The SFTP walk of walk.ts on this session: the listing where the server runs no commands. */
  private walk(s: Session, prefix: string, wantFile: (name: string) => boolean, descendDot: boolean, exclude?: string): AsyncGenerator<{ key: string; attrs: Stats }> {
    const io = { readdir: (rel: string) => this.readdir(s, this.remote(rel)), stat: (rel: string) => this.stat(s, this.remote(rel)) };
    return walkTree(io, startOfPrefix(this.name, prefix), prefix, wantFile, descendDot, exclude);
  }

  /** One remote find where the server runs commands (find-list.ts), else the walk. */
  async *list(prefix: string, opts: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const startRel = startOfPrefix(this.name, prefix);
    // The excluded directory is pruned by find, skipped by the walk: never read.
    const exclude = checkListExclude(this.name, prefix, opts.exclude);
    // The first request may meet a connection that died while idle:
    // withSession retries that on a fresh one; the rest of the walk uses the same session.
    const { it, head, s } = await this.conn.withSession(
      async (s) => {
        const found = await this.finder.list(s, { remoteStart: this.remote(startRel), startRel, prefix, signal: opts.signal, ...(exclude !== undefined ? { exclude } : {}) });
        const walk = found ? found.values() : this.walk(s, prefix, (name) => !name.startsWith('.'), false, exclude);
        return { it: walk, head: await walk.next(), s };
      },
      undefined,
      opts.signal,
    );
    const unwatch = this.conn.dropOnAbort(s, opts.signal);
    try {
      for (let r = head; !r.done; r = await it.next()) {
        yield 'attrs' in r.value ? { key: r.value.key, size: r.value.attrs.size, modifiedAt: new Date(r.value.attrs.mtime * 1000) } : r.value;
      }
    } finally {
      unwatch();
      await it.return?.(undefined);
    }
  }

  async delete(keys: string[], opts: OpOptions = {}): Promise<void> {
    keys.forEach((k) => this.checkKey(k));
    if (keys.length === 0) return;
    await this.conn.withSession((s) => this.deleteOn(s, keys), undefined, opts.signal);
  }

  private async deleteOn(s: Session, keys: string[]): Promise<void> {
    const queue = [...keys];
    await Promise.all(
      Array.from({ length: Math.min(8, queue.length) }, async () => {
        for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
          const path = this.remote(key);
          await this.call<void>(s, (sftp, cb) => sftp.unlink(path, cb)).catch((e) => {
            if (!isNoSuchFile(e)) throw this.opError('store-unavailable', 'removing', path, e, s);
          });
        }
      }),
    );
    await this.removeEmptyDirs(s, keys);
  }

  /** Removes the directories of `keys` that are now empty, deepest first, never the root. */
  private async removeEmptyDirs(s: Session, keys: string[]): Promise<void> {
    const dirs = new Set<string>();
    for (const key of keys) {
      for (let d = posix.dirname(key); d !== '.' && d !== '' && d !== '/'; d = posix.dirname(d)) dirs.add(d);
    }
    const ordered = [...dirs].sort((a, b) => b.split('/').length - a.split('/').length || (a < b ? 1 : -1));
    const failed = new Set<string>();
    for (const d of ordered) {
      // A parent of a directory that stayed cannot be empty.
      if ([...failed].some((f) => f.startsWith(`${d}/`))) {
        failed.add(d);
        continue;
      }
      await this.call<void>(s, (sftp, cb) => sftp.rmdir(this.remote(d), cb)).catch(() => failed.add(d));
    }
  }

  async cleanupIncomplete(prefix: string, olderThan: Date, opts: OpOptions = {}): Promise<string[]> {
    return this.conn.withSession((s) => this.cleanupOn(s, prefix, olderThan), undefined, opts.signal);
  }

  private async cleanupOn(s: Session, prefix: string, olderThan: Date): Promise<string[]> {
    const old: string[] = [];
    const startRel = startOfPrefix(this.name, prefix);
    const tempFiles = (name: string) => TEMP_RE.test(name);
    // One remote find where the server runs commands; the walk reads every backup directory again.
    const found = await this.finder.list(s, { remoteStart: this.remote(startRel), startRel, prefix, tempFiles });
    const all = found ?? this.walk(s, prefix, tempFiles, false);
    for await (const o of all) {
      const mtimeMs = 'attrs' in o ? o.attrs.mtime * 1000 : o.modifiedAt!.getTime();
      if (mtimeMs < olderThan.getTime()) old.push(o.key);
    }
    for (const key of old) {
      const path = this.remote(key);
      await this.call<void>(s, (sftp, cb) => sftp.unlink(path, cb)).catch((e) => {
        if (!isNoSuchFile(e)) throw this.opError('store-unavailable', 'removing', path, e, s);
      });
    }
    await this.removeEmptyDirs(s, old);
    return old;
  }
}
