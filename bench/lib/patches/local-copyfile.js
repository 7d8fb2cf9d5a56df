
// ---- appended by bench/experiments.mjs (variant local-copyfile): a prototype, not shipped code ----
// When the body is a file stream (deliverToStore hands every store
// createReadStream(bundlePath)), copy the file in the kernel (copy_file_range;
// a reflink on XFS/btrfs) instead of reading it into Node and writing it out
// again: same temp name + fsync + rename + directory fsync as writeFileAtomic.
import { copyFile as __copyFile, rename as __rename, rm as __rm, stat as __stat } from 'node:fs/promises';
import { dirname as __dirname } from 'node:path';
import { fsyncPath as __fsyncPath, mkdirPrivate as __mkdirPrivate, tempNameFor as __tempNameFor } from '../fsutil.js';

async function __putMaybeCopy(path, body) {
  const src = typeof body?.path === 'string' && body.bytesRead === 0 && body.start === undefined ? body.path : undefined;
  if (!src) return writeFileAtomic(path, body);
  body.destroy();
  await __mkdirPrivate(__dirname(path));
  const tmp = __tempNameFor(path);
  try {
    await __copyFile(src, tmp);
    await __fsyncPath(tmp);
    const { size } = await __stat(tmp);
    await __rename(tmp, path);
    await __fsyncPath(__dirname(path));
    return size;
  } catch (e) {
    await __rm(tmp, { force: true });
    throw e;
  }
}
