import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../src/config/load.js';
import { planKit } from '../../src/recovery/plan.js';
import { memberRestoreLines, restoreText } from '../../src/recovery/restore-text.js';

const dir = mkdtempSync(join(tmpdir(), 'ebd-kit-plan-'));
const f = (name: string) => {
  const p = join(dir, name);
  writeFileSync(p, `${name}\n`, { mode: 0o600 });
  return p;
};
const script = f('cluster-backup.sh');
mkdirSync(join(dir, 'manifests'));
const RECIPIENT = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p';

const base = () => ({
  cluster: 'prod',
  node: 'm0',
  source: { type: 'cluster-backup', script },
  etcd: { endpoints: ['http://127.0.0.1:2379'] },
  stores: [{ name: 'nfs', type: 'local', path: '/mnt/backups' }],
});

const full = () => ({
  ...base(),
  etcd: { endpoints: ['https://127.0.0.1:2379'], caFile: f('ca.crt'), certFile: f('client.crt'), keyFile: f('client.key') },
  stores: [
    { name: 'nfs', type: 'local', path: '/mnt/backups' },
    { name: 's3', type: 's3', bucket: 'b-1', accessKeyIdFile: f('ak'), secretAccessKeyFile: f('sk'), sessionTokenFile: f('st') },
    { name: 'vault', type: 'sftp', host: 'h', username: 'u', privateKeyFile: f('id_ed25519'), passphraseFile: f('pass'), knownHostsFile: f('known_hosts'), path: '/srv' },
  ],
  signing: { keyFile: f('signing.pem'), trustedKeys: [f('trusted-a.pub'), f('trusted-b.pub')] },
  drill: { schedule: '0 4 * * 0', identityFile: f('age-identity.txt') },
  encryption: { recipients: [RECIPIENT] },
});

const cfgOf = (doc: unknown): Config => parseConfig(doc, join(dir, 'config.yaml'));

/** Every string in the kit config, with its key path. */
function strings(v: unknown, at = ''): [string, string][] {
  if (Array.isArray(v)) return v.flatMap((x, i) => strings(x, `${at}[${i}]`));
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => strings(x, at ? `${at}.${k}` : k));
  return typeof v === 'string' ? [[at, v]] : [];
}

describe('planKit', () => {
  const table: { name: string; doc: () => object; copied: Record<string, string>; dropped: string[]; ambient: string[] }[] = [
    { name: 'local store, plain http etcd: nothing to copy', doc: base, copied: {}, dropped: ['source'], ambient: [] },
    {
      name: 'every kind of file',
      doc: full,
      copied: {
        'etcd.caFile': 'files/etcd-ca.crt',
        'etcd.certFile': 'files/etcd-client.crt',
        'etcd.keyFile': 'files/etcd-client.key',
        'stores[1].accessKeyIdFile': 'files/store-s3-accessKeyIdFile',
        'stores[1].secretAccessKeyFile': 'files/store-s3-secretAccessKeyFile',
        'stores[1].sessionTokenFile': 'files/store-s3-sessionTokenFile',
        'stores[2].privateKeyFile': 'files/store-vault-privateKeyFile',
        'stores[2].passphraseFile': 'files/store-vault-passphraseFile',
        'stores[2].knownHostsFile': 'files/store-vault-knownHostsFile',
        'signing.trustedKeys[0]': 'files/trusted-key-0.pub',
        'signing.trustedKeys[1]': 'files/trusted-key-1.pub',
      },
      dropped: ['signing.keyFile', 'drill.identityFile', 'drill.schedule', 'source'],
      ambient: [],
    },
    {
      name: 'S3 from the default credential chain',
      doc: () => ({ ...base(), stores: [{ name: 'aws', type: 's3', bucket: 'b-1' }] }),
      copied: {},
      dropped: ['source'],
      ambient: ['aws'],
    },
  ];

  for (const t of table) {
    it(t.name, () => {
      const cfg = cfgOf(t.doc());
      const plan = planKit(cfg);
      expect(Object.fromEntries(plan.files.map((x) => [x.key, x.name]))).toEqual(t.copied);
      expect(plan.dropped.map((d) => d.key)).toEqual(t.dropped);
      expect(plan.ambient.map((a) => a.store)).toEqual(t.ambient);
      // The config names each copied file by its kit name, at the key it came from.
      const at = Object.fromEntries(strings(plan.config));
      for (const [key, name] of Object.entries(t.copied)) {
        const path = key.replace(/^stores\[(\d+)\]/, 'stores[$1]');
        expect(at[path], key).toBe(name);
      }
      // No path into the original config's directory is left (the source script, a pod path on OpenShift, included).
      const leftover = strings(plan.config).filter(([, v]) => v.startsWith(dir));
      expect(leftover).toEqual([]);
      expect(plan.config).toMatchObject({ source: { type: 'etcdctl', staticPodDir: '.' }, workDir: 'work', metrics: { listen: '127.0.0.1:0' }, control: { socket: 'control.sock' }, recovery: { dir: '' } });
      expect(plan.config).not.toHaveProperty('configPath');
    });
  }

  it('never copies the signing private key or an age identity', () => {
    const cfg = cfgOf(full());
    const from = planKit(cfg).files.map((x) => x.from);
    expect(from).not.toContain(cfg.signing.keyFile);
    expect(from).not.toContain(cfg.drill.identityFile);
    const values = strings(planKit(cfg).config).map(([, v]) => v);
    expect(values).not.toContain(cfg.signing.keyFile);
    expect(values).not.toContain(cfg.drill.identityFile);
  });

  it('the kit config loads from the kit alone', () => {
    const plan = planKit(cfgOf(full()));
    const kit = mkdtempSync(join(tmpdir(), 'ebd-kit-plan-kit-'));
    for (const x of plan.files) {
      mkdirSync(dirname(join(kit, x.name)), { recursive: true });
      copyFileSync(x.from, join(kit, x.name));
    }
    const again = parseConfig(plan.config, join(kit, 'config.yaml'));
    expect(again.etcd.caFile).toBe(join(kit, 'files/etcd-ca.crt'));
    expect(again.stores[2]).toMatchObject({ privateKeyFile: join(kit, 'files/store-vault-privateKeyFile') });
    expect(again.workDir).toBe(join(kit, 'work'));
    expect(again.signing).toEqual({ trustedKeys: [join(kit, 'files/trusted-key-0.pub'), join(kit, 'files/trusted-key-1.pub')] });
    expect(again.drill.identityFile).toBeUndefined();
    expect(again.recovery.dir).toBe('');
  });
});

