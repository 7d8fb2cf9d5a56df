import { randomBytes } from 'node:crypto';
import { readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { mkdirPrivate } from '../fsutil.js';
import { catalogCachePath } from '../layout.js';

/**
 * Local copies of a store's immutable catalog objects (manifests and pin
 * markers), one file per backup id: `{format, objects: {key: {version, text}}}`.
 * A copy is used only while the listing shows the same version of its key,
 * so the cache can make a catalog faster but never different: the listing
 * of every call decides what exists. Every failure here (disk full, a
 * mangled file) costs a GET, never a wrong answer or a failed command.
 */
interface CacheFile {
  format: 1;
  objects: Record<string, { version: string; text: string }>;
}

/** Ids that are safe as file names; anything else (a hostile directory name) is simply not cached. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

export class CatalogCache {
  private readonly files = new Map<string, Promise<CacheFile>>();
  private readonly dirty = new Set<string>();

  constructor(readonly dir: string) {}

  private load(id: string): Promise<CacheFile> {
    let f = this.files.get(id);
    if (!f) {
      f = readFile(catalogCachePath(this.dir, id), 'utf8')
        .then((t) => {
          const doc = JSON.parse(t) as CacheFile;
          return doc?.format === 1 && doc.objects && typeof doc.objects === 'object' ? doc : { format: 1 as const, objects: {} };
        })
        .catch(() => ({ format: 1 as const, objects: {} }));
      this.files.set(id, f);
    }
    return f;
  }

  /** The cached text of `key` when it is of `version`; undefined otherwise. */
  async get(id: string, key: string, version: string): Promise<string | undefined> {
    if (!SAFE_ID.test(id)) return undefined;
    const o = (await this.load(id)).objects[key];
    return o && o.version === version && typeof o.text === 'string' ? o.text : undefined;
  }

  async set(id: string, key: string, version: string, text: string): Promise<void> {
    if (!SAFE_ID.test(id)) return;
    const f = await this.load(id);
    f.objects[key] = { version, text };
    this.dirty.add(id);
  }

  /**
   * Writes what changed and drops the files of backups the listing no longer
   * shows (deleted here or by another node), so the cache stays the size of
   * the store's catalog.
   */
  async save(listed: ReadonlyMap<string, readonly string[]>): Promise<void> {
    const dirty = [...this.dirty];
    this.dirty.clear();
    if (dirty.length && !(await mkdirPrivate(this.dir).then(() => true, () => false))) return;
    const write = async (id: string): Promise<void> => {
      const f = await this.load(id);
      // Only objects of keys the listing still shows: the copy of a removed marker goes too.
      const keys = new Set(listed.get(id) ?? []);
      for (const k of Object.keys(f.objects)) if (!keys.has(k)) delete f.objects[k];
      // Temp name and rename, no fsync: a file torn by a crash fails to parse, which is a miss.
      const path = catalogCachePath(this.dir, id);
      const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
      try {
        await writeFile(tmp, JSON.stringify(f), { mode: 0o600, flag: 'wx' });
        await rename(tmp, path);
      } catch {
        await rm(tmp, { force: true });
      }
    };
    for (let i = 0; i < dirty.length; i += 32) await Promise.all(dirty.slice(i, i + 32).map(write));
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    for (const n of names) {
      const id = n.endsWith('.json') ? n.slice(0, -5) : undefined;
      if (id && SAFE_ID.test(id) && !listed.has(id)) await unlink(catalogCachePath(this.dir, id)).catch(() => undefined);
      // A temp file left by a process that died mid-write (or, rarely, one another process is about to rename: it only loses that cache write).
      else if (/\.json\.tmp-[0-9a-f]{8}$/.test(n)) await unlink(`${this.dir}/${n}`).catch(() => undefined);
    }
  }
}
