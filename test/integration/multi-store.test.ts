import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir, writeConfig } from '../support/cli.js';
import { restoreSnapshot, startEtcdCluster, startEtcdFromDataDir, type EtcdCluster } from '../support/etcd.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { startSshd, type Sshd } from '../support/sshd.js';

/**
 * Several stores at once, each a real server: a local directory, S3 (s3rver)
 * and SFTP (OpenSSH). Each store succeeds or fails on its own; an outage
 * costs only time, because the outbox delivers the backlog oldest first.
 */
let cluster: EtcdCluster;
let s3: S3rver;
let sshd: Sshd;
let dir: string;
let file: string;

beforeAll(async () => {
  dir = tempDir('multi');
  [cluster, s3, sshd] = await Promise.all([startEtcdCluster({ members: 1, tls: false }), startS3rver(), startSshd()]);
  await cluster.putMany(Array.from({ length: 200 }, (_, i) => [`/registry/configmaps/cm${i}`, `data-${i}`] as [string, string]));
  mkdirSync(join(dir, 'manifests'));
  writeFileSync(join(dir, 'manifests', 'etcd.yaml'), 'kind: Pod\n');
  writeFileSync(join(dir, 'ak'), `${s3.accessKeyId}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'sk'), `${s3.secretAccessKey}\n`, { mode: 0o600 });
  file = writeConfig(dir, {
    cluster: 'prod',
    node: 'master-0',
    workDir: 'work',
    source: { type: 'etcdctl', staticPodDir: 'manifests' },
    etcd: { endpoints: [cluster.endpoints[0]] },
    stores: [
      { name: 'nfs', type: 'local', path: 'nfs' },
      { name: 's3', type: 's3', bucket: s3.bucket, prefix: 'clusters', endpoint: s3.endpoint, forcePathStyle: true, accessKeyIdFile: 'ak', secretAccessKeyFile: 'sk' },
      { name: 'vault', type: 'sftp', host: sshd.host, port: sshd.port, username: sshd.username, privateKeyFile: sshd.privateKeyFile, hostKey: sshd.hostKeyFingerprint, path: join(sshd.root, 'etcd'), timeout: '5s' },
    ],
    local: { keep: 1, retryMin: '1s', retryMax: '2s' },
  });
});

afterAll(async () => {
  await Promise.all([cluster?.stop(), s3?.dispose(), sshd?.stop()]);
});

async function backup() {
  const r = await runCli(['backup', '--config', file, '--json']);
  return { code: r.code, stderr: r.stderr, doc: JSON.parse(r.stdout) };
}

describe('local + S3 + SFTP', () => {
  let firstId: string;
  const outageIds: string[] = [];

  it('a backup lands verified in every store', async () => {
    const { code, stderr, doc } = await backup();
    expect(code, stderr).toBe(0);
    expect(Object.keys(doc.stores).sort()).toEqual(['nfs', 's3', 'vault']);
    for (const s of ['nfs', 's3', 'vault']) expect(doc.stores[s]).toMatchObject({ result: 'success', key: `prod/${doc.id}/backup.tar.zst` });
    firstId = doc.id;
  });

  it('list, verify and fetch work against each store', async () => {
    for (const store of ['nfs', 's3', 'vault']) {
      const l = await runCli(['list', '--config', file, '--store', store, '--json']);
      expect(l.code, l.stderr).toBe(0);
      expect(JSON.parse(l.stdout).backups.map((b: { id: string }) => b.id)).toEqual([firstId]);
      const v = await runCli(['verify', '--config', file, '--store', store, 'latest']);
      expect(v.code, v.stderr).toBe(0);
    }
    const to = join(tempDir('multi-fetch'), 'r');
    const f = await runCli(['fetch', '--config', file, '--store', 'vault', 'latest', '--to', to, '--json']);
    expect(f.code, f.stderr).toBe(0);
    const restored = await restoreSnapshot(JSON.parse(f.stdout).snapshot, join(tempDir('multi-restore'), 'd'));
    const etcd = await startEtcdFromDataDir(restored.dataDir, { name: restored.name, peerUrl: restored.peerUrl });
    try {
      expect((await etcd.getAll('/registry/configmaps/')).size).toBe(200);
    } finally {
      await etcd.stop();
    }
  });

  it('S3 down: the other stores succeed, the run says which failed, the outbox keeps the bundle', async () => {
    await s3.stop();
    const { code, doc } = await backup();
    expect(code).toBe(1);
    expect(doc.result).toBe('failed');
    expect(['store-unavailable', 'upload-failed']).toContain(doc.reason);
    expect(doc.stores.nfs.result).toBe('success');
    expect(doc.stores.vault.result).toBe('success');
    expect(doc.stores.s3).toMatchObject({ result: 'failed' });
    expect(doc.stores.s3.error).toMatch(/s3/);
    expect(readdirSync(join(dir, 'work', 'outbox'))).toContain(doc.id);
    outageIds.push(doc.id);
    const l = await runCli(['list', '--config', file, '--store', 'vault', '--json']);
    expect(JSON.parse(l.stdout).backups.map((b: { id: string }) => b.id)).toContain(doc.id);
  });

  it('a second outage run piles up; when S3 returns the backlog is delivered oldest first', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // distinct second for the id
    const second = await backup();
    expect(second.doc.stores.s3.result).toBe('failed');
    outageIds.push(second.doc.id);
    expect(readdirSync(join(dir, 'work', 'outbox'))).toEqual(expect.arrayContaining(outageIds));
    await s3.restart();
    await new Promise((r) => setTimeout(r, 2100)); // past the retry backoff
    const third = await runCli(['backup', '--config', file, '--json']);
    expect(third.code, third.stderr).toBe(0);
    const order = third.stderr
      .split('\n')
      .filter((l) => l.includes('retrying delivery from the outbox'))
      .map((l) => JSON.parse(l).id as string);
    expect(order).toEqual(outageIds);
    const l = await runCli(['list', '--config', file, '--store', 's3', '--json']);
    const ids = JSON.parse(l.stdout).backups.map((b: { id: string }) => b.id);
    // Retention (keepLast 3) then pruned the first backup from every store: that is the policy at work.
    expect(ids).toEqual([JSON.parse(third.stdout).id, ...[...outageIds].reverse()]);
    // Everything delivered: only local.keep=1 bundle stays on the node.
    expect(readdirSync(join(dir, 'work', 'outbox'))).toEqual([JSON.parse(third.stdout).id]);
  });
});