describe('restoreText', () => {
  const members = [
    { name: 'm0', peerURLs: ['https://10.0.0.1:2380'] },
    { name: 'm1', peerURLs: ['https://10.0.0.2:2380'] },
  ];
  const text = (doc: object, opts: { executable?: boolean; members?: typeof members } = {}) => {
    const cfg = cfgOf(doc);
    return restoreText({ cfg, plan: planKit(cfg), kitDir: '/var/lib/etcd-backupd/recovery', executable: opts.executable ?? true, members: opts.members, now: new Date(0) });
  };

  it('OpenShift: fetch then cluster-restore.sh, before the per-member lines', () => {
    const t = text(base(), { members });
    const fetch = t.indexOf('/var/lib/etcd-backupd/recovery/etcd-backupd fetch --config /var/lib/etcd-backupd/recovery/config.yaml latest --to /home/core/assets/backup');
    expect(fetch).toBeGreaterThan(0);
    expect(t).toContain('sudo -E /usr/local/bin/cluster-restore.sh /home/core/assets/backup');
    expect(t.indexOf('restore --config')).toBeGreaterThan(fetch);
    // Issue 19: after a failed upgrade the right backup is the pre-upgrade one, and list shows which.
    expect(t).toMatch(/After a failed upgrade restore the backup taken BEFORE it, not latest: `list` shows the\ncluster version/);
    expect(t).toContain('pre-upgrade-<version> --pin');
  });

  it('etcdctl source: no OpenShift section, one restore line per member', () => {
    const t = text({ ...base(), source: { type: 'etcdctl', staticPodDir: join(dir, 'manifests') } }, { members });
    expect(t).not.toContain('cluster-restore.sh');
    expect(t).toContain(memberRestoreLines('/var/lib/etcd-backupd/recovery/etcd-backupd', '/var/lib/etcd-backupd/recovery/config.yaml', 'prod', members)[1]!.split('\n')[1]);
    expect(t).toContain('--name m0 --initial-cluster m0=https://10.0.0.1:2380,m1=https://10.0.0.2:2380 --initial-advertise-peer-urls https://10.0.0.1:2380');
    expect(t).toContain('--name m1 ');
  });

  it('members unknown, no executable, encryption, ambient credentials: each said', () => {
    const t = text({ ...base(), encryption: { recipients: [RECIPIENT] }, stores: [{ name: 'aws', type: 's3', bucket: 'b-1' }] }, { executable: false });
    expect(t).toContain('member list is not known yet');
    expect(t).toContain('--name <member>');
    expect(t).toContain('the executable is NOT in this kit');
    expect(t).toContain('as root (`sudo -i`)');
    expect(t).toContain('etcd-backupd list --config');
    expect(t).toContain('--identity FILE');
    expect(t).toContain('Store aws takes its credentials from the environment');
  });
});
