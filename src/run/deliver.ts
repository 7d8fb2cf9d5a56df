import { createReadStream } from 'node:fs';
import type { Logger } from '../log.js';
import { BackupError, messageOf, reasonOf, type Reason } from '../errors.js';
import { serializeManifest, type Manifest } from '../bundle/manifest.js';
import { abortedByShutdown, type Store } from '../storage/store.js';
import { verifyRemoteCopy, type Proof, type VerifyMode } from '../storage/verify.js';
import { Readable } from 'node:stream';

export interface StoreOutcome {
  result: 'success' | 'failed';
  reason?: Reason;
  error?: string;
  key?: string;
  size?: number;
  sha256?: string;
  uploadSeconds?: number;
  verifySeconds?: number;
  proof?: Proof;
}

/**
 * Puts one sealed bundle into one store: object, proof of the remote copy,
 * then the manifest as the commit marker. Until the manifest is written the
 * backup does not exist for list, retention or fetch.
 */
export async function deliverToStore(
  store: Store,
  verify: VerifyMode,
  bundlePath: string,
  manifest: Manifest,
  log: Logger,
  signal?: AbortSignal,
  opts: { sealedNow?: boolean } = {},
): Promise<StoreOutcome> {
  const obj = manifest.object!;
  const manifestKey = obj.key.replace(/[^/]+$/, 'manifest.json');
  const t0 = performance.now();
  let body: Readable | undefined;
  // Shutdown: failing the body makes every store abandon the upload its own way
  // (S3 aborts the multipart upload, SFTP and local remove their temp file).
  const onAbort = () => body?.destroy(abortedByShutdown(store.name, 'upload'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (signal?.aborted) throw abortedByShutdown(store.name, 'upload');
    let put;
    if (store.putFile) put = await store.putFile(obj.key, bundlePath, signal);
    else {
      body = createReadStream(bundlePath, { highWaterMark: 1 << 20 });
      put = await store.put(obj.key, body, obj.size);
    }
    if (put.size !== obj.size) throw new BackupError('upload-failed', `store ${store.name} accepted ${put.size} bytes of ${obj.size}`);
    const t1 = performance.now();
    // A link to a bundle sealed by an earlier process is read back: it may have sat in the outbox for days.
    const v = await verifyRemoteCopy(store, obj.key, obj.size, obj.sha256, verify, { sameFileAsFreshBundle: put.sameFile === true && opts.sealedNow === true, serverHash: true, signal });
    if (v.note) log.warn({ store: store.name, key: obj.key }, v.note);
    const t2 = performance.now();
    if (signal?.aborted) throw new BackupError('upload-failed', `store ${store.name}: not committed because the daemon is shutting down`);
    await store.put(manifestKey, Readable.from([serializeManifest(manifest)]));
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
    // A half-written object without its manifest is not a backup; remove what we can so nothing is mistaken for one.
    await store.delete([manifestKey, obj.key]).catch(() => undefined);
    return { result: 'failed', reason: reasonOf(e) === 'internal' ? reason : reasonOf(e), error: messageOf(e), key: obj.key };
  } finally {
    signal?.removeEventListener('abort', onAbort);
    body?.destroy();
  }
}
