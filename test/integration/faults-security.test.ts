import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../support/cli.js';
import { makeCerts, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { makeEnv, s3StoreConfig, sftpStoreConfig, tempDir } from '../support/fault-env.js';
import { listeningSockets, spawnDaemon, walkModes, type DaemonProc } from '../support/faults.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';

/**
 * Security review items as tests: secrets never reach a log or an output,
 * every file and directory we create is private, the control socket is
 * root-only, and metrics listen on loopback unless told otherwise.
 */
let etcd: EtcdCluster;
let s3: S3rver;
let sshd: Sshd;
let root: string;
const daemons: DaemonProc[] = [];

beforeAll(async () => {
  root = tempDir('faults-security');
  [etcd, s3, sshd] = await Promise.all([startEtcdCluster({ members: 1, tls: true }), startS3rver(), startSshd()]);
  await etcd.putMany(Array.from({ length: 20 }, (_, i) => [`/registry/secrets/ns/s${i}`, `top-secret-${i}`] as [string, string]));
}, 180_000);

afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  await etcd?.stop();
  await s3?.dispose();
  if (sshd) {
    await sshd.stop();
    await removeSshdDir(sshd);
  }
});

/** Strings that must never appear in any output: key material lines and secret values. */
function secretsOf(files: string[], values: string[]): string[] {
  const out = [...values, 'PRIVATE KEY'];
  for (const f of files) {
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      const l = line.trim();
      if (l.length >= 16 && !l.startsWith('-----')) out.push(l);
    }
  }
  return out;
}

function leaks(text: string, secrets: string[]): string[] {
  return secrets.filter((s) => text.includes(s)).map((s) => `${s.slice(0, 12)}…`);
}

