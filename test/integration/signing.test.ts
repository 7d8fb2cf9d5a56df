import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { metricValue } from '../support/daemon.js';
import type { EtcdCluster } from '../support/etcd.js';
import { makeEnv, startFilledEtcd, tempDir, type Env } from '../support/fault-env.js';
import { eventually, spawnDaemon, type DaemonProc } from '../support/faults.js';

/**
 * Signed backups against a real etcd and a shared store: a second writer
 * (another key, or none) plants newer backups in the same store. With
 * trusted keys, `latest` never resolves to them, verify/fetch refuse them
 * by id, retention neither counts nor deletes them, list and the metric
 * show them.
 */
let etcd: EtcdCluster;
let root: string;
let keys: { master: string; intruder: string };
let env: Env; // the masters: sign, trust their own key
let store: string;
const daemons: DaemonProc[] = [];
const noDaemon = { ETCD_BACKUPD_NO_DAEMON: '1' };
const keepAll = { keepLast: 1, hourly: 0, daily: 0, weekly: 0, monthly: 0 };

async function cli(args: string[], file = env.file) {
  return runCli([...args, '--config', file], { env: noDaemon });
}

async function backup(file: string): Promise<string> {
  const r = await cli(['backup', '--json'], file);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).id as string;
}

async function listed(file = env.file): Promise<{ id: string; signed: string; node: string }[]> {
  const r = await cli(['list', '--json'], file);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).backups;
}

beforeAll(async () => {
  root = tempDir('signing');
  etcd = await startFilledEtcd({ keys: 20 });
  const gen = async (name: string) => {
    const r = await runCli(['keygen', '--out', join(root, 'keys', name)]);
    expect(r.code, r.stderr).toBe(0);
    return join(root, 'keys', name);
  };
  keys = { master: await gen('master'), intruder: await gen('intruder') };
  store = join(root, 'shared-store');
  env = makeEnv(root, 'masters', etcd, {
    stores: [{ name: 'nfs', type: 'local', path: store }],
    retention: keepAll,
    signing: { keyFile: keys.master, trustedKeys: [`${keys.master}.pub`] },
  });
}, 180_000);

afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  await etcd?.stop();
});

describe('keygen', () => {
  it('writes a private key 0600 and a public key, refuses to overwrite', async () => {
    expect(statSync(keys.master).mode & 0o777).toBe(0o600);
    expect(readFileSync(`${keys.master}.pub`, 'utf8')).toMatch(/BEGIN PUBLIC KEY/);
    const again = await runCli(['keygen', '--out', keys.master]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already exists/);
  });
});

