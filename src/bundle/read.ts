import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, type Transform, Writable } from 'node:stream';
import { createZstdDecompress } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { BackupError } from '../errors.js';
import { mkdirPrivate } from '../fsutil.js';
import { decryptStream } from './encrypt.js';
import { HashingStream } from './hash.js';
import { MANIFEST_NAME } from '../layout.js';
import type { Manifest } from './manifest.js';

export interface ExtractResult {
  files: string[]; // absolute paths of the extracted artifacts, in manifest order
  objectSha256: string;
  objectSize: number;
}

const MAX_MANIFEST_BYTES = 1 << 20;

/**
 * Reads a bundle from a stream and checks it against its committed manifest:
 * the sha256 and size of the whole object, and of every artifact. With `to`
 * it extracts the artifacts there (0600); without, it only checks.
 *
 * Only regular files whose names the manifest lists are accepted: a name with
 * a slash, a link, a device or an entry the manifest does not know is refused
 * before a byte of it is written, so nothing can land outside `to`. On any
 * failure every file this call wrote is removed again.
 */
export async function readBundle(body: Readable, manifest: Manifest, to?: string, identities?: string[]): Promise<ExtractResult> {
  const expected = new Map(manifest.artifacts.map((a) => [a.name, a]));
  const seen = new Set<string>();
  const written: string[] = [];
  const expectedSize = manifest.object?.size;
  const whole = new HashingStream(
    expectedSize === undefined
      ? undefined
      : { bytes: expectedSize, error: () => new BackupError('checksum-mismatch', `stored object of ${manifest.id} is larger than the ${expectedSize} bytes its manifest says`) },
  );
  // The extractor can finish before the last entry's write and rename do: wait for them, on
  // success (the file must exist) and on failure (cleanup must see every file).
  let lastEntry: Promise<void> = Promise.resolve();
  const extract = tar.extract();
  if (to) await mkdirPrivate(to);

  extract.on('entry', (header, stream, next) => {
    // Destroying the extractor also errors the entry stream: give it a listener, or the refusal crashes the process.
    stream.on('error', () => undefined);
    const fail = (msg: string) => {
      stream.resume();
      extract.destroy(new BackupError('unsafe-archive', msg));
    };
    const name = header.name;
    if (header.type !== 'file') return fail(`refusing tar entry ${JSON.stringify(name)} of type ${header.type}: bundles hold regular files only`);
    if (seen.has(name)) return fail(`refusing duplicate tar entry ${JSON.stringify(name)}`);
    seen.add(name);
    if (name === MANIFEST_NAME) {
      if ((header.size ?? 0) > MAX_MANIFEST_BYTES) return fail('embedded manifest is implausibly large');
      stream.on('end', next);
      stream.resume();
      return;
    }
    const want = expected.get(name);
    if (!want) return fail(`refusing tar entry ${JSON.stringify(name)}: not listed in the manifest`);
    if (header.size !== want.size) return fail(`tar entry ${name} has size ${header.size}, manifest says ${want.size}`);
    const h = new HashingStream();
    let sink: Writable;
    let partial: string | undefined;
    if (to) {
      partial = join(to, `.${name}.partial`);
      written.push(partial);
      sink = createWriteStream(partial, { flags: 'wx', mode: 0o600 });
    } else {
      sink = new Writable({ write: (_c, _e, cb) => cb() });
    }
    lastEntry = pipeline(stream, h, sink)
      .then(async () => {
        if (h.bytes !== want.size || h.digest() !== want.sha256) {
          throw new BackupError('checksum-mismatch', `artifact ${name}: sha256 does not match the manifest (the stored copy is damaged)`);
        }
        if (to && partial) {
          await rename(partial, join(to, name));
          written[written.indexOf(partial)] = join(to, name);
        }
        next();
      })
      .catch((e) => {
        extract.destroy(e instanceof BackupError ? e : new BackupError('unsafe-archive', `cannot write ${name}: ${(e as Error).message}`));
      });
  });

  // Stored bytes -> (decrypt) -> (decompress) -> tar. The object hash is of the stored bytes.
  const unpack: Transform[] = manifest.object?.codec === 'zstd' ? [createZstdDecompress()] : [];
  try {
    if (manifest.object?.encrypted) {
      if (!identities?.length) throw new BackupError('usage', `backup ${manifest.id} is encrypted; an age identity is needed to read it`);
      // Hash the ciphertext as the store holds it, then decrypt into the extractor.
      const cipher = body.pipe(whole);
      body.on('error', (e) => whole.destroy(e));
      await pipeline([await decryptStream(cipher, identities), ...unpack, extract]);
    } else {
      await pipeline([body, whole, ...unpack, extract]);
    }
    await lastEntry;
    if (extract.destroyed && (extract as unknown as { errored?: Error }).errored) throw (extract as unknown as { errored: Error }).errored;
    if (to) {
      const notPlaced = manifest.artifacts.filter((a) => !written.includes(join(to, a.name))).map((a) => a.name);
      if (notPlaced.length && notPlaced.every((n) => seen.has(n))) throw new BackupError('checksum-mismatch', `bundle ended inside ${notPlaced.join(', ')}`);
    }
    const missing = manifest.artifacts.filter((a) => !seen.has(a.name)).map((a) => a.name);
    if (missing.length) throw new BackupError('checksum-mismatch', `bundle lacks ${missing.join(', ')} listed in its manifest`);
    const sha = whole.digest();
    if (manifest.object && (sha !== manifest.object.sha256 || whole.bytes !== manifest.object.size)) {
      throw new BackupError(
        'checksum-mismatch',
        `stored object ${manifest.object.key}: ${whole.bytes} bytes with sha256 ${sha.slice(0, 16)}…, manifest says ${manifest.object.size} bytes with ${manifest.object.sha256.slice(0, 16)}…`,
      );
    }
    return { files: manifest.artifacts.map((a) => join(to ?? '', a.name)), objectSha256: sha, objectSize: whole.bytes };
  } catch (e) {
    await lastEntry.catch(() => undefined);
    await Promise.all(written.map((p) => rm(p, { force: true })));
    if (e instanceof BackupError) throw e;
    throw new BackupError('checksum-mismatch', `cannot read bundle: ${(e as Error).message}`, { cause: e });
  }
}
