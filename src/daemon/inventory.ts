import { messageOf } from '../errors.js';
import { loadCatalog, untrustedBackups } from '../catalog/catalog.js';
import { outboxStatus } from '../run/outbox.js';
import { catalogCacheDir } from '../layout.js';
import { inSeries } from '../catalog/prune.js';
import { loadTrust } from '../catalog/trust.js';
import type { DaemonContext } from './context.js';

/** The inventory gauges: what each store holds of the series retention plans here (trusted backups only; see inSeries). */
export async function refreshInventory({ cfg, stores, metrics, log }: DaemonContext): Promise<void> {
  const trust = await loadTrust(cfg).catch(() => undefined);
  for (const store of stores) {
    try {
      const cat = await loadCatalog(store, cfg.cluster, trust, { cacheDir: catalogCacheDir(cfg.workDir, store.name) });
      const untrusted = untrustedBackups(cat);
      const mine = cat.backups.filter((m) => inSeries(cfg, m.node) && !untrusted.includes(m));
      // The newest counting backup of the whole cluster, any node's: the cluster's last success as the stores show it.
      const newest = cat.backups.find((m) => !untrusted.includes(m));
      if (newest) metrics.recordClusterSuccess(new Date(newest.finishedAt));
      metrics.setInventory(store.name, {
        count: mine.length,
        pinned: mine.filter((m) => m.pinned).length,
        untrusted: untrusted.length,
        oldest: mine.length ? new Date(mine[mine.length - 1]!.createdAt) : undefined,
        newest: mine.length ? new Date(mine[0]!.createdAt) : undefined,
      });
    } catch (e) {
      log.warn({ store: store.name, err: messageOf(e) }, 'cannot list store for the inventory metrics');
    }
  }
}

/** The outbox gauges: bundles some store still lacks. */
export async function refreshOutbox({ cfg, storeNames, metrics }: DaemonContext): Promise<void> {
  metrics.setOutbox(await outboxStatus(cfg, storeNames));
}
