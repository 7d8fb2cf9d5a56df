import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { zstdDecompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { runCli, tempDir } from '../support/cli.js';
import { masterConfig } from '../support/master-config.js';
import { dumpDaemonLog, startDaemonProcess, type DaemonProcess } from '../support/daemon.js';
import { restoreSnapshot, runEtcdctl, startEtcdCluster, startEtcdFromDataDir, type EtcdCluster } from '../support/etcd.js';
import { grpcClient, within } from '../support/etcd-grpc.js';
import { decodeRecord, segmentManifestSchema, type RevisionRecord, type SegmentManifest } from '../../src/continuous/segment.js';

/**
 * Issue 17, the writer: three real daemons on a real 3-member etcd cluster
 * with continuous backups on (1 s interval), one local store. One daemon is
 * elected and writes segments from the base backup's revision + 1; the
 * segments hold every revision, exactly what was written; SIGKILL of the
 * writer lets another daemon continue the chain without a gap.
 */
let cluster: EtcdCluster;
let root: string;
let client: Etcd3;
const defaultClient = () => client;
const NODES = ['master-0', 'master-1', 'master-2'];

beforeAll(async () => {
  root = tempDir('continuous-writer');
  cluster = await startEtcdCluster({ members: 3, tls: false });
  client = grpcClient(cluster.endpoints[0]!);
  await cluster.putMany(Array.from({ length: 20 }, (_, i) => [`/registry/seed${i}`, `v${i}`] as [string, string]));
}, 120_000);
afterAll(async () => {
  client?.close();
  await cluster?.stop();
});

function config(i: number, store: string, test = 'failover', extraStores: Record<string, unknown>[] = []): string {
  return masterConfig(
    { dir: join(root, test, NODES[i]!), cluster, i, node: NODES[i]!, store },
    {
      stores: [{ name: 'nfs', type: 'local', path: store }, ...extraStores],
      coordination: { mode: 'etcd', leaderDelay: '1s', leaseTtl: '4s' }, // 2 s lapses under a loaded test machine
      continuous: { enabled: true, interval: '1s' },
    },
  );
}

interface Seg {
  manifest: SegmentManifest;
  records: RevisionRecord[];
}

function segments(store: string, base: string): Seg[] {
  const dir = join(store, 'c1', 'continuous', base);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => /^\d{20}-\d{20}\.json$/.test(n))
    .map((n) => {
      const manifest = segmentManifestSchema.parse(JSON.parse(readFileSync(join(dir, n), 'utf8')));
      const raw = readFileSync(join(store, manifest.object.key));
      const text = (manifest.object.codec === 'zstd' ? zstdDecompressSync(raw) : raw).toString('utf8');
      const records = text.split('\n').filter(Boolean).map(decodeRecord);
      return { manifest, records };
    });
}

function bases(store: string): { id: string; revision: number }[] {
  const p = join(store, 'c1');
  if (!existsSync(p)) return [];
  return readdirSync(p)
    .filter((id) => existsSync(join(p, id, 'manifest.json')))
    .map((id) => ({ id, revision: (JSON.parse(readFileSync(join(p, id, 'manifest.json'), 'utf8')) as { etcd: { revision: number } }).etcd.revision }));
}

/** The highest revision the segments under `base` reach from its revision + 1 without a gap. */
/** Every record of the segments by its revision (overlapping segments give the same record). */
function recordsByRev(segs: Seg[]): Map<number, RevisionRecord> {
  return new Map(segs.flatMap((s) => s.records.map((r) => [r.rev, r] as const)));
}

function reach(segs: Seg[], baseRev: number): number {
  let next = baseRev + 1;
  for (const s of [...segs].sort((a, b) => a.manifest.fromRev - b.manifest.fromRev)) {
    if (s.manifest.fromRev > next) break;
    next = Math.max(next, s.manifest.toRev + 1);
  }
  return next - 1;
}

async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

