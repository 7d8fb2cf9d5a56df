import { MANIFEST_NAME, parseManifest, type Manifest } from '../bundle/manifest.js';
import { BackupError, messageOf } from '../errors.js';
import type { Store } from '../storage/store.js';

export interface Catalog {
  /** Committed backups, newest first. */
  backups: Manifest[];
  /** Backup directories holding objects but no manifest: unfinished or failed uploads. */
  incomplete: { id: string; keys: string[]; newest?: Date }[];
  /** Manifests that could not be read; reported, never fatal. */
  problems: { key: string; error: string }[];
}

async function readAll(stream: NodeJS.ReadableStream, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    const b = c as Buffer;
    n += b.length;
    if (n > limit) throw new Error(`larger than ${limit} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

export async function readManifest(store: Store, key: string, signal?: AbortSignal): Promise<Manifest> {
  const body = await readAll(await store.get(key, { signal }), 1 << 20);
  return parseManifest(body, `${store.name}:${key}`);
}

/** Everything a store holds for one cluster, grouped by backup id. */
export async function loadCatalog(store: Store, cluster: string): Promise<Catalog> {
  const byId = new Map<string, { keys: string[]; hasManifest: boolean; newest?: Date }>();
  try {
    for await (const obj of store.list(`${cluster}/`)) {
      const rest = obj.key.slice(cluster.length + 1);
      const slash = rest.indexOf('/');
      if (slash <= 0) continue;
      const id = rest.slice(0, slash);
      const e = byId.get(id) ?? { keys: [], hasManifest: false };
      e.keys.push(obj.key);
      if (rest.slice(slash + 1) === MANIFEST_NAME) e.hasManifest = true;
      if (obj.modifiedAt && (!e.newest || obj.modifiedAt > e.newest)) e.newest = obj.modifiedAt;
      byId.set(id, e);
    }
  } catch (e) {
    if (e instanceof BackupError) throw e;
    throw new BackupError('store-unavailable', `store ${store.name}: cannot list backups: ${messageOf(e)}`, { cause: e });
  }
  const cat: Catalog = { backups: [], incomplete: [], problems: [] };
  for (const [id, e] of byId) {
    if (!e.hasManifest) {
      cat.incomplete.push({ id, keys: e.keys, newest: e.newest });
      continue;
    }
    const key = `${cluster}/${id}/${MANIFEST_NAME}`;
    try {
      const m = await readManifest(store, key);
      if (m.id !== id || m.cluster !== cluster) throw new Error(`manifest describes ${m.cluster}/${m.id}, found under ${cluster}/${id}`);
      // A manifest may only speak for its own object: prune deletes what it names.
      const own = [`${cluster}/${id}/backup.tar`, `${cluster}/${id}/backup.tar.age`];
      if (m.object && !own.includes(m.object.key)) throw new Error(`manifest names object ${m.object.key}, which is not this backup's`);
      cat.backups.push(m);
    } catch (err) {
      cat.problems.push({ key, error: messageOf(err) });
    }
  }
  cat.backups.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : a.id < b.id ? 1 : -1));
  return cat;
}

/** `latest` means the newest committed backup of this cluster (any node). */
export function findBackup(cat: Catalog, ref: string, storeName: string): Manifest {
  const m = ref === 'latest' ? cat.backups[0] : cat.backups.find((b) => b.id === ref);
  if (!m) {
    throw new BackupError(
      'not-found',
      ref === 'latest' ? `store ${storeName} holds no committed backup` : `store ${storeName} holds no committed backup with id ${ref}`,
      { hint: 'run `etcd-backupd list` to see the backups this store holds' },
    );
  }
  return m;
}
