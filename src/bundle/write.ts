import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { writeFileAtomic } from '../fsutil.js';
import { encryptStream } from './encrypt.js';
import { HashingStream } from './hash.js';
import { MANIFEST_NAME, type ManifestArtifact } from './manifest.js';

export interface BundleResult {
  size: number;
  sha256: string;
  artifacts: ManifestArtifact[];
}

const READ_CHUNK = 1 << 20;

/**
 * Streams the artifacts into one tar at `to`, hashing each artifact and the
 * whole tar on the way; each file is read exactly once. `manifestFor` gets the
 * artifact hashes and returns the manifest that goes in last, so the tar
 * carries its own description.
 */
export async function writeBundle(
  to: string,
  files: string[],
  manifestFor: (artifacts: ManifestArtifact[]) => Buffer,
  opts: { recipients?: string[] } = {},
): Promise<BundleResult> {
  const pack = tar.pack();
  const whole = new HashingStream();
  const artifacts: ManifestArtifact[] = [];
  const mtime = new Date();

  const fill = async () => {
    for (const file of files) {
      const st = await stat(file);
      const h = new HashingStream();
      const entry = pack.entry({ name: basename(file), size: st.size, mode: 0o600, mtime: st.mtime, type: 'file' });
      await pipeline(createReadStream(file, { highWaterMark: READ_CHUNK }), h, entry);
      if (h.bytes !== st.size) throw new Error(`${file} changed size while being bundled (${st.size} -> ${h.bytes})`);
      artifacts.push({ name: basename(file), size: st.size, sha256: h.digest() });
    }
    const manifest = manifestFor(artifacts);
    pack.entry({ name: MANIFEST_NAME, size: manifest.length, mode: 0o600, mtime, type: 'file' }, manifest);
    pack.finalize();
  };
  let fillError: unknown;
  const filling = fill().catch((e) => {
    fillError = e;
    pack.destroy(e);
  });
  // The object hash is of what the store will hold: the ciphertext when encrypting.
  // pipe() does not forward errors; without this a failed read would hang the write.
  pack.on('error', (e: Error) => whole.destroy(e));
  let body: NodeJS.ReadableStream = pack as unknown as NodeJS.ReadableStream;
  if (opts.recipients?.length) {
    const cipher = await encryptStream(Readable.from(pack as unknown as AsyncIterable<Buffer>), opts.recipients);
    cipher.on('error', (e) => whole.destroy(e));
    body = cipher;
  }
  try {
    await writeFileAtomic(to, body.pipe(whole));
  } catch (e) {
    await filling;
    throw fillError ?? e;
  }
  await filling;
  if (fillError) throw fillError;
  return { size: whole.bytes, sha256: whole.digest(), artifacts };
}
