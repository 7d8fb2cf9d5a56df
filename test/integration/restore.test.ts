/**
 * `etcd-backupd restore` against real parts: a 3-member etcd 3.4 cluster
 * (Debian), a real backup through the CLI into a local store, then three
 * new members restored by the CLI (etcdctl 3.4: no etcdutl here) and
 * started as a new cluster that must serve the source's keys. Also: a
 * non-empty target refused and left alone, --at, and the etcdutl path
 * (3.5/3.6) through a shim that records its argv and restores with etcdctl.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { makeFakeMaster } from '../support/fake-master.js';
import { etcdKeys, startRestoredMember, waitEtcdHealthy, type RestoredMember } from '../support/restored.js';
import { ensureTool, freePort, runEtcdctl, startEtcdCluster, startEtcdFromDataDir, type EtcdCluster } from '../support/etcd.js';

let cluster: EtcdCluster;
let dir: string;
let cfg: string;
let backupId: string;
let backupRevision: number;
let sourceKeys: Map<string, string>;
const children: ChildProcess[] = [];

interface RestoreDoc {
  id: string;
  store: string;
  dataDir: string;
  tool: string;
  revision: number;
  bumpRevision?: number;
  warnings: string[];
  next: string[];
  at?: string;
  beforeSeconds?: number;
}

beforeAll(async () => {
  dir = tempDir('restore');
  cluster = await startEtcdCluster({ members: 3, tls: false });
  const entries: [string, string][] = [];
  for (let i = 0; i < 120; i++) entries.push([`/kubernetes.io/configmaps/ns${i % 7}/cm${i}`, `value-${i}-${'x'.repeat(i)}`]);
  await cluster.putMany(entries, 4);
  for (let i = 0; i < 120; i += 4) await cluster.put(`/kubernetes.io/configmaps/ns${i % 7}/cm${i}`, `v2-${i}`);
  await cluster.etcdctl(['del', '--prefix', '/kubernetes.io/configmaps/ns3/']);
  sourceKeys = new Map([...(await cluster.getAll(''))].map(([k, v]) => [k, v.toString()]));
  cfg = writeConfig(dir, {
    cluster: 'restore-cluster',
    node: 'master-0',
    workDir: join(dir, 'work'),
    // A fake master: etcd.env names the endpoint (the stand-in, like the real script, ignores ETCDCTL_*).
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: makeFakeMaster(join(dir, 'master'), cluster.endpoints[0]!).env },
    etcd: { endpoints: cluster.endpoints },
    stores: [{ name: 'nfs', type: 'local', path: join(dir, 'store') }],
  });
  const r = await runCli(['backup', '--config', cfg, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
  expect(r.code, r.stderr).toBe(0);
  const doc = JSON.parse(r.stdout) as { id: string; revision: number };
  backupId = doc.id;
  backupRevision = doc.revision;
  // The source goes on after the backup: the restored cluster must not have this.
  await cluster.put('/after-backup', 'not in the backup');
}, 180_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function restoreArgs(m: { name: string; dataDir: string; peer: string }, initialCluster: string, extra: string[] = []): string[] {
  return ['restore', '--config', cfg, 'latest', '--data-dir', m.dataDir, '--name', m.name, '--initial-cluster', initialCluster, '--initial-advertise-peer-urls', m.peer, '--initial-cluster-token', 'restored-1', '--json', ...extra];
}

/** Starts one etcd member from a restored data dir, as an operator would (same cluster and token as the restore). */
function startMember(m: RestoredMember, initialCluster: string): void {
  children.push(startRestoredMember(m, initialCluster, 'restored-1', join(dir, `${m.name}.log`)));
}