type Expected = Map<number, { put?: [string, Buffer, string]; del?: string }[]>;

/** Puts, deletes, a txn of several ops, a leased key and binary bytes: each revision's ops as etcd answered. */
async function writeSome(tag: string, n: number, expected: Expected, client: Etcd3 = defaultClient()): Promise<number> {
  let last = 0;
  const lease = client.lease(60);
  const leaseId = await lease.grant();
  for (let i = 0; i < n; i++) {
    const key = `/registry/${tag}/k${i}`;
    const value = Buffer.from([0, 255, i % 256, 10, 13, 34]);
    const r = await client.put(key).value(value).exec();
    const rev = Number(r.header.revision);
    expected.set(rev, [{ put: [key, value, '0'] }]);
    last = rev;
    if (i % 5 === 4) {
      const d = await client.delete().key(key).exec();
      expected.set(Number(d.header.revision), [{ del: key }]);
      last = Number(d.header.revision);
    }
    if (i % 7 === 6) {
      const a = `/registry/${tag}/txn-a${i}`;
      const b = `/registry/${tag}/txn-b${i}`;
      const t = await client.kv.txn({ success: [{ request_put: { key: Buffer.from(a), value: Buffer.from('A') } }, { request_put: { key: Buffer.from(b), value: Buffer.from('B'), lease: leaseId } }, { request_delete_range: { key: Buffer.from(`/registry/${tag}/k0`) } }] }, within());
      const rev2 = Number(t.header.revision);
      expected.set(rev2, [{ put: [a, Buffer.from('A'), '0'] }, { put: [b, Buffer.from('B'), BigInt(leaseId).toString()] }, ...(i === 6 ? [{ del: `/registry/${tag}/k0` }] : [])]);
      last = rev2;
    }
    if (i % 10 === 0) await new Promise((r) => setTimeout(r, 100));
  }
  lease.release();
  return last;
}

