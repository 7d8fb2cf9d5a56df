/**
 * A shared test bed for the fault tests: one real etcd (filled to a chosen
 * size), and config files for `etcd-backupd` built from store specs. Kept
 * apart from faults.ts (pure helpers) because it starts services.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FAKE_CLUSTER_BACKUP, tempDir, writeConfig } from './cli.js';
import { makeFakeMaster } from './fake-master.js';
import { startEtcdCluster, type EtcdCluster } from './etcd.js';
import type { S3rver } from './s3.js';
import type { Sshd } from './sshd.js';
import { MiB } from './faults.js';

/** A 1-member (or n-member) plain-http etcd holding about `mib` MiB of values. */
export async function startFilledEtcd(opts: { members?: number; mib?: number; keys?: number } = {}): Promise<EtcdCluster> {
  const cluster = await startEtcdCluster({ members: opts.members ?? 1, tls: false, quotaBytes: 4 * 1024 * MiB });
  const entries: [string, Buffer | string][] = [];
  for (let i = 0; i < (opts.keys ?? 50); i++) entries.push([`/registry/configmaps/ns/k${i}`, `v${i}`]);
  const mib = opts.mib ?? 0;
  const chunk = 256 * 1024;
  for (let i = 0; i < Math.ceil((mib * MiB) / chunk); i++) {
    // Distinct, incompressible-looking values (bbolt stores them as they are).
    const v = Buffer.alloc(chunk);
    for (let j = 0; j < chunk; j += 4) v.writeUInt32LE(((i + 1) * 2654435761 + j * 40503) >>> 0, j);
    entries.push([`/registry/secrets/big/b${i}`, v]);
  }
  await cluster.putMany(entries, 16);
  return cluster;
}

/** An S3 store on `server` (s3rver, or the fake S3 server of fake-s3.ts: both give these four fields). */
export function s3StoreConfig(server: Pick<S3rver, 'bucket' | 'endpoint' | 'accessKeyId' | 'secretAccessKey'>, credDir: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  mkdirSync(credDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(credDir, 'access-key-id'), `${server.accessKeyId}\n`, { mode: 0o600 });
  writeFileSync(join(credDir, 'secret-access-key'), `${server.secretAccessKey}\n`, { mode: 0o600 });
  return {
    name: 's3',
    type: 's3',
    bucket: server.bucket,
    prefix: `p${Math.random().toString(36).slice(2, 8)}`,
    endpoint: server.endpoint,
    forcePathStyle: true,
    accessKeyIdFile: join(credDir, 'access-key-id'),
    secretAccessKeyFile: join(credDir, 'secret-access-key'),
    partSize: 5 * MiB,
    ...over,
  };
}

export function sftpStoreConfig(sshd: Sshd, path: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'sftp',
    type: 'sftp',
    host: sshd.host,
    port: sshd.port,
    username: sshd.username,
    privateKeyFile: sshd.privateKeyFile,
    hostKey: sshd.hostKeyFingerprint,
    path,
    timeout: '5s',
    ...over,
  };
}

export interface Env {
  dir: string;
  file: string;
  cfg: Record<string, unknown>;
  /** Rewrites the config file with `patch` applied on top of the original. */
  rewrite(patch: Record<string, unknown>): void;
}

/**
 * A config for `etcd-backupd` in a fresh directory under `root`: etcdctl
 * source (or the cluster-backup.sh stand-in), a local store `nfs` unless
 * `stores` is given, catch-up only schedule, seconds-level outbox retries,
 * metrics on a free port, a private control socket.
 */
export function makeEnv(root: string, name: string, etcd: { endpoints: string[] }, extra: Record<string, unknown> = {}): Env {
  const dir = join(root, name);
  mkdirSync(join(dir, 'manifests'), { recursive: true });
  writeFileSync(join(dir, 'manifests', 'kube-apiserver.yaml'), 'kind: Pod\n');
  const cfg: Record<string, unknown> = {
    cluster: 'c1',
    node: 'm0',
    workDir: join(dir, 'work'),
    schedule: '0 3 * * *',
    source: { type: 'etcdctl', staticPodDir: join(dir, 'manifests'), timeout: '60s' },
    etcd: { endpoints: [etcd.endpoints[0]], timeout: '3s' },
    stores: [{ name: 'nfs', type: 'local', path: join(dir, 'store') }],
    retention: { keepLast: 5, daily: 0, weekly: 0, monthly: 0 },
    local: { keep: 1, retryMin: '1s', retryMax: '2s' },
    metrics: { listen: '127.0.0.1:0' },
    control: { socket: join(dir, 'ctl', 'control.sock') },
    shutdownTimeout: '10s',
    ...extra,
  };
  const file = writeConfig(dir, cfg);
  return {
    dir,
    file,
    cfg,
    rewrite: (patch) => writeConfig(dir, { ...cfg, ...patch }),
  };
}

/**
 * The cluster-backup.sh stand-in as source on a fake master (its etcd.env
 * names `endpoint`, plain http), with extra environment (FAKE_BACKUP_HANG...).
 */
export function clusterBackupSource(endpoint: string, env: Record<string, string> = {}, timeout = '60s'): Record<string, unknown> {
  const master = makeFakeMaster(join(tempDir('master'), 'root'), endpoint);
  return { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout, env: { ...master.env, ...env } };
}

export { tempDir };
