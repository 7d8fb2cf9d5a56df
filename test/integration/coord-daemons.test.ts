import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, writeConfig } from '../support/cli.js';
import { startDaemonProcess, type DaemonProcess } from '../support/daemon.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';

/**
 * Issue 15, the daemon part: three real daemons, one per member of a real
 * 3-member TLS etcd cluster, on a seconds schedule, sharing one store. Slot
 * claims make it one committed backup per slot for the whole cluster, each
 * manifest names its slot, and the etcd leader's node leaves the snapshots
 * to the followers.
 */
let cluster: EtcdCluster;
let root: string;
const NODES = ['master-0', 'master-1', 'master-2'];

beforeAll(async () => {
  root = tempDir('coord-daemons');
  cluster = await startEtcdCluster({ members: 3, tls: true });
  await cluster.putMany(Array.from({ length: 50 }, (_, i) => [`/registry/k${i}`, `v${i}`] as [string, string]));
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

/** Node i's config: its own member first (the local member), then the others; one shared store. */
function config(test: string, i: number, store: string, extra: Record<string, unknown> = {}): string {
  const dir = join(root, test, NODES[i]!);
  mkdirSync(join(dir, 'manifests'), { recursive: true });
  writeFileSync(join(dir, 'manifests', 'kube-apiserver.yaml'), 'kind: Pod\n');
  const endpoints = [cluster.endpoints[i]!, ...cluster.endpoints.filter((_, j) => j !== i)];
  return writeConfig(dir, {
    cluster: 'c1',
    node: NODES[i],
    workDir: join(dir, 'work'),
    schedule: '*/3 * * * * *',
    source: { type: 'etcdctl', staticPodDir: join(dir, 'manifests'), timeout: '30s' },
    etcd: { endpoints, caFile: cluster.tls!.caFile, certFile: cluster.tls!.certFile, keyFile: cluster.tls!.keyFile, timeout: '5s' },
    stores: [{ name: 'nfs', type: 'local', path: store }],
    retention: { keepLast: 1000, daily: 0, weekly: 0, monthly: 0 },
    local: { keep: 1, retryMin: '1s', retryMax: '2s' },
    metrics: { listen: '127.0.0.1:0' },
    control: { socket: join(dir, 'ctl', 'control.sock') },
    shutdownTimeout: '20s',
    coordination: { mode: 'etcd', leaderDelay: '1s', leaseTtl: '2s' },
    ...extra,
  });
}

interface Committed {
  id: string;
  node: string;
  slot?: string;
  trigger: string;
  label?: string;
}

function committed(store: string): Committed[] {
  const p = join(store, 'c1');
  if (!existsSync(p)) return [];
  return readdirSync(p)
    .filter((id) => existsSync(join(p, id, 'manifest.json')))
    .map((id) => JSON.parse(readFileSync(join(p, id, 'manifest.json'), 'utf8')) as Committed);
}

function bySlot(ms: Committed[]): Map<string, Committed[]> {
  const out = new Map<string, Committed[]>();
  for (const m of ms) out.set(m.slot ?? '(none)', [...(out.get(m.slot ?? '(none)') ?? []), m]);
  return out;
}

/** Index of the member that is the etcd leader now. */
async function leaderIndex(): Promise<number> {
  const { stdout } = await cluster.etcdctl(['endpoint', 'status', '-w', 'json']);
  // Member ids are uint64: compare them as the decimal strings etcdctl prints, not as JS numbers.
  const rows = [...stdout.matchAll(/"Endpoint":"([^"]+)".*?"member_id":(\d+).*?"leader":(\d+)/g)].map((m) => ({ endpoint: m[1]!, member: m[2]!, leader: m[3]! }));
  const row = rows.find((r) => r.member === r.leader);
  if (!row) throw new Error(`no leader in ${stdout}`);
  return cluster.endpoints.indexOf(row.endpoint);
}

async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('three daemons, one per member, coordination mode etcd', () => {
  it('commit exactly one backup per slot, each naming its slot, and the leader node leaves them to the followers', async () => {
    const store = join(root, 'one-per-slot', 'store');
    const leader = await leaderIndex();
    const daemons: DaemonProcess[] = [];
    try {
      for (let i = 0; i < 3; i++) daemons.push(await startDaemonProcess(config('one-per-slot', i, store)));
      const SLOTS = 7; // the catch-up slot and six ticks
      await waitUntil(() => bySlot(committed(store)).size >= SLOTS, 90_000, `${SLOTS} slots committed`);
    } finally {
      const codes = await Promise.all(daemons.map((d) => d.stop()));
      expect(codes).toEqual([0, 0, 0]);
    }
    const all = committed(store);
    const slots = bySlot(all);
    const detail = JSON.stringify([...slots].map(([s, ms]) => [s, ms.map((m) => `${m.node}:${m.trigger}`)]));
    expect(slots.has('(none)'), detail).toBe(false);
    for (const [slot, ms] of slots) {
      expect(ms.length, `slot ${slot}: ${detail}`).toBe(1);
      expect(ms[0]!.label, detail).toBeUndefined(); // claimed, not no-quorum
      expect(new Date(slot).getUTCSeconds() % 3, slot).toBe(0); // a tick of */3, never "now"
    }
    // Healthy followers: the leader's node waits its leader delay and finds the slot taken.
    const byLeader = all.filter((m) => m.node === NODES[leader]).length;
    expect(byLeader, `leader ${NODES[leader]}: ${detail}`).toBeLessThanOrEqual(1);
    // The others said so in their logs: the slot was done by another node.
    const doneLines = daemons.flatMap((d) => d.lines.filter((l) => l.msg === 'slot already backed up by another node'));
    expect(doneLines.length).toBeGreaterThan(0);
  }, 180_000);
});