describe('secrets stay secret', () => {
  it('a daemon run and every CLI command with S3 credential files, an SFTP key and an etcd client key: no secret in any log or output', async () => {
    const env = makeEnv(root, 'secrets', { endpoints: etcd.endpoints }, {
      etcd: { endpoints: [etcd.endpoints[0]], caFile: etcd.tls!.caFile, certFile: etcd.tls!.certFile, keyFile: etcd.tls!.keyFile, timeout: '5s' },
      source: { type: 'etcdctl', staticPodDir: join(root, 'secrets', 'manifests'), timeout: '60s' },
      stores: [
        { name: 'nfs', type: 'local', path: join(root, 'secrets', 'store') },
        s3StoreConfig(s3, join(root, 'secrets', 's3-creds'), { name: 'objects' }),
        sftpStoreConfig(sshd, join(sshd.root, 'secrets'), { name: 'vault' }),
      ],
    });
    const d = await spawnDaemon(env.file);
    daemons.push(d);
    const run = await d.waitFor((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed', 120_000, 'the catch-up run');
    expect(run.result, String(run.err)).toBe('success');
    const outputs: CliResult[] = [];
    outputs.push(await runCli(['backup', '--config', env.file, '--json']));
    expect(outputs[0]!.code, outputs[0]!.stderr).toBe(0);
    const id = JSON.parse(outputs[0]!.stdout).id as string;
    for (const store of ['nfs', 'objects', 'vault']) {
      outputs.push(await runCli(['list', '--config', env.file, '--store', store, '--json']));
      outputs.push(await runCli(['verify', '--config', env.file, '--store', store, id, '--json']));
      outputs.push(await runCli(['prune', '--config', env.file, '--store', store, '--dry-run', '--json']));
    }
    outputs.push(await runCli(['fetch', '--config', env.file, '--store', 'vault', id, '--to', join(root, 'secrets', 'fetched')]));
    outputs.push(await runCli(['check-config', '--config', env.file]));
    outputs.push(await runCli(['check-config', '--config', env.file, '--json']));
    for (const o of outputs) expect(o.code, o.stderr).toBe(0);
    expect(await d.stop()).toBe(0);

    const secrets = secretsOf([sshd.privateKeyFile, etcd.tls!.keyFile, etcd.certs!.caKeyFile], [s3.secretAccessKey]);
    const all = [d.stderr(), ...outputs.flatMap((o) => [o.stdout, o.stderr])].join('\n');
    expect(all.length).toBeGreaterThan(10_000); // the check reads real, verbose output
    expect(leaks(all, secrets)).toEqual([]);
    // The daemon's state file and the outbox status hold no secret either.
    const files = walkModes(join(env.dir, 'work')).filter((e) => e.type === 'file' && /\.json$/.test(e.path));
    expect(files.length).toBeGreaterThan(1);
    for (const f of files) expect(leaks(readFileSync(f.path, 'utf8'), secrets), f.path).toEqual([]);
  }, 240_000);

  it('wrong S3 credentials: the failure names the store and bucket, never the secret it tried', async () => {
    const secret = `sk-${randomBytes(24).toString('hex')}`;
    const credDir = join(root, 'wrong-creds');
    const store = s3StoreConfig(s3, credDir, { name: 'objects' });
    writeFileSync(String(store.secretAccessKeyFile), `${secret}\n`, { mode: 0o600 });
    writeFileSync(String(store.accessKeyIdFile), `AKIA${randomBytes(8).toString('hex').toUpperCase()}\n`, { mode: 0o600 });
    const env = makeEnv(root, 'wrong-creds-env', { endpoints: etcd.endpoints }, {
      etcd: { endpoints: [etcd.endpoints[0]], caFile: etcd.tls!.caFile, certFile: etcd.tls!.certFile, keyFile: etcd.tls!.keyFile },
      stores: [store],
    });
    const r = await runCli(['backup', '--config', env.file, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout);
    expect(doc.stores.objects.error).toMatch(/store objects: .*s3:\/\/etcd-backups\//);
    expect(doc.stores.objects.error).toMatch(/InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|403/);
    expect(leaks(`${r.stdout}\n${r.stderr}`, [secret])).toEqual([]);
    const l = await runCli(['list', '--config', env.file, '--json']);
    expect(l.code).toBe(1);
    expect(leaks(`${l.stdout}\n${l.stderr}`, [secret])).toEqual([]);
  }, 120_000);
});

describe('etcd TLS and connection errors (gRPC)', () => {
  /** A CLI backup against the TLS etcd with `etcd` config overrides: refused by preflight, within its deadline. */
  async function refused(name: string, etcdCfg: Record<string, unknown>) {
    const env = makeEnv(root, name, { endpoints: etcd.endpoints }, { etcd: { endpoints: [etcd.endpoints[0]], timeout: '3s', ...etcdCfg } });
    const t0 = Date.now();
    const r = await runCli(['backup', '--config', env.file, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' }, timeoutMs: 60_000 });
    const doc = JSON.parse(r.stdout);
    expect(r.code, r.stderr).toBe(1);
    expect(doc).toMatchObject({ result: 'failed', reason: 'preflight-unhealthy' });
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(r.stderr).not.toMatch(/DeprecationWarning|DEP0123/);
    return String(doc.error);
  }

  it('a CA that did not sign etcd\'s certificate: the detail names etcd.caFile', async () => {
    const other = makeCerts(join(root, 'other-ca'));
    const error = await refused('tls-wrong-ca', { caFile: other.caFile, certFile: etcd.tls!.certFile, keyFile: etcd.tls!.keyFile });
    expect(error).toContain(`${etcd.endpoints[0]} (status): TLS: etcd's server certificate is not signed by a CA in etcd.caFile`);
  });

  it('a client certificate etcd does not trust: the detail names certFile and keyFile', async () => {
    // (No client certificate at all is a config error: https:// endpoints need all three files.)
    const other = makeCerts(join(root, 'other-client'));
    const error = await refused('tls-foreign-client-cert', { caFile: etcd.tls!.caFile, certFile: other.clientCertFile, keyFile: other.clientKeyFile });
    expect(error).toMatch(/TLS: etcd refused the client certificate: check etcd\.certFile and etcd\.keyFile/);
  });

  it('http:// to the TLS port: the detail says it may need TLS', async () => {
    const error = await refused('tls-plain-http', { endpoints: [etcd.endpoints[0]!.replace('https:', 'http:')] });
    expect(error).toMatch(/connection closed: the endpoint may require TLS/);
  });
});

describe('private files', () => {
  it('everything under workDir and the local store is 0600 (files) / 0700 (dirs); the control socket is 0600 in a 0700 dir', async () => {
    const env = makeEnv(root, 'modes', { endpoints: etcd.endpoints }, {
      etcd: { endpoints: [etcd.endpoints[0]], caFile: etcd.tls!.caFile, certFile: etcd.tls!.certFile, keyFile: etcd.tls!.keyFile },
      stores: [{ name: 'nfs', type: 'local', path: join(root, 'modes', 'store') }, sftpStoreConfig(sshd, join(sshd.root, 'modes'), { name: 'vault' })],
      local: { keep: 2, retryMin: '1s', retryMax: '2s' },
    });
    // A permissive umask must not matter.
    const d = await spawnDaemon(env.file, { wrapper: ['sh', '-c', 'umask 000 && exec "$@"', 'sh'] });
    daemons.push(d);
    const run = await d.waitFor((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed', 120_000, 'the catch-up run');
    expect(run.result, String(run.err)).toBe('success');
    const r = await runCli(['backup', '--config', env.file, '--pin', '--json']);
    expect(r.code, r.stderr).toBe(0);

    const bad: string[] = [];
    const trees = [join(env.dir, 'work'), join(env.dir, 'store'), join(sshd.root, 'modes')];
    for (const tree of trees) {
      for (const e of walkModes(tree)) {
        const want = e.type === 'dir' ? 0o700 : 0o600;
        if (e.mode !== want) bad.push(`${e.path} (${e.type}) is ${e.mode.toString(8)}`);
      }
    }
    const ctl = walkModes(join(env.dir, 'ctl'));
    expect(ctl.map((e) => [e.type, e.mode.toString(8)])).toEqual([
      ['dir', '700'],
      ['socket', '600'],
    ]);
    expect(await d.stop()).toBe(0);
    expect(walkModes(join(env.dir, 'work')).some((e) => e.path.endsWith('state.json'))).toBe(true);
    expect(walkModes(join(env.dir, 'work')).some((e) => e.path.endsWith('status.json'))).toBe(true);
    expect(bad).toEqual([]);
  }, 180_000);
});

describe('network exposure', () => {
  it('with no metrics.listen configured, the daemon listens on 127.0.0.1:9979 only (checked in a network namespace of its own)', async () => {
    const env = makeEnv(root, 'listen', { endpoints: ['http://127.0.0.1:1'] });
    mkdirSync(join(env.dir, 'work'), { recursive: true, mode: 0o700 });
    writeFileSync(join(env.dir, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date().toISOString(), consecutiveFailures: 0, stores: {} }));
    env.rewrite({ metrics: undefined });
    expect(readFileSync(env.file, 'utf8')).not.toMatch(/metrics/);
    const d = await spawnDaemon(env.file, { wrapper: ['unshare', '--net', '--kill-child=SIGKILL', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh'] });
    daemons.push(d);
    const started = d.lines.find((l) => l.msg === 'etcd-backupd daemon started')!;
    expect(started.metrics).toBe('127.0.0.1:9979');
    const sockets = listeningSockets(d.pid());
    expect(sockets).toContain('127.0.0.1:9979');
    expect(sockets.filter((s) => s.startsWith('0.0.0.0:') || s.startsWith('::') || s.startsWith('v6:'))).toEqual([]);
    expect(sockets).toHaveLength(1); // the control channel is a Unix socket, not a port
    expect(await d.stop()).toBe(0);
  }, 60_000);
});
