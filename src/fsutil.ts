import { randomBytes } from 'node:crypto';
import { constants, createWriteStream } from 'node:fs';
import { link, lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * Backups hold every Secret of the cluster: directories we create are 0700.
 * A directory that already exists is never changed (it may be /run, /tmp or
 * a share that others use): `created` tells the caller which case it was.
 */
export async function mkdirPrivate(dir: string): Promise<{ created: boolean }> {
  let first: string | undefined;
  try {
    // mkdir's mode is only ever narrowed by the umask, so what it creates is at most 0700.
    first = await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    // Node's recursive mkdir reports ENOENT where the real cause is EROFS or EACCES: find the real one.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') await mkdirStepwise(dir);
    throw e;
  }
  return { created: first !== undefined };
}

/** Whether an existing directory lets other users in (group/other bits, not a sticky shared dir like /tmp). */
export async function isOpenToOthers(dir: string): Promise<boolean> {
  const st = await lstat(dir).catch(() => undefined);
  return st !== undefined && st.isDirectory() && (st.mode & 0o077) !== 0 && (st.mode & 0o1000) === 0;
}

async function mkdirStepwise(dir: string): Promise<void> {
  const parts = resolve(dir).split(sep).filter(Boolean);
  let p: string = sep;
  for (const part of parts) {
    p = join(p, part);
    try {
      await mkdir(p, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
}

/**
 * Gives a finished temp file its final name and makes that durable (fsync of
 * the directory). `exclusive`: create-if-absent, atomically (link() fails
 * with EEXIST on an existing name; the temp name is then removed by the
 * caller's cleanup), else rename over whatever is there.
 */
export async function commitTemp(tmp: string, path: string, exclusive: boolean): Promise<void> {
  if (exclusive) {
    await link(tmp, path);
    await rm(tmp, { force: true });
  } else await rename(tmp, path);
  await fsyncPath(dirname(path));
}

/**
 * Writes a stream to `path` so that a reader sees either nothing or the whole
 * file: temp name in the same directory, fsync, rename, fsync the directory.
 * Files are 0600. Returns the number of bytes written.
 */
export async function writeFileAtomic(path: string, body: Readable | Buffer | string, opts: { exclusive?: boolean } = {}): Promise<number> {
  await mkdirPrivate(dirname(path));
  const tmp = tempNameFor(path);
  try {
    let size: number;
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        const buf = typeof body === 'string' ? Buffer.from(body) : body;
        await fh.writeFile(buf);
        await fh.sync();
        size = buf.length;
      } finally {
        await fh.close();
      }
    } else {
      const out = createWriteStream(tmp, { flags: 'wx', mode: 0o600, highWaterMark: 1 << 20 });
      await pipeline(body, out);
      size = out.bytesWritten;
      await fsyncPath(tmp);
    }
    await commitTemp(tmp, path, opts.exclusive === true);
    return size;
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
