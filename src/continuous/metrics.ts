import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Continuous backup series, on the daemon's registry (created only with
 * continuous.enabled). House rules of src/metrics/metrics.ts: counters at 0
 * from the start; values that are not known yet stay absent.
 *
 *   etcd_backup_continuous_writer                   1 on the node that holds the writer key, else 0
 *   etcd_backup_continuous_lag_seconds              on the writer: age of the oldest revision not yet committed
 *                                                   to every store (sealed, being written, or in etcd and not
 *                                                   delivered by the watch yet); 0 when all is committed. What
 *                                                   a crash of the writer would lose. Absent on other nodes.
 *   etcd_backup_continuous_lag_revisions            on the writer: revisions not yet committed to every store
 *   etcd_backup_continuous_last_segment_timestamp_seconds  when this node last committed a segment to every store
 *   etcd_backup_continuous_segments_total{result}   segment deliveries per store attempt: success | failed
 *   etcd_backup_continuous_segment_bytes_total      bytes of segments committed (as stored), per store
 *   etcd_backup_continuous_outbox_segments          segments on this node waiting for a store
 */
const P = 'etcd_backup_continuous_';

export class ContinuousMetrics {
  private readonly writer: Gauge;
  private readonly lagSeconds: Gauge;
  private readonly lagRevisions: Gauge;
  private readonly lastSegment: Gauge;
  private readonly segments: Counter<'result'>;
  private readonly bytes: Counter;
  private readonly outbox: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    const gauge = (name: string, help: string, known: boolean): Gauge => {
      const g = new Gauge({ name: P + name, help, registers });
      if (!known) g.remove();
      return g;
    };
    this.writer = gauge('writer', '1 on the node that writes continuous-backup segments (holds the writer key), else 0.', true);
    this.writer.set(0);
    this.lagSeconds = gauge('lag_seconds', 'On the writer: age of the oldest revision not yet committed to every store (sealed, in the segment being written, or in etcd and not yet delivered by the watch); 0: all committed. Absent on other nodes.', false);
    this.lagRevisions = gauge('lag_revisions', 'On the writer: revisions not yet committed to every store.', false);
    this.lastSegment = gauge('last_segment_timestamp_seconds', 'When this node last committed a segment to every store.', false);
    this.segments = new Counter({ name: `${P}segments_total`, help: 'Segment deliveries to a store, by result.', labelNames: ['result'], registers });
    for (const r of ['success', 'failed']) this.segments.inc({ result: r }, 0);
    this.bytes = new Counter({ name: `${P}segment_bytes_total`, help: 'Bytes of segments committed to stores (as stored).', registers });
    this.outbox = gauge('outbox_segments', 'Segments on this node waiting for a store to take them.', true);
    this.outbox.set(0);
  }

  setWriter(on: boolean): void {
    this.writer.set(on ? 1 : 0);
    if (!on) {
      // Only the writer knows the lag: another node's value would be a stale statement.
      this.lagSeconds.remove();
      this.lagRevisions.remove();
    }
  }

  setLag(seconds: number, revisions: number): void {
    this.lagSeconds.set(Math.max(0, seconds));
    this.lagRevisions.set(Math.max(0, revisions));
  }

  recordAttempt(ok: boolean, bytes: number): void {
    this.segments.inc({ result: ok ? 'success' : 'failed' });
    if (ok) this.bytes.inc(bytes);
  }

  recordCommitted(at: Date): void {
    this.lastSegment.set(at.getTime() / 1000);
  }

  setOutbox(segments: number): void {
    this.outbox.set(segments);
  }
}
