import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../support/cli.js';
import { masterConfig } from '../support/master-config.js';
import { startDaemonProcess, type DaemonProcess } from '../support/daemon.js';
import { ensureTool, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';

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

/** Node i's config: its own member first (the local member), then the others; one shared store; a backup slot every 3 s. */
function config(test: string, i: number, store: string, extra: Record<string, unknown> = {}): string {
  return masterConfig(
    { dir: join(root, test, NODES[i]!), cluster, i, node: NODES[i]!, store },
    { schedule: '*/3 * * * * *', coordination: { mode: 'etcd', leaderDelay: '1s', leaseTtl: '2s' }, ...extra },
  );
}

interface Committed {
  id: string;
  node: string;
  slot?: string;
  trigger: string;
  label?: string;
  createdAt: string;
}

function committed(store: string, clusterName = 'c1'): Committed[] {
  const p = join(store, clusterName);
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
      // Every node, winner or not, shows the cluster's last success and who took the last slot it saw.
      const newest = Math.max(...committed(store).map((m) => Date.parse(m.createdAt))) / 1000;
      for (const d of daemons) {
        const text = await d.metrics();
        const cls = Number(/^etcd_backup_cluster_last_success_timestamp_seconds (\S+)$/m.exec(text)?.[1]);
        expect(cls, text).toBeGreaterThan(newest - 15);
        expect(text).toMatch(/^etcd_backup_last_slot_timestamp_seconds\{winner="master-[012]"\} \d+/m);
      }
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

  it('a winner killed mid-run (SIGKILL): its lease lapses and another node commits that slot', async () => {
    const store = join(root, 'failover', 'store');
    // etcdctl that takes 6 s over `snapshot save`: long enough to kill the winner mid-run.
    const slowEtcdctl = join(root, 'slow-etcdctl.sh');
    writeFileSync(slowEtcdctl, `#!/bin/sh\nif [ "$1" = snapshot ] && [ "$2" = save ]; then sleep 6; fi\nexec ${ensureTool('etcdctl')} "$@"\n`, { mode: 0o755 });
    const daemons: DaemonProcess[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const file = config('failover', i, store, { schedule: '*/20 * * * * *', source: { type: 'etcdctl', etcdctl: slowEtcdctl, staticPodDir: 'manifests', timeout: '60s' } });
        // A recent success: no catch-up, the first claim is a scheduled tick.
        mkdirSync(join(root, 'failover', NODES[i]!, 'work'), { recursive: true, mode: 0o700 });
        writeFileSync(join(root, 'failover', NODES[i]!, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date().toISOString(), consecutiveFailures: 0, stores: {} }));
        daemons.push(await startDaemonProcess(file));
      }
      const claimed = await Promise.any(daemons.map((d, i) => d.waitFor((l) => l.msg === 'slot claimed: backing up', 40_000, 'a claim').then((l) => ({ i, slot: String(l.slot) }))));
      await daemons[claimed.i]!.stop('SIGKILL');
      await waitUntil(() => committed(store).some((m) => m.slot === claimed.slot), 30_000, `slot ${claimed.slot} committed by another node`);
      const forSlot = committed(store).filter((m) => m.slot === claimed.slot);
      expect(forSlot).toHaveLength(1);
      expect(forSlot[0]!.node).not.toBe(NODES[claimed.i]);
      const takeover = daemons.flatMap((d) => d.lines).find((l) => l.msg === 'slot claimed: backing up' && l.slot === claimed.slot && l.attempt === 2);
      expect(takeover, 'the second attempt claimed the slot').toBeDefined();
    } finally {
      await Promise.all(daemons.map((d) => d.stop()));
    }
  }, 120_000);

  it('coordination mode none: every node backs up every tick, without slots', async () => {
    const store = join(root, 'none', 'store');
    const daemons: DaemonProcess[] = [];
    try {
      for (let i = 0; i < 3; i++) daemons.push(await startDaemonProcess(config('none', i, store, { cluster: 'cnone', coordination: { mode: 'none' } })));
      const perNode = () => NODES.map((n) => committed(store, 'cnone').filter((m) => m.node === n && m.trigger === 'schedule').length);
      await waitUntil(() => perNode().every((c) => c >= 2), 60_000, 'two scheduled backups from every node');
    } finally {
      expect(await Promise.all(daemons.map((d) => d.stop()))).toEqual([0, 0, 0]);
    }
    const all = committed(store, 'cnone');
    expect(all.every((m) => m.slot === undefined)).toBe(true);
    expect(all.every((m) => m.label === undefined)).toBe(true);
    // Nothing was written under /etcd-backupd/<cluster>/ (no client at all in mode none).
    expect([...(await cluster.getAll('/etcd-backupd/cnone/')).keys()]).toEqual([]);
    expect((await cluster.getAll('/etcd-backupd/c1/')).size).toBeGreaterThan(0); // the other tests' claims and results, for contrast
  }, 120_000);

  it('a manual CLI backup is not claimed but recorded under manual/ for the cluster view', async () => {
    const file = config('manual', 1, join(root, 'manual', 'store'), { cluster: 'cmanual' });
    const r = await runCli(['backup', '--config', file, '--json', '--label', 'before-upgrade']);
    expect(r.code, r.stderr).toBe(0);
    const id = (JSON.parse(r.stdout) as { id: string }).id;
    const keys = await cluster.getAll('/etcd-backupd/cmanual/');
    expect([...keys.keys()]).toEqual([`/etcd-backupd/cmanual/manual/${id}`]);
    expect(JSON.parse(keys.get(`/etcd-backupd/cmanual/manual/${id}`)!.toString())).toMatchObject({ node: 'master-1', result: 'success', backupId: id, label: 'before-upgrade' });
    const m = committed(join(root, 'manual', 'store'), 'cmanual');
    expect(m).toHaveLength(1);
    expect(m[0]!.slot).toBeUndefined();
  }, 60_000);
  it('restore drills: one node drills each drill slot, claimed like a backup slot, and the result is recorded in etcd', async () => {
    const store = join(root, 'drills', 'store');
    // Something to drill: one manual backup (no catch-up backups, the schedule is daily).
    const seed = await runCli(['backup', '--config', config('drills', 0, store, { cluster: 'cdrill' }), '--json']);
    expect(seed.code, seed.stderr).toBe(0);
    const daemons: DaemonProcess[] = [];
    const drillKeys = async () => [...(await cluster.getAll('/etcd-backupd/cdrill/results/drill/'))].map(([k, v]) => ({ slot: k.split('/').pop()!, ...(JSON.parse(v.toString()) as { node: string; result: string; attempt: number }) }));
    try {
      for (let i = 0; i < 3; i++) {
        const file = config('drills', i, store, { cluster: 'cdrill', schedule: '0 3 * * *', drill: { schedule: '*/8 * * * * *', timeout: '60s', sampleKeys: 5 } });
        mkdirSync(join(root, 'drills', NODES[i]!, 'work'), { recursive: true, mode: 0o700 });
        writeFileSync(join(root, 'drills', NODES[i]!, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date().toISOString(), consecutiveFailures: 0, stores: {} }));
        daemons.push(await startDaemonProcess(file));
      }
      const done = async () => (await drillKeys()).filter((r) => r.result === 'success').length;
      const end = Date.now() + 90_000;
      while ((await done()) < 3) {
        if (Date.now() > end) throw new Error(`timed out waiting for 3 drilled slots: ${JSON.stringify(await drillKeys())}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      expect(await Promise.all(daemons.map((d) => d.stop()))).toEqual([0, 0, 0]);
    }
    const started = daemons.flatMap((d, i) => d.lines.filter((l) => l.msg === 'restore drill: this node drills the slot').map((l) => ({ node: NODES[i]!, slot: String(l.slot) })));
    const perSlot = new Map<string, string[]>();
    for (const s of started) perSlot.set(s.slot, [...(perSlot.get(s.slot) ?? []), s.node]);
    // One node per drill slot: never two drills of the same slot, and every drilled slot is claimed in etcd.
    for (const [slot, nodes] of perSlot) expect(nodes, `drill slot ${slot}`).toHaveLength(1);
    const results = await drillKeys();
    for (const r of results.filter((x) => x.result === 'success')) {
      expect(perSlot.get(new Date(r.slot).toISOString()), `slot ${r.slot}`).toEqual([r.node]);
      expect(r.attempt).toBe(1);
    }
    // No rotation is involved: the others said the slot was not theirs.
    const notMine = daemons.flatMap((d) => d.lines.filter((l) => l.msg === "restore drill: not this node's slot"));
    expect(notMine.length).toBeGreaterThan(0);
    expect(daemons.flatMap((d) => d.lines).some((l) => l.msg === 'restore drill: another node has this slot')).toBe(false);
  }, 150_000);

  it("the etcd leader's daemon stops, then the leader member itself (a new election): backups go on, one per slot", async () => {
    const store = join(root, 'leader-gone', 'store');
    const leader = await leaderIndex();
    const daemons: DaemonProcess[] = [];
    let stoppedMember = false;
    try {
      for (let i = 0; i < 3; i++) daemons.push(await startDaemonProcess(config('leader-gone', i, store, { cluster: 'cleader' })));
      await waitUntil(() => bySlot(committed(store, 'cleader')).size >= 2, 60_000, 'two slots committed');
      expect(await daemons[leader]!.stop()).toBe(0);
      const afterDaemon = bySlot(committed(store, 'cleader')).size;
      await waitUntil(() => bySlot(committed(store, 'cleader')).size >= afterDaemon + 2, 60_000, "two more slots without the leader's daemon");
      // The leader member goes too: the two others elect a new leader and keep claiming slots.
      await cluster.stopMember(leader);
      stoppedMember = true;
      const afterMember = bySlot(committed(store, 'cleader')).size;
      await waitUntil(() => bySlot(committed(store, 'cleader')).size >= afterMember + 2, 90_000, 'two more slots after a new leader election');
    } finally {
      const codes = await Promise.all(daemons.map((d, i) => (i === leader ? Promise.resolve(0) : d.stop())));
      if (stoppedMember) await cluster.startMember(leader);
      expect(codes).toEqual([0, 0, 0]);
    }
    const slots = bySlot(committed(store, 'cleader'));
    const detail = JSON.stringify([...slots].map(([sl, ms]) => [sl, ms.map((m) => `${m.node}:${m.label ?? ''}`)]));
    for (const [slot, ms] of slots) {
      expect(ms.length, `slot ${slot}: ${detail}`).toBe(1);
      expect(ms[0]!.label, detail).toBeUndefined(); // quorum all along: every slot claimed, none no-quorum
    }
  }, 240_000);

  // Last: it stops two members (and starts them again for nothing after it).
  it('quorum lost: onNoQuorum backup takes a no-quorum backup on the node whose member is up; skip takes none', async () => {
    const store = join(root, 'noquorum', 'store');
    const skipStore = join(root, 'noquorum-skip', 'store');
    const daemons: DaemonProcess[] = [];
    await Promise.all([cluster.stopMember(1), cluster.stopMember(2)]);
    try {
      // Node 0's member is up but has no leader: no claim is possible.
      daemons.push(await startDaemonProcess(config('noquorum', 0, store, { cluster: 'cnq', schedule: '*/4 * * * * *' })));
      daemons.push(await startDaemonProcess(config('noquorum-skip', 0, skipStore, { cluster: 'cnqskip', schedule: '*/4 * * * * *', coordination: { mode: 'etcd', leaderDelay: '1s', leaseTtl: '2s', onNoQuorum: 'skip' } })));
      await waitUntil(() => committed(store, 'cnq').length >= 1, 60_000, 'a no-quorum backup');
      await daemons[1]!.waitFor((l) => String(l.msg).startsWith('slot given up'), 30_000, 'the skip daemon gives a slot up');
      // The skip daemon counts the slot as missed (nobody backs it up); the backup daemon missed none.
      const skipText = await daemons[1]!.metrics();
      expect(Number(/^etcd_backup_missed_slots_total\{kind="backup",why="no-quorum"\} (\S+)$/m.exec(skipText)?.[1]), skipText).toBeGreaterThanOrEqual(1);
      expect(skipText).toMatch(/^etcd_backup_last_missed_slot_timestamp_seconds\{kind="backup",why="no-quorum"\} \d+/m);
      const backupText = await daemons[0]!.metrics();
      expect(backupText).toMatch(/^etcd_backup_missed_slots_total\{kind="backup",why="no-quorum"\} 0$/m);
    } finally {
      expect(await Promise.all(daemons.map((d) => d.stop()))).toEqual([0, 0]);
      await Promise.all([cluster.startMember(1), cluster.startMember(2)]);
    }
    const [m] = committed(store, 'cnq') as (Committed & { preflight: { forced: boolean; failedChecks: { name: string }[] } })[];
    expect(m).toMatchObject({ node: 'master-0', label: 'no-quorum', preflight: { forced: true } });
    expect(m!.preflight.failedChecks.map((c) => c.name)).toContain('quorum');
    expect(committed(skipStore, 'cnqskip')).toEqual([]);
  }, 150_000);
});
