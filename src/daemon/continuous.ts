/**
 * The daemon's side of continuous backups (docs/continuous.md): with
 * continuous.enabled (which the config allows only with coordination.mode
 * etcd), one writer per node competing for the writer key, with its own
 * etcd3 client (the whole-keyspace watch gets a stream of its own), and
 * full backups for a new chain taken through the daemon's runner.
 */
import { sleep } from '../coord/etcd-calls.js';
import { EtcdClients, makePooledClient } from '../etcd/client.js';
import { ContinuousMetrics } from '../continuous/metrics.js';
import { ContinuousWriter } from '../continuous/writer.js';
import { raceSignal } from '../storage/store.js';
import type { DaemonContext } from './context.js';
import type { BackupRunner } from './runner.js';

const PROBE_CALL_MS = 3_000;
/** While the runner is busy (a scheduled run), ask again this often for the full backup of a new chain. */
const BUSY_RETRY_MS = 5_000;

export interface ContinuousService {
  baseCommitted(): void;
  stop(): Promise<void>;
}

export function startContinuous(ctx: DaemonContext, runner: BackupRunner): ContinuousService | undefined {
  const { cfg, log } = ctx;
  if (!cfg.continuous.enabled || cfg.coordination.mode !== 'etcd') return undefined;
  const client = makePooledClient(cfg.etcd);
  const members = new EtcdClients(cfg.etcd, PROBE_CALL_MS);
  const writer = new ContinuousWriter({
    cfg,
    log: log.child({ component: 'continuous' }),
    stores: ctx.stores,
    client,
    members: { clients: members, endpoints: cfg.etcd.endpoints },
    metrics: new ContinuousMetrics(ctx.metrics.registry),
    reclaim: (bytes) => ctx.reclaim.after(bytes),
    rebase: async (why, signal) => {
      while (!signal.aborted && !runner.isStopping) {
        const p = runner.trigger({ trigger: 'manual', label: 'continuous-rebase', reason: why });
        // Shutdown does not wait for the run here: the runner's own shutdown does (the writer key goes first).
        if (p) {
          // The run's result, or no verdict as soon as the writer stops (raceSignal, as every store call).
          const cyc = await raceSignal(p, signal, () => new Error('continuous writer stopped')).catch((e: unknown) => {
            if (signal.aborted) return undefined;
            throw e;
          });
          return cyc?.run.result === 'success';
        }
        await sleep(BUSY_RETRY_MS, signal);
      }
      return false;
    },
  });
  writer.start();
  return {
    baseCommitted: () => writer.baseCommitted(),
    stop: async () => {
      await writer.stop();
      members.close();
      client.close();
    },
  };
}
