import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZstdDecompress } from 'node:zlib';
import tar from 'tar-stream';
import { BackupError } from '../errors.js';
import { decryptStream } from './encrypt.js';

/** What a file given to `inspect` is, by its first bytes. */
export type FileKind = 'snapshot' | 'tar' | 'zstd' | 'age' | 'unknown';

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const AGE_MAGIC = Buffer.from('age-encryption.org/v1');
/** bbolt's meta page magic, at offset 16 of page 0 (little-endian 0xED0CDAED). */
const BBOLT_MAGIC = Buffer.from([0xed, 0xda, 0x0c, 0xed]);

export async function sniffFile(path: string): Promise<FileKind> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new BackupError(code === 'ENOENT' ? 'not-found' : 'usage', `cannot read ${path}: ${code ?? (e as Error).message}`);
  }
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    const b = head.subarray(0, bytesRead);
    if (b.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd';
    if (b.subarray(0, AGE_MAGIC.length).equals(AGE_MAGIC)) return 'age';
    if (b.length >= 262 && b.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
    if (b.length >= 20 && b.subarray(16, 20).equals(BBOLT_MAGIC)) return 'snapshot';
    return 'unknown';
  } finally {
    await fh.close();
  }
}

export interface OpenedBundle {
  /** The snapshot extracted to a private temp directory. */
  snapshot: string;
  /** The artifact names in the tar, in order. */
  entries: string[];
  codec: 'zstd' | 'none';
  encrypted: boolean;
  /** Removes the temp directory. */
  cleanup(): Promise<void>;
}

/**
 * Opens a bundle file as stored (`backup.tar`, `.tar.zst`, `.tar.zst.age`)
 * without its committed manifest: decrypts and decompresses in the stream,
 * extracts only the snapshot (a plain name, a regular file) into a new 0700
 * directory. For `inspect`: the
 * sha256 checks against a committed manifest are `verify`'s job.
 */
export async function openBundle(path: string, kind: FileKind, identities?: string[]): Promise<OpenedBundle> {
  const dir = await mkdtemp(join(tmpdir(), 'etcd-backupd-inspect-'));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    let body: Readable = createReadStream(path, { highWaterMark: 1 << 20 });
    let encrypted = false;
    let codec: 'zstd' | 'none' = kind === 'zstd' ? 'zstd' : 'none';
    if (kind === 'age') {
      if (!identities?.length) throw new BackupError('usage', `${path} is encrypted (age); pass --identity FILE to look inside`);
      body = await decryptStream(body, identities);
      encrypted = true;
      codec = 'zstd'; // what this tool writes under age unless compression is off; checked below
    }
    const stages: Transform[] = [];
    if (codec === 'zstd') {
      const peek = await peekStream(body, 4);
      body = peek.stream;
      if (peek.head.equals(ZSTD_MAGIC)) stages.push(createZstdDecompress());
      else codec = 'none';
    }
    const entries: string[] = [];
    let snapshot: string | undefined;
    const extract = tar.extract();
    extract.on('entry', (header, stream, next) => {
      stream.on('error', () => undefined);
      const name = header.name;
      if (header.type !== 'file' || name.includes('/') || name.startsWith('.')) {
        stream.resume();
        extract.destroy(new BackupError('unsafe-archive', `${path}: refusing tar entry ${JSON.stringify(name.slice(0, 200))} (${header.type}): not a bundle this tool wrote`));
        return;
      }
      entries.push(name);
      if (/^snapshot_.*\.db$/.test(name) && !snapshot) {
        snapshot = join(dir, name);
        pipeline(stream, createWriteStream(snapshot, { flags: 'wx', mode: 0o600 })).then(() => next(), (e: Error) => extract.destroy(e));
        return;
      }
      stream.on('end', next);
      stream.resume();
    });
    await pipeline([body, ...stages, extract]).catch(async (e: unknown) => {
      if (e instanceof BackupError) throw e;
      throw new BackupError('snapshot-corrupt', `${path}: cannot read the bundle (${codec === 'zstd' ? 'zstd, ' : ''}tar): ${(e as Error).message}`, { cause: e });
    });
    if (!snapshot) throw new BackupError('snapshot-corrupt', `${path} is a bundle without a snapshot_*.db (entries: ${entries.join(', ') || 'none'})`);
    return { snapshot, entries, codec, encrypted, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** The first `n` bytes of a stream, and a stream that still yields all of it. */
async function peekStream(src: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const it = src[Symbol.asyncIterator]();
  const first: Buffer[] = [];
  let got = 0;
  while (got < n) {
    const r = await it.next();
    if (r.done) break;
    const c = Buffer.from(r.value as Buffer);
    first.push(c);
    got += c.length;
  }
  const head = Buffer.concat(first).subarray(0, n);
  const stream = Readable.from(
    (async function* () {
      yield* first;
      for (let r = await it.next(); !r.done; r = await it.next()) yield r.value as Buffer;
    })(),
  );
  return { head, stream };
}
