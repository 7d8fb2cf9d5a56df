import { createReadStream } from 'node:fs';
import type { Logger } from '../log.js';
import { meter, type ProgressSink } from '../progress/model.js';
import { BackupError, messageOf, reasonOf, type Reason } from '../errors.js';
import { serializeManifest, type Manifest } from '../bundle/manifest.js';
import { manifestKeyOf } from '../layout.js';
import { abortedByShutdown, ObjectExistsError, type Store } from '../storage/store.js';
import { verifyRemoteCopy, type Proof, type VerifyMode } from '../storage/verify.js';
import { Readable } from 'node:stream';
import { readManifest } from '../catalog/catalog.js';

export interface StoreOutcome {
  result: 'success' | 'failed';
  reason?: Reason;
  error?: string;
  key?: string;
  size?: number;
  sha256?: string;
  uploadSeconds?: number;
  verifySeconds?: number;
  /** How the copy was proven; `committed-before`: the store already held this very backup, committed. */
  proof?: Proof | 'committed-before';
}

/**
 * What the store holds under this backup's manifest key: undefined when the
 * store says there is nothing, the manifest when there is one. An error (or
 * a manifest we cannot read) is never "absent": it throws.
 */
async function committedManifest(store: Store, key: string, signal?: AbortSignal): Promise<Manifest | undefined> {
  try {
    return await readManifest(store, key, signal);
  } catch (e) {
    if (reasonOf(e) === 'not-found') return undefined;
    if (e instanceof BackupError) throw e;
    throw new BackupError('id-conflict', `store ${store.name}: ${key} exists but is not a manifest this tool can read (${messageOf(e)}); it is never overwritten`, {
      hint: 'look at the object in the store; the bundle stays in the outbox',
    });
  }
}

function sameBackup(a: Manifest, b: Manifest): boolean {
  return a.id === b.id && a.object?.sha256 === b.object?.sha256 && a.object?.size === b.object?.size;
}

function idConflict(store: Store, m: Manifest, theirs: Manifest): BackupError {
  return new BackupError(
    'id-conflict',
    `store ${store.name} already holds a committed backup ${m.id} with other content (sha256 ${theirs.object?.sha256 ?? '?'}, this one ${m.object?.sha256}); a committed backup is never overwritten`,
    { hint: 'two backups got one id (two nodes with one node name, or a clock set back while the store could not answer); this bundle stays in the outbox: fix node names or the clock' },
  );
}

/**
 * Puts one sealed bundle into one store: object, proof of the remote copy,
 * then the manifest as the commit marker, created only if absent. Until the
 * manifest is written the backup does not exist for list, retention or fetch.
 *
 * A store that already holds a committed manifest for this id with the same
 * object counts as delivered (a crash between its commit and status.json);
 * one with other content is an `id-conflict`. A failed attempt removes only
 * what it wrote, and never an object whose manifest exists.
 */
