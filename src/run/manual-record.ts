/**
 * A manual backup is not coordinated (the operator asked this node), but it
 * is recorded under /etcd-backupd/<cluster>/manual/ so the cluster view is
 * complete (docs/coordination.md). Best effort: short deadlines, and a
 * failure is a warning, never a failed backup.
 */
import type { Etcd3 } from 'etcd3';
import type { Config } from '../config/load.js';
import { CoordKeys, recordManual, type CoordContext } from '../coord/index.js';
import { makePooledClient, type Members } from '../etcd/client.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { RunResult } from './backup.js';

/** The whole record may take at most this long (the etcd calls have their own shorter deadlines). */
const RECORD_BUDGET_MS = 8_000;
const CALL_MS = 3_000;

/** Records a successful manual run when coordination is on; `daemon` holds the daemon's clients (otherwise a client is made and closed here). Never throws. */
export async function recordManualRun(cfg: Config, run: RunResult, log: Logger, daemon?: { client: Etcd3; members: Members }): Promise<void> {
  if (cfg.coordination.mode !== 'etcd' || run.result !== 'success') return;
  let own: Etcd3 | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    // The CLI's own record asks no member one by one when it fails: it is only a warning then.
    const c = daemon?.client ?? (own = makePooledClient(cfg.etcd, { callTimeoutMs: CALL_MS, dialTimeoutMs: CALL_MS }));
    const ctx: CoordContext = { client: c, members: daemon?.members, keys: new CoordKeys(cfg.cluster), node: cfg.node, callTimeoutMs: CALL_MS };
    const record = recordManual(ctx, {
      node: cfg.node,
      result: 'success',
      backupId: run.id,
      finishedAt: run.finishedAt,
      ...(run.manifest?.label ? { label: run.manifest.label } : {}),
    });
    const budget = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${RECORD_BUDGET_MS / 1000} s`)), RECORD_BUDGET_MS);
      timer.unref();
    });
    await Promise.race([record, budget]);
    log.debug({ id: run.id }, 'manual backup recorded for the cluster view');
  } catch (e) {
    log.warn({ id: run.id, err: messageOf(e) }, 'could not record the manual backup in etcd (coordination); the backup itself is fine');
  } finally {
    clearTimeout(timer);
    own?.close();
  }
}
