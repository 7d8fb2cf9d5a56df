import { RecoveryKitMetrics } from '../recovery/metrics.js';
import { refreshRecoveryKit } from '../recovery/refresh.js';
import type { DaemonContext } from './context.js';

/**
 * The daemon's recovery kit (src/recovery/): refreshed after the config
 * loaded (start) and after each successful run, one refresh at a time (two
 * at once would race for the same sibling names), with the member list the
 * last preflight saw (the state file keeps it across restarts).
 */
export class KitRefresher {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly metrics: RecoveryKitMetrics;

  constructor(private readonly ctx: Omit<DaemonContext, 'kit'>) {
    this.metrics = new RecoveryKitMetrics(ctx.metrics.registry);
  }

  /** Best effort: resolves when this refresh is over, never rejects. */
  refresh(trigger: 'start' | 'run'): Promise<void> {
    const { cfg, log, state } = this.ctx;
    const next = this.chain.then(() =>
      refreshRecoveryKit({ cfg, log, metrics: this.metrics, members: state.current.members, membersSeenAt: state.current.membersSeenAt, trigger }),
    );
    this.chain = next.catch(() => undefined);
    return next.then(() => undefined, () => undefined);
  }
}
