import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir, writeConfig } from '../support/cli.js';
import { metricValue, startDaemonProcess, type DaemonProcess } from '../support/daemon.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { startS3rver, type S3rver } from '../support/s3.js';
import { startSshd, type Sshd } from '../support/sshd.js';

/**
 * The recovery kit, written by a real daemon against real stores (a local
 * directory, s3rver, OpenSSH) and a real TLS etcd: the kit's config alone
 * lists every store after the original credential files are gone.
 */
let cluster: EtcdCluster;
let s3: S3rver;
let sshd: Sshd;
let dir: string;
let kit: string;
let file: string;
const daemons: DaemonProcess[] = [];
/** Credential files the config names, in the config's own directory (deleted to prove the kit does without them). */
const creds = ['ak', 'sk', 'id_ed25519', 'known_hosts', 'ca.crt', 'client.crt', 'client.key', 'signing.pub'];

function writeCreds(): void {
  writeFileSync(join(dir, 'ak'), `${s3.accessKeyId}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'sk'), `${s3.secretAccessKey}\n`, { mode: 0o600 });
  copyFileSync(sshd.privateKeyFile, join(dir, 'id_ed25519'));
  copyFileSync(sshd.knownHostsFile, join(dir, 'known_hosts'));
  copyFileSync(cluster.tls!.caFile, join(dir, 'ca.crt'));
  copyFileSync(cluster.tls!.certFile, join(dir, 'client.crt'));
  copyFileSync(cluster.tls!.keyFile, join(dir, 'client.key'));
  copyFileSync(join(dir, 'keys', 'signing.pub'), join(dir, 'signing.pub'));
}

function config(name: string, recoveryDir: string): string {
  return writeConfig(
    dir,
    {
      cluster: 'prod',
      node: 'master-0',
      workDir: 'work',
      schedule: '0 0 1 1 *',
      source: { type: 'etcdctl', staticPodDir: 'manifests' },
      etcd: { endpoints: [cluster.endpoints[0]], caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'client.key' },
      stores: [
        { name: 'nfs', type: 'local', path: 'nfs' },
        { name: 's3', type: 's3', bucket: s3.bucket, prefix: 'clusters', endpoint: s3.endpoint, forcePathStyle: true, accessKeyIdFile: 'ak', secretAccessKeyFile: 'sk' },
        { name: 'vault', type: 'sftp', host: sshd.host, port: sshd.port, username: sshd.username, privateKeyFile: 'id_ed25519', knownHostsFile: 'known_hosts', path: join(sshd.root, 'etcd'), timeout: '5s' },
      ],
      signing: { keyFile: join(dir, 'keys', 'signing'), trustedKeys: ['signing.pub'] },
      metrics: { listen: '127.0.0.1:0' },
      control: { socket: join(dir, `${name}.sock`) },
      recovery: { dir: recoveryDir },
    },
    `${name}.yaml`,
  );
}

async function daemon(cfgFile: string): Promise<DaemonProcess> {
  const d = await startDaemonProcess(cfgFile);
  daemons.push(d);
  return d;
}

const mode = (p: string) => statSync(p).mode & 0o777;

beforeAll(async () => {
  dir = tempDir('kit');
  [cluster, s3, sshd] = await Promise.all([startEtcdCluster({ members: 1, tls: true }), startS3rver(), startSshd()]);
  await cluster.putMany(Array.from({ length: 50 }, (_, i) => [`/registry/configmaps/cm${i}`, `data-${i}`] as [string, string]));
  mkdirSync(join(dir, 'manifests'));
  writeFileSync(join(dir, 'manifests', 'etcd.yaml'), 'kind: Pod\n');
  const k = await runCli(['keygen', '--out', join(dir, 'keys', 'signing')]);
  expect(k.code, k.stderr).toBe(0);
  writeCreds();
  // The parent does not exist yet: the daemon creates it (0700).
  kit = join(dir, 'host', 'recovery');
  file = config('main', kit);
});

afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL').catch(() => undefined);
  await Promise.all([cluster?.stop(), s3?.dispose(), sshd?.stop()]);
});

describe('recovery kit', () => {
  let backupId: string;

  it('a successful run writes the kit: private modes, only what a restore needs, the members named', async () => {
    const d = await daemon(file);
    const run = await d.waitFor((l) => l.msg === 'backup run finished', 90_000, 'catch-up run');
    expect(run.result).toBe('success');
    backupId = run.runId as string;
    await d.waitFor((l) => l.msg === 'recovery kit refreshed' && l.trigger === 'run', 30_000, 'kit refresh after the run');
    const m = await d.metrics();
    expect(metricValue(m, 'etcd_backup_recovery_kit_refresh_failures_total')).toBe(0);
    expect(metricValue(m, 'etcd_backup_recovery_kit_last_refresh_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 120);
    // Tests run under node, not as the single executable: the kit says the executable is missing.
    expect(metricValue(m, 'etcd_backup_recovery_kit_executable')).toBe(0);
    expect(await d.stop()).toBe(0);

    expect(mode(dirname(kit))).toBe(0o700);
    expect(mode(kit)).toBe(0o700);
    expect(mode(join(kit, 'files'))).toBe(0o700);
    expect(readdirSync(kit).sort()).toEqual(['RESTORE.txt', 'config.yaml', 'files']);
    for (const f of ['RESTORE.txt', 'config.yaml']) expect(mode(join(kit, f)), f).toBe(0o600);
    const files = readdirSync(join(kit, 'files')).sort();
    expect(files).toEqual(
      ['etcd-ca.crt', 'etcd-client.crt', 'etcd-client.key', 'store-s3-accessKeyIdFile', 'store-s3-secretAccessKeyFile', 'store-vault-knownHostsFile', 'store-vault-privateKeyFile', 'trusted-key-0.pub'].sort(),
    );
    for (const f of files) expect(mode(join(kit, 'files', f)), f).toBe(0o600);
    // Never the signing private key.
    const signingKey = readFileSync(join(dir, 'keys', 'signing'));
    for (const f of files) expect(readFileSync(join(kit, 'files', f)).equals(signingKey), f).toBe(false);
    expect(readFileSync(join(kit, 'config.yaml'), 'utf8')).not.toContain(join(dir, 'keys', 'signing'));

    const text = readFileSync(join(kit, 'RESTORE.txt'), 'utf8');
    const member = cluster.members[0]!;
    expect(text).toContain(`--name ${member.name} --initial-cluster ${member.name}=${member.peerUrl} --initial-advertise-peer-urls ${member.peerUrl}`);
    expect(text).toContain(`list --config ${join(kit, 'config.yaml')}`);
    expect(text).toContain('the executable is NOT in this kit');
  });

  it('the kit config passes check-config and lists every store after the original credentials are gone', async () => {
    for (const f of creds) rmSync(join(dir, f));
    // The source's paths are not needed either (on OpenShift the script is the pod's).
    rmSync(join(dir, 'manifests'), { recursive: true });
    const kitConfig = join(kit, 'config.yaml');
    const c = await runCli(['check-config', '--config', kitConfig]);
    expect(c.code, c.stderr).toBe(0);
    for (const store of ['nfs', 's3', 'vault']) {
      const l = await runCli(['list', '--config', kitConfig, '--store', store, '--json']);
      expect(l.code, `${store}: ${l.stderr}`).toBe(0);
      expect(JSON.parse(l.stdout).backups.map((b: { id: string }) => b.id)).toEqual([backupId]);
    }
    // Signed with the masters' key: the kit's trusted key verifies it.
    const v = await runCli(['verify', '--config', kitConfig, '--store', 's3', 'latest']);
    expect(v.code, v.stderr).toBe(0);
    // And the original config no longer loads: the kit really did without those files.
    expect((await runCli(['check-config', '--config', file])).code).not.toBe(0);
    writeCreds();
    mkdirSync(join(dir, 'manifests'));
  });

  it('the next refresh replaces the kit whole: nothing of the old one stays, no temp siblings', async () => {
    writeFileSync(join(kit, 'stale-marker'), 'old kit\n');
    // Forget the members the run saw: the daemon asks etcd at start (a node that never wins a slot still names them).
    const statePath = join(dir, 'work', 'state.json');
    const state = JSON.parse(readFileSync(statePath, 'utf8'));
    expect(state.members).toEqual([{ name: cluster.members[0]!.name, peerURLs: [cluster.members[0]!.peerUrl] }]);
    delete state.members;
    delete state.membersSeenAt;
    writeFileSync(statePath, JSON.stringify(state));
    const d = await daemon(file);
    await d.waitFor((l) => l.msg === 'recovery kit refreshed' && l.trigger === 'start', 30_000, 'kit refresh at start');
    expect(await d.stop()).toBe(0);
    expect(existsSync(join(kit, 'stale-marker'))).toBe(false);
    expect(readdirSync(dirname(kit))).toEqual(['recovery']);
    // Named without a new run, from etcd's answer at start.
    expect(readFileSync(join(kit, 'RESTORE.txt'), 'utf8')).toContain(`--name ${cluster.members[0]!.name} `);
  });

  it('a refresh that fails is counted and logged, and the backup still succeeds', async () => {
    // The kit's parent is a file: nothing can be created under it, not even by root.
    writeFileSync(join(dir, 'not-a-dir'), '');
    const bad = config('bad', join(dir, 'not-a-dir', 'recovery'));
    const d = await daemon(bad);
    await d.waitFor((l) => String(l.msg).startsWith('recovery kit refresh failed') && l.trigger === 'start' && l.reason === 'recovery-kit-failed', 30_000, 'failed refresh at start');
    const before = metricValue(await d.metrics(), 'etcd_backup_recovery_kit_refresh_failures_total')!;
    expect(before).toBeGreaterThanOrEqual(1);
    const b = await runCli(['backup', '--config', bad, '--json']);
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout).result).toBe('success');
    const m = await d.metrics();
    expect(metricValue(m, 'etcd_backup_recovery_kit_refresh_failures_total')).toBe(before + 1);
    expect(metricValue(m, 'etcd_backup_recovery_kit_last_refresh_timestamp_seconds')).toBeUndefined();
    expect(await d.stop()).toBe(0);
  });
});
