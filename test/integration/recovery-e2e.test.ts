/**
 * Issue 16, the worst day end to end: a 3-member TLS etcd cluster backed up
 * by the daemon running as the single executable (SEA) into S3 (s3rver) and
 * SFTP (OpenSSH), with `recovery.dir` set. Then the cluster is gone: every
 * member with its data dir, the daemon's config, work dir and the store
 * credentials are deleted. Each of three new members is restored with the
 * recovery kit alone (its executable, its config, its copies of the
 * credentials), inside a mount namespace where every `node` binary on the
 * machine is masked, once from S3 and once from SFTP; each restored cluster
 * serves the source's keys at the source's revision.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir, writeConfig } from '../support/cli.js';
import { ensureTool, freePort, runEtcdctl, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { runProcess, type ProcResult } from '../support/proc.js';
import { etcdKeys, startRestoredMember, waitEtcdHealthy } from '../support/restored.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';

let dir: string;
let kit: string;
let cluster: EtcdCluster | undefined;
let s3: S3rver;
let sshd: Sshd;
let sourceKeys: Map<string, string>;
let sourceRevision: number;
const children: ChildProcess[] = [];

/** A shell of a host with no Node: PATH without any node, nothing pointing at the project's modules. */
const HOST_ENV: NodeJS.ProcessEnv = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8' };

/**
 * Runs `argv` in a private mount namespace where every node binary this
 * machine has (the system's, the project's Node 24, the one running the
 * test) is masked with /dev/null, after proving `node` does not run there.
 */
