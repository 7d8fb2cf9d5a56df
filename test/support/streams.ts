import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';

/** Reads `r` to its end: how many bytes it gave and their sha256 (hex). Rejects with the stream's own error. */
export async function drain(r: Readable): Promise<{ bytes: number; sha: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const c of r) {
    h.update(c as Buffer);
    bytes += (c as Buffer).length;
  }
  return { bytes, sha: h.digest('hex') };
}
