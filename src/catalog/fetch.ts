import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { readBundle } from '../bundle/read.js';
import { BackupError } from '../errors.js';
import { inspectSnapshot } from '../etcd/snapshot.js';
import { mkdirPrivate } from '../fsutil.js';
import type { Store } from '../storage/store.js';
import { verifyRemoteCopy } from '../storage/verify.js';
import { metered, type ProgressSink } from '../progress/model.js';

export interface FetchResult {
  id: string;
  dir: string;
  files: string[];
  snapshot: string;
}

/**
 * Streams a backup out of a store into `to`, checking the object's sha256 and
 * every artifact's against the committed manifest. The directory then holds
 * the files exactly as cluster-backup.sh wrote them, which is what
 * OpenShift's cluster-restore.sh expects.
 */
export async function fetchBackup(store: Store, manifest: Manifest, to: string, identities?: string[], signal?: AbortSignal, progress?: ProgressSink): Promise<FetchResult> {
  if (!manifest.object) throw new BackupError('manifest-invalid', `manifest of ${manifest.id} lacks its object record`);
  if (manifest.object.encrypted && !identities?.length) throw needIdentity(manifest);
  await mkdirPrivate(to);
  // cluster-restore.sh takes the newest snapshot*.db and static_kuberesources*.tar.gz of the directory by
  // name: beside another backup's files, the one fetched now might not be the one restored.
  const clash = (await readdir(to)).filter((n) => manifest.artifacts.some((a) => a.name === n) || /^snapshot.*\.db(\.part)?$|^static_kuberesources.*\.tar\.gz$/.test(n));
  if (clash.length) {
    throw new BackupError('usage', `${to} already holds ${clash.join(', ')}; fetch into an empty directory`, {
      hint: 'cluster-restore.sh restores the newest snapshot of the directory it is given: use a new, empty directory',
    });
  }
  const key = manifest.object.key;
  const res = await metered(progress, 'download', { store: store.name, total: manifest.object.size }, async (m) =>
    readBundle(await store.get(key, { signal, onProgress: progress && m.add }), manifest, to, identities),
  );
  const snapshot = res.files.find((f) => /\/snapshot_[^/]*\.db$/.test(f));
  if (!snapshot) throw new BackupError('manifest-invalid', `backup ${manifest.id} holds no snapshot_*.db`);
  return { id: manifest.id, dir: to, files: res.files, snapshot };
}

export interface VerifyResult {
  id: string;
  objectSha256: string;
  /** Absent when only the encrypted object could be checked (no identity given). */
  snapshot?: { revision: number; totalKey: number; hash: number; totalSize: number; trailer: string };
  encryptedOnly?: boolean;
}

/**
 * Re-reads the stored object end to end: every sha256, then the snapshot's
 * own trailer and bbolt structure, compared with what the manifest recorded
 * when the backup was taken.
 */
export function needIdentity(m: Manifest): BackupError {
  return new BackupError('usage', `backup ${m.id} is encrypted for ${m.object?.recipients.join(', ')}; pass --identity FILE with the matching age secret key`, {
    hint: 'the node holds only public keys: the identity (AGE-SECRET-KEY-1...) is wherever your team keeps it',
  });
}

/**
 * The fetched snapshot's own trailer and bbolt structure, compared with what
 * the manifest recorded when the backup was taken (verify and restore).
 */
export async function checkSnapshot(manifest: Manifest, snapshot: string, progress?: ProgressSink): Promise<NonNullable<VerifyResult['snapshot']>> {
  const total = manifest.artifacts.find((a) => snapshot.endsWith(`/${a.name}`))?.size;
  const snap = await metered(progress, 'verify', { total }, (m) => inspectSnapshot(snapshot, { onProgress: progress && m.add }));
  const e = manifest.etcd;
  const diffs: string[] = [];
  if (snap.trailer !== 'ok') diffs.push(`snapshot sha256 trailer ${snap.trailer}`);
  for (const k of ['revision', 'totalKey', 'hash', 'totalSize'] as const) {
    if (snap[k] !== e[k]) diffs.push(`${k} is ${snap[k]}, manifest says ${e[k]}`);
  }
  if (diffs.length) throw new BackupError('snapshot-corrupt', `backup ${manifest.id}: ${diffs.join('; ')}`);
  return snap;
}

export async function verifyBackup(store: Store, manifest: Manifest, scratchDir: string, identities?: string[], progress?: ProgressSink): Promise<VerifyResult> {
  if (manifest.object?.encrypted && !identities?.length) {
    // Without the key only the ciphertext can be checked: its size and sha256 as the store holds it.
    await verifyRemoteCopy(store, manifest.object.key, manifest.object.size, manifest.object.sha256, 'readback', { progress }).catch((e: BackupError) => {
      throw new BackupError('checksum-mismatch', e.message);
    });
    return { id: manifest.id, objectSha256: manifest.object.sha256, encryptedOnly: true };
  }
  await mkdirPrivate(scratchDir);
  const tmp = await mkdtemp(join(scratchDir, `verify-${manifest.id}-`));
  try {
    const f = await fetchBackup(store, manifest, tmp, identities, undefined, progress);
    const snap = await checkSnapshot(manifest, f.snapshot, progress);
    return { id: manifest.id, objectSha256: manifest.object!.sha256, snapshot: snap };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
