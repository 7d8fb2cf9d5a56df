/**
 * The single-file build (README, "Single-file build"): `npm run package`, then
 * the bundle alone in an empty directory with no node_modules anywhere above
 * it, used as an operator would: --version, check-config, a full backup of a
 * real etcd with the etcdctl source into three real stores (a local
 * directory, S3 on s3rver, SFTP on OpenSSH: the AWS SDK and ssh2 must work
 * bundled, ssh2 without its native addons), list, fetch from each store, and
 * inspect of the fetched snapshot. The logs of a run on a terminal go through
 * pino-pretty, bundled too. Then the single executable (SEA) the same way.
 */
import { execFile, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, parse as parsePath } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { VERSION } from '../../src/version.js';
import { ROOT, writeConfig } from '../support/cli.js';
import { runProcess } from '../support/proc.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';

const execFileP = promisify(execFile);
const BUNDLE = join(ROOT, 'dist-bundle', 'etcd-backupd.mjs');
const SEA = join(ROOT, 'dist-bundle', 'etcd-backupd');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of a shell on a fresh host: nothing that points node at modules elsewhere. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ETCD_BACKUPD_LOG_LEVEL: 'info' };
  for (const k of ['NODE_PATH', 'NODE_OPTIONS', 'VITEST', 'VITEST_POOL_ID', 'VITEST_WORKER_ID']) delete env[k];
  return env;
}

function run(cmd: string, args: string[], cwd: string, timeoutMs = 120_000, env: NodeJS.ProcessEnv = cleanEnv()): Promise<Result> {
  return runProcess(cmd, args, { cwd, env, timeoutMs });
}

/** An empty directory under the system temp dir, with no node_modules in it or in any directory above it. */
function isolatedDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `ebd-${prefix}-`));
  for (let p = d; ; p = dirname(p)) {
    if (existsSync(join(p, 'node_modules'))) throw new Error(`${p}/node_modules exists: the bundle test needs a directory with none above it`);
    if (p === parsePath(p).root) break;
  }
  expect(d.startsWith(ROOT)).toBe(false);
  return d;
}

let cluster: EtcdCluster;
let s3: S3rver;
let sshd: Sshd;
let dir: string;
let configFile: string;
const node = (args: string[], timeoutMs?: number) => run(process.execPath, ['etcd-backupd.mjs', ...args], dir, timeoutMs);

