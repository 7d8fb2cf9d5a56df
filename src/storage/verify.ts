import { BackupError } from '../errors.js';
import { HashingStream } from '../bundle/hash.js';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import type { Store } from './store.js';

export type VerifyMode = 'readback' | 'size';

/**
 * Proves the store holds what we sent: the size it reports, and with
 * `readback` the sha256 of the bytes it gives back. A store that acknowledges
 * a write but keeps different bytes (s3rver with aws-chunked framing does) is
 * caught here, before the manifest commits the backup.
 */
export async function verifyRemoteCopy(store: Store, key: string, size: number, sha256: string, mode: VerifyMode): Promise<void> {
  const info = await store.head(key);
  if (!info) throw new BackupError('remote-verify-failed', `store ${store.name}: ${key} is missing right after upload`);
  if (info.size !== size) {
    throw new BackupError('remote-verify-failed', `store ${store.name}: ${key} holds ${info.size} bytes, ${size} were sent`);
  }
  if (mode === 'size') return;
  const h = new HashingStream();
  await pipeline(await store.get(key), h, new Writable({ write: (_c, _e, cb) => cb() }));
  const got = h.digest();
  if (h.bytes !== size || got !== sha256) {
    throw new BackupError('remote-verify-failed', `store ${store.name}: ${key} read back as ${h.bytes} bytes with sha256 ${got}, sent ${size} bytes with ${sha256}`);
  }
}
