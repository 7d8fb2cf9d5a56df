import { askMembers } from '../recovery/members.js';
import { RecoveryKitMetrics } from '../recovery/metrics.js';
import { refreshRecoveryKit } from '../recovery/refresh.js';
import type { KitMember } from '../recovery/restore-text.js';
import type { DaemonContext } from './context.js';

/**
 * The daemon's recovery kit (src/recovery/): refreshed after the config
 * loaded (start) and after each successful run, one refresh at a time (two
 * at once would race for the same sibling names). Its restore lines name the
 * newest member list known: the one etcd gave at start, or the one the last
 * run's preflight saw (the state file keeps that across restarts).
 */
export class KitRefresher {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly metrics: RecoveryKitMetrics;
  private asked: { members: KitMember[]; at: string } | undefined;

  constructor(private readonly ctx: Omit<DaemonContext, 'kit'>) {
    this.metrics = new RecoveryKitMetrics(ctx.metrics.registry);
  }

  /** Best effort: resolves when this refresh is over, never rejects. */
  refresh(trigger: 'start' | 'run'): Promise<void> {
    const { cfg, log } = this.ctx;
    const next = this.chain.then(async () => {
      if (trigger === 'start') {
        const at = new Date().toISOString();
        const members = await askMembers(cfg).catch(() => undefined);
        if (members) this.asked = { members, at };
      }
      const known = this.newestMembers();
      return refreshRecoveryKit({ cfg, log, metrics: this.metrics, members: known?.members, membersSeenAt: known?.at, trigger });
    });
    this.chain = next.catch(() => undefined);
    return next.then(
      () => undefined,
      () => undefined,
    );
  }

  private newestMembers(): { members: KitMember[]; at: string } | undefined {
    const { members, membersSeenAt } = this.ctx.state.current;
    const fromRun = members?.length && membersSeenAt ? { members, at: membersSeenAt } : undefined;
    if (!fromRun) return this.asked;
    if (!this.asked) return fromRun;
    return Date.parse(fromRun.at) >= Date.parse(this.asked.at) ? fromRun : this.asked;
  }
}