describe('continuous writer: three daemons, one elected writer', () => {
  it('writes a gapless chain from the base holding exactly what was written, and another node continues after a SIGKILL', async () => {
    const store = join(root, 'store');
    const daemons: (DaemonProcess | undefined)[] = [];
    const expected: Expected = new Map();
    try {
      // The base: a full backup before the daemons start (their schedule has no tick near).
      const cfgs = [0, 1, 2].map((i) => config(i, store));
      const b = await runCli(['backup', '--config', cfgs[1]!, '--json']);
      expect(b.code, b.stderr).toBe(0);
      for (let i = 0; i < 3; i++) daemons.push(await startDaemonProcess(cfgs[i]!));
      const following = await Promise.any(daemons.map((d, i) => d!.waitFor((l) => l.msg === 'continuous: following etcd', 120_000, 'a writer following etcd').then((l) => ({ i, l }))));
      const writer = following.i;
      const baseId = String(following.l.base);
      const baseRev = Number(following.l.baseRevision);
      expect(bases(store).map((b) => b.id)).toContain(baseId);
      // Exactly one node writes.
      const writers = async () => (await Promise.all(daemons.map(async (d) => Number(/^etcd_backup_continuous_writer (\S+)$/m.exec(await d!.metrics())?.[1])))).join(',');
      const want = [0, 1, 2].map((i) => (i === writer ? 1 : 0)).join(',');
      const end = Date.now() + 10_000;
      while ((await writers()) !== want && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
      expect(await writers()).toBe(want);

      const last1 = await writeSome('one', 60, expected);
      await waitUntil(() => reach(segments(store, baseId), baseRev) >= last1, 30_000, `segments up to ${last1}`);
      const text = await daemons[writer]!.metrics();
      expect(Number(/^etcd_backup_continuous_segments_total\{result="success"\} (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
      expect(Number(/^etcd_backup_continuous_segment_bytes_total (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
      expect(Number(/^etcd_backup_continuous_last_segment_timestamp_seconds (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(Date.now() / 1000 - 60);
      expect(Number(/^etcd_backup_continuous_lag_seconds (\S+)$/m.exec(text)?.[1])).toBeLessThan(30);
      // Only the writer knows the lag.
      const other = await daemons[(writer + 1) % 3]!.metrics();
      expect(other).not.toMatch(/^etcd_backup_continuous_lag_seconds /m);

      // The writer dies mid-stream: writes go on, another node takes over after the lease TTL.
      const writing = writeSome('two', 80, expected);
      await new Promise((r) => setTimeout(r, 300));
      daemons[writer]!.child.kill('SIGKILL');
      await new Promise((r) => daemons[writer]!.child.once('exit', r));
      daemons[writer] = undefined;
      const last2 = await writing;
      const next = await Promise.any(daemons.map((d, i) => (d ? d.waitFor((l) => l.msg === 'continuous: following etcd', 60_000, 'a new writer').then(() => i) : Promise.reject(new Error('dead')))));
      expect(next).not.toBe(writer);
      await waitUntil(() => reach(segments(store, baseId), baseRev) >= last2, 60_000, `segments up to ${last2} after the failover`);

      // A clean shutdown of the new writer: the last segment is committed and the key released, so the
      // third node takes over at once (before the 4 s lease TTL would let it; at worst after its next read, 2 s).
      const last3 = await writeSome('three', 10, expected);
      const third = [0, 1, 2].find((i) => i !== writer && i !== next)!;
      expect(await daemons[next]!.stop()).toBe(0);
      const released = daemons[next]!.lines.findLast((l) => l.msg === 'continuous: writer key released')!;
      expect(released).toBeDefined();
      expect(reach(segments(store, baseId), baseRev)).toBeGreaterThanOrEqual(last3);
      daemons[next] = undefined;
      const took = await daemons[third]!.waitFor((l) => l.msg === 'continuous: this node writes segments', 10_000, 'the third node writing');
      const at = (l: Record<string, unknown>) => (typeof l.time === 'number' ? l.time : Date.parse(String(l.time)));
      const trace = [`${NODES[third]}: ${JSON.stringify(daemons[third]!.lines.filter((l) => at(l) >= at(released) - 3000).map((l) => [at(l) - at(released), l.msg, l.err ?? '']))}`];
      expect(at(took) - at(released), trace.join('\n')).toBeLessThan(3_500);
    } catch (e) {
      for (const [i, d] of daemons.entries()) dumpDaemonLog(d, NODES[i]);
      throw e;
    } finally {
      const codes = await Promise.all(daemons.map((d) => d?.stop()));
      for (const c of codes) if (c !== undefined) expect(c).toBe(0);
    }

    const all = bases(store);
    const segsByBase = all.map((b) => ({ b, segs: segments(store, b.id) })).filter((x) => x.segs.length > 0);
    expect(segsByBase.length).toBe(1);
    const { b, segs } = segsByBase[0]!;
    // Every revision from the base on, once per content (overlaps after the failover must agree).
    const byRev = new Map<number, string>();
    const content = (r: RevisionRecord) => JSON.stringify(r.ops.map((o) => ('put' in o ? ['put', o.put.toString('base64'), o.value.toString('base64'), o.lease] : ['del', o.del.toString('base64')])));
    for (const s of segs) {
      expect(s.records.length).toBe(s.manifest.revisions);
      s.records.forEach((r, k) => expect(r.rev).toBe(s.manifest.fromRev + k));
      for (const r of s.records) {
        const c = content(r);
        const seen = byRev.get(r.rev);
        if (seen !== undefined) expect(c, `revision ${r.rev} differs between overlapping segments`).toBe(seen);
        byRev.set(r.rev, c);
      }
    }
    const maxRev = Math.max(...byRev.keys());
    for (let rev = b.revision + 1; rev <= maxRev; rev++) expect(byRev.has(rev), `revision ${rev} missing`).toBe(true);
    expect(Math.min(...byRev.keys())).toBe(b.revision + 1);
    for (const [rev, ops] of expected) {
      const want = JSON.stringify(ops.map((o) => (o.put ? ['put', Buffer.from(o.put[0]).toString('base64'), o.put[1].toString('base64'), o.put[2]] : ['del', Buffer.from(o.del!).toString('base64')])));
      expect(byRev.get(rev), `revision ${rev}`).toBe(want);
    }
    const ordered = [...segs].sort((x, y) => x.manifest.fromRev - y.manifest.fromRev);
    const nodes = [...new Set(ordered.map((s) => s.manifest.node))];
    expect(nodes.length).toBeGreaterThanOrEqual(2); // the third node writes its own writer-key revision, at least
    // One writer at a time: segments of different nodes never overlap in the wall time their revisions were seen.
    for (const p of ordered) {
      for (const q of ordered) {
        if (p.manifest.node === q.manifest.node) continue;
        const apart = Date.parse(p.manifest.lastTime) < Date.parse(q.manifest.firstTime) || Date.parse(q.manifest.lastTime) < Date.parse(p.manifest.firstTime);
        expect(apart, `${p.manifest.node} ${p.manifest.firstTime}..${p.manifest.lastTime} / ${q.manifest.node} ${q.manifest.firstTime}..${q.manifest.lastTime}`).toBe(true);
      }
    }
  }, 300_000);

  it('etcd compacted past a stopped writer: a full backup (continuous-rebase) starts a new chain', async () => {
    const store = join(root, 'compact-store');
    const cfg = config(0, store, 'compaction');
    const b = await runCli(['backup', '--config', cfg, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const first = bases(store)[0]!;
    let d = await startDaemonProcess(cfg);
    const expected: Expected = new Map();
    try {
      await d.waitFor((l) => l.msg === 'continuous: following etcd', 60_000, 'the writer following etcd');
      const last1 = await writeSome('before', 10, expected);
      await waitUntil(() => reach(segments(store, first.id), first.revision) >= last1, 30_000, `segments up to ${last1}`);
      expect(await d.stop()).toBe(0);
      // While no writer runs: more writes, then a compaction past them.
      await writeSome('while-down', 20, expected);
      const rev = await cluster.revision();
      await cluster.etcdctl(['compact', String(rev)]);
      d = await startDaemonProcess(cfg);
      await d.waitFor((l) => l.reason === 'continuous-compacted', 60_000, 'continuous-compacted');
      const rebased = await d.waitFor((l) => l.msg === 'continuous: following etcd' && l.base !== first.id, 120_000, 'a chain from a new full backup');
      const base = bases(store).find((x) => x.id === rebased.base)!;
      const manifest = JSON.parse(readFileSync(join(store, 'c1', base.id, 'manifest.json'), 'utf8')) as { label?: string; trigger: string };
      expect(manifest).toMatchObject({ label: 'continuous-rebase', trigger: 'manual' });
      expect(base.revision).toBeGreaterThanOrEqual(rev);
      const after: Expected = new Map();
      const last2 = await writeSome('after', 10, after);
      await waitUntil(() => reach(segments(store, base.id), base.revision) >= last2, 30_000, `segments up to ${last2} under the new base`);
      const recs = recordsByRev(segments(store, base.id));
      expect(Math.min(...recs.keys())).toBe(base.revision + 1);
      for (const rev2 of after.keys()) expect(recs.has(rev2), `revision ${rev2}`).toBe(true);
    } catch (e) {
      dumpDaemonLog(d);
      throw e;
    } finally {
      expect(await d.stop()).toBe(0);
    }
  }, 300_000);

  it('a member restarting under the watch: the chain goes on without a gap or a rebase', async () => {
    const store = join(root, 'restart-store');
    const cfgs = [0, 1, 2].map((i) => config(i, store, 'member-restart'));
    const b = await runCli(['backup', '--config', cfgs[0]!, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const base = bases(store)[0]!;
    const daemons: DaemonProcess[] = [];
    const clients = cluster.endpoints.map((e) => grpcClient(e));
    const expected: Expected = new Map();
    try {
      for (const c of cfgs) daemons.push(await startDaemonProcess(c));
      await Promise.any(daemons.map((d) => d.waitFor((l) => l.msg === 'continuous: following etcd', 60_000, 'a writer')));
      // Each member in turn goes away for a moment while writes go on through another one.
      for (let i = 0; i < 3; i++) {
        await cluster.stopMember(i);
        await writeSome(`restart${i}`, 15, expected, clients[(i + 1) % 3]!);
        await cluster.startMember(i);
        await writeSome(`back${i}`, 5, expected, clients[(i + 1) % 3]!);
      }
      const last = Math.max(...expected.keys());
      await waitUntil(() => reach(segments(store, base.id), base.revision) >= last, 60_000, `segments up to ${last}`);
      for (const d of daemons) expect(d.lines.filter((l) => l.reason === 'continuous-gap' || l.reason === 'continuous-compacted')).toEqual([]);
      const recs = recordsByRev(segments(store, base.id));
      for (const rev of expected.keys()) expect(recs.has(rev), `revision ${rev}`).toBe(true);
    } catch (e) {
      for (const [i, d] of daemons.entries()) dumpDaemonLog(d, NODES[i]);
      throw e;
    } finally {
      for (const c of clients) c.close();
      const codes = await Promise.all(daemons.map((d) => d.stop()));
      expect(codes).toEqual([0, 0, 0]);
    }
  }, 300_000);

  it('a newer full backup becomes the base: the old chain ends, a new one starts from its revision + 1', async () => {
    const store = join(root, 'rebase-store');
    const cfg = config(0, store, 'new-base');
    const b = await runCli(['backup', '--config', cfg, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const first = bases(store)[0]!;
    const d = await startDaemonProcess(cfg);
    try {
      await d.waitFor((l) => l.msg === 'continuous: following etcd', 60_000, 'the writer following etcd');
      const last1 = await writeSome('old-base', 10, new Map());
      await waitUntil(() => reach(segments(store, first.id), first.revision) >= last1, 30_000, `segments up to ${last1}`);
      // A backup through the daemon (the CLI hands it to the running daemon): the writer hears of it at once.
      await new Promise((r) => setTimeout(r, 1100)); // backup ids are per second
      const b2 = await runCli(['backup', '--config', cfg, '--json']);
      expect(b2.code, b2.stderr).toBe(0);
      const id2 = String(JSON.parse(b2.stdout).id);
      await d.waitFor((l) => l.msg === 'continuous: following etcd' && l.base === id2, 30_000, 'a chain under the new base');
      const second = bases(store).find((x) => x.id === id2)!;
      const after: Expected = new Map();
      const last2 = await writeSome('new-base', 10, after);
      await waitUntil(() => reach(segments(store, id2), second.revision) >= last2, 30_000, `segments up to ${last2} under the new base`);
      const recs = recordsByRev(segments(store, id2));
      expect(Math.min(...recs.keys())).toBe(second.revision + 1);
      for (const rev of after.keys()) expect(recs.has(rev), `revision ${rev}`).toBe(true);
      // The old chain is whole up to where it ended.
      expect(reach(segments(store, first.id), first.revision)).toBeGreaterThanOrEqual(last1);
    } catch (e) {
      dumpDaemonLog(d);
      throw e;
    } finally {
      expect(await d.stop()).toBe(0);
    }
  }, 300_000);

  it('a store that fails does not hold the others back: its segments wait in the outbox, the lag shows it, and it catches up', async () => {
    const store = join(root, 'two-stores');
    // The second store's path runs through a regular file: every write fails until the file goes.
    const blocker = join(root, 'two-stores-blocker');
    writeFileSync(blocker, 'x');
    const cfg = config(0, store, 'failing-store', [{ name: 'far', type: 'local', path: join(blocker, 'far') }]);
    // The base: committed in the store that works (the run reports the other store's failure).
    await runCli(['backup', '--config', cfg, '--json']);
    const base = bases(store)[0]!;
    expect(base).toBeDefined();
    const d = await startDaemonProcess(cfg);
    try {
      await d.waitFor((l) => l.msg === 'continuous: following etcd', 60_000, 'the writer following etcd');
      const last1 = await writeSome('one-store-down', 20, new Map());
      await waitUntil(() => reach(segments(store, base.id), base.revision) >= last1, 30_000, `segments up to ${last1} in the store that works`);
      await new Promise((r) => setTimeout(r, 2_000));
      const text = await d.metrics();
      expect(Number(/^etcd_backup_continuous_segments_total\{result="failed"\} (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
      expect(Number(/^etcd_backup_continuous_outbox_segments (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
      expect(Number(/^etcd_backup_continuous_lag_seconds (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(1);
      expect(Number(/^etcd_backup_continuous_lag_revisions (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
      // The store comes back: the retries (backoff) deliver everything, in order.
      rmSync(blocker);
      mkdirSync(join(blocker, 'far'), { recursive: true });
      await waitUntil(() => reach(segments(join(blocker, 'far'), base.id), base.revision) >= last1, 60_000, `segments up to ${last1} in the store that came back`);
      const end = Date.now() + 30_000;
      while (!/^etcd_backup_continuous_outbox_segments 0$/m.test(await d.metrics()) && Date.now() < end) await new Promise((r) => setTimeout(r, 250));
      expect(await d.metrics()).toMatch(/^etcd_backup_continuous_outbox_segments 0$/m);
    } catch (e) {
      dumpDaemonLog(d);
      throw e;
    } finally {
      expect(await d.stop()).toBe(0);
    }
  }, 300_000);

  it("the daemon's segments restore to a time: fetch --at now serves exactly the source's keyspace at the revision reached", async () => {
    const store = join(root, 'e2e-store');
    const cfg = config(0, store, 'e2e');
    const b = await runCli(['backup', '--config', cfg, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const base = bases(store)[0]!;
    const d = await startDaemonProcess(cfg);
    let last = 0;
    try {
      await d.waitFor((l) => l.msg === 'continuous: following etcd', 60_000, 'the writer following etcd');
      last = await writeSome('e2e', 30, new Map());
      await waitUntil(() => reach(segments(store, base.id), base.revision) >= last, 30_000, `segments up to ${last}`);
    } finally {
      expect(await d.stop()).toBe(0);
    }
    const to = join(root, 'e2e-fetched');
    const r = await runCli(['fetch', '--config', cfg, 'latest', '--at', 'now', '--to', to, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { snapshot: string; revisionReached: number; replayed: boolean; base: string };
    expect(doc).toMatchObject({ replayed: true, base: base.id });
    expect(doc.revisionReached).toBeGreaterThanOrEqual(last);
    const keysAt = async (endpoints: string[], rev: number) => {
      const out = await runEtcdctl(['get', '', '--from-key', `--rev=${rev}`, '-w', 'json'], { endpoints });
      const j = JSON.parse(out.stdout) as { header: { revision: number }; kvs?: { key: string; value?: string }[] };
      return { kvs: new Map((j.kvs ?? []).map((kv) => [kv.key, kv.value ?? ''])), revision: j.header.revision };
    };
    const want = await keysAt(cluster.endpoints, doc.revisionReached);
    const restored = await restoreSnapshot(doc.snapshot, join(root, 'e2e-data'));
    const etcd = await startEtcdFromDataDir(restored.dataDir, { name: restored.name, peerUrl: restored.peerUrl });
    try {
      const served = await keysAt(etcd.endpoints, 0);
      expect(served.kvs).toEqual(want.kvs);
      expect(served.revision).toBe(doc.revisionReached);
    } finally {
      await etcd.stop();
    }
  }, 300_000);
});
