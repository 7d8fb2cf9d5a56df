/**
 * The daemon's side of coordination (docs/coordination.md): one pooled etcd3
 * client and one client per member for the daemon's life, slot approaches, the releases
 * of the claims it won, the prune after them, and the records of manual
 * backups. `coordination.mode: none` makes none of this (no etcd client).
 */
import type { Etcd3 } from 'etcd3';
import type { Config } from '../config/load.js';
import type { SlotDecision } from '../coord/missed.js';
import { EtcdClients, makePooledClient } from '../etcd/client.js';
import { acquireSlot, CoordKeys, makeHealthProbe, policyFromConfig, pruneOldSlots, type CoordContext, type CoordPolicy, type HealthProbe, type SlotClaim, type SlotKind } from '../coord/index.js';
import { messageOf, reasonOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { RunResult } from '../run/backup.js';
import { recordManualRun } from '../run/manual-record.js';

export { missedWhy, MISSED_WHYS, type MissedWhy, type SlotDecision } from '../coord/missed.js';

/** Deadline of each per-member call (health probe, status when a call failed). */
const PROBE_CALL_MS = 3_000;

/** How long close() waits for releases in flight before it abandons what is still held. */
const CLOSE_WAIT_MS = 10_000;

export class SlotCoordinator {
  private readonly ctx: CoordContext;
  private readonly policy: CoordPolicy;
  private readonly health: HealthProbe;
  /** Claims won and not yet released. */
  private readonly held = new Set<SlotClaim>();
  /** Releases and prunes in flight: close() waits for them. */
  private readonly pending = new Set<Promise<unknown>>();
  private closed = false;

  private constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly client: Etcd3,
    /** One client per member: the health probe, and telling no quorum from unreachable. */
    private readonly members: EtcdClients,
  ) {
    const { policy, leaseTtlSec } = policyFromConfig(cfg.coordination);
    this.policy = policy;
    const asked = { clients: members, endpoints: cfg.etcd.endpoints };
    this.ctx = { client, members: asked, keys: new CoordKeys(cfg.cluster), node: cfg.node, leaseTtlSec };
    this.health = makeHealthProbe(asked);
  }

  /** The coordinator for `cfg`, or undefined with `coordination.mode: none`. */
  static fromConfig(cfg: Config, log: Logger): SlotCoordinator | undefined {
    if (cfg.coordination.mode !== 'etcd') return undefined;
    return new SlotCoordinator(cfg, log, makePooledClient(cfg.etcd), new EtcdClients(cfg.etcd, PROBE_CALL_MS));
  }

  get onNoQuorum(): 'backup' | 'skip' {
    return this.policy.onNoQuorum;
  }

  /** Approaches a backup (or drill) slot until won / done / alone / give-up; never throws (etcd not answering at all is `unavailable`). */
  async approach(slot: Date, deadline: Date, signal: AbortSignal, kind: SlotKind = 'backup'): Promise<SlotDecision> {
    try {
      const r = await acquireSlot(this.ctx, { kind, slot, deadline, policy: this.policy, probe: () => this.health.probe(), signal });
      if (r.outcome === 'won') {
        if (this.closed) {
          // Won after shutdown closed the client: let the claim lapse, nobody will run it.
          r.claim.abandon();
          return { outcome: 'give-up', why: 'aborted' };
        }
        this.held.add(r.claim);
        r.claim.lost.addEventListener(
          'abort',
          () => this.log.warn({ kind, slot: slot.toISOString(), attempt: r.claim.attempt }, 'slot claim may have lapsed (keepalives failed): another node may take this slot too; the run in progress goes on (a committed backup is never lost)'),
          { once: true },
        );
      }
      return r;
    } catch (e) {
      return { outcome: 'unavailable', error: `${reasonOf(e)}: ${messageOf(e)}` };
    }
  }

  /** Records the run's result for the won slot (and drops the claim), then prunes old slot keys. Never throws. */
  finishSlot(claim: SlotClaim, r: { result: 'success' | 'failed'; backupId?: string; reason?: string }): Promise<void> {
    return this.track(
      (async () => {
        const at = { kind: claim.kind, slot: claim.slot.toISOString() };
        try {
          const out = await claim.release(r);
          if (out.recorded) this.log.info({ ...at, result: r.result, backupId: r.backupId }, 'slot result recorded');
          else this.log.warn({ ...at, result: r.result, backupId: r.backupId }, 'slot result not recorded: another node claimed the slot after this claim lapsed');
        } catch (e) {
          claim.abandon();
          this.log.warn({ ...at, reason: reasonOf(e), err: messageOf(e) }, 'could not record the slot result; the claim lapses after its lease TTL');
        } finally {
          this.held.delete(claim);
        }
        try {
          const { deleted } = await pruneOldSlots(this.ctx);
          if (deleted > 0) this.log.debug({ deleted }, 'old slot keys pruned');
        } catch (e) {
          this.log.warn({ reason: reasonOf(e), err: messageOf(e) }, 'could not prune old slot keys (next time)');
        }
      })(),
    );
  }

  /** Records a successful manual backup for the cluster view (best effort). */
  recordManual(run: RunResult): Promise<void> {
    return this.track(recordManualRun(this.cfg, run, this.log, { client: this.client, members: { clients: this.members, endpoints: this.cfg.etcd.endpoints } }));
  }

  /** Waits (bounded) for releases in flight, abandons claims still held, closes the clients. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.pending.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled([...this.pending]), new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
    }
    for (const c of this.held) c.abandon();
    this.held.clear();
    this.members.close();
    this.client.close();
  }

  private track(p: Promise<void>): Promise<void> {
    const t = p.catch(() => undefined);
    this.pending.add(t);
    void t.finally(() => this.pending.delete(t));
    return t;
  }
}
