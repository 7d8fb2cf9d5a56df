// The cases of `npm run bench`: etcd-backupd's path per destination and the
// peers people use today, plain and compressing (`zstd | …`), on one dataset.
// Each case: { id, group, tool, what, backupd?, bytes?, stored?, run(), clean?() }.
import { writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { RUN, backupd, timedWithServer } from './stand.mjs';
import { timed } from './util.mjs';

/**
 * zstd as the compressing peers run it: level 3 on one worker thread (zstd's
 * own defaults, and etcd-backupd's default level), quiet, to stdout.
 */
export const ZSTD = 'zstd -q -3 -T1';

const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

/**
 * @param ds  the dataset (ensureDataset)
 * @param srv the stand (setup)
 * @param o   { only?: Set of ids, compression?: the etcd-backupd config key }
 */
export function defineCases(ds, srv, { only, compression } = {}) {
  const snap = ds.snapshot;
  const snapBytes = ds.snapshotBytes;
  const zst = ds.zstdBytes; // what `zstd -3` makes of the snapshot: the stored size of the compressing peers
  const work = join(RUN, 'work');
  const common = { snapshot: snap, staticResources: ds.staticResources, workDir: work, ...(compression ? { compression } : {}) };
  const env = srv.env;
  const peerLocal = join(RUN, 'peer-local');
  const cases = [];
  const add = (c) => cases.push(c);
  const sh = (script, ...args) => ['sh', '-c', script, ...args];

  // -- hashing / bundling on the node (no destination)
  add({ id: 'bd-inspect', group: 'node', tool: 'etcd-backupd', what: 'verify-local: inspect (trailer sha256 + bbolt walk)', backupd: true, run: () => backupd({ ...common, mode: 'inspect' }, env).then((r) => ({ ...r, bytes: snapBytes })) });
  add({ id: 'etcdctl-status', group: 'node', tool: 'etcdctl snapshot status', what: 'bbolt walk + hash (no trailer check)', bytes: snapBytes, run: () => timed(['etcdctl', 'snapshot', 'status', snap, '-w', 'json'], { env: { ...env, ETCDCTL_API: '3' } }) });
  add({ id: 'bd-bundle', group: 'node', tool: 'etcd-backupd', what: 'bundle: tar + compress (the configured codec) + sha256 per file and of what is stored, fsync', backupd: true, run: () => backupd({ ...common, mode: 'bundle' }, env), clean: srv.clean.work });
  add({ id: 'bd-bundle-none', group: 'node', tool: 'etcd-backupd (codec none)', what: 'bundle without compression: tar + sha256 per file and whole, fsync (the zstd stage costs the difference)', backupd: true, run: () => backupd({ ...common, compression: { codec: 'none' }, mode: 'bundle' }, env), clean: srv.clean.work });
  add({ id: 'sha256sum', group: 'node', tool: 'sha256sum', what: 'hash the snapshot', bytes: snapBytes, run: () => timed(['sha256sum', snap]) });
  add({
    id: 'tar',
    group: 'node',
    tool: 'tar -cf',
    what: 'tar snapshot + static archive (no hash, no fsync)',
    bytes: snapBytes + ds.staticBytes,
    run: () => timed(['tar', '-cf', join(peerLocal, 'b.tar'), '-C', dirname(snap), basename(snap), basename(ds.staticResources)]),
    clean: srv.clean.peerLocal,
  });
  add({ id: 'zstd', group: 'node', tool: ZSTD, what: 'compress the snapshot to a file (no fsync)', bytes: snapBytes, stored: zst, run: () => timed(sh(`${ZSTD} -c "$0" > "$1"`, snap, join(peerLocal, 's.db.zst'))), clean: srv.clean.peerLocal });
  add({
    id: 'tar-zstd',
    group: 'node',
    tool: `tar -cf - | ${ZSTD}`,
    what: 'tar + compress snapshot + static archive to a file (no hash, no fsync)',
    bytes: snapBytes + ds.staticBytes,
    stored: zst,
    run: () => timed(sh(`tar -cf - -C "$0" "$1" "$2" | ${ZSTD} -c > "$3"`, dirname(snap), basename(snap), basename(ds.staticResources), join(peerLocal, 'b.tar.zst'))),
    clean: srv.clean.peerLocal,
  });

  // -- local store
  add({ id: 'bd-local', group: 'local', tool: 'etcd-backupd', what: 'bundle (fsync) + upload: hard link into the store (same filesystem) + proof: same file + manifest', backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.local }, env), clean: srv.clean.local });
  add({ id: 'cp', group: 'local', tool: 'cp', what: 'copy only (page cache, no fsync)', bytes: snapBytes, run: () => timed(['cp', snap, join(peerLocal, 's.db')]), clean: srv.clean.peerLocal });
  add({ id: 'cp-sync', group: 'local', tool: 'cp + sync FILE', what: 'copy + fsync', bytes: snapBytes, run: () => timed(sh('cp "$0" "$1" && sync "$1"', snap, join(peerLocal, 's.db'))), clean: srv.clean.peerLocal });
  add({ id: 'zstd-local', group: 'local', tool: `${ZSTD} > FILE`, what: 'compress into the directory (no fsync)', bytes: snapBytes, stored: zst, run: () => timed(sh(`${ZSTD} -c "$0" > "$1"`, snap, join(peerLocal, 's.db.zst'))), clean: srv.clean.peerLocal });
  add({ id: 'zstd-sync-local', group: 'local', tool: `${ZSTD} > FILE + sync FILE`, what: 'compress into the directory + fsync', bytes: snapBytes, stored: zst, run: () => timed(sh(`${ZSTD} -c "$0" > "$1" && sync "$1"`, snap, join(peerLocal, 's.db.zst'))), clean: srv.clean.peerLocal });

  // -- local store on another filesystem (tmpfs here; an NFS mount in real life): a copy
  const peerShm = join(srv.shmDir, 'peer');
  add({ id: 'bd-local-otherfs', group: 'local-otherfs', tool: 'etcd-backupd', what: 'bundle (fsync) + upload: kernel copy + fsync + read-back sha256 + manifest', backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.localOtherFs }, env), clean: srv.clean.localOtherFs });
  add({ id: 'cp-otherfs', group: 'local-otherfs', tool: 'cp', what: 'copy only (no fsync)', bytes: snapBytes, run: () => timed(['cp', snap, join(peerShm, 's.db')]), clean: srv.clean.peerOtherFs });
  add({ id: 'cp-sync-otherfs', group: 'local-otherfs', tool: 'cp + sync FILE', what: 'copy + fsync', bytes: snapBytes, run: () => timed(sh('cp "$0" "$1" && sync "$1"', snap, join(peerShm, 's.db'))), clean: srv.clean.peerOtherFs });
  add({ id: 'zstd-otherfs', group: 'local-otherfs', tool: `${ZSTD} > FILE`, what: 'compress onto the other filesystem (no fsync)', bytes: snapBytes, stored: zst, run: () => timed(sh(`${ZSTD} -c "$0" > "$1"`, snap, join(peerShm, 's.db.zst'))), clean: srv.clean.peerOtherFs });
  add({ id: 'zstd-sync-otherfs', group: 'local-otherfs', tool: `${ZSTD} > FILE + sync FILE`, what: 'compress onto the other filesystem + fsync', bytes: snapBytes, stored: zst, run: () => timed(sh(`${ZSTD} -c "$0" > "$1" && sync "$1"`, snap, join(peerShm, 's.db.zst'))), clean: srv.clean.peerOtherFs });

  // -- S3
  const s3 = (argv) => timedWithServer(srv.s3, argv, { env });
  const ep = srv.s3.endpoint;
  add({ id: 'bd-s3', group: 's3', tool: 'etcd-backupd', what: 'bundle + multipart upload + GET read-back sha256 + manifest', backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.s3 }, env, { server: srv.s3 }), clean: srv.clean.s3 });
  add({
    id: 'aws-s3-cp',
    group: 's3',
    tool: 'aws s3 cp',
    what: 'upload only (8 MiB parts, 10 in flight)',
    bytes: snapBytes,
    run: () => s3(['aws', 's3', 'cp', snap, 's3://bench/peer-aws/s.db', '--endpoint-url', ep, '--only-show-errors', '--no-progress']),
    // no clean: readback-s3 reads this object next
  });
  // -- read-back peers (compare with the verify phase): they read what the upload peer just stored
  add({ id: 'readback-s3', group: 'readback', tool: 'rclone cat (s3) | sha256sum', what: 'GET + hash (the object aws s3 cp stored)', bytes: snapBytes, run: () => s3(sh('rclone cat s3b:bench/peer-aws/s.db | sha256sum')), clean: srv.clean.s3 });
  add({ id: 'rclone-s3', group: 's3', tool: 'rclone copyto (s3)', what: 'upload (5 MiB chunks, 4 in flight) + MD5 metadata', bytes: snapBytes, run: () => s3(['rclone', 'copyto', snap, 's3b:bench/peer-rclone/s.db']), clean: srv.clean.s3 });
  add({
    id: 'zstd-aws-s3',
    group: 's3',
    tool: `${ZSTD} | aws s3 cp -`,
    what: 'compress + upload from stdin (8 MiB parts)',
    bytes: snapBytes,
    stored: zst,
    run: () => s3(sh(`${ZSTD} -c "$0" | aws s3 cp - s3://bench/peer-aws-zst/s.db.zst --endpoint-url "$1" --only-show-errors --no-progress`, snap, ep)),
    clean: srv.clean.s3,
  });
  add({ id: 'zstd-rclone-s3', group: 's3', tool: `${ZSTD} | rclone rcat (s3)`, what: 'compress + streamed multipart upload', bytes: snapBytes, stored: zst, run: () => s3(sh(`${ZSTD} -c "$0" | rclone rcat s3b:bench/peer-rclone-zst/s.db.zst`, snap)), clean: srv.clean.s3 });

  // -- SFTP
  const ssh = (argv) => timedWithServer(srv.sshd, argv, { env });
  const at = `${srv.sshd.username}@127.0.0.1`;
  add({ id: 'bd-sftp', group: 'sftp', tool: 'etcd-backupd', what: "bundle + SFTP write + fsync@openssh + proof: the server's sha256 over exec (read-back if impossible) + manifest", backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.sftp }, env, { server: srv.sshd }), clean: srv.clean.sftp });
  const batch = join(RUN, 'sftp-batch');
  add({
    id: 'sftp-b',
    group: 'sftp',
    tool: 'sftp -b (OpenSSH)',
    what: 'upload only',
    bytes: snapBytes,
    run: async () => {
      await writeFile(batch, `-mkdir ${srv.sshd.root}/peer-sftp\nput ${snap} ${srv.sshd.root}/peer-sftp/s.db\n`);
      return ssh(['sftp', '-q', ...srv.ssh, '-b', batch, at]);
    },
    clean: srv.clean.sftp,
  });
  add({ id: 'rclone-sftp', group: 'sftp', tool: 'rclone copyto (sftp)', what: 'upload + remote md5sum over ssh', bytes: snapBytes, run: () => ssh(['rclone', 'copyto', snap, `sftpb:${srv.sshd.root}/peer-rclone/s.db`]), clean: srv.clean.sftp });
  add({
    id: 'zstd-ssh',
    group: 'sftp',
    tool: `${ZSTD} | ssh … 'cat > FILE'`,
    what: 'compress + stream over one SSH exec channel (no fsync)',
    bytes: snapBytes,
    stored: zst,
    run: () => ssh(sh(`${ZSTD} -c "$0" | ssh ${srv.sshExec.map(q).join(' ')} ${at} ${q(`cat > ${q(`${srv.sshd.root}/s.db.zst`)}`)}`, snap)),
    clean: srv.clean.sftp,
  });
  add({ id: 'zstd-rclone-sftp', group: 'sftp', tool: `${ZSTD} | rclone rcat (sftp)`, what: 'compress + streamed SFTP upload', bytes: snapBytes, stored: zst, run: () => ssh(sh(`${ZSTD} -c "$0" | rclone rcat "sftpb:$1"`, snap, `${srv.sshd.root}/peer-rclone-zst/s.db.zst`)), clean: srv.clean.sftp });
  add({
    id: 'scp',
    group: 'sftp',
    tool: 'scp (OpenSSH, SFTP protocol)',
    what: 'upload only',
    bytes: snapBytes,
    run: () => ssh(['scp', '-q', ...srv.ssh, snap, `${at}:${srv.sshd.root}/s.db`]),
    // no clean: the read-back peers read this file next
  });
  add({ id: 'readback-sftp', group: 'readback', tool: 'rclone cat (sftp) | sha256sum', what: 'SFTP read + hash (the file scp stored)', bytes: snapBytes, run: () => ssh(sh(`rclone cat sftpb:${srv.sshd.root}/s.db | sha256sum`)) });
  add({
    id: 'readback-sftp-ssh',
    group: 'readback',
    tool: 'sftp get + sha256sum',
    what: 'OpenSSH SFTP read to a file, then hash it',
    bytes: snapBytes,
    // sftp writes with pwrite at offsets: it needs a seekable target, not a pipe.
    run: async () => {
      const b = join(RUN, 'sftp-get');
      const to = join(peerLocal, 'get.db');
      await writeFile(b, `get ${srv.sshd.root}/s.db ${to}\n`);
      return ssh(sh(`sftp -q ${srv.ssh.map(q).join(' ')} -b '${b}' ${at} && sha256sum '${to}'`));
    },
    clean: async () => {
      await srv.clean.peerLocal();
      await srv.clean.sftp();
    },
  });
  return only ? cases.filter((c) => only.has(c.id)) : cases;
}
