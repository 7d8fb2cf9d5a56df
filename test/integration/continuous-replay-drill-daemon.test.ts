import { readdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { runCli, tempDir } from '../support/cli.js';
import { masterConfig } from '../support/master-config.js';
import { dumpDaemonLog, metricValue, startDaemonProcess, type DaemonProcess } from '../support/daemon.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { grpcClient } from '../support/etcd-grpc.js';

/**
 * Issue 17, the drill: a real daemon on a real etcd with continuous backups
 * on and a drill schedule. Once the writer's chain under one full backup
 * reaches a second full backup, the scheduled drill slot runs the replay
 * drill after the restore drill, and it passes: metrics by kind.
 */
let cluster: EtcdCluster;
let root: string;
let client: Etcd3;

beforeAll(async () => {
  root = tempDir('replay-drill-daemon');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  client = grpcClient(cluster.endpoints[0]!);
  await cluster.putMany(Array.from({ length: 10 }, (_, i) => [`/registry/seed${i}`, `v${i}`] as [string, string]));
}, 120_000);
afterAll(async () => {
  client?.close();
  await cluster?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

function config(store: string): string {
  return masterConfig(
    { dir: join(root, 'master-0'), cluster, i: 0, node: 'master-0', store },
    {
      coordination: { mode: 'etcd', leaderDelay: '1s', leaseTtl: '4s' },
      continuous: { enabled: true, interval: '1s' },
      drill: { schedule: '*/10 * * * * *', timeout: '2m', sampleKeys: 10 },
    },
  );
}

describe('the drill schedule with continuous backups', () => {
  it('replays the chain from one full backup to the next and passes; metrics by kind', async () => {
    const store = join(root, 'store');
    const cfg = config(store);
    let d: DaemonProcess | undefined;
    try {
      const b1 = await runCli(['backup', '--config', cfg, '--json'], { env: { ETCD_BACKUPD_NO_DAEMON: '1' } });
      expect(b1.code, b1.stderr).toBe(0);
      const id1 = (JSON.parse(b1.stdout) as { id: string }).id;
      d = await startDaemonProcess(cfg);
      await d.waitFor((l) => l.msg === 'continuous: following etcd' && l.base === id1, 60_000, 'the writer following etcd');
      for (let i = 0; i < 30; i++) await client.put(`/registry/pods/ns/p${i}`).value(`spec-${i}`).exec();
      await client.delete().key('/registry/seed3').exec();
      // No wait here: the writer's chain under B1 must reach rev(B2) by itself (it follows etcd until B2 is committed).
      const b2 = await runCli(['backup', '--config', cfg, '--json']);
      expect(b2.code, b2.stderr).toBe(0);
      const second = JSON.parse(b2.stdout) as { id: string; revision: number };
      await client.put('/registry/pods/ns/after').value('x').exec();
      const passed = await d.waitFor((l) => l.msg === 'replay drill passed', 120_000, 'a replay drill passing');
      expect(passed).toMatchObject({ base: id1, id: second.id, revision: second.revision });
      expect(Number(passed.revisionsReplayed)).toBeGreaterThanOrEqual(31);
      const text = await d.metrics();
      expect(metricValue(text, 'etcd_backup_drill_runs_total', { kind: 'replay', result: 'success' })!).toBeGreaterThanOrEqual(1);
      expect(metricValue(text, 'etcd_backup_drill_runs_total', { kind: 'restore', result: 'success' })!).toBeGreaterThanOrEqual(1);
      expect(metricValue(text, 'etcd_backup_drill_replay_last_success_timestamp_seconds')!).toBeGreaterThan(Date.now() / 1000 - 120);
      expect(metricValue(text, 'etcd_backup_drill_replay_revisions')!).toBeGreaterThanOrEqual(31);
      expect(text).not.toMatch(/^etcd_backup_drill_last_failed\{/m);
      expect(await d.stop()).toBe(0);
      d = undefined;
      expect(readdirSync(join(root, 'master-0', 'work', 'drill'))).toEqual([]);
      expect(readdirSync(join(root, 'master-0', 'work', 'replay'))).toEqual([]);
    } catch (e) {
      dumpDaemonLog(d);
      throw e;
    } finally {
      if (d) await d.stop();
    }
  }, 240_000);
});
