/**
 * Issue 17's "done when": after 60 s of writes and a 35 s wait, `fetch
 * latest --at now` holds every write. A real 1-member etcd, one daemon with
 * continuous backups at the DEFAULT interval (10 s) and coordination on the
 * same etcd, a full backup as the base, then ~20 distinct key writes a
 * second for 60 s. The daemon keeps running through the fetch (no clean
 * shutdown sealing what it holds): what the fetch finds is what the writer
 * committed on its own, which is what a lost cluster would leave.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { runCli, tempDir } from '../support/cli.js';
import { masterConfig } from '../support/master-config.js';
import { dumpDaemonLog, startDaemonProcess, type DaemonProcess } from '../support/daemon.js';
import { restoreSnapshot, startEtcdCluster, startEtcdFromDataDir, type EtcdCluster } from '../support/etcd.js';
import { grpcClient, within } from '../support/etcd-grpc.js';
import { etcdKeys } from '../support/restored.js';

const WRITE_MS = 60_000;
const WAIT_MS = 35_000;
const EVERY_MS = 50; // ~20 writes/s

let cluster: EtcdCluster;
let client: Etcd3;
let root: string;

beforeAll(async () => {
  root = tempDir('continuous-rpo');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  client = grpcClient(cluster.endpoints[0]!);
  await cluster.putMany([['/registry/seed/a', 'a'], ['/registry/seed/b', 'b']]);
}, 120_000);
afterAll(async () => {
  client?.close();
  await cluster?.stop();
});

function config(store: string): string {
  return masterConfig(
    { dir: join(root, 'master-0'), cluster, i: 0, node: 'master-0', store },
    { coordination: { mode: 'etcd', leaderDelay: '1s' }, continuous: { enabled: true } }, // the default interval, 10 s
  );
}

/** Distinct keys, one put each, every EVERY_MS for `ms`: key -> value, and the last revision etcd answered. */
async function writeFor(ms: number): Promise<{ written: Map<string, string>; lastRev: number }> {
  const written = new Map<string, string>();
  let lastRev = 0;
  const end = Date.now() + ms;
  for (let i = 0; Date.now() < end; i++) {
    const started = Date.now();
    const key = `/registry/rpo/k${String(i).padStart(6, '0')}`;
    const value = `v${i}-${started}`;
    const r = await client.put(key).value(value).exec(within());
    written.set(key, value);
    lastRev = Number(r.header.revision);
    await new Promise((res) => setTimeout(res, Math.max(0, EVERY_MS - (Date.now() - started))));
  }
  return { written, lastRev };
}

describe('continuous backups at the default interval', () => {
  it('after 60 s of writes and a 35 s wait, fetch latest --at now holds every write', async () => {
    const store = join(root, 'store');
    const cfg = config(store);
    const b = await runCli(['backup', '--config', cfg, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const baseId = String((JSON.parse(b.stdout) as { id: string }).id);
    let d: DaemonProcess | undefined = await startDaemonProcess(cfg);
    try {
      const following = await d.waitFor((l) => l.msg === 'continuous: following etcd', 120_000, 'the writer following etcd');
      expect(following.base).toBe(baseId);
      const { written, lastRev } = await writeFor(WRITE_MS);
      expect(written.size).toBeGreaterThan(600); // the test machine kept up: at least half the rate
      await new Promise((res) => setTimeout(res, WAIT_MS));

      const to = join(root, 'fetched');
      const r = await runCli(['fetch', '--config', cfg, 'latest', '--at', 'now', '--to', to, '--json'], { timeoutMs: 300_000 });
      expect(r.code, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout) as { snapshot: string; revisionReached: number; replayed: boolean; base: string; revisionsReplayed: number };
      expect(doc).toMatchObject({ replayed: true, base: baseId });
      expect(doc.revisionReached).toBeGreaterThanOrEqual(lastRev);

      const restored = await restoreSnapshot(doc.snapshot, join(root, 'restored-data'));
      const etcd = await startEtcdFromDataDir(restored.dataDir, { name: restored.name, peerUrl: restored.peerUrl });
      try {
        const served = await etcdKeys(etcd.endpoints);
        expect(served.revision).toBe(doc.revisionReached);
        const missing = [...written].filter(([k, v]) => served.keys.get(k) !== v).map(([k]) => k);
        expect(missing, `${missing.length} of ${written.size} writes missing or different, first ${missing.slice(0, 5).join(', ')}`).toEqual([]);
        expect(served.keys.get('/registry/seed/a')).toBe('a');
      } finally {
        await etcd.stop();
      }
      expect(d.lines.filter((l) => l.reason === 'continuous-gap' || l.reason === 'continuous-compacted')).toEqual([]);
    } catch (e) {
      dumpDaemonLog(d);
      throw e;
    } finally {
      const code = await d?.stop();
      d = undefined;
      expect(code).toBe(0);
    }
  }, 400_000);
});