export async function deliverToStore(
  store: Store,
  verify: VerifyMode,
  bundlePath: string,
  manifest: Manifest,
  log: Logger,
  signal?: AbortSignal,
  opts: { sealedNow?: boolean; /** Live progress of the upload and the read-back (an interactive CLI). */ progress?: ProgressSink } = {},
): Promise<StoreOutcome> {
  const obj = manifest.object!;
  const manifestKey = manifestKeyOf(obj.key);
  const t0 = performance.now();
  let body: Readable | undefined;
  let wroteObject = false;
  // Shutdown: failing the body makes every store abandon the upload its own way
  // (S3 aborts the multipart upload, SFTP and local remove their temp file).
  const onAbort = () => body?.destroy(abortedByShutdown(store.name, 'upload'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (signal?.aborted) throw abortedByShutdown(store.name, 'upload');
    const before = await committedManifest(store, manifestKey, signal);
    if (before) {
      if (!sameBackup(before, manifest)) throw idConflict(store, manifest, before);
      log.info({ store: store.name, key: obj.key }, 'the store already holds this backup, committed: delivered');
      return { result: 'success', key: obj.key, size: obj.size, sha256: obj.sha256, proof: 'committed-before' };
    }
    let put;
    wroteObject = true;
    const m = meter(opts.progress, 'deliver', { store: store.name, total: obj.size });
    try {
      if (store.caps.putFile) put = await store.putFile(obj.key, bundlePath, { signal, onProgress: m.add });
      else {
        body = createReadStream(bundlePath, { highWaterMark: 1 << 20 });
        put = await store.put(obj.key, body, { size: obj.size, signal, onProgress: m.add });
      }
      // A link or a one-request put reports nothing on the way: the line still ends whole.
      m.set(put.size);
      m.end(true);
    } catch (e) {
      m.end(false);
      throw e;
    }
    if (put.size !== obj.size) throw new BackupError('upload-failed', `store ${store.name} accepted ${put.size} bytes of ${obj.size}`);
    const t1 = performance.now();
    // A link to a bundle sealed by an earlier process is read back: it may have sat in the outbox for days.
    const v = await verifyRemoteCopy(store, obj.key, obj.size, obj.sha256, verify, { sameFileAsFreshBundle: put.sameFile === true && opts.sealedNow === true, serverHash: true, signal, progress: opts.progress });
    if (v.note) log.warn({ store: store.name, key: obj.key }, v.note);
    const t2 = performance.now();
    if (signal?.aborted) throw new BackupError('upload-failed', `store ${store.name}: not committed because the daemon is shutting down`);
    try {
      await store.put(manifestKey, Readable.from([serializeManifest(manifest)]), { ifAbsent: true, signal });
    } catch (e) {
      if (!(e instanceof ObjectExistsError)) throw e;
      // Someone committed this id between our check and now: ours if it is this very backup.
      const theirs = await committedManifest(store, manifestKey, signal);
      if (!theirs || !sameBackup(theirs, manifest)) {
        wroteObject = false; // the object under a committed manifest is theirs now: never removed by us
        throw theirs ? idConflict(store, manifest, theirs) : e;
      }
    }
    const outcome: StoreOutcome = {
      result: 'success',
      key: obj.key,
      size: obj.size,
      sha256: obj.sha256,
      uploadSeconds: (t1 - t0) / 1000,
      verifySeconds: (t2 - t1) / 1000,
      proof: v.proof,
    };
    log.info({ store: store.name, key: obj.key, size: obj.size, uploadSeconds: outcome.uploadSeconds, verifySeconds: outcome.verifySeconds, proof: v.proof }, 'remote copy verified and committed');
    return outcome;
  } catch (e) {
    const reason = e instanceof BackupError ? e.reason : 'upload-failed';
    log.error({ store: store.name, reason, err: messageOf(e) }, 'delivery to store failed');
    if (wroteObject) await removeUncommittedObject(store, manifestKey, obj.key, log);
    return { result: 'failed', reason: reasonOf(e) === 'internal' ? reason : reasonOf(e), error: messageOf(e), key: obj.key };
  } finally {
    signal?.removeEventListener('abort', onAbort);
    body?.destroy();
  }
}

/**
 * A half-written object without its manifest is not a backup: remove what
 * this attempt wrote so nothing is mistaken for one, but only while the
 * store says no manifest commits it (a manifest write that "failed" may have
 * landed). When the store cannot say, the object stays: prune removes
 * manifest-less leftovers after incompleteGrace.
 */
async function removeUncommittedObject(store: Store, manifestKey: string, objectKey: string, log: Logger): Promise<void> {
  try {
    if ((await store.head(manifestKey)) !== undefined) return;
    await store.delete([objectKey]);
  } catch (e) {
    log.warn({ store: store.name, key: objectKey, err: messageOf(e) }, 'could not remove the uncommitted object; prune removes it after incompleteGrace');
  }
}
