import { BackupError } from '../../errors.js';
import { isExcluded, type ObjectInfo } from '../store.js';
import { ExecRefused, execStream, shellQuote, type ExecOutcome } from './remote-exec.js';
import { call, ConnectionLost, describe, errCode, type Session } from './session.js';

const SFTP_NO_SUCH_FILE = 2;

/*
 * Listing with one remote command instead of a directory walk. The SFTP walk
 * reads each directory with its own requests (open, read, close): with a few
 * thousand backup directories behind a link of some milliseconds that is
 * seconds to minutes. Where the server runs commands, GNU find prints the
 * whole tree at once; the answer is checked and bounded, and anything
 * unexpected makes the caller walk instead, which is always right.
 */

/** What one find listing may hold before it counts as a server that never ends (the walk takes over). */
export interface FindLimits {
  maxBytes: number;
  maxEntries: number;
  /** Also bounds one record: a record longer than this is malformed. */
  maxRecordBytes: number;
}

export const FIND_LIMITS: FindLimits = { maxBytes: 32 << 20, maxEntries: 250_000, maxRecordBytes: 64 << 10 };

/** The first record: our script runs (not a forced command, not a shell that refuses it). */
const HELLO = 'etcd-backupd-list';
/** The last record: proves the output is whole (find exited 0 and nothing cut it). */
const END = 'etcd-backupd-list-end';
/** Exit status of the script below when this server's find cannot do it (no -L, -printf): never ask again. */
const UNSUPPORTED = 97;

/**
 * The remote script: `dir` as the shell sees it (absolute). Follows symlinks
 * (-L), as the walk does (it stats them); a broken one is neither a file nor
 * a directory to either. Every dot-name is left out and never descended,
 * as the walk does (temp files of unfinished puts are `.<name>.tmp-<hex>`).
 * Records are NUL-terminated (`size mtime relative-path`), so any name but
 * one with a NUL (impossible) comes through as it is. `exclude` (a directory
 * relative to `dir`, without the trailing '/') is pruned: never descended.
 */
export function findScript(dir: string, dotFiles = false, exclude?: string): string {
  // The excluded directory, relative to `dir`, as find -path sees it (glob characters taken literally).
  const skip = exclude === undefined ? '' : `-path ${shellQuote(`./${exclude.replace(/[\\*?[\]]/g, '\\$&')}`)} -prune -o `;
  return [
    `printf '${HELLO}\\0'`,
    `find -L / -maxdepth 0 -printf '' >/dev/null 2>&1 || exit ${UNSUPPORTED}`,
    `d=${shellQuote(dir)}`,
    // Nothing there (realpath resolves a missing last name): the walk finds nothing either.
    `[ -e "$d" ] || { printf '${END}\\0'; exit 0; }`,
    `cd -- "$d" || exit 96`,
    dotFiles
      ? // Only the dot-files (temp files of unfinished puts) in directories that are not dot-names.
        `find -L . -mindepth 1 -name '.*' -type d -prune -o -type f -name '.*' -printf '%s %T@ %P\\0' || exit $?`
      : `find -L . -mindepth 1 ${skip}-name '.*' -prune -o -type f -printf '%s %T@ %P\\0' || exit $?`,
    `printf '${END}\\0'`,
  ].join('\n');
}

export interface Found {
  /** Path relative to the listed directory. */
  rel: string;
  size: number;
  /** Whole seconds, as SFTP's attributes carry them. */
  mtime: number;
}

/**
 * Parses find's records as they arrive. Refuses (`malformed`) anything that
 * is not a record of the script above or that points outside the directory;
 * stops (`tooMuch`) past the limits. `whole` once the end record came last.
 */
export class FindParser {
  readonly found: Found[] = [];
  bytes = 0;
  /** The first record was ours. */
  started = false;
  whole = false;
  malformed?: string;
  tooMuch = false;
  private rest: Buffer = Buffer.alloc(0);

  constructor(
    readonly limits: FindLimits = FIND_LIMITS,
    /** The file names wanted (the walk's test); directories that are dot-names are never entered. */
    private readonly wantFile: (name: string) => boolean = (name) => !name.startsWith('.'),
  ) {}

  /** Takes one chunk; false once it wants no more (malformed or past the limits). */
  push(chunk: Buffer): boolean {
    if (this.malformed || this.tooMuch) return false;
    if (this.whole) return !(this.malformed = 'output after the end record');
    this.bytes += chunk.length;
    if (this.bytes > this.limits.maxBytes) return !(this.tooMuch = true);
    let buf = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    for (let nul = buf.indexOf(0); nul !== -1; nul = buf.indexOf(0)) {
      this.record(buf.subarray(0, nul).toString('utf8'));
      buf = buf.subarray(nul + 1);
      if (this.malformed || this.tooMuch) return false;
      if (this.whole && buf.length) return !(this.malformed = 'output after the end record');
    }
    if (buf.length > this.limits.maxRecordBytes) return !(this.malformed = `a record longer than ${this.limits.maxRecordBytes} bytes`);
    this.rest = Buffer.from(buf);
    return true;
  }

  private record(r: string): void {
    if (!this.started) {
      // Whatever a login shell's start-up files print comes before it.
      if (r.endsWith(HELLO)) this.started = true;
      else this.malformed = 'not our script';
      return;
    }
    if (r === END) {
      this.whole = true;
      return;
    }
    const m = /^(\d{1,16}) (\d{1,12})(?:\.\d*)? ([^\0]+)$/s.exec(r);
    if (!m) {
      this.malformed = `not a record: ${JSON.stringify(r.slice(0, 80))}`;
      return;
    }
    const rel = m[3]!;
    const segs = rel.split('/');
    if (segs.some((seg) => seg === '' || seg === '.' || seg === '..')) {
      this.malformed = `a path outside the listed directory: ${JSON.stringify(rel.slice(0, 80))}`;
      return;
    }
    // find prunes dot-directories (and, listing objects, dot-files); a server that sends one anyway
    // gets the walk's answer: not listed.
    if (segs.slice(0, -1).some((seg) => seg.startsWith('.')) || !this.wantFile(segs[segs.length - 1]!)) return;
    if (this.found.length >= this.limits.maxEntries) {
      this.tooMuch = true;
      return;
    }
    this.found.push({ rel, size: Number(m[1]), mtime: Number(m[2]) });
  }
}

