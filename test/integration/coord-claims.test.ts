import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { acquireSlot, type AcquireOutcome, type AcquireRequest } from '../../src/coord/acquire.js';
import { claimSlot, readRaw, readSlot, type CoordContext } from '../../src/coord/claims.js';
import { EtcdClients, makePooledClient } from '../../src/etcd/client.js';
import { DEFAULT_POLICY, type CoordPolicy } from '../../src/coord/decide.js';
import { CoordKeys, parseManual, parseResult } from '../../src/coord/keys.js';
import { pruneOldSlots, recordManual } from '../../src/coord/records.js';
import { reasonOf } from '../../src/errors.js';
import { cleanupClaimers, spawnClaimer, type ChildClaimer } from '../support/coord.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';

/**
 * Slot claims on a real 3-member TLS etcd 3.4: one winner per slot among
 * racing nodes, failover when the winner dies (a SIGKILLed process, a client
 * closed without revoking), a failed attempt handed on with bounded attempts,
 * recorded results, bounded keys after many slots, and no hang without quorum.
 */
let etcd: EtcdCluster;
const clients: (Etcd3 | EtcdClients)[] = [];
const children: ChildClaimer[] = [];
const TTL = 2;
const policy: CoordPolicy = { ...DEFAULT_POLICY, leaderDelayMs: 0, maxAttempts: 3, recheckMs: 200 };

beforeAll(async () => {
  etcd = await startEtcdCluster({ members: 3, tls: true });
}, 180_000);

afterAll(async () => {
  for (const c of children) c.kill();
  cleanupClaimers();
  for (const c of clients) c.close();
  await etcd?.stop();
});

function node(name: string, cluster: string, over: Partial<CoordContext> = {}, endpoints = etcd.endpoints): CoordContext {
  const conn = { endpoints, ...etcd.tls };
  const client = makePooledClient(conn, { callTimeoutMs: 5000 });
  const members = new EtcdClients(conn, 2000);
  clients.push(client, members);
  return { client, members: { clients: members, endpoints }, keys: new CoordKeys(cluster), node: name, leaseTtlSec: TTL, callTimeoutMs: 3000, ...over };
}

const follower = async () => ({ role: 'follower' as const, quorum: true });
const slotAt = (i: number) => new Date(Date.UTC(2025, 0, 1, 0, 0, 0) + i * 60_000);

function req(slot: Date, over: Partial<AcquireRequest> = {}): AcquireRequest {
  return { kind: 'backup', slot, deadline: new Date(Date.now() + 30_000), policy, probe: follower, ...over };
}

/** A node's whole turn: approach the slot; when won, "back up" for `workMs` and release with `result`. */
async function turn(ctx: CoordContext, slot: Date, result: 'success' | 'failed' = 'success', workMs = 50, over: Partial<AcquireRequest> = {}): Promise<AcquireOutcome & { backupId?: string }> {
  const r = await acquireSlot(ctx, req(slot, over));
  if (r.outcome !== 'won') return r;
  await new Promise((res) => setTimeout(res, workMs));
  const backupId = `${slot.toISOString().replace(/[-:]|\.\d+/g, '')}-${ctx.node}`;
  const rel = await r.claim.release(result === 'success' ? { result, backupId } : { result, reason: 'source-failed' });
  expect(rel.recorded).toBe(true);
  return { ...r, backupId };
}