describe('restore latest into three new members (etcdctl 3.4)', () => {
  it('restores each member, and the new cluster serves the backup', async () => {
    const members = await Promise.all(
      ['r1', 'r2', 'r3'].map(async (name) => ({ name, dataDir: join(dir, 'new', name, 'data'), peer: `http://127.0.0.1:${await freePort()}`, client: `http://127.0.0.1:${await freePort()}` })),
    );
    const initialCluster = members.map((m) => `${m.name}=${m.peer}`).join(',');
    // r2's data dir exists and is empty (0700): restored into as well.
    mkdirSync(members[1]!.dataDir, { recursive: true, mode: 0o700 });
    const docs: RestoreDoc[] = [];
    for (const [i, m] of members.entries()) {
      // r3 picks its backup by time: the newest at or before now is the one just taken.
      const r = await runCli(restoreArgs(m, initialCluster, i === 2 ? ['--at', 'now'] : []), { env: { PATH: '/usr/bin:/bin' } });
      expect(r.code, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout) as RestoreDoc;
      docs.push(doc);
      expect(doc).toMatchObject({ id: backupId, store: 'nfs', dataDir: m.dataDir, tool: 'etcdctl', revision: backupRevision });
      expect(doc.bumpRevision).toBeUndefined();
      expect(doc.warnings.join('\n')).toMatch(/etcdctl \(etcd 3\.4\) cannot bump the revision/);
      expect(doc.next.join('\n')).toMatch(/--initial-cluster-token restored-1/);
      expect(existsSync(join(m.dataDir, 'member', 'snap', 'db'))).toBe(true);
      // The private fetch dir beside the data dir is gone.
      expect(readdirSync(join(dir, 'new', m.name))).toEqual(['data']);
    }
    expect(docs[2]!.at).toBeDefined();
    expect(docs[2]!.beforeSeconds).toBeGreaterThanOrEqual(0);

    for (const m of members) startMember(m, initialCluster);
    const endpoints = members.map((m) => m.client);
    await waitEtcdHealthy(endpoints);
    for (const ep of endpoints) {
      const got = await etcdKeys([ep]);
      expect(got.keys).toEqual(sourceKeys);
      expect(got.keys.has('/after-backup')).toBe(false);
      // etcdctl 3.4 cannot bump: the restored revision is the backup's.
      expect(got.revision).toBe(backupRevision);
    }
    const list = JSON.parse((await runEtcdctl(['member', 'list', '-w', 'json'], { endpoints })).stdout) as { members: { name: string; peerURLs: string[] }[] };
    expect(list.members.map((x) => `${x.name}=${x.peerURLs.join(',')}`).sort()).toEqual(initialCluster.split(',').sort());
  }, 120_000);
});

