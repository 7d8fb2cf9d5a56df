/**
 * A claim's lease: granted with a deadline, kept alive by etcd3 (every TTL/3),
 * and watched here. etcd3 reports a lease lost only after twice its TTL
 * without a keepalive; by then etcd has long expired it and another node may
 * hold the slot. So `lost` fires earlier: when no keepalive has been answered
 * for most of the TTL (counted from when that keepalive was sent), which is
 * before etcd can have expired the lease.
 *
 * Closing the etcd3 client does NOT stop the keepalives (grpc-js lets open
 * streams run after a channel is closed): end a claim with `release` (or
 * `abandon`) before closing the client.
 */
import type { Lease } from 'etcd3';
import { BackupError } from '../errors.js';
import { classifyFailure, deadlineOf, type FailureProbe } from './etcd-calls.js';

export class SlotLease {
  readonly id: string;
  private readonly ac = new AbortController();
  private readonly ttlMs: number;
  /** Send times of keepalives not yet answered, oldest first (bounded). */
  private readonly inFlight: number[] = [];
  /** When the newest answered keepalive (or the grant) was sent: etcd's TTL restarted after it. */
  private lastOk: number;
  private readonly timer: NodeJS.Timeout;
  private done = false;

  private constructor(private readonly lease: Lease, id: string, ttlSec: number, grantSentAt: number) {
    this.id = id;
    this.ttlMs = ttlSec * 1000;
    this.lastOk = grantSentAt;
    lease.on('keepaliveFired', () => {
      if (this.inFlight.length < 64) this.inFlight.push(Date.now());
    });
    lease.on('keepaliveSucceeded', () => {
      const sent = this.inFlight.shift();
      if (sent !== undefined) this.lastOk = Math.max(this.lastOk, sent);
    });
    lease.on('lost', (err) => this.markLost(`etcd reports the lease lost: ${err.message}`));
    this.timer = setInterval(() => this.check(), Math.max(50, Math.floor(this.ttlMs / 8)));
    this.timer.unref();
  }

  /** Grants a lease of `ttlSec` seconds. Throws BackupError coord-no-quorum | coord-unavailable. */
  static async grant(probe: FailureProbe, ttlSec: number, timeoutMs: number): Promise<SlotLease> {
    const client = probe.client;
    const sentAt = Date.now();
    const lease = client.lease(ttlSec, { deadline: deadlineOf(timeoutMs) });
    lease.on('lost', () => undefined); // an EventEmitter 'lost' without listeners is fine, but be explicit
    let id: string;
    try {
      id = await lease.grant();
    } catch (err) {
      lease.release();
      throw await classifyFailure(probe, err, 'grant a claim lease', timeoutMs);
    }
    return new SlotLease(lease, id, ttlSec, sentAt);
  }

  /** Aborted with BackupError coord-lost once the lease may have lapsed. */
  get lost(): AbortSignal {
    return this.ac.signal;
  }

  /** The lease may have expired unless a keepalive was answered within the TTL less a safety margin. */
  private check(): void {
    const margin = Math.min(1000, this.ttlMs / 4);
    if (Date.now() - this.lastOk > this.ttlMs - margin) this.markLost('no keepalive answered for most of the lease TTL');
  }

  private markLost(why: string): void {
    if (this.done) return;
    this.stop();
    this.ac.abort(new BackupError('coord-lost', `coordination: the claim lease ${this.id} may have lapsed (${why}); another node may now hold the slot`));
  }

  private stop(): void {
    this.done = true;
    clearInterval(this.timer);
  }

  /** Stops keepalives without revoking: the lease lapses after its TTL. */
  abandon(): void {
    this.stop();
    this.lease.release();
  }

  /** Revokes the lease (its claim key goes with it), within `timeoutMs`. */
  async revoke(timeoutMs: number): Promise<void> {
    this.stop();
    await this.lease.revoke({ deadline: deadlineOf(timeoutMs) });
  }
}
