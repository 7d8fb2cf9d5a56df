import { open } from 'node:fs/promises';

/**
 * Reads a file front to back into one reused buffer. Each yielded view is
 * valid only until the next one is requested: for consumers that copy or send
 * the bytes before asking for more (hashing, ssh2 packets). Half the CPU of a
 * read stream, which allocates and page-faults in a fresh buffer per chunk.
 */
export async function* fileChunks(path: string, chunkSize = 1 << 20, signal?: AbortSignal, onAbort?: () => Error): AsyncGenerator<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafeSlow(chunkSize);
    for (let pos = 0; ; ) {
      if (signal?.aborted) throw onAbort?.() ?? new Error('aborted');
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return;
      pos += bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

/** Fills `buf[0, len)` from `fh` at `pos`; fewer bytes than asked means the file shrank. */
export async function readFully(fh: import('node:fs/promises').FileHandle, buf: Buffer, len: number, pos: number): Promise<void> {
  let off = 0;
  while (off < len) {
    const { bytesRead } = await fh.read(buf, off, len - off, pos + off);
    if (bytesRead === 0) throw new Error(`file ended ${len - off} bytes early at offset ${pos + off}: it changed while being read`);
    off += bytesRead;
  }
}
