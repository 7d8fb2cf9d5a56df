import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { writeFileAtomic } from '../fsutil.js';

/**
 * tar.gz of a directory tree (the static pod manifests, and on kubeadm
 * hosts whatever else sits under it), the counterpart of OpenShift's
 * static_kuberesources archive. Entries are relative to `dir`'s parent so the
 * archive extracts to `<basename(dir)>/...`, like `tar -C parent dir`.
 */
export async function archiveDirectory(dir: string, to: string): Promise<number> {
  const pack = tar.pack();
  const parent = join(dir, '..');
  const entryName = (p: string) => relative(parent, p).split(sep).join('/');

  const fill = async () => {
    const walk = async (p: string): Promise<void> => {
      const st = await lstat(p);
      const header = { name: entryName(p), mode: st.mode & 0o7777, mtime: st.mtime, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        pack.entry({ ...header, type: 'directory' });
        for (const name of (await readdir(p)).sort()) await walk(join(p, name));
      } else if (st.isSymbolicLink()) {
        pack.entry({ ...header, type: 'symlink', linkname: await readlink(p) });
      } else if (st.isFile()) {
        const entry = pack.entry({ ...header, type: 'file', size: st.size });
        await pipeline(createReadStream(p), entry);
      }
      // sockets, fifos and devices have no place in a backup
    };
    await walk(dir);
    pack.finalize();
  };
  const filling = fill().catch((e) => pack.destroy(e));
  const gzip = createGzip();
  pack.on('error', (e) => gzip.destroy(e));
  const size = await writeFileAtomic(to, pack.pipe(gzip));
  await filling;
  return size;
}