describe('restore refuses and explains', () => {
  it('leaves a non-empty data dir untouched (exit 1, reason in --json)', async () => {
    const target = join(dir, 'busy');
    mkdirSync(target, { mode: 0o700 });
    writeFileSync(join(target, 'keep.txt'), 'old member data');
    const before = statSync(join(target, 'keep.txt')).mtimeMs;
    const peer = 'http://127.0.0.1:2380';
    const r = await runCli(restoreArgs({ name: 'x1', dataDir: target, peer }, `x1=${peer}`));
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout) as { reason: string; error: string; hint: string };
    expect(doc.reason).toBe('restore-target-not-empty');
    expect(doc.hint).toMatch(/move the old one aside/);
    expect(readdirSync(target)).toEqual(['keep.txt']);
    expect(readFileSync(join(target, 'keep.txt'), 'utf8')).toBe('old member data');
    expect(statSync(join(target, 'keep.txt')).mtimeMs).toBe(before);
    expect(readdirSync(dir).filter((n) => n.startsWith('.etcd-backupd-restore-'))).toEqual([]);
  });

  it('bad usage exits 2 with the reason; --at before any backup exits 1 (not-found)', async () => {
    const peer = 'http://127.0.0.1:2380';
    const bad = await runCli(restoreArgs({ name: 'x1', dataDir: join(dir, 'u1'), peer }, 'x2=http://127.0.0.1:2380'));
    expect(bad.code).toBe(2);
    expect((JSON.parse(bad.stdout) as { reason: string }).reason).toBe('usage');
    const early = await runCli(restoreArgs({ name: 'x1', dataDir: join(dir, 'u2'), peer }, `x1=${peer}`, ['--at', '2000-01-01T00:00:00Z']));
    expect(early.code).toBe(1);
    expect((JSON.parse(early.stdout) as { reason: string }).reason).toBe('not-found');
    expect(existsSync(join(dir, 'u2'))).toBe(false);
    const idAt = await runCli(restoreArgs({ name: 'x1', dataDir: join(dir, 'u3'), peer }, `x1=${peer}`, ['--at', 'now']).map((a) => (a === 'latest' ? backupId : a)));
    expect(idAt.code).toBe(2);
    expect((JSON.parse(idAt.stdout) as { error: string }).error).toMatch(/give `latest` as the backup, not an id/);
  });

  it('says in plain text what it restored and what to do next', async () => {
    const peer = `http://127.0.0.1:${await freePort()}`;
    const m = { name: 'h1', dataDir: join(dir, 'human', 'data'), peer };
    const r = await runCli(restoreArgs(m, `h1=${peer},h2=http://127.0.0.1:1`, ['--at', 'now']).filter((a) => a !== '--json'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^restored backup ${backupId} \\(.*revision ${backupRevision}, \\d+ keys\\) from store nfs into ${m.dataDir} as member h1 with etcdctl\n`));
    expect(r.stdout).toMatch(/next:\n  1\. run this same restore .* on the other members: h2/);
    expect(r.stdout).toMatch(/start etcd on this member with --name h1 --data-dir \S+ --initial-advertise-peer-urls \S+ --initial-cluster \S+ --initial-cluster-token restored-1/);
    expect(r.stdout).toMatch(/OpenShift: do NOT use restore/);
    expect(r.stderr).toMatch(new RegExp(`--at .*: backup ${backupId} taken .*, \\d+[smhd].* before it`));
    expect(r.stderr).toMatch(/warning: etcdctl \(etcd 3\.4\) cannot bump the revision/);
  });

  it('answers --help with the full usage, and the top-level help names restore', async () => {
    const h = await runCli(['restore', '--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/--initial-cluster-token T\s+default "etcd-cluster"; every member must use the same/);
    expect(h.stdout).toMatch(/--bump-revision N/);
    expect(h.stdout).toMatch(/NOT for OpenShift/);
    const top = await runCli(['--help']);
    expect(top.stdout).toMatch(/etcd-backupd restore\s+--config F/);
  });
});

describe('the etcdutl path (3.5/3.6), through a shim', () => {
  it('passes --bump-revision 1000000000 --mark-compacted and yields a working data dir', async () => {
    const shimDir = join(dir, 'shim');
    mkdirSync(shimDir, { mode: 0o700 });
    const argvFile = join(shimDir, 'argv');
    const shim = join(shimDir, 'etcdutl');
    // Records its argv, then drops the flags etcdctl 3.4 does not know and restores with it.
    writeFileSync(
      shim,
      `#!/bin/bash
printf '%s\\n' "$@" > ${JSON.stringify(argvFile)}
stat -c '%a' "$(dirname "$3")/.." "$(dirname "$3")" "$3" > ${JSON.stringify(argvFile + '.modes')}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bump-revision) shift 2 ;;
    --mark-compacted) shift ;;
    *) args+=("$1"); shift ;;
  esac
done
ETCDCTL_API=3 exec ${JSON.stringify(ensureTool('etcdctl'))} "\${args[@]}"
`,
    );
    chmodSync(shim, 0o755);
    const m = { name: 's1', dataDir: join(dir, 'shim-target', 'data'), peer: `http://127.0.0.1:${await freePort()}` };
    const r = await runCli(restoreArgs(m, `s1=${m.peer}`, ['--etcdutl', shim]));
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as RestoreDoc;
    // No etcdctl warning; only that s1 is not a member the backup was taken with (issue 19: restore compares with the manifest's members).
    expect(doc).toMatchObject({ id: backupId, tool: 'etcdutl', revision: backupRevision, bumpRevision: 1_000_000_000, warnings: [expect.stringMatching(/^the backup was taken on members .*; --initial-cluster names s1: fine on new hosts/)] });
    const argv = readFileSync(argvFile, 'utf8').trimEnd().split('\n');
    expect(argv.slice(0, 2)).toEqual(['snapshot', 'restore']);
    expect(argv.slice(3)).toEqual([
      '--data-dir', m.dataDir, '--name', 's1', '--initial-cluster', `s1=${m.peer}`, '--initial-advertise-peer-urls', m.peer,
      '--initial-cluster-token', 'restored-1', '--bump-revision', '1000000000', '--mark-compacted',
    ]);
    // The snapshot came from the private fetch dir beside the data dir, which is gone now.
    expect(argv[2]).toMatch(new RegExp(`^${join(dir, 'shim-target')}/\\.etcd-backupd-restore-[^/]+/backup/snapshot_[^/]+\\.db$`));
    expect(readdirSync(join(dir, 'shim-target'))).toEqual(['data']);
    // The private temp dir, the fetch dir in it and the snapshot, while the tool ran.
    expect(readFileSync(argvFile + '.modes', 'utf8').split('\n').filter(Boolean)).toEqual(['700', '700', '600']);
    const etcd = await startEtcdFromDataDir(m.dataDir, { name: 's1', peerUrl: m.peer });
    try {
      const got = new Map([...(await etcd.getAll(''))].map(([k, v]) => [k, v.toString()]));
      expect(got).toEqual(sourceKeys);
    } finally {
      await etcd.stop();
    }

    // --bump-revision 0: no bump flags.
    const m2 = { ...m, name: 's2', dataDir: join(dir, 'shim-target2', 'data') };
    const r2 = await runCli(restoreArgs(m2, `s2=${m2.peer}`, ['--etcdutl', shim, '--bump-revision', '0']));
    expect(r2.code, r2.stderr).toBe(0);
    expect((JSON.parse(r2.stdout) as RestoreDoc).bumpRevision).toBeUndefined();
    expect(readFileSync(argvFile, 'utf8')).not.toMatch(/bump-revision|mark-compacted/);
  }, 60_000);

  it('a failing tool leaves the target as it was (restore-failed)', async () => {
    const bad = join(dir, 'bad-etcdutl');
    // Writes part of a data dir, then fails the way etcdutl logs a fatal error.
    writeFileSync(
      bad,
      `#!/bin/bash
while [ $# -gt 0 ]; do [ "$1" = --data-dir ] && d="$2"; shift; done
mkdir -p "$d/member/snap" && echo partial > "$d/member/snap/db"
echo '{"level":"fatal","msg":"failed to restore","error":"disk on fire"}' >&2
exit 3
`,
    );
    chmodSync(bad, 0o755);
    const target = join(dir, 'fail-target', 'data');
    mkdirSync(target, { recursive: true, mode: 0o750 });
    const peer = `http://127.0.0.1:${await freePort()}`;
    const r = await runCli(restoreArgs({ name: 'f1', dataDir: target, peer }, `f1=${peer}`, ['--etcdutl', bad]));
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout) as { reason: string; error: string };
    expect(doc.reason).toBe('restore-failed');
    expect(doc.error).toMatch(/exit 3\): failed to restore: disk on fire/);
    expect(readdirSync(target)).toEqual([]);
    expect(statSync(target).mode & 0o777).toBe(0o750);
    expect(readdirSync(join(dir, 'fail-target'))).toEqual(['data']);
  });
});

