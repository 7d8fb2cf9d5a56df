import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** A pass-through that hashes and counts what flows through it: every byte is read once. */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  /** With a limit, more bytes than expected fail the stream at once (an object that never ends). */
  constructor(private readonly limit?: { bytes: number; error: () => Error }) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.limit && this.bytes > this.limit.bytes) {
      cb(this.limit.error());
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** The sha256 and length of everything an iterable yields (a store's read stream, a file's chunks). */
export async function sha256Of(chunks: AsyncIterable<Buffer>): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of chunks) {
    h.update(chunk);
    bytes += chunk.length;
  }
  return { bytes, sha256: h.digest('hex') };
}
