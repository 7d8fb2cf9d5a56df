/**
 * Proves the integration-test harness against real components: a 3-member
 * TLS etcd cluster, the cluster-backup.sh stand-in, and snapshot restore.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EtcdctlError,
  ensureTool,
  freePort,
  restoreSnapshot,
  runEtcdctl,
  startEtcdCluster,
  startEtcdFromDataDir,
  type EtcdCluster,
} from '../support/etcd.js';
import { CURRENT_REVISION, RESOURCES, makeFakeMaster, type FakeMaster } from '../support/fake-master.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const BACKUP_SCRIPT = path.resolve(here, '../fixtures/cluster-backup.sh');
const DATE_RE = /\d{4}-\d{2}-\d{2}_\d{6}/;

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // Own process group: a kill reaches etcdctl too, which holds the output pipes open.
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('etcd test harness (real etcd 3.4)', () => {
  let cluster: EtcdCluster;
  let tmp: string;

  beforeAll(async () => {
    for (const bin of ['etcd', 'etcdctl', 'openssl', 'tar']) ensureTool(bin);
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'harness-test-'));
    cluster = await startEtcdCluster();
  });

  afterAll(async () => {
    await cluster?.stop();
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  /** Env for the stand-in: a fake master whose etcd.env names the first member and the TLS files. */
  function backupEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('ETCDCTL_') || k.startsWith('FAKE_')) delete env[k];
    defaultMaster ??= makeFakeMaster(path.join(tmp, 'root-default'), cluster.endpoints[0]!, cluster.tls);
    return { ...env, ...defaultMaster.env, ...extra };
  }
  let defaultMaster: FakeMaster | undefined;

  it('ensureTool finds installed tools and throws for missing ones', () => {
    expect(path.isAbsolute(ensureTool('etcd'))).toBe(true);
    expect(() => ensureTool('no-such-tool-xyz')).toThrow(
      'no-such-tool-xyz is not installed; run scripts/install-deps.sh',
    );
  });

  it('freePort never hands out the same port twice', async () => {
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    expect(new Set(ports).size).toBe(20);
  });

  it('starts a healthy 3-member cluster with TLS and client-cert auth', async () => {
    expect(cluster.members).toHaveLength(3);
    expect(cluster.endpoints.every((e) => e.startsWith('https://127.0.0.1:'))).toBe(true);
    expect(cluster.members.every((m) => m.running && m.peerUrl.startsWith('https://'))).toBe(true);
    expect(fs.statSync(cluster.dir).mode & 0o777).toBe(0o700);
    expect(fs.statSync(cluster.tls!.keyFile).mode & 0o777).toBe(0o600);

    const { stdout } = await cluster.etcdctl(['member', 'list', '-w', 'json']);
    const list = JSON.parse(stdout) as { members: Array<{ name: string; clientURLs: string[] }> };
    expect(list.members.map((m) => m.name).sort()).toEqual(['n0', 'n1', 'n2']);

    await cluster.etcdctl(['endpoint', 'health']); // throws unless all healthy

    // Client-cert auth is enforced: no client cert, no answer.
    await expect(
      runEtcdctl(['endpoint', 'health', '--command-timeout=2s'], {
        endpoints: [cluster.endpoints[0]!],
        env: { ETCDCTL_CACERT: cluster.tls!.caFile },
      }),
    ).rejects.toBeInstanceOf(EtcdctlError);
  });

  it('put/getAll round-trip over gRPC; revision increases', async () => {
    const rev0 = await cluster.revision();
    await cluster.put('/harness/a', 'alpha');
    const bin = Buffer.from([0, 1, 2, 0xff, 0xfe, 10, 13]);
    await cluster.put('/harness/bin', bin);
    await cluster.put('/harness/empty', '');
    const many: Array<[string, string]> = Array.from({ length: 1100 }, (_, i) => [
      `/harness/many/${String(i).padStart(4, '0')}`,
      `v${i}`,
    ]);
    await cluster.putMany(many, 4);
    const rev1 = await cluster.revision();
    expect(rev1).toBeGreaterThanOrEqual(rev0 + 3 + Math.ceil(many.length / 128)); // one revision per txn

    const all = await cluster.getAll('/harness/');
    expect(all.size).toBe(3 + many.length); // > 1000: exercises paging
    expect(all.get('/harness/a')?.toString()).toBe('alpha');
    expect(all.get('/harness/bin')?.equals(bin)).toBe(true);
    expect(all.get('/harness/empty')?.length).toBe(0);
    expect(all.get('/harness/many/1099')?.toString()).toBe('v1099');
    // prefix is a real prefix range, and '' means the whole keyspace
    expect((await cluster.getAll('/harness/many/')).size).toBe(many.length);
    expect((await cluster.getAll('')).size).toBeGreaterThanOrEqual(all.size);

    // putMany: big values are split by size, a repeated key keeps its last value
    const big = Buffer.alloc(400 * 1024, 7);
    await cluster.putMany([
      ['/harness/big/1', big],
      ['/harness/big/2', big],
      ['/harness/big/3', big],
      ['/harness/big/1', 'last'],
    ]);
    const bigs = await cluster.getAll('/harness/big/');
    expect(bigs.get('/harness/big/1')?.toString()).toBe('last');
    expect(bigs.get('/harness/big/3')?.equals(big)).toBe(true);

    // etcdctl sees the same data
    const { stdout } = await cluster.etcdctl(['get', '/harness/a', '--print-value-only']);
    expect(stdout.trim()).toBe('alpha');
  });

  it('stopMember/startMember: cluster keeps quorum, member rejoins with its data', async () => {
    await cluster.stopMember(2);
    expect(cluster.members[2]!.running).toBe(false);
    await expect(
      cluster.etcdctl(['endpoint', 'health', '--command-timeout=1s'], { endpoints: [cluster.endpoints[2]!] }),
    ).rejects.toBeInstanceOf(EtcdctlError);

    await cluster.put('/harness/while-down', 'yes'); // 2 of 3 still have quorum

    await cluster.startMember(2);
    expect(cluster.members[2]!.running).toBe(true);
    const { stdout } = await cluster.etcdctl(['get', '/harness/while-down', '--print-value-only'], {
      endpoints: [cluster.endpoints[2]!],
    });
    expect(stdout.trim()).toBe('yes');
    await cluster.etcdctl(['endpoint', 'health']);

    // Whole cluster down, then back one by one (the first has no quorum yet).
    for (const i of [0, 1, 2]) await cluster.stopMember(i);
    expect(cluster.members.some((m) => m.running)).toBe(false);
    for (const i of [0, 1, 2]) await cluster.startMember(i);
    await cluster.etcdctl(['endpoint', 'health']);
    expect((await cluster.getAll('/harness/while-down')).get('/harness/while-down')?.toString()).toBe('yes');
  });

  it('cluster-backup.sh stand-in writes both artifacts (0600) and exits 0', async () => {
    const dir = path.join(tmp, 'backup', 'nested'); // mkdir -p
    const res = await run(BACKUP_SCRIPT, [dir], backupEnv());
    expect(res.code, res.stdout + res.stderr).toBe(0);

    const files = (await fsp.readdir(dir)).sort();
    expect(files).toHaveLength(2);
    const snap = files.find((f) => f.startsWith('snapshot_'))!;
    const stat = files.find((f) => f.startsWith('static_kuberesources_'))!;
    expect(snap).toMatch(new RegExp(`^snapshot_${DATE_RE.source}\\.db$`));
    expect(stat).toMatch(new RegExp(`^static_kuberesources_${DATE_RE.source}\\.tar\\.gz$`));
    expect(snap.slice('snapshot_'.length, -3)).toBe(stat.slice('static_kuberesources_'.length, -7));
    for (const f of files) expect(fs.statSync(path.join(dir, f)).mode & 0o777).toBe(0o600);

    const size = fs.statSync(path.join(dir, snap)).size;
    expect(size % 512).toBe(32); // bbolt pages + sha256 trailer

    const lines = res.stdout.trim().split('\n');
    expect(res.stdout).toContain(`Snapshot saved at ${path.join(dir, snap)}`);
    const statusLine = lines.find((l) => l.startsWith('{"hash"'));
    expect(statusLine).toMatch(/^\{"hash":\d+,"revision":\d+,"totalKey":\d+,"totalSize":\d+\}$/);
    const status = JSON.parse(statusLine!) as { revision: number; totalKey: number };
    expect(status.totalKey).toBeGreaterThan(1100);
    expect(lines.at(-1)).toBe(`snapshot db and kube resources are successfully saved to ${dir}`);

    const tar = await run('tar', ['-tzf', path.join(dir, stat)], process.env);
    expect(tar.code).toBe(0);
    expect(tar.stdout).toMatch(/static-pod-resources\/kube-apiserver-pod-\d+\/kube-apiserver-pod\.yaml/);
    expect(tar.stdout).toMatch(/secrets\/serving-cert\/tls\.key/);
  });

  /** A fake master root for the faithful stand-in (FAKE_ROOT): etcd.env, manifests, `oc` state. */
  function master(name: string, endpoint = cluster.endpoints[0]!): FakeMaster {
    return makeFakeMaster(path.join(tmp, name), endpoint, cluster.tls);
  }

  it('cluster-backup.sh with a master root: the connection from etcd.env (not ETCDCTL_*), only the current revisions archived', async () => {
    const m = master('root-ok');
    const dir = path.join(tmp, 'backup-root-ok');
    // The caller's ETCDCTL_* point nowhere: upstream ignores them.
    const res = await run(BACKUP_SCRIPT, [dir], { ...backupEnv({ ETCDCTL_ENDPOINTS: 'https://127.0.0.1:1', ETCDCTL_CACERT: '/nonexistent' }), ...m.env });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    const lines = res.stdout.split('\n');
    const found = lines.filter((l) => l.startsWith('found latest '));
    expect(found).toEqual(RESOURCES.map((r) => `found latest ${r}: /etc/kubernetes/static-pod-resources/${r}-pod-${CURRENT_REVISION[r]}`));
    const files = (await fsp.readdir(dir)).sort();
    const tar = await run('tar', ['-tzf', path.join(dir, files[1]!)], process.env);
    const tops = new Set(tar.stdout.split('\n').filter(Boolean).map((l) => l.split('/').slice(0, 2).join('/')));
    expect([...tops].sort()).toEqual(RESOURCES.map((r) => `static-pod-resources/${r}-pod-${CURRENT_REVISION[r]}`).sort());
  });

  it('cluster-backup.sh --force marks files __POSSIBLY_DIRTY__ and skips the operator check', async () => {
    const m = master('root-force');
    m.setProgressing('kube-apiserver', 'True');
    const dir = path.join(tmp, 'backup-force');
    const res = await run(BACKUP_SCRIPT, ['--force', dir], { ...backupEnv(), ...m.env });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    const files = (await fsp.readdir(dir)).sort();
    expect(files[0]).toMatch(new RegExp(`^snapshot_${DATE_RE.source}__POSSIBLY_DIRTY__\\.db$`));
    expect(files[1]).toMatch(new RegExp(`^static_kuberesources_${DATE_RE.source}__POSSIBLY_DIRTY__\\.tar\\.gz$`));
  });

  it('cluster-backup.sh refuses during a rollout and with the API server down (exit 1, upstream messages, no files)', async () => {
    const m = master('root-rollout');
    m.setProgressing('kube-scheduler', 'True');
    const dir = path.join(tmp, 'backup-rollout');
    const res = await run(BACKUP_SCRIPT, [dir], { ...backupEnv(), ...m.env });
    expect(res.code).toBe(1);
    expect(res.stdout).toContain('Currently the kube-scheduler operator is progressing. A reliable backup requires that a rollout is not in progress.  Aborting!');
    expect(await fsp.readdir(dir)).toEqual([]);
    m.setProgressing('kube-scheduler', 'False');
    m.setApiDown(true);
    const down = await run(BACKUP_SCRIPT, [dir], { ...backupEnv(), ...m.env });
    expect(down.code).toBe(1);
    expect(down.stdout).toContain('Could not find the status of the kube-apiserver. Check if the API server is running. Pass the --force flag to skip checks.');
  });

  it('cluster-backup.sh fails when a static pod manifest is missing', async () => {
    const m = master('root-nomanifest');
    await fsp.rm(path.join(m.root, 'etc/kubernetes/manifests/kube-scheduler-pod.yaml'));
    const dir = path.join(tmp, 'backup-nomanifest');
    const res = await run(BACKUP_SCRIPT, [dir], { ...backupEnv(), ...m.env });
    expect(res.code).toBe(1);
    expect(res.stdout).toContain('error finding manifests for the kube-scheduler pod. please check if it is running.');
    expect(await fsp.readdir(dir)).toEqual([]);
  });

  it('cluster-backup.sh hangs when etcd is unreachable: an empty snapshot_*.db.part that does not grow', async () => {
    const port = await freePort(); // nothing listens there
    const m = master('root-unreachable', `https://127.0.0.1:${port}`);
    const dir = path.join(tmp, 'backup-unreachable');
    const res = await run(BACKUP_SCRIPT, [dir], { ...backupEnv(), ...m.env }, 4_000);
    expect(res.signal).toBe('SIGKILL'); // still waiting when killed
    const part = (await fsp.readdir(dir)).filter((f) => /^snapshot_.*\.db\.part$/.test(f));
    expect(part).toHaveLength(1);
    expect(fs.statSync(path.join(dir, part[0]!)).size).toBe(0);
    expect(res.stdout).not.toContain('successfully saved');
  });

  it('cluster-backup.sh usage errors, non-root and test hooks', async () => {
    const usage = await run(BACKUP_SCRIPT, [], backupEnv());
    expect(usage.code).toBe(1);
    expect(usage.stdout).toContain('Path to backup dir required');

    const setpriv = ensureTool('setpriv');
    const nonRoot = await run(
      setpriv,
      ['--reuid=65534', '--regid=65534', '--clear-groups', BACKUP_SCRIPT, path.join(tmp, 'never')],
      backupEnv(),
    );
    expect(nonRoot.code).toBe(1);
    expect(nonRoot.stdout).toContain('must be run as root');
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);

    const skipDir = path.join(tmp, 'backup-skip-static');
    const skip = await run(BACKUP_SCRIPT, [skipDir], backupEnv({ FAKE_BACKUP_SKIP_STATIC: '1' }));
    expect(skip.code).toBe(0);
    expect((await fsp.readdir(skipDir)).every((f) => f.startsWith('snapshot_'))).toBe(true);

    const emptyDir = path.join(tmp, 'backup-empty');
    const empty = await run(BACKUP_SCRIPT, [emptyDir], backupEnv({ FAKE_BACKUP_EMPTY_SNAPSHOT: '1' }));
    expect(empty.code).toBe(0);
    const emptySnap = (await fsp.readdir(emptyDir)).find((f) => f.startsWith('snapshot_'))!;
    expect(fs.statSync(path.join(emptyDir, emptySnap)).size).toBe(0);

    const hang = await run(BACKUP_SCRIPT, [path.join(tmp, 'backup-hang')], backupEnv({ FAKE_BACKUP_HANG: '1' }), 1_500);
    expect(hang.signal).toBe('SIGKILL'); // still running when killed
  });

  it('etcdctl snapshot restore + startEtcdFromDataDir gives the same keys', async () => {
    const snapFile = path.join(tmp, 'restore.db');
    await cluster.etcdctl(['snapshot', 'save', snapFile], { endpoints: [cluster.endpoints[1]!] });
    const expected = await cluster.getAll('');

    const restored = await restoreSnapshot(snapFile, path.join(tmp, 'restored-data'), { name: 'n1' });
    expect(restored.peerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const single = await startEtcdFromDataDir(restored.dataDir, { name: restored.name, peerUrl: restored.peerUrl });
    try {
      expect(single.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const got = await single.getAll('');
      expect(got.size).toBe(expected.size);
      for (const [k, v] of expected) expect(got.get(k)?.equals(v), k).toBe(true);
      const { stdout } = await single.etcdctl(['get', '/harness/a', '--print-value-only']);
      expect(stdout.trim()).toBe('alpha');
      // the restored member is a writable one-member cluster
      await single.put('/after-restore', 'ok');
      expect((await single.getAll('/after-restore')).get('/after-restore')?.toString()).toBe('ok');
    } finally {
      await single.stop();
    }
  });
});