describe('encrypted and signed backups', () => {
  let encCfg: string;
  let otherTrustCfg: string;
  let identity: string;
  let encId: string;
  const peer = 'http://127.0.0.1:2380';

  beforeAll(async () => {
    const d = join(dir, 'enc');
    mkdirSync(d, { mode: 0o700 });
    identity = join(d, 'identity.txt');
    execFileSync(ensureTool('age-keygen'), ['-o', identity], { stdio: 'pipe' });
    const recipient = execFileSync(ensureTool('age-keygen'), ['-y', identity]).toString().trim();
    for (const k of ['sign', 'other']) expect((await runCli(['keygen', '--out', join(d, k)])).code).toBe(0);
    const base = {
      cluster: 'enc-cluster',
      node: 'master-0',
      workDir: join(d, 'work'),
      source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: makeFakeMaster(join(d, 'master'), cluster.endpoints[0]!).env },
      etcd: { endpoints: cluster.endpoints },
      stores: [{ name: 'nfs', type: 'local', path: join(d, 'store') }],
      encryption: { recipients: [recipient] },
    };
    encCfg = writeConfig(d, { ...base, signing: { keyFile: join(d, 'sign'), trustedKeys: [join(d, 'sign.pub')] } });
    // Where restore runs with another key trusted: the backup looks planted.
    otherTrustCfg = writeConfig(d, { ...base, signing: { trustedKeys: [join(d, 'other.pub')] } }, 'other.yaml');
    const r = await runCli(['backup', '--config', encCfg, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(r.code, r.stderr).toBe(0);
    encId = (JSON.parse(r.stdout) as { id: string }).id;
  }, 60_000);

  const args = (config: string, dataDir: string, extra: string[]) =>
    ['restore', '--config', config, encId, '--data-dir', dataDir, '--name', 'e1', '--initial-cluster', `e1=${peer}`, '--initial-advertise-peer-urls', peer, '--json', ...extra];

  it('needs --identity, and restores with it', async () => {
    const target = join(dir, 'enc-target', 'data');
    const no = await runCli(args(encCfg, target, []));
    expect(no.code).toBe(2);
    expect((JSON.parse(no.stdout) as { error: string }).error).toMatch(/encrypted for age1.*pass --identity FILE/);
    expect(existsSync(join(dir, 'enc-target'))).toBe(false);

    const r = await runCli(args(encCfg, target, ['--identity', identity]));
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: encId, tool: 'etcdctl' });
    const etcd = await startEtcdFromDataDir(target, { name: 'e1', peerUrl: `http://127.0.0.1:${await freePort()}` });
    try {
      const got = await etcd.getAll('/kubernetes.io/');
      expect(got.size).toBe([...sourceKeys.keys()].filter((k) => k.startsWith('/kubernetes.io/')).length);
    } finally {
      await etcd.stop();
    }
  }, 60_000);

  it('refuses a backup no trusted key signed, unless --allow-untrusted', async () => {
    const target = join(dir, 'untrusted-target', 'data');
    const r = await runCli(args(otherTrustCfg, target, ['--identity', identity]));
    expect(r.code).toBe(1);
    expect((JSON.parse(r.stdout) as { reason: string }).reason).toBe('signature-untrusted');
    expect(existsSync(target)).toBe(false);
    const ok = await runCli(args(otherTrustCfg, target, ['--identity', identity, '--allow-untrusted']));
    expect(ok.code, ok.stderr).toBe(0);
    expect(existsSync(join(target, 'member', 'snap', 'db'))).toBe(true);
  }, 60_000);
});
