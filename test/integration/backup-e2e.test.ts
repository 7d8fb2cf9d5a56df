import { existsSync, readFileSync, readdirSync, statSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFakeMaster } from '../support/fake-master.js';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { restoreSnapshot, startEtcdCluster, startEtcdFromDataDir, type EtcdCluster } from '../support/etcd.js';

/**
 * The foundation, end to end, through the CLI as a user runs it: a real
 * 3-member TLS etcd, OpenShift's script (stand-in) and etcdctl as sources,
 * a local-directory store, and a restore of the fetched snapshot into a
 * fresh etcd that must hold exactly the source's keys and revision.
 */
let cluster: EtcdCluster;
let dir: string;
const data = new Map<string, string>();

function baseConfig(name: string, extra: Record<string, unknown> = {}) {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  return {
    dir: d,
    cfg: {
      cluster: 'test-cluster',
      node: 'master-0',
      workDir: join(d, 'work'),
      source: {
        type: 'cluster-backup',
        script: FAKE_CLUSTER_BACKUP,
        timeout: '60s',
        // A fake master: etcd.env names the endpoint and the TLS files (the script ignores ETCDCTL_*).
        env: makeFakeMaster(join(d, 'master'), cluster.endpoints[0]!, cluster.tls).env,
      },
      etcd: { endpoints: [cluster.endpoints[0]!], caFile: cluster.tls!.caFile, certFile: cluster.tls!.certFile, keyFile: cluster.tls!.keyFile },
      stores: [{ name: 'nfs', type: 'local', path: join(d, 'store') }],
      ...extra,
    } as Record<string, unknown>,
  };
}

const entries = (p: string): string[] => (existsSync(p) ? readdirSync(p) : []);

function setup(name: string, extra: Record<string, unknown> = {}) {
  const { dir: d, cfg } = baseConfig(name, extra);
  return { dir: d, cfg, file: writeConfig(d, cfg) };
}

beforeAll(async () => {
  dir = tempDir('e2e');
  cluster = await startEtcdCluster({ members: 3, tls: true });
  const entries: [string, string][] = [];
  for (let i = 0; i < 500; i++) entries.push([`/kubernetes.io/secrets/ns${i % 7}/s${i}`, `value-${i}-${'x'.repeat(i % 300)}`]);
  entries.push(['/kubernetes.io/configmaps/big', 'B'.repeat(200_000)]);
  await cluster.putMany(entries);
  for (const [k, v] of entries) data.set(k, v);
});

afterAll(async () => {
  await cluster?.stop();
});

async function expectRestoresTo(snapshot: string, expectedRevision: number) {
  const restored = await restoreSnapshot(snapshot, join(tempDir('restore'), 'data'));
  const etcd = await startEtcdFromDataDir(restored.dataDir, { name: restored.name, peerUrl: restored.peerUrl });
  try {
    const keys = await etcd.getAll('');
    expect(keys.size).toBe(data.size);
    for (const [k, v] of data) expect(keys.get(k)?.toString()).toBe(v);
    expect(await etcd.revision()).toBe(expectedRevision);
  } finally {
    await etcd.stop();
  }
}