export interface ListOptions {
  remoteStart: string;
  startRel: string;
  prefix: string;
  signal?: AbortSignal;
  /** List the temp files of unfinished puts (dot-files this tells apart) instead of the objects. */
  tempFiles?: (name: string) => boolean;
  /** A directory key under `prefix`, ending in '/', that is not descended (Store.list's exclude). */
  exclude?: string;
}

/** Why a find listing was not used; `unsupported` means this server never will (no exec, no GNU find). */
export type FindMiss = { miss: 'unsupported' | 'failed' | 'malformed' | 'too-much' | 'deadline'; detail: string };

/**
 * Lists the files under `startRel` (the deepest directory of `prefix`, which
 * the caller checked) whose key starts with `prefix`, in key order, with one
 * remote find. Returns a FindMiss when the walk must answer instead. Throws
 * only for a dead connection or an abort (as the walk would fail then too).
 */
export async function listByFind(
  s: Session,
  o: ListOptions & { where: string; limitMs: number; limits?: FindLimits },
): Promise<ObjectInfo[] | FindMiss> {
  // The absolute path the SFTP server resolved (its start directory may not be the shell's $HOME).
  let abs: string;
  try {
    abs = await call<string>(s, o.where, (sftp, cb) => sftp.realpath(o.remoteStart, cb));
  } catch (e) {
    if (e instanceof ConnectionLost || !s.alive) throw e;
    // Nothing there: the walk would find nothing either.
    if (errCode(e) === SFTP_NO_SUCH_FILE || errCode(e) === 'ENOENT') return [];
    return { miss: 'failed', detail: `realpath ${o.remoteStart}: ${describe(e)}` };
  }
  if (!abs.startsWith('/')) return { miss: 'failed', detail: `realpath gave ${JSON.stringify(abs)}` };
  const parser = new FindParser(o.limits, o.tempFiles ?? ((name) => !name.startsWith('.')));
  let r;
  try {
    const skip = o.exclude === undefined ? undefined : o.exclude.slice(o.startRel ? o.startRel.length + 1 : 0, -1);
    r = await execStream(s, findScript(abs, o.tempFiles !== undefined, skip), { where: o.where, limitMs: o.limitMs, signal: o.signal, onData: (d) => parser.push(d) });
  } catch (e) {
    if (e instanceof ExecRefused) return { miss: 'unsupported', detail: e.message };
    throw e;
  }
  const miss = missOf(parser, r, o.limitMs);
  if (miss) return miss;
  const out: ObjectInfo[] = [];
  for (const f of parser.found) {
    const key = o.startRel ? `${o.startRel}/${f.rel}` : f.rel;
    if (key.startsWith(o.prefix) && !isExcluded(key, o.exclude)) out.push({ key, size: f.size, modifiedAt: new Date(f.mtime * 1000) });
  }
  // The walk's order: keys compared as JavaScript strings.
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

function missOf(parser: FindParser, r: ExecOutcome, limitMs: number): FindMiss | undefined {
  if (parser.malformed) return { miss: parser.started ? 'malformed' : 'unsupported', detail: parser.malformed };
  if (parser.tooMuch) return { miss: 'too-much', detail: `more than ${parser.limits.maxEntries} files or ${parser.limits.maxBytes} bytes` };
  if (parser.whole) return undefined;
  if (r.stopped === 'deadline') return { miss: 'deadline', detail: `no end within ${limitMs} ms` };
  // Our script never ran (a forced command, internal-sftp, a shell that refuses), or find cannot do it.
  if (!parser.started || r.code === UNSUPPORTED) return { miss: 'unsupported', detail: `exit ${r.code}` };
  return { miss: 'failed', detail: `exit ${r.code}` };
}

/**
 * A store's find listings. A server that cannot list this way (no exec,
 * forced internal-sftp, a shell that refuses commands, no GNU find) is not
 * asked again by this store; any other miss is for this listing only.
 */
export class FindListing {
  private unsupported = false;
  /** Why the last listing was not a find (for tests and diagnostics). */
  lastMiss?: FindMiss;

  constructor(
    private readonly where: string,
    private readonly limitMs: number,
    private readonly limits: FindLimits = FIND_LIMITS,
  ) {}

  /** The listing, or undefined: then the caller walks. */
  async list(s: Session, o: ListOptions): Promise<ObjectInfo[] | undefined> {
    if (this.unsupported) return undefined;
    const r = await listByFind(s, { ...o, where: this.where, limitMs: this.limitMs, limits: this.limits });
    if (Array.isArray(r)) {
      this.lastMiss = undefined;
      return r;
    }
    this.lastMiss = r;
    if (r.miss === 'unsupported') this.unsupported = true;
    return undefined;
  }
}

/** The directory a listing of `prefix` starts in (its last `/` and before), refusing prefixes that leave the store. */
export function startOfPrefix(storeName: string, prefix: string): string {
  if (prefix.startsWith('/') || prefix.split('/').some((seg) => seg === '..' || seg === '.')) {
    throw new BackupError('internal', `store ${storeName}: refusing prefix outside the store: ${JSON.stringify(prefix)}`);
  }
  return prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
}