function withoutNode(argv: string[], timeoutMs?: number): Promise<ProcResult> {
  const nodes = [...new Set(['/usr/bin/node', '/usr/local/bin/node', process.execPath, join(ROOT, 'node_modules', 'node', 'bin', 'node')].filter((p) => existsSync(p)))];
  const script = [
    'set -e',
    ...nodes.map((n) => `mount --bind /dev/null '${n}'`),
    'if node --version >/dev/null 2>&1; then echo "node still runs here" >&2; exit 97; fi',
    'exec "$@"',
  ].join('\n');
  return runProcess('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...argv], { env: HOST_ENV, ...(timeoutMs ? { timeoutMs } : {}) });
}

beforeAll(async () => {
  dir = tempDir('recovery-e2e');
  kit = join(dir, 'host', 'recovery');
  const [c, s, h] = await Promise.all([startEtcdCluster({ members: 3, tls: true }), startS3rver(), startSshd()]);
  cluster = c;
  s3 = s;
  sshd = h;
  const entries: [string, string][] = [];
  for (let i = 0; i < 150; i++) entries.push([`/kubernetes.io/secrets/ns${i % 5}/s${i}`, `secret-${i}-${'y'.repeat(i % 40)}`]);
  await cluster.putMany(entries, 4);
  await cluster.etcdctl(['del', '--prefix', '/kubernetes.io/secrets/ns4/']);
  sourceKeys = new Map([...(await cluster.getAll(''))].map(([k, v]) => [k, v.toString()]));
  sourceRevision = await cluster.revision();

  // The SEA, built into this test's own directory (package.test builds the shared one).
  const out = join(dir, 'bundle');
  const built = await runProcess(process.execPath, [join(ROOT, 'scripts', 'package.mjs'), '--out', out], { timeoutMs: 300_000 });
  expect(built.code, built.stderr).toBe(0);
  const sea = join(out, 'etcd-backupd');
  expect(statSync(sea).mode & 0o111).not.toBe(0);

  // What the DaemonSet would mount: credentials as files, the config, a manifest dir.
  const secrets = join(dir, 'secrets');
  mkdirSync(secrets, { mode: 0o700 });
  const secret = (name: string, value: string | Buffer) => {
    const p = join(secrets, name);
    writeFileSync(p, value, { mode: 0o600 });
    return p;
  };
  const manifests = join(dir, 'manifests');
  mkdirSync(manifests, { mode: 0o700 });
  writeFileSync(join(manifests, 'etcd-pod.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n');
  const tls = cluster.tls!;
  const cfgDir = join(dir, 'config');
  mkdirSync(cfgDir, { mode: 0o700 });
  const cfg = writeConfig(cfgDir, {
    cluster: 'kit-e2e',
    node: 'master-0',
    workDir: join(dir, 'work'),
    source: { type: 'etcdctl', etcdctl: ensureTool('etcdctl'), staticPodDir: manifests, timeout: '60s' },
    etcd: { endpoints: cluster.endpoints, caFile: secret('etcd-ca.crt', readFileSync(tls.caFile)), certFile: secret('etcd-client.crt', readFileSync(tls.certFile)), keyFile: secret('etcd-client.key', readFileSync(tls.keyFile)) },
    stores: [
      { name: 'objstore', type: 's3', bucket: s3.bucket, prefix: 'etcd', endpoint: s3.endpoint, forcePathStyle: true, accessKeyIdFile: secret('s3-id', s3.accessKeyId), secretAccessKeyFile: secret('s3-secret', s3.secretAccessKey) },
      { name: 'vault', type: 'sftp', host: sshd.host, port: sshd.port, username: sshd.username, privateKeyFile: secret('sftp-key', readFileSync(sshd.privateKeyFile)), hostKey: sshd.hostKeyFingerprint, path: join(sshd.root, 'etcd') },
    ],
    metrics: { listen: '127.0.0.1:0' },
    control: { socket: join(dir, 'control', 'control.sock') },
    recovery: { dir: kit },
  });

  // The daemon, as the SEA: its catch-up run at start takes the backup; after it the kit is refreshed.
  const daemon = spawn(sea, ['run', '--config', cfg], { env: { ...HOST_ENV, ETCD_BACKUPD_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(daemon);
  let log = '';
  daemon.stdout.on('data', (d) => (log += d));
  daemon.stderr.on('data', (d) => (log += d));
  const deadline = Date.now() + 120_000;
  while (!/"msg":"backup run finished"/.test(log) || !/"trigger":"run"[^\n]*"msg":"recovery kit refreshed"/.test(log)) {
    if (daemon.exitCode !== null || Date.now() > deadline) throw new Error(`no backup and kit refresh from the SEA daemon:\n${log.slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('close', r));
  expect(existsSync(join(kit, 'etcd-backupd')), log.slice(-3000)).toBe(true);

  // The worst day: the cluster with every data dir, the config, the work dir and the credentials are gone.
  await cluster.stop();
  cluster = undefined;
  for (const p of [cfgDir, secrets, join(dir, 'work'), manifests, out]) rmSync(p, { recursive: true, force: true });
}, 600_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await cluster?.stop();
  await s3?.dispose();
  if (sshd) {
    await sshd.stop();
    await removeSshdDir(sshd);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.each([['objstore', 'S3'], ['vault', 'SFTP']])('the recovery kit alone restores the cluster from %s (%s), with no node on the machine', (store) => {
  it('restores three members that serve the source keys at the source revision', async () => {
    const kitConfig = join(kit, 'config.yaml');
    const members = await Promise.all(
      ['r0', 'r1', 'r2'].map(async (name) => ({ name, dataDir: join(dir, `restored-${store}`, name), peer: `http://127.0.0.1:${await freePort()}`, client: `http://127.0.0.1:${await freePort()}` })),
    );
    const initialCluster = members.map((m) => `${m.name}=${m.peer}`).join(',');
    for (const m of members) {
      const r = await withoutNode([
        join(kit, 'etcd-backupd'), 'restore', '--config', kitConfig, '--store', store, 'latest',
        '--data-dir', m.dataDir, '--name', m.name, '--initial-cluster', initialCluster,
        '--initial-advertise-peer-urls', m.peer, '--initial-cluster-token', `kit-${store}`, '--json',
      ]);
      expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
      const doc = JSON.parse(r.stdout) as { store: string; tool: string; revision: number };
      expect(doc).toMatchObject({ store, tool: 'etcdctl', revision: sourceRevision });
      expect(statSync(m.dataDir).mode & 0o077).toBe(0);
    }
    for (const m of members) {
      // etcd from Debian, as an operator starts the restored members (same cluster and token as the restore).
      children.push(startRestoredMember(m, initialCluster, `kit-${store}`, join(dir, `etcd-${store}-${m.name}.log`), HOST_ENV));
    }
    const endpoints = members.map((m) => m.client);
    await waitEtcdHealthy(endpoints);
    const got = await etcdKeys(endpoints);
    expect(got.revision).toBe(sourceRevision);
    expect(got.keys).toEqual(sourceKeys);
    const status = await runEtcdctl(['endpoint', 'status', '-w', 'json'], { endpoints });
    expect((JSON.parse(status.stdout) as unknown[]).length).toBe(3);
  }, 180_000);
});

describe('the kit on the host', () => {
  it('holds no Node, only the executable, config, credentials copies and RESTORE.txt, all private', () => {
    expect(statSync(kit).mode & 0o777).toBe(0o700);
    expect(statSync(join(kit, 'config.yaml')).mode & 0o777).toBe(0o600);
    const restore = readFileSync(join(kit, 'RESTORE.txt'), 'utf8');
    expect(restore).toContain(join(kit, 'etcd-backupd'));
    expect(restore).toContain('restore');
    // Nothing in the kit's config points at the deleted originals.
    expect(readFileSync(join(kit, 'config.yaml'), 'utf8')).not.toContain(join(dir, 'secrets'));
  });
});