describe('backup with the cluster-backup.sh source into a local store', () => {
  let env: ReturnType<typeof setup>;
  let backup: { id: string; result: string; stores: Record<string, { result: string; key: string }>; revision: number; totalKey: number };
  let revisionAtBackup: number;

  beforeAll(async () => {
    env = setup('cb');
    revisionAtBackup = await cluster.revision();
    const r = await runCli(['backup', '--config', env.file, '--json', '--label', 'first', '--reason', 'e2e test']);
    expect(r.stderr).not.toMatch(/BEGIN (EC |RSA )?PRIVATE KEY/);
    expect(r.code, r.stderr).toBe(0);
    backup = JSON.parse(r.stdout);
  });

  it('reports success per store with the etcd revision it captured', () => {
    expect(backup.result).toBe('success');
    expect(backup.id).toMatch(/^\d{8}T\d{6}Z-master-0$/);
    expect(backup.stores.nfs!.result).toBe('success');
    expect(backup.revision).toBe(revisionAtBackup);
  });

  it('lays the backup out as DESIGN.md says, manifest last, private modes', () => {
    const store = join(env.dir, 'store');
    const bdir = join(store, 'test-cluster', backup.id);
    expect(readdirSync(bdir).sort()).toEqual(['backup.tar.zst', 'manifest.json']);
    for (const f of ['backup.tar.zst', 'manifest.json']) expect(statSync(join(bdir, f)).mode & 0o777).toBe(0o600);
    for (const d of [store, join(store, 'test-cluster'), bdir, join(env.dir, 'work')]) expect(statSync(d).mode & 0o777).toBe(0o700);
    const m = JSON.parse(readFileSync(join(bdir, 'manifest.json'), 'utf8'));
    expect(m).toMatchObject({
      format: 1,
      id: backup.id,
      cluster: 'test-cluster',
      node: 'master-0',
      trigger: 'manual',
      label: 'first',
      reason: 'e2e test',
      pinned: false,
      source: { type: 'cluster-backup', possiblyDirty: false },
      preflight: { forced: false, failedChecks: [] },
      object: { key: `test-cluster/${backup.id}/backup.tar.zst`, encrypted: false, codec: 'zstd' },
    });
    expect(m.etcd.version).toMatch(/^3\.4\./);
    expect(m.etcd.clusterId).toMatch(/^\d+$/);
    expect(m.etcd.totalKey).toBeGreaterThanOrEqual(data.size);
    expect(m.artifacts.map((a: { name: string }) => a.name)).toEqual([expect.stringMatching(/^snapshot_\d{4}-\d\d-\d\d_\d{6}\.db$/), expect.stringMatching(/^static_kuberesources_.*\.tar\.gz$/)]);
    expect(m.object.size).toBe(statSync(join(bdir, 'backup.tar.zst')).size);
  });

  it('keeps a delivered copy in the outbox (local.keep=1) and no run leftovers', () => {
    const work = join(env.dir, 'work');
    expect(readdirSync(join(work, 'outbox'))).toEqual([backup.id]);
    expect(readdirSync(join(work, 'runs'))).toEqual([]);
    expect(readdirSync(work)).not.toContain('run.lock');
  });

  it('lists it as a table and as JSON', async () => {
    const t = await runCli(['list', '--config', env.file]);
    expect(t.code).toBe(0);
    expect(t.stdout).toMatch(/^ID\s+Time\s+Node\s+Size\s+Revision\s+Version\s+Label\s+Pinned/m);
    expect(t.stdout).toContain(backup.id);
    const j = await runCli(['list', '--config', env.file, '--json']);
    const list = JSON.parse(j.stdout);
    expect(list.backups).toHaveLength(1);
    expect(list.backups[0]).toMatchObject({ id: backup.id, node: 'master-0', revision: revisionAtBackup, label: 'first', pinned: false });
  });

  it('verifies the stored copy end to end', async () => {
    const r = await runCli(['verify', '--config', env.file, 'latest', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: backup.id, result: 'ok', snapshot: { revision: revisionAtBackup, trailer: 'ok' } });
  });

  it('fetches a snapshot that restores into an etcd with the same keys and revision', async () => {
    const to = join(tempDir('fetch'), 'restore-here');
    const r = await runCli(['fetch', '--config', env.file, 'latest', '--to', to, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const f = JSON.parse(r.stdout);
    expect(readdirSync(to).sort()).toEqual(f.files.map((p: string) => p.slice(to.length + 1)).sort());
    for (const p of f.files) expect(statSync(p).mode & 0o777).toBe(0o600);
    await expectRestoresTo(f.snapshot, revisionAtBackup);
  });

  it('refuses to fetch over existing files', async () => {
    const to = tempDir('fetch2');
    expect((await runCli(['fetch', '--config', env.file, 'latest', '--to', to])).code).toBe(0);
    const again = await runCli(['fetch', '--config', env.file, 'latest', '--to', to]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already holds .*fetch into an empty directory/);
  });

  it('detects a damaged stored object', async () => {
    const e2 = setup('cb-corrupt');
    const b = JSON.parse((await runCli(['backup', '--config', e2.file, '--json'])).stdout);
    const obj = join(e2.dir, 'store', 'test-cluster', b.id, 'backup.tar.zst');
    const buf = readFileSync(obj);
    buf[Math.floor(buf.length / 2)] ^= 0x01;
    writeFileSync(obj, buf);
    const v = await runCli(['verify', '--config', e2.file, b.id]);
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(/sha256 does not match|checksum-mismatch/);
    const to = tempDir('fetch-bad');
    const f = await runCli(['fetch', '--config', e2.file, b.id, '--to', to]);
    expect(f.code).toBe(1);
    expect(readdirSync(to)).toEqual([]);
  });
});

describe('backup with the etcdctl source', () => {
  it('snapshots over TLS, archives the static pod dir, and restores', async () => {
    const manifests = join(dir, 'static-pods', 'manifests');
    mkdirSync(manifests, { recursive: true });
    writeFileSync(join(manifests, 'etcd-pod.yaml'), 'apiVersion: v1\nkind: Pod\n');
    const env = setup('etcdctl', { source: { type: 'etcdctl', staticPodDir: manifests, timeout: '60s' } });
    const rev = await cluster.revision();
    const r = await runCli(['backup', '--config', env.file, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout);
    expect(b).toMatchObject({ result: 'success', revision: rev });
    const to = tempDir('fetch-etcdctl');
    const f = JSON.parse((await runCli(['fetch', '--config', env.file, b.id, '--to', to, '--json'])).stdout);
    const archive = f.files.find((p: string) => p.endsWith('.tar.gz'));
    const { execFileSync } = await import('node:child_process');
    expect(execFileSync('tar', ['tzf', archive]).toString().split('\n')).toContain('manifests/etcd-pod.yaml');
    await expectRestoresTo(f.snapshot, rev);
  });
});

describe('failures name their cause', () => {
  const failing = async (name: string, extra: Record<string, unknown>, envOverride: Record<string, string>, prepare?: (dir: string) => void) => {
    const { dir: d, cfg } = baseConfig(name, extra);
    prepare?.(d);
    (cfg.source as { env: Record<string, string> }).env = { ...(cfg.source as { env: Record<string, string> }).env, ...envOverride };
    const file = writeConfig(d, cfg);
    const r = await runCli(['backup', '--config', file, '--json']);
    return { r, json: JSON.parse(r.stdout), dir: d };
  };

  it('a failing script', async () => {
    const { r, json, dir: d } = await failing('fail-script', {}, {}, (d) => rmSync(join(d, 'master', 'etc/kubernetes/manifests/etcd-pod.yaml')));
    expect(r.code).toBe(1);
    expect(json).toMatchObject({ result: 'failed', reason: 'source-failed' });
    expect(json.error).toMatch(/cluster-backup.sh exited with code 1: .*error finding manifests for the etcd pod/);
    expect(json.hint).toMatch(/etcd static pod manifest/);
    expect(entries(join(d, 'work', 'outbox'))).toEqual([]);
    expect(entries(join(d, 'work', 'runs'))).toEqual([]);
    expect(entries(join(d, 'store'))).toEqual([]);
  });

  it('a hanging script is killed at the timeout', async () => {
    const t0 = Date.now();
    const { r, json } = await failing('hang', { source: { ...baseConfig('hang').cfg.source as object, timeout: '2s' } }, { FAKE_BACKUP_HANG: '1' });
    expect(r.code).toBe(1);
    expect(json.reason).toBe('source-timeout');
    expect(Date.now() - t0).toBeLessThan(30_000);
  });

  it('a missing artifact', async () => {
    const { json } = await failing('missing', {}, { FAKE_BACKUP_SKIP_STATIC: '1' });
    expect(json).toMatchObject({ result: 'failed', reason: 'source-missing-artifact' });
  });

  it('an empty snapshot', async () => {
    const { json } = await failing('empty', {}, { FAKE_BACKUP_EMPTY_SNAPSHOT: '1' });
    expect(json).toMatchObject({ result: 'failed', reason: 'source-empty-artifact' });
  });

  it('not enough disk space for the snapshot', async () => {
    const { json } = await failing('disk', { preflight: { freeSpaceFactor: 1e6 } }, {});
    expect(json).toMatchObject({ result: 'failed', reason: 'preflight-disk-space' });
  });

  it('a bad config names the key and exits 2', async () => {
    const { dir: d, cfg } = baseConfig('badcfg');
    const file = writeConfig(d, { ...cfg, retention: { daily: 'seven' }, bogus: 1 });
    const r = await runCli(['backup', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('retention.daily: expected number, got string');
    expect(r.stderr).toContain('bogus: unknown key');
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('check-config prints the effective config', async () => {
    const env = setup('check');
    const r = await runCli(['check-config', '--config', env.file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/is valid/);
    expect(r.stdout).toMatch(/keepLast: 3/);
  });

  it('bad usage exits 2', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(2);
    expect((await runCli(['list'])).code).toBe(2);
    expect((await runCli(['--version'])).stdout.trim()).toMatch(/^etcd-backupd \d+\.\d+\.\d+ \(node v\d+\.\d+\.\d+\)$/);
  });
});

describe('preflight on a sick cluster', () => {
  it('one member down: the backup proceeds and records it', async () => {
    const env = setup('one-down');
    await cluster.stopMember(2);
    try {
      const r = await runCli(['backup', '--config', env.file, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const b = JSON.parse(r.stdout);
      const failed = b.preflight.checks.filter((c: { ok: boolean }) => !c.ok).map((c: { name: string }) => c.name);
      expect(failed).toEqual(['members-reachable']);
    } finally {
      await cluster.startMember(2);
    }
  });

  it('quorum lost: a backup refuses with the reason; --force takes it anyway and records why', async () => {
    const env = setup('no-quorum', { etcd: { ...baseConfig('x').cfg.etcd as object, timeout: '2s' } });
    await cluster.stopMember(1);
    await cluster.stopMember(2);
    try {
      const r = await runCli(['backup', '--config', env.file, '--json']);
      expect(r.code).toBe(1);
      const b = JSON.parse(r.stdout);
      expect(b.reason).toBe('preflight-no-quorum');
      expect(b.error).toMatch(/1 of 3 voting members answer, quorum needs 2/);
      const h = await runCli(['backup', '--config', env.file]);
      expect(h.stderr).toMatch(/preflight-no-quorum/);
      expect(h.stderr).toMatch(/--force/);

      const f = await runCli(['backup', '--config', env.file, '--json', '--force']);
      expect(f.code, f.stderr).toBe(0);
      const fb = JSON.parse(f.stdout);
      const m = JSON.parse(readFileSync(join(env.dir, 'store', 'test-cluster', fb.id, 'manifest.json'), 'utf8'));
      expect(m.preflight.forced).toBe(true);
      expect(m.preflight.failedChecks.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining(['quorum', 'members-reachable']));
      expect(m.source.possiblyDirty).toBe(true);
    } finally {
      await cluster.startMember(1);
      await cluster.startMember(2);
    }
  });
});
