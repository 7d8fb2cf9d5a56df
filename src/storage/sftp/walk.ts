import type { FileEntryWithStats, Stats } from 'ssh2';

/** Directories read ahead of use: a long listing costs about directories / LOOKAHEAD round trips. */
const LOOKAHEAD = 32;

/** What the walk asks of the store, by key relative to the store root. */
export interface WalkIo {
  /** A directory's entries sorted so keys come out in order (undefined: it does not exist). */
  readdir(rel: string): Promise<FileEntryWithStats[] | undefined>;
  stat(rel: string): Promise<Stats | undefined>;
}

/**
 * Walks the tree under `start` (the deepest directory `prefix` names),
 * yielding files whose key starts with `prefix` in key order, never
 * entering the directory `exclude` names. Symlinks are
 * followed (stat); dot-names are skipped unless `wantFile` takes them
 * (dot-directories are entered only with `descendDot`). Sibling directories
 * are read a few at a time ahead of use, so a long listing costs fewer round
 * trips than directories.
 */
export async function* walkTree(io: WalkIo, start: string, prefix: string, wantFile: (name: string) => boolean, descendDot: boolean, exclude?: string): AsyncGenerator<{ key: string; attrs: Stats }> {
  async function* visit(rel: string, listing: Promise<FileEntryWithStats[] | undefined>): AsyncGenerator<{ key: string; attrs: Stats }> {
    const entries = await listing;
    if (!entries) return;
    const items: { key: string; entry: FileEntryWithStats; dir: boolean; listing?: Promise<FileEntryWithStats[] | undefined> }[] = [];
    for (const entry of entries) {
      const key = rel ? `${rel}/${entry.filename}` : entry.filename;
      let attrs = entry.attrs;
      if (attrs.isSymbolicLink()) {
        const st = await io.stat(key).catch(() => undefined);
        if (!st) continue;
        attrs = st;
        entry.attrs = st;
      }
      const dir = attrs.isDirectory();
      if (entry.filename.startsWith('.') && (dir ? !descendDot : !wantFile(entry.filename))) continue;
      if (dir) {
        const dkey = `${key}/`;
        if (!dkey.startsWith(prefix) && !prefix.startsWith(dkey)) continue;
        if (dkey === exclude) continue; // never read (Store.list's exclude)
      } else if (!attrs.isFile() || !key.startsWith(prefix) || !wantFile(entry.filename)) continue;
      items.push({ key, entry, dir });
    }
    const startListing = (i: number): void => {
      for (let j = i; j < Math.min(items.length, i + LOOKAHEAD); j++) {
        const it = items[j]!;
        if (it.dir && !it.listing) {
          it.listing = io.readdir(it.key);
          it.listing.catch(() => undefined); // awaited later; keep Node from calling it unhandled meanwhile
        }
      }
    };
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (it.dir) {
        startListing(i);
        yield* visit(it.key, it.listing!);
      } else {
        yield { key: it.key, attrs: it.entry.attrs };
      }
    }
  }
  yield* visit(start, io.readdir(start));
}
