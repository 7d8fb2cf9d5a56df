/**
 * A restore to a time interrupted (Ctrl-C) in the middle of its replay:
 * the throwaway etcd is stopped, its directory (a copy of every Secret)
 * removed, and nothing is left in --to.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { makePooledClient } from '../../src/etcd/client.js';
import { CLI, FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { startEtcdCluster } from '../support/etcd.js';
import { makeFakeMaster } from '../support/fake-master.js';
import { recordFrom, writeSegments } from '../support/segment-writer.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

it('SIGINT during the replay stops the throwaway etcd and removes everything it wrote', async () => {
  const dir = tempDir('replay-int');
  const cluster = await startEtcdCluster({ members: 1, tls: false });
  const client = makePooledClient({ endpoints: cluster.endpoints });
  try {
    await cluster.put('/seed', 's');
    const cfg = writeConfig(dir, {
      cluster: 'c',
      node: 'master-0',
      workDir: join(dir, 'work'),
      source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: makeFakeMaster(join(dir, 'master'), cluster.endpoints[0]!).env },
      etcd: { endpoints: cluster.endpoints },
      stores: [{ name: 'nfs', type: 'local', path: join(dir, 'store') }],
    });
    const b = await runCli(['backup', '--config', cfg, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
    expect(b.code, b.stderr).toBe(0);
    const base = JSON.parse(b.stdout) as { revision: number; id: string };
    const watch = await recordFrom(client, base.revision + 1);
    const N = 8000;
    let i = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (i < N) {
        const k = i++;
        await cluster.put(`/r/k${k % 300}`, `v${k}`);
      }
    }));
    await watch.waitFor(base.revision + N, 60_000);
    await watch.close();
    writeSegments(join(dir, 'store'), 'c', base.id, watch.records, Array(15).fill(500));

    const to = join(dir, 'out');
    const child = spawn(process.execPath, [CLI, 'fetch', '--config', cfg, 'latest', '--at', 'now', '--to', to], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    // Wait until the throwaway etcd serves (its owner file names its pid), then interrupt.
    const scratch = join(dir, 'work', 'replay');
    let etcdPid: number | undefined;
    const deadline = Date.now() + 30_000;
    while (etcdPid === undefined && Date.now() < deadline) {
      for (const d of existsSync(scratch) ? readdirSync(scratch) : []) {
        try {
          etcdPid = (JSON.parse(readFileSync(join(scratch, d, 'drill-owner.json'), 'utf8')) as { etcdPid?: number }).etcdPid;
        } catch {
          /* not written yet */
        }
      }
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(etcdPid, stderr).toBeDefined();
    await new Promise((res) => setTimeout(res, 700));
    child.kill('SIGINT');
    const code = await exited;
    expect(code, stderr).toBe(1);
    expect(stderr).toMatch(/was interrupted: its throwaway etcd is stopped/);
    expect(stderr).toContain('reason: restore-failed');
    expect(alive(etcdPid!)).toBe(false);
    expect(readdirSync(scratch)).toEqual([]);
    expect(existsSync(to) ? readdirSync(to) : []).toEqual([]);
  } finally {
    client.close();
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  }
}, 180_000);
