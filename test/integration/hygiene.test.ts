import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { deliverOutbox, runCycle } from '../../src/run/cycle.js';
import { createSource } from '../../src/source/index.js';
import { createStore } from '../../src/storage/index.js';
import type { Store } from '../../src/storage/store.js';
import { runCli } from '../support/cli.js';
import type { EtcdCluster } from '../support/etcd.js';
import { makeEnv, startFilledEtcd, tempDir } from '../support/fault-env.js';
import { spawnDaemon, type DaemonProc } from '../support/faults.js';

/**
 * The daemon and the CLI on a shared host: directories they did not create
 * keep their modes, SIGHUP reloads instead of killing, a node cleans only
 * its own leftovers, and a lost status.json never turns a committed backup
 * into a failure or a deletion.
 */
let etcd: EtcdCluster;
let root: string;
const daemons: DaemonProc[] = [];
const noDaemon = { ETCD_BACKUPD_NO_DAEMON: '1' };

beforeAll(async () => {
  root = tempDir('hygiene');
  etcd = await startFilledEtcd({ keys: 10 });
}, 180_000);

afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  await etcd?.stop();
});

const mode = (p: string) => statSync(p).mode & 0o7777;

describe('directories the daemon did not create', () => {
  it('the control socket goes into an existing 0755 directory without changing it; a missing one is created 0700', async () => {
    const shared = join(root, 'run-shared');
    mkdirSync(shared, { mode: 0o755 });
    chmodSync(shared, 0o755);
    const env = makeEnv(root, 'sock', etcd, { control: { socket: join(shared, 'etcd-backupd.sock') } });
    const d = await spawnDaemon(env.file);
    daemons.push(d);
    expect(existsSync(join(shared, 'etcd-backupd.sock'))).toBe(true);
    expect(mode(shared)).toBe(0o755);
    await d.stop();
    const fresh = makeEnv(root, 'sock-new', etcd, { control: { socket: join(root, 'sock-new', 'new-dir', 'c.sock') } });
    const d2 = await spawnDaemon(fresh.file);
    daemons.push(d2);
    expect(mode(join(root, 'sock-new', 'new-dir'))).toBe(0o700);
    await d2.stop();
  });

  it('fetch --to an existing 0755 directory leaves it 0755 (files 0600) and warns; a new directory is 0700', async () => {
    const env = makeEnv(root, 'fetch', etcd);
    expect((await runCli(['backup', '--config', env.file], { env: noDaemon })).code).toBe(0);
    const to = join(root, 'fetch-into');
    mkdirSync(to, { mode: 0o755 });
    chmodSync(to, 0o755);
    const r = await runCli(['fetch', 'latest', '--config', env.file, '--to', to], { env: noDaemon });
    expect(r.code, r.stderr).toBe(0);
    expect(mode(to)).toBe(0o755);
    expect(r.stderr).toMatch(/is open to other users/);
    for (const f of readdirSync(to)) expect(mode(join(to, f)), f).toBe(0o600);
    const fresh = join(root, 'fetch-new', 'deeper');
    expect((await runCli(['fetch', 'latest', '--config', env.file, '--to', fresh], { env: noDaemon })).code).toBe(0);
    expect(mode(fresh)).toBe(0o700);
    expect(mode(join(root, 'fetch-new'))).toBe(0o700);
  });
});

describe('SIGHUP', () => {
  it('reloads a valid config, keeps running on an invalid one, and never kills the daemon', async () => {
    const env = makeEnv(root, 'hup', etcd);
    const d = await spawnDaemon(env.file);
    daemons.push(d);
    const started = () => d.count((l) => l.msg === 'etcd-backupd daemon started');
    expect(started()).toBe(1);
    env.rewrite({ schedule: '0 4 * * *' });
    d.child.kill('SIGHUP');
    const again = await d.waitFor((l) => l.msg === 'etcd-backupd daemon started' && l.schedule === '0 4 * * *', 30_000, 'restart with the new schedule');
    expect(again.schedule).toBe('0 4 * * *');
    writeFileSync(env.file, 'cluster: [not valid\n');
    d.child.kill('SIGHUP');
    await d.waitFor((l) => /does not validate/.test(String(l.msg)), 10_000, 'invalid config logged');
    expect(d.exited()).toBe(false);
    expect(started()).toBe(2);
    // Port 0 in the config: the reloaded daemon listens on the port its last start logged.
    expect(await (await fetch(`http://${String(again.metrics)}/metrics`)).text()).toMatch(/etcd_backup_info/);
    expect(await d.stop('SIGTERM')).toBe(0);
  });
});

describe('incomplete uploads are cleaned per node, by the parsed id', () => {
  it('node master-0 removes its own manifest-less leftovers, never ocp-master-0s', async () => {
    const env = makeEnv(root, 'suffix', etcd, { node: 'master-0', stores: [{ name: 'nfs', type: 'local', path: join(root, 'suffix-store'), incompleteGrace: '1h' }] });
    const old = new Date(Date.now() - 3 * 3600_000);
    const plant = (id: string) => {
      const dir = join(root, 'suffix-store', 'c1', id);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'backup.tar'), 'half an upload');
      utimesSync(join(dir, 'backup.tar'), old, old);
      return dir;
    };
    const mine = plant('20260101T000000Z-master-0');
    const theirs = plant('20260101T000000Z-ocp-master-0');
    const r = await runCli(['prune', '--config', env.file, '--json'], { env: noDaemon });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).incomplete).toEqual(['20260101T000000Z-master-0']);
    expect(existsSync(join(mine, 'backup.tar'))).toBe(false);
    expect(readFileSync(join(theirs, 'backup.tar'), 'utf8')).toBe('half an upload');
  });
});

describe('status.json cannot be written after every store committed', () => {
  it('the run still succeeds, and the next outbox pass counts the committed copy as delivered without touching it', async () => {
    const env = makeEnv(root, 'status', etcd, { stores: [{ name: 'nfs', type: 'local', path: join(root, 'status-store') }] });
    const cfg = parseConfig(env.cfg, env.file);
    const real = await createStore(cfg.stores[0]!);
    const boxes = join(cfg.workDir, 'outbox');
    // The real store; once it has committed, status.json becomes unwritable (a directory in its way).
    const store: Store = {
      ...real,
      async put(key, body, opts) {
        const r = await real.put(key, body, opts);
        if (key.endsWith('/manifest.json')) for (const id of readdirSync(boxes)) mkdirSync(join(boxes, id, 'status.json', 'in-the-way'), { recursive: true });
        return r;
      },
    };
    const cyc = await runCycle(cfg, { source: createSource(cfg), stores: [store], log: silentLogger }, { trigger: 'manual' });
    expect(cyc.run.result, cyc.run.error).toBe('success');
    const key = cyc.run.stores.nfs!.key!;
    const manifestPath = join(root, 'status-store', key.replace(/[^/]+$/, 'manifest.json'));
    const committed = readFileSync(manifestPath);
    const objectMtime = statSync(join(root, 'status-store', key)).mtimeMs;
    // A later pass re-delivers (no status.json): the store already holds it, committed: nothing is rewritten or removed.
    const { retried } = await deliverOutbox(cfg, [real], silentLogger, { force: true });
    expect(retried.map((r) => [r.store, r.outcome.result, r.outcome.proof])).toEqual([['nfs', 'success', 'committed-before']]);
    expect(readFileSync(manifestPath).equals(committed)).toBe(true);
    expect(statSync(join(root, 'status-store', key)).mtimeMs).toBe(objectMtime);
    await real.close?.();
  });
});
