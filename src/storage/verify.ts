import { BackupError } from '../errors.js';
import { sha256Of } from '../bundle/hash.js';
import { metered, type ProgressSink } from '../progress/model.js';
import { abortedByShutdown, type Store, type StoreSettings } from './store.js';

export type VerifyMode = StoreSettings['verify'];

/**
 * How a remote copy was proven, strongest first among the cheap ones:
 * - `readback`: we read every byte back from the store and hashed it;
 * - `server-sha256`: the server hashed the bytes it holds (SFTP over an exec
 *   channel) and its digest equals ours;
 * - `same-file`: the store's object is a hard link to the bundle sealed
 *   moments ago, whose sha256 was taken from the very bytes written;
 * - `size`: only the size was checked (`verify: size`).
 */
export type Proof = 'readback' | 'server-sha256' | 'same-file' | 'size';

export interface VerifyOptions {
  /** The object is a hard link to a bundle this process sealed and hashed just now. */
  sameFileAsFreshBundle?: boolean;
  /** Accept the server's own sha256 when the store can produce one (delivery, not an operator's verify). */
  serverHash?: boolean;
  signal?: AbortSignal;
  /** Live progress of a read-back (an interactive CLI). */
  progress?: ProgressSink;
}

export interface VerifyOutcome {
  proof: Proof;
  /** Set when the cheap proof disagreed and a read-back settled it. */
  note?: string;
}

/**
 * Proves the store holds what we sent: the size it reports, and with
 * `readback` the sha256 of the bytes it holds. A store that acknowledges
 * a write but keeps different bytes (s3rver with aws-chunked framing does) is
 * caught here, before the manifest commits the backup.
 */
export async function verifyRemoteCopy(store: Store, key: string, size: number, sha256: string, mode: VerifyMode, opts: VerifyOptions = {}): Promise<VerifyOutcome> {
  const signal = opts.signal;
  const info = await store.head(key, { signal });
  if (!info) throw new BackupError('remote-verify-failed', `store ${store.name}: ${key} is missing right after upload`);
  if (info.size !== size) {
    throw new BackupError('remote-verify-failed', `store ${store.name}: ${key} holds ${info.size} bytes, ${size} were sent`);
  }
  if (mode === 'size') return { proof: 'size' };
  if (opts.sameFileAsFreshBundle) return { proof: 'same-file' };
  let note: string | undefined;
  if (opts.serverHash && store.caps.serverHash) {
    // Any failure of the cheap way (no shell, no sha256sum, a chroot) falls back to reading back.
    const theirs = await store.serverSha256(key, { signal }).catch(() => undefined);
    // A shutdown interrupted the server's hash: not a reason to start pulling gigabytes back.
    if (opts.signal?.aborted) throw abortedByShutdown(store.name, `${key}: verification`);
    if (theirs === sha256) return { proof: 'server-sha256' };
    // A mismatch fails only if the bytes themselves disagree: the server's hash command could be a wrapper or see another file.
    if (theirs !== undefined) note = `the server's sha256 of ${key} was ${theirs}, expected ${sha256}; read back to decide`;
  }
  // The read-back is one transfer under the store's deadline and stall watchdog (guard.ts): a
  // trickling server fails it with store-timeout instead of holding the run for hours.
  const got = await metered(opts.progress, 'read-back', { store: store.name, total: size }, async (m) =>
    store.caps.readBack ? store.readBackSha256(key, { signal, onProgress: m.add }) : sha256Of(await store.get(key, { signal, onProgress: m.add })),
  );
  if (got.bytes !== size || got.sha256 !== sha256) {
    throw new BackupError('remote-verify-failed', `store ${store.name}: ${key} read back as ${got.bytes} bytes with sha256 ${got.sha256}, sent ${size} bytes with ${sha256}`);
  }
  return { proof: 'readback', note };
}