beforeAll(async () => {
  // The build under test, exactly as the README says to make it.
  const [built, c, s, h] = await Promise.all([
    execFileP('npm', ['run', 'package'], { cwd: ROOT, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 }),
    startEtcdCluster({ members: 1, tls: false }),
    startS3rver(),
    startSshd(),
  ]);
  cluster = c;
  s3 = s;
  sshd = h;
  expect(built.stdout).toContain('etcd-backupd.mjs');

  dir = isolatedDir('bundle');
  copyFileSync(BUNDLE, join(dir, 'etcd-backupd.mjs'));
  expect(readdirSync(dir)).toEqual(['etcd-backupd.mjs']);

  const manifests = join(dir, 'manifests');
  mkdirSync(manifests, { mode: 0o700 });
  writeFileSync(join(manifests, 'etcd-pod.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n');
  const secret = (name: string, value: string) => {
    const p = join(dir, name);
    writeFileSync(p, value, { mode: 0o600 });
    return p;
  };
  await cluster.putMany(Array.from({ length: 200 }, (_, i): [string, string] => [`/kubernetes.io/secrets/ns/s${i}`, `value-${i}`]));
  configFile = writeConfig(dir, {
    cluster: 'bundle-test',
    node: 'master-0',
    workDir: join(dir, 'work'),
    source: { type: 'etcdctl', etcdctl: 'etcdctl', staticPodDir: manifests, timeout: '60s' },
    etcd: { endpoints: [cluster.endpoints[0]!] },
    stores: [
      { name: 'nfs', type: 'local', path: join(dir, 'store') },
      {
        name: 'objstore',
        type: 's3',
        bucket: s3.bucket,
        prefix: 'clusters',
        endpoint: s3.endpoint,
        forcePathStyle: true,
        accessKeyIdFile: secret('s3-access-key-id', s3.accessKeyId),
        secretAccessKeyFile: secret('s3-secret-access-key', s3.secretAccessKey),
      },
      { name: 'vault', type: 'sftp', host: sshd.host, port: sshd.port, username: sshd.username, privateKeyFile: sshd.privateKeyFile, hostKey: sshd.hostKeyFingerprint, path: join(sshd.root, 'etcd') },
    ],
    metrics: { listen: '127.0.0.1:0' },
    control: { socket: join(dir, 'control', 'control.sock') },
  });
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  await s3?.dispose();
  if (sshd) {
    await sshd.stop();
    await removeSshdDir(sshd);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('dist-bundle/etcd-backupd.mjs alone in an empty directory', () => {
  it('is one executable ESM file with a shebang and no package.json or node_modules beside it', () => {
    const st = statSync(join(dir, 'etcd-backupd.mjs'));
    expect(st.mode & 0o111).not.toBe(0);
    expect(st.size).toBeGreaterThan(1024 * 1024);
    const head = readFileSync(join(dir, 'etcd-backupd.mjs'), 'utf8').slice(0, 200);
    expect(head.startsWith('#!/usr/bin/env -S node --initial-old-space-size=64 --max-semi-space-size=1 --expose-gc\n')).toBe(true);
  });

  it('prints its version and the Node version it runs on', async () => {
    const r = await node(['--version']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(`etcd-backupd ${VERSION} (node ${process.version})`);
    expect(r.stderr).toBe('');
  });

  it('runs as ./etcd-backupd.mjs through its shebang, with the launcher flags, on Node 24+', async () => {
    // The shebang's `env` finds the first node on PATH: the test's own (Node 24 from node_modules/node).
    const env = { ...cleanEnv(), PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
    const r = await run(join(dir, 'etcd-backupd.mjs'), ['--version', '--json'], dir, undefined, env);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { version: string; node: string; execArgv: string[] };
    expect(doc.version).toBe(VERSION);
    expect(Number(doc.node.slice(1).split('.')[0])).toBeGreaterThanOrEqual(24);
    expect(doc.execArgv).toEqual(expect.arrayContaining(['--initial-old-space-size=64', '--max-semi-space-size=1', '--expose-gc']));
  });

  it('check-config accepts a valid config and refuses a bad one with exit 2', async () => {
    const ok = await node(['check-config', '--config', configFile, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ cluster: 'bundle-test', node: 'master-0', source: { type: 'etcdctl' } });
    const badFile = join(dir, 'bad.yaml');
    writeFileSync(badFile, 'cluster: x\nsource: { type: etcdctl }\nstores: []\nretention: { daily: "seven" }\n');
    const bad = await node(['check-config', '--config', badFile]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('retention.daily: expected number, got string');
  });

  describe('a full backup, list and fetch', () => {
    let backup: { id: string; result: string; revision: number; stores: Record<string, { result: string; error?: string }>; preflight: { checks: { name: string; ok: boolean }[] } };
    let revision: number;

    beforeAll(async () => {
      revision = await cluster.revision();
      const r = await node(['backup', '--config', configFile, '--json', '--label', 'bundled'], 180_000);
      expect(r.code, r.stderr).toBe(0);
      backup = JSON.parse(r.stdout);
    }, 240_000);

    it('backs up the etcd and delivers a verified copy to the local, S3 and SFTP stores', () => {
      expect(backup.result).toBe('success');
      // Preflight spoke gRPC to etcd with the protos embedded in the bundle.
      expect(backup.preflight.checks.filter((c) => !c.ok)).toEqual([]);
      expect(backup.revision).toBe(revision);
      for (const store of ['nfs', 'objstore', 'vault']) expect(backup.stores[store], JSON.stringify(backup.stores)).toMatchObject({ result: 'success' });
    });

    it('lists it in every store', async () => {
      for (const store of ['nfs', 'objstore', 'vault']) {
        const r = await node(['list', '--config', configFile, '--store', store, '--json']);
        expect(r.code, r.stderr).toBe(0);
        const doc = JSON.parse(r.stdout);
        expect(doc.backups.map((b: { id: string }) => b.id), store).toEqual([backup.id]);
        expect(doc.backups[0]).toMatchObject({ node: 'master-0', revision, label: 'bundled' });
      }
    });

    it('fetches it from every store, every sha256 checked, and the snapshot inspects to the same revision', async () => {
      for (const store of ['nfs', 'objstore', 'vault']) {
        const to = join(dir, `fetched-${store}`);
        const r = await node(['fetch', '--config', configFile, '--store', store, 'latest', '--to', to, '--json']);
        expect(r.code, r.stderr).toBe(0);
        const doc = JSON.parse(r.stdout);
        expect(doc).toMatchObject({ id: backup.id, result: 'success', revision });
        expect(readdirSync(to).sort()).toEqual([expect.stringMatching(/^snapshot_.*\.db$/), expect.stringMatching(/^static_kuberesources_.*\.tar\.gz$/)]);
        const i = await node(['inspect', doc.snapshot, '--json']);
        expect(i.code, i.stderr).toBe(0);
        expect(JSON.parse(i.stdout)).toMatchObject({ revision, trailer: 'ok' });
      }
    });

    it('verifies the SFTP copy end to end (ssh2 without its native addons: none can be found from here)', async () => {
      const r = await node(['verify', '--config', configFile, '--store', 'vault', 'latest', '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ id: backup.id, result: 'ok' });
    });

    it('logs through pino-pretty on a terminal (script(1) gives it one)', async () => {
      const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
      const cmd = [process.execPath, join(dir, 'etcd-backupd.mjs'), 'backup', '--config', configFile].map(q).join(' ');
      const r = await run('script', ['-q', '-e', '-c', cmd, '/dev/null'], dir, 180_000);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/INFO.*backup run finished/);
      // pino's own JSON lines start with a numeric level; etcdctl's JSON output appears inside pretty lines.
      expect(r.stdout).not.toMatch(/^\{"level":\d+/m);
    });
  });
});

describe('dist-bundle/etcd-backupd, the single executable (SEA)', () => {
  let seaDir: string;
  const sea = (args: string[], timeoutMs?: number) => run(join(seaDir, 'etcd-backupd'), args, seaDir, timeoutMs);

  beforeAll(() => {
    // scripts/package.mjs prints why when this node cannot make one; on this machine it can.
    expect(existsSync(SEA), `${SEA} was not built: see the output of npm run package`).toBe(true);
    seaDir = isolatedDir('sea');
    copyFileSync(SEA, join(seaDir, 'etcd-backupd'));
  });

  afterAll(async () => {
    if (seaDir) await rm(seaDir, { recursive: true, force: true });
  });

  it('prints its version and its Node (24+) with nothing on stderr (no SEA or require warnings)', async () => {
    const r = await sea(['--version']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(`etcd-backupd ${VERSION} (node ${process.version})`);
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(24);
    expect(r.stderr).toBe('');
  });

  it('carries the launcher node flags itself (SEA execArgv): no install path runs without them', async () => {
    const r = await sea(['--version', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { execArgv: string[] }).execArgv).toContain('--initial-old-space-size=64');
  });

  it('checks the config and lists the backups of every store', async () => {
    const c = await sea(['check-config', '--config', configFile]);
    expect(c.code, c.stderr).toBe(0);
    for (const store of ['nfs', 'objstore', 'vault']) {
      const r = await sea(['list', '--config', configFile, '--store', store, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).backups.length, store).toBeGreaterThanOrEqual(1);
    }
  });

  it('finds S3 credentials through the default chain, down to EC2 instance metadata (the SDK imports node:http dynamically there)', async () => {
    // A stand-in for the EC2 instance metadata service (IMDSv2) on loopback, handing out s3rver's keys.
    const requests: string[] = [];
    const imds: Server = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      if (req.method === 'PUT' && req.url === '/latest/api/token') return void res.end('test-token');
      if (req.headers['x-aws-ec2-metadata-token'] !== 'test-token') return void res.writeHead(401).end();
      if (req.url === '/latest/meta-data/iam/security-credentials/') return void res.end('etcd-backupd-role');
      if (req.url === '/latest/meta-data/iam/security-credentials/etcd-backupd-role') {
        return void res.end(JSON.stringify({ Code: 'Success', Type: 'AWS-HMAC', AccessKeyId: s3.accessKeyId, SecretAccessKey: s3.secretAccessKey, Token: 'session', Expiration: new Date(Date.now() + 3_600_000).toISOString() }));
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => imds.listen(0, '127.0.0.1', r));
    try {
      const home = join(seaDir, 'home');
      mkdirSync(home, { recursive: true });
      const cfg = writeConfig(seaDir, {
        cluster: 'bundle-test',
        node: 'master-0',
        workDir: join(seaDir, 'work'),
        source: { type: 'etcdctl', staticPodDir: seaDir },
        etcd: { endpoints: [cluster.endpoints[0]!] },
        stores: [{ name: 'objstore', type: 's3', bucket: s3.bucket, prefix: 'clusters', endpoint: s3.endpoint, forcePathStyle: true }],
        control: { socket: join(seaDir, 'control.sock') },
      }, 'imds.yaml');
      const env = cleanEnv();
      for (const k of Object.keys(env)) if (k.startsWith('AWS_')) delete env[k];
      Object.assign(env, { HOME: home, AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${(imds.address() as AddressInfo).port}` });
      for (const [cmd, args, cwd] of [[join(seaDir, 'etcd-backupd'), [], seaDir], [process.execPath, ['etcd-backupd.mjs'], dir]] as const) {
        // The SDK gives each metadata request 1 s and no retry; on a loaded machine allow a second try.
        let r = await run(cmd, [...args, 'list', '--config', cfg, '--json'], cwd, 120_000, env);
        if (r.code !== 0 && /CredentialsProviderError/.test(r.stderr)) r = await run(cmd, [...args, 'list', '--config', cfg, '--json'], cwd, 120_000, env);
        expect(r.code, `${cmd}: ${r.stderr}`).toBe(0);
        expect(JSON.parse(r.stdout).backups.length).toBeGreaterThanOrEqual(1);
      }
      expect(requests).toContain('GET /latest/meta-data/iam/security-credentials/etcd-backupd-role');
    } finally {
      await new Promise((r) => imds.close(r));
    }
  });

  it('fetches the latest backup over SFTP', async () => {
    const to = join(seaDir, 'fetched');
    const r = await sea(['fetch', '--config', configFile, '--store', 'vault', 'latest', '--to', to, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ result: 'success' });
  });

  it('as a daemon, copies itself into the recovery kit, and the kit alone lists the backups', async () => {
    const kit = join(seaDir, 'host', 'recovery');
    const cfg = parseYaml(readFileSync(configFile, 'utf8'));
    const kitCfgFile = join(dir, 'kit-daemon.yaml');
    writeFileSync(kitCfgFile, stringifyYaml({ ...cfg, schedule: '0 0 1 1 *', control: { socket: join(dir, 'control', 'kit.sock') }, recovery: { dir: kit } }), { mode: 0o600 });
    const child = spawn(join(seaDir, 'etcd-backupd'), ['run', '--config', kitCfgFile], { cwd: seaDir, env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr!.on('data', (d) => (log += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 90_000;
      while (!/"msg":"recovery kit refreshed"/.test(log) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      // isSea() is true here: the running executable is what the kit gets.
      expect(log).toMatch(/"executable":true[^\n]*"msg":"recovery kit refreshed"/);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    const bin = join(kit, 'etcd-backupd');
    expect(statSync(bin).mode & 0o777).toBe(0o700);
    expect(statSync(bin).size).toBe(statSync(join(seaDir, 'etcd-backupd')).size);
    expect(readFileSync(join(kit, 'RESTORE.txt'), 'utf8')).not.toContain('NOT in this kit');
    const v = await run(bin, ['--version'], kit);
    expect(v.stdout.trim()).toBe(`etcd-backupd ${VERSION} (node ${process.version})`);
    const l = await run(bin, ['list', '--config', join(kit, 'config.yaml'), '--store', 'objstore', '--json'], kit);
    expect(l.code, l.stderr).toBe(0);
    expect(JSON.parse(l.stdout).backups.length).toBeGreaterThanOrEqual(1);
  }, 180_000);

  it('asks etcd over gRPC with the protos it carries (no proto/ beside it): a backup passes every preflight check', async () => {
    const r = await sea(['backup', '--config', configFile, '--json'], 180_000);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.result).toBe('success');
    expect(doc.preflight.checks.map((c: { name: string; ok: boolean }) => `${c.name}:${c.ok}`)).toEqual(
      expect.arrayContaining(['endpoint-health:true', 'member-list:true', 'quorum:true', 'leader:true', 'members-reachable:true']),
    );
  });
});