describe('slot claims on a real etcd cluster', () => {
  it('three clients racing create-if-absent: exactly one wins each of 40 slots', async () => {
    const nodes = ['m0', 'm1', 'm2'].map((n) => node(n, 'race'));
    const wins: Record<string, number> = { m0: 0, m1: 0, m2: 0 };
    for (let i = 0; i < 40; i++) {
      const slot = slotAt(i);
      const seen = await readSlot(nodes[0]!, 'backup', slot);
      const rs = await Promise.all(nodes.map((n) => claimSlot(n, 'backup', slot, 1, seen)));
      const won = rs.flatMap((r, j) => (r.won ? [{ r, j }] : []));
      expect(won, `slot ${i}`).toHaveLength(1);
      for (const r of rs) if (!r.won) expect(r.seen.claim?.node).toBe(nodes[won[0]!.j]!.node);
      wins[nodes[won[0]!.j]!.node]!++;
      if (won[0]!.r.won) await won[0]!.r.claim.release({ result: 'success', backupId: `b${i}` });
    }
    expect(Object.values(wins).reduce((a, b) => a + b)).toBe(40);
  });

  it('whole turns: one node backs up per slot, the others see it done with its backup id', async () => {
    const nodes = ['m0', 'm1', 'm2'].map((n) => node(n, 'turns'));
    for (let i = 0; i < 10; i++) {
      const rs = await Promise.all(nodes.map((n) => turn(n, slotAt(i), 'success', 100)));
      const winners = rs.filter((r) => r.outcome === 'won');
      expect(winners, `slot ${i}: ${JSON.stringify(rs)}`).toHaveLength(1);
      const id = winners[0]!.backupId;
      for (const r of rs.filter((x) => x.outcome !== 'won')) expect(r).toEqual({ outcome: 'done', node: expect.any(String), backupId: id });
      const v = await readSlot(nodes[0]!, 'backup', slotAt(i));
      expect(v.claim).toBeUndefined();
      expect(v.result).toMatchObject({ result: 'success', attempt: 1, backupId: id });
    }
  });

  it('the leader waits its delay: a healthy follower takes the slot', async () => {
    const leader = node('leader', 'leader-delay');
    const other = node('follower', 'leader-delay');
    const slot = slotAt(0);
    const [a, b] = await Promise.all([
      turn(leader, slot, 'success', 100, { policy: { ...policy, leaderDelayMs: 1500 }, probe: async () => ({ role: 'leader', quorum: true }) }),
      (async () => {
        await new Promise((res) => setTimeout(res, 300)); // even when the follower asks a little later
        return turn(other, slot, 'success', 100);
      })(),
    ]);
    expect(b.outcome).toBe('won');
    expect(a).toMatchObject({ outcome: 'done', node: 'follower' });
  });

  it('failover: the winning process is SIGKILLed, another node claims the slot after the lease TTL', async () => {
    const slot = slotAt(0);
    const deadline = new Date(Date.now() + 60_000);
    const first = await spawnClaimer(etcd, { cluster: 'failover', node: 'm0', slot, deadline, leaseTtlSec: TTL });
    children.push(first);
    expect(await first.firstLine).toMatchObject({ outcome: 'won', attempt: 1 });
    const watcher = node('m1', 'failover');
    const killedAt = Date.now();
    first.kill();
    const r = await turn(watcher, slot, 'success', 50);
    const took = Date.now() - killedAt;
    expect(r).toMatchObject({ outcome: 'won' });
    if (r.outcome === 'won') expect(r.claim.attempt).toBe(2);
    expect(took).toBeGreaterThan(TTL * 1000 - 700); // not before etcd expired the dead holder's lease
    expect(took).toBeLessThan(TTL * 1000 + 4000);
    expect((await readSlot(watcher, 'backup', slot)).result).toMatchObject({ node: 'm1', attempt: 2, result: 'success' });
  });

  it('failover: a holder stops its keepalives without revoking; two nodes watching, one takes over', async () => {
    const slot = slotAt(0);
    const dying = node('m0', 'closed');
    const won = await acquireSlot(dying, req(slot));
    if (won.outcome !== 'won') throw new Error('expected a win');
    const watchers = [node('m1', 'closed'), node('m2', 'closed')];
    const racing = Promise.all(watchers.map((w) => turn(w, slot, 'success', 100)));
    await new Promise((res) => setTimeout(res, 300));
    won.claim.abandon();
    const rs = await racing;
    expect(rs.filter((r) => r.outcome === 'won')).toHaveLength(1);
    expect(rs.filter((r) => r.outcome === 'done')).toHaveLength(1);
  });

  it('a failed attempt hands the slot on; attempts are bounded per slot', async () => {
    const nodes = ['m0', 'm1', 'm2'].map((n) => node(n, 'failing'));
    const slot = slotAt(0);
    // Every node fails every attempt it wins: three attempts in all, then everyone gives up.
    const rs = await Promise.all(nodes.map((n) => (async () => {
      const outcomes: string[] = [];
      for (let k = 0; k < 5; k++) {
        const r = await turn(n, slot, 'failed', 100);
        outcomes.push(r.outcome === 'give-up' ? `give-up:${r.why}` : r.outcome);
        if (r.outcome !== 'won') break;
      }
      return outcomes;
    })()));
    const all = rs.flat();
    expect(all.filter((o) => o === 'won')).toHaveLength(policy.maxAttempts);
    expect(rs.every((o) => o.at(-1) === 'give-up:attempts')).toBe(true);
    expect((await readSlot(nodes[0]!, 'backup', slot)).result).toMatchObject({ result: 'failed', attempt: 3, reason: 'source-failed' });
  });

  it('a holder whose lease lapsed records nothing over a later attempt', async () => {
    const slot = slotAt(0);
    const a = node('m0', 'late');
    const b = node('m1', 'late');
    const won = await acquireSlot(a, req(slot));
    if (won.outcome !== 'won') throw new Error(`expected a win, got ${JSON.stringify(won)}`);
    won.claim.abandon(); // stops keepalives: the lease lapses after the TTL
    const taken = await turn(b, slot, 'success', 50);
    expect(taken.outcome).toBe('won');
    expect(await won.claim.release({ result: 'failed', reason: 'source-failed' })).toEqual({ recorded: false });
    expect((await readSlot(a, 'backup', slot)).result).toMatchObject({ node: 'm1', result: 'success' });
  });

  it('a holder whose lease lapsed while nobody claimed after it still records its success', async () => {
    const a = node('m0', 'late-alone');
    const won = await acquireSlot(a, req(slotAt(0)));
    if (won.outcome !== 'won') throw new Error('expected a win');
    won.claim.abandon();
    await new Promise((res) => setTimeout(res, TTL * 1000 + 1500));
    const before = await readSlot(a, 'backup', slotAt(0));
    expect(before.claim).toBeUndefined(); // etcd expired the lease and its claim key
    expect(before.result).toMatchObject({ result: 'running', node: 'm0' });
    expect(await won.claim.release({ result: 'success', backupId: 'late-id' })).toEqual({ recorded: true });
    expect((await readSlot(a, 'backup', slotAt(0))).result).toMatchObject({ result: 'success', backupId: 'late-id', attempt: 1 });
  });

  it('the only etcd member of the holder dies: its claim signals lost before etcd can expire the lease, and another node takes over', async () => {
    const a = node('m0', 'lost', {}, [etcd.endpoints[0]!]);
    const b = node('m1', 'lost', {}, [etcd.endpoints[1]!]);
    const won = await acquireSlot(a, req(slotAt(0)));
    if (won.outcome !== 'won') throw new Error('expected a win');
    const lost = new Promise<number>((res) => won.claim.lost.addEventListener('abort', () => res(Date.now()), { once: true }));
    const t0 = Date.now();
    await etcd.stopMember(0); // keepalives fail from here
    try {
      const lostAt = await Promise.race([lost, new Promise<number>((_, rej) => setTimeout(() => rej(new Error('lost never fired')), 10_000))]);
      expect(lostAt - t0).toBeLessThan(TTL * 1000);
      expect(reasonOf(won.claim.lost.reason)).toBe('coord-lost');
      const r = await turn(b, slotAt(0), 'success', 50);
      expect(r.outcome).toBe('won');
      if (r.outcome === 'won') expect(r.claim.attempt).toBe(2);
    } finally {
      won.claim.abandon();
      await etcd.startMember(0);
    }
  });

  it('manual backups are recorded; prune keeps the keys bounded over 200 slots', async () => {
    const ctx = node('m0', 'prune');
    for (let i = 0; i < 200; i++) {
      const r = await turn(ctx, slotAt(i), i % 7 === 0 ? 'failed' : 'success', 0);
      expect(r.outcome).toBe('won');
      if (i % 10 === 0) {
        await recordManual(ctx, { node: 'm0', result: 'success', backupId: `2025010${Math.floor(i / 100)}T${String(i % 100).padStart(2, '0')}0000Z-m0`, finishedAt: new Date().toISOString(), label: 'by-hand' });
      }
      if (i % 50 === 49) await pruneOldSlots(ctx, { slots: 16, manual: 5 });
    }
    const all = await readRaw(ctx, ctx.keys.prefix);
    const results = [...all.keys()].filter((k) => k.startsWith(ctx.keys.resultPrefix('backup')));
    const manual = [...all.keys()].filter((k) => k.startsWith(ctx.keys.manualPrefix));
    expect(results).toHaveLength(16);
    expect(results.at(-1)).toBe(ctx.keys.result('backup', slotAt(199)));
    expect(results[0]).toBe(ctx.keys.result('backup', slotAt(184)));
    expect(all.size).toBe(16 + 5); // no claim keys left: every claim was released
    expect(parseResult(all.get(ctx.keys.result('backup', slotAt(196)))!)).toMatchObject({ result: 'failed', reason: 'source-failed' });
    expect(parseManual(all.get(manual.at(-1)!)!)).toMatchObject({ result: 'success', label: 'by-hand', backupId: '20250101T900000Z-m0' });
    // Another cluster's keys are never touched.
    const other = await readRaw(ctx, new CoordKeys('race').prefix);
    expect(other.size).toBeGreaterThan(0);
  });

  it('quorum lost (2 of 3 members stopped): a claim fails within its deadline with coord-no-quorum; the slot is backed up alone', async () => {
    const ctx = node('m0', 'quorum', { callTimeoutMs: 3000 });
    await etcd.stopMember(1);
    await etcd.stopMember(2);
    await new Promise((res) => setTimeout(res, 2500)); // the survivor notices it has no leader
    const t0 = Date.now();
    const err = await claimSlot(ctx, 'backup', slotAt(0), 1, { resultRev: '0' }).then(() => undefined, (e: unknown) => e);
    const took = Date.now() - t0;
    expect(reasonOf(err), String(err)).toBe('coord-no-quorum');
    expect((err as Error).message).toMatch(/no leader/);
    expect(took).toBeLessThan(3000 + 2000 + 2500); // the call's deadline + the members' status, far below the slot's 30 s
    const t1 = Date.now();
    expect(await acquireSlot(ctx, req(slotAt(1)))).toEqual({ outcome: 'alone' });
    expect(await acquireSlot(ctx, req(slotAt(1), { policy: { ...policy, onNoQuorum: 'skip' } }))).toEqual({ outcome: 'give-up', why: 'no-quorum' });
    expect(Date.now() - t1).toBeLessThan(2 * (3000 + 2000) + 4000);
  }, 60_000);
});