describe('a second writer plants backups in the same store', () => {
  let good: string;
  let unsigned: string;
  let forged: string;

  beforeAll(async () => {
    good = await backup(env.file);
    // Another writer with store access: no key at all, then a key of its own. Both newer than `good`.
    // (Its own retention must keep everything: a writer can delete backups anyway, signatures or not.)
    const keepMany = { keepLast: 100 };
    const plain = makeEnv(root, 'intruder-plain', etcd, { node: 'm0', stores: [{ name: 'nfs', type: 'local', path: store }], retention: keepMany });
    unsigned = await backup(plain.file);
    const signedElsewhere = makeEnv(root, 'intruder-key', etcd, {
      node: 'm0',
      stores: [{ name: 'nfs', type: 'local', path: store }],
      retention: keepMany,
      signing: { keyFile: keys.intruder },
    });
    forged = await backup(signedElsewhere.file);
  }, 240_000);

  it('list shows each backup as trusted or untrusted, and warns', async () => {
    const byId = new Map((await listed()).map((b) => [b.id, b.signed]));
    expect(byId.get(good)).toBe('trusted');
    expect(byId.get(unsigned)).toBe('none');
    expect(byId.get(forged)).toBe('untrusted');
    const human = await cli(['list']);
    expect(human.stdout).toMatch(new RegExp(`${forged}.*UNTRUSTED`));
    expect(human.stderr).toMatch(/2 backup\(s\) carry no signature by a trusted key/);
  });

  it('fetch latest returns the newest trusted backup, never a planted one', async () => {
    const to = join(root, 'fetched-latest');
    const r = await cli(['fetch', 'latest', '--to', to, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).id).toBe(good);
  });

  it('fetch latest --at now starts from the newest trusted backup, never a planted one (no segments: the base alone)', async () => {
    const r = await cli(['fetch', 'latest', '--at', 'now', '--to', join(root, 'fetched-at'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: good, base: good, replayed: false, revisionsReplayed: 0 });
    expect(JSON.parse(r.stdout).note).toMatch(/no continuous-backup segments/);
  });

  it('verify and fetch of an untrusted backup by id fail with signature-untrusted, unless --allow-untrusted', async () => {
    for (const id of [unsigned, forged]) {
      const v = await cli(['verify', id, '--json']);
      expect(v.code).toBe(1);
      expect(v.stderr).toMatch(/reason: signature-untrusted/);
      const f = await cli(['fetch', id, '--to', join(root, `refused-${id}`)]);
      expect(f.code).toBe(1);
      expect(f.stderr).toMatch(/not signed by a trusted key/);
    }
    const ok = await cli(['verify', forged, '--allow-untrusted', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('a trusted manifest altered in the store becomes untrusted', async () => {
    const path = join(store, 'c1', good, 'manifest.json');
    const original = readFileSync(path, 'utf8');
    try {
      const m = JSON.parse(original);
      m.label = 'swapped';
      writeFileSync(path, JSON.stringify(m, null, 2));
      expect((await listed()).find((b) => b.id === good)?.signed).toBe('untrusted');
      const r = await cli(['fetch', 'latest', '--to', join(root, 'none-trusted')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/reason: signature-untrusted/);
    } finally {
      writeFileSync(path, original);
    }
  });

  it('retention neither counts nor deletes untrusted backups (keepLast 1)', async () => {
    const plan = await cli(['prune', '--dry-run', '--json']);
    expect(plan.code, plan.stderr).toBe(0);
    const doc = JSON.parse(plan.stdout) as { keep: { id: string; reasons: string[] }[]; prune: { id: string }[] };
    expect(doc.keep.find((k) => k.id === good)?.reasons).toContain('newest-verified');
    expect(doc.keep.find((k) => k.id === unsigned)?.reasons).toEqual(['untrusted']);
    expect(doc.keep.find((k) => k.id === forged)?.reasons).toEqual(['untrusted']);
    const second = await backup(env.file); // its cycle prunes: `good` goes, the planted ones stay
    const ids = (await listed()).map((b) => b.id);
    expect(ids).toContain(second);
    expect(ids).not.toContain(good);
    expect(ids).toEqual(expect.arrayContaining([unsigned, forged]));
  });

  it('the daemon exports the untrusted backups per store', async () => {
    const d = await spawnDaemon(env.file);
    daemons.push(d);
    await eventually(async () => expect(metricValue(await d.metrics(), 'etcd_backup_untrusted_backups', { store: 'nfs' })).toBe(2), 60_000, 500);
    await d.stop();
  });
});

describe('check-config', () => {
  it('warns when a remote store is configured without signing', async () => {
    const cfgDir = tempDir('signing-cc');
    const e = makeEnv(cfgDir, 'remote', etcd, {
      stores: [{ name: 'vault', type: 'sftp', host: '127.0.0.1', username: 'u', privateKeyFile: keys.master, hostKey: `SHA256:${'A'.repeat(43)}`, path: '/x' }],
    });
    const r = await runCli(['check-config', '--config', e.file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/store vault is remote and backups are not signed/);
    const signedOk = await runCli(['check-config', '--config', env.file]);
    expect(signedOk.stderr).not.toMatch(/not signed/);
  });
});
