import { parseManifest, type Manifest } from '../bundle/manifest.js';
import { BackupError, messageOf } from '../errors.js';
import { clusterPrefix, isOwnObject, manifestKey, MANIFEST_NAME, splitBackupKey } from '../layout.js';
import type { Store } from '../storage/store.js';
import { counts, isEnforced, signedStatus, type SignedStatus, type Trust } from './trust.js';

export interface Catalog {
  /** Committed backups, newest first. */
  backups: Manifest[];
  /** Backup directories holding objects but no manifest: unfinished or failed uploads. */
  incomplete: { id: string; keys: string[]; newest?: Date }[];
  /** Manifests that could not be read; reported, never fatal. */
  problems: { key: string; error: string }[];
  /** Signature status per backup id (see trust.ts). */
  signed: Map<string, SignedStatus>;
  trust?: Trust;
}

/** Backups that do not count (trusted keys are set, and they carry no valid signature by one): listed, alerted on, never used. */
export function untrustedBackups(cat: Catalog): Manifest[] {
  return cat.backups.filter((m) => !counts(m, cat.trust));
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
export async function loadCatalog(store: Store, cluster: string, trust?: Trust): Promise<Catalog> {
  const byId = new Map<string, { keys: string[]; hasManifest: boolean; newest?: Date }>();
  try {
    for await (const obj of store.list(clusterPrefix(cluster))) {
      const where = splitBackupKey(cluster, obj.key);
      if (!where) continue;
      const id = where.id;
      const e = byId.get(id) ?? { keys: [], hasManifest: false };
      e.keys.push(obj.key);
      if (where.name === MANIFEST_NAME) e.hasManifest = true;
      if (obj.modifiedAt && (!e.newest || obj.modifiedAt > e.newest)) e.newest = obj.modifiedAt;
      byId.set(id, e);
    }
  } catch (e) {
    if (e instanceof BackupError) throw e;
    throw new BackupError('store-unavailable', `store ${store.name}: cannot list backups: ${messageOf(e)}`, { cause: e });
  }
  const cat: Catalog = { backups: [], incomplete: [], problems: [], signed: new Map(), trust };
  for (const [id, e] of byId) {
    if (!e.hasManifest) {
      cat.incomplete.push({ id, keys: e.keys, newest: e.newest });
      continue;
    }
    const key = manifestKey(cluster, id);
    try {
      const m = await readManifest(store, key);
      if (m.id !== id || m.cluster !== cluster) throw new Error(`manifest describes ${m.cluster}/${m.id}, found under ${cluster}/${id}`);
      // A manifest may only speak for its own object: prune deletes what it names.
      if (m.object && !isOwnObject(cluster, id, m.object.key)) throw new Error(`manifest names object ${m.object.key}, which is not this backup's`);
      cat.backups.push(m);
      cat.signed.set(m.id, signedStatus(m, trust));
    } catch (err) {
      cat.problems.push({ key, error: messageOf(err) });
    }
  }
  cat.backups.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : a.id < b.id ? 1 : -1));
  return cat;
}

/**
 * `latest` means the newest committed backup of this cluster (any node);
 * with trusted keys, the newest one signed by a trusted key: a backup
 * planted by someone who can only write the store is never the one restored.
 * Naming an untrusted backup by id fails with `signature-untrusted` unless
 * `allowUntrusted`.
 */
export function findBackup(cat: Catalog, ref: string, storeName: string, opts: { allowUntrusted?: boolean } = {}): Manifest {
  const enforced = isEnforced(cat.trust);
  const m =
    ref === 'latest'
      ? (cat.backups.find((b) => counts(b, cat.trust)) ?? (opts.allowUntrusted ? cat.backups[0] : undefined))
      : cat.backups.find((b) => b.id === ref);
  if (!m) {
    const untrusted = enforced && ref === 'latest' && cat.backups.length > 0;
    throw new BackupError(
      untrusted ? 'signature-untrusted' : 'not-found',
      untrusted
        ? `store ${storeName} holds ${cat.backups.length} committed backups, none signed by a trusted key`
        : ref === 'latest'
          ? `store ${storeName} holds no committed backup`
          : `store ${storeName} holds no committed backup with id ${ref}`,
      {
        hint: untrusted
          ? 'check signing.trustedKeys; pass --allow-untrusted only for a backup whose origin you know'
          : 'run `etcd-backupd list` to see the backups this store holds',
      },
    );
  }
  if (!counts(m, cat.trust) && !opts.allowUntrusted) {
    throw new BackupError('signature-untrusted', `backup ${m.id} in store ${storeName} is not signed by a trusted key (signed: ${cat.signed.get(m.id) ?? signedStatus(m, cat.trust)})`, {
      hint: 'anyone who can write the store could have planted or altered it; pass --allow-untrusted only if you know where it comes from',
    });
  }
  return m;
}
