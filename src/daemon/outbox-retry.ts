import { parseDurationSeconds } from '../units/duration.js';
import { messageOf } from '../errors.js';
import { deliverOutbox } from '../run/cycle.js';
import type { RetryDelivery } from '../run/outbox.js';
import type { DaemonContext } from './context.js';
import { refreshInventory, refreshOutbox } from './inventory.js';

/** Late deliveries from the outbox: each is a new last success of its store, in the state and the metrics. */
export async function recordRetries({ state, metrics, log }: DaemonContext, retried: readonly RetryDelivery[]): Promise<void> {
  const delivered = await state.recordRetries(retried);
  for (const r of delivered) log.info({ id: r.id, store: r.store }, 'outbox backlog delivered');
  if (delivered.length > 0) metrics.restoreState(state.current);
}

export interface OutboxRetries {
  /** One delivery of everything the outbox owes, backoff or not: what a previous life left behind. */
  deliverAtStart(): void;
  stop(): void;
}

/** The outbox retry loop: every retryMin, deliver what stores still lack (each pair keeps its own backoff). */
export function startOutboxRetries(ctx: DaemonContext, mayDeliver: () => boolean): OutboxRetries {
  const { cfg, stores, log, metrics } = ctx;
  const retryEvery = Math.max(1, parseDurationSeconds(cfg.local.retryMin)) * 1000;
  // Retries are cheap to resume (the bundle stays in the outbox), so shutdown aborts them at once.
  const abort = new AbortController();
  const timer = setInterval(() => {
    if (!mayDeliver()) return;
    void deliverOutbox(cfg, stores, log, { signal: abort.signal })
      .then(async ({ retried, dropped }) => {
        for (const _ of dropped) metrics.recordOutboxDropped();
        if (retried.length === 0 && dropped.length === 0) return;
        await recordRetries(ctx, retried);
        await refreshOutbox(ctx);
        await refreshInventory(ctx);
      })
      .catch((e) => log.error({ err: messageOf(e) }, 'outbox delivery failed'));
  }, retryEvery);
  timer.unref();
  return {
    deliverAtStart: () => {
      void deliverOutbox(cfg, stores, log, { force: true, signal: abort.signal })
        .then(async ({ retried }) => {
          await recordRetries(ctx, retried);
          return refreshOutbox(ctx);
        })
        .catch((e) => log.error({ err: messageOf(e) }, 'outbox delivery failed'));
    },
    stop: () => {
      abort.abort();
      clearInterval(timer);
    },
  };
}
