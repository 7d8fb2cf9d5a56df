// The test stand shared by run.mjs and experiments.mjs: one s3rver and one
// sshd on 127.0.0.1, credentials and tool environments (aws, rclone), the
// three etcd-backupd store configs, and cleaners that empty each destination.
import { readFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startS3rver, startSshd } from './servers.mjs';
import { BENCH, ROOT, TMP, run, sleep, timed } from './util.mjs';

export const RUN = join(TMP, 'run');
export const ONE = join(BENCH, 'one-backup.mjs');
const log = (...a) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...a);

/** CPU seconds a process and its reaped children used so far (utime+stime+cutime+cstime). */
export function processCpu(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * timed(), plus the CPU the server spent meanwhile: s3rver is one process;
 * sshd forks a process per connection whose CPU lands in the listener's
 * cutime/cstime once reaped (hence the short wait).
 */
export async function timedWithServer(server, argv, o) {
  const before = server ? processCpu(server.pid) : NaN;
  const r = await timed(argv, o);
  if (server) {
    await sleep(300);
    r.serverCpu = processCpu(server.pid) - before;
  }
  return r;
}


async function emptyDir(dir, keep = []) {
  await mkdir(dir, { recursive: true });
  for (const name of await readdir(dir)) if (!keep.includes(name)) await rm(join(dir, name), { recursive: true, force: true });
}

export async function setup(ds, { s3PartSize, s3QueueSize, dir = RUN } = {}) {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  // Another filesystem than dir (tmpfs; /dev/shm exists on every Linux box): where a link is impossible.
  const shmDir = `/dev/shm/ebd-bench-${process.pid}`;
  await rm(shmDir, { recursive: true, force: true });
  await mkdir(shmDir, { recursive: true, mode: 0o700 });
  log('starting s3rver and sshd on 127.0.0.1');
  const s3 = await startS3rver(join(dir, 's3rver'), 'bench');
  const sshd = await startSshd(join(dir, 'sshd'));
  const creds = join(dir, 'creds');
  await mkdir(creds, { recursive: true });
  await writeFile(join(creds, 'akid'), 'S3RVER\n', { mode: 0o600 });
  await writeFile(join(creds, 'secret'), 'S3RVER\n', { mode: 0o600 });
  await writeFile(join(dir, 'aws-config'), '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n');
  await writeFile(join(dir, 'rclone.conf'), '');
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_CONFIG_FILE: join(dir, 'aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'no-credentials'),
    RCLONE_CONFIG: join(dir, 'rclone.conf'),
    RCLONE_CONFIG_S3B_TYPE: 's3',
    RCLONE_CONFIG_S3B_PROVIDER: 'Other',
    RCLONE_CONFIG_S3B_ACCESS_KEY_ID: 'S3RVER',
    RCLONE_CONFIG_S3B_SECRET_ACCESS_KEY: 'S3RVER',
    RCLONE_CONFIG_S3B_ENDPOINT: s3.endpoint,
    RCLONE_CONFIG_S3B_FORCE_PATH_STYLE: 'true',
    RCLONE_CONFIG_S3B_NO_CHECK_BUCKET: 'true',
    RCLONE_CONFIG_SFTPB_TYPE: 'sftp',
    RCLONE_CONFIG_SFTPB_HOST: '127.0.0.1',
    RCLONE_CONFIG_SFTPB_PORT: String(sshd.port),
    RCLONE_CONFIG_SFTPB_USER: sshd.username,
    RCLONE_CONFIG_SFTPB_KEY_FILE: sshd.privateKeyFile,
    RCLONE_CONFIG_SFTPB_KNOWN_HOSTS_FILE: sshd.knownHostsFile,
  };
  // A custom CA bundle in the environment makes rclone's S3 backend refuse its own HTTP transport
  // ("LoadCustomCABundleError"); nothing here uses TLS.
  delete env.AWS_CA_BUNDLE;
  const stores = {
    local: { name: 'local', type: 'local', path: join(dir, 'stores', 'local') },
    // A local store on another filesystem than workDir (as an NFS mount would be): tmpfs, so a copy, never a link.
    localOtherFs: { name: 'local-other-fs', type: 'local', path: join(shmDir, 'stores', 'local') },
    s3: {
      name: 's3',
      type: 's3',
      bucket: 'bench',
      prefix: 'backupd',
      endpoint: s3.endpoint,
      forcePathStyle: true,
      accessKeyIdFile: join(creds, 'akid'),
      secretAccessKeyFile: join(creds, 'secret'),
      ...(s3PartSize ? { partSize: s3PartSize } : {}),
      ...(s3QueueSize ? { queueSize: s3QueueSize } : {}),
    },
    sftp: {
      name: 'sftp',
      type: 'sftp',
      host: '127.0.0.1',
      port: sshd.port,
      username: sshd.username,
      privateKeyFile: sshd.privateKeyFile,
      hostKey: sshd.hostKeyFingerprint,
      path: join(sshd.root, 'backupd'),
    },
  };
  const s3BucketDir = join(s3.dir, 'bench');
  const ssh = ['-i', sshd.privateKeyFile, '-P', String(sshd.port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${sshd.knownHostsFile}`];
  // The same for ssh(1), whose port flag is -p.
  const sshExec = ['-i', sshd.privateKeyFile, '-p', String(sshd.port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${sshd.knownHostsFile}`];
  return {
    s3,
    sshd,
    env,
    stores,
    ssh,
    sshExec,
    clean: {
      local: () => emptyDir(join(dir, 'stores')),
      localOtherFs: () => emptyDir(join(shmDir, 'stores')),
      peerOtherFs: () => emptyDir(join(shmDir, 'peer')),
      peerLocal: () => emptyDir(join(dir, 'peer-local')),
      s3: () => emptyDir(s3BucketDir),
      sftp: () => emptyDir(sshd.root),
      work: () => emptyDir(join(dir, 'work')),
    },
    shmDir,
    async stop() {
      await rm(shmDir, { recursive: true, force: true });
      await s3.stop();
      await sshd.stop();
    },
  };
}


/**
 * The node flags etcd-backupd's own launcher passes (the shebang of dist/cli.js, e.g.
 * --initial-old-space-size): the bench's process must run the code as the binary does.
 */
export function launcherNodeFlags(dist = join(ROOT, 'dist')) {
  const first = readFileSync(join(dist, 'cli.js'), 'utf8').split('\n', 1)[0];
  const m = /^#!\/usr\/bin\/env (?:-S )?node((?: --[\w-]+(?:=\S+)?)*)\s*$/.exec(first);
  if (!m) throw new Error(`unexpected shebang in ${dist}/cli.js: ${first}`);
  return m[1].trim() ? m[1].trim().split(/\s+/) : [];
}

/** One etcd-backupd path in its own process (bench/one-backup.mjs) under /usr/bin/time, with the launcher's node flags. */
export async function backupd(args, env, { server, nodeArgs = [], launcherFlags = true } = {}) {
  const argv = [process.execPath, ...(launcherFlags ? launcherNodeFlags(args.dist) : []), ...nodeArgs, ONE, JSON.stringify(args)];
  const r = await timedWithServer(server, argv, { env, allowFail: true });
  const line = r.stdout.trim().split('\n').pop();
  let doc;
  try {
    doc = JSON.parse(line);
  } catch {
    throw new Error(`one-backup.mjs printed no result (exit ${r.code}): ${r.stderr.slice(-1500)}`);
  }
  if (!doc.ok) throw new Error(`etcd-backupd ${args.mode} failed: ${doc.error}`);
  // bytes: what the process handled (the raw tar); storedBytes: the bundle as stored (zstd-compressed by default).
  return { ...r, doc, bytes: doc.rawBytes ?? doc.bytes, storedBytes: doc.bytes, phases: doc.phases };
}

