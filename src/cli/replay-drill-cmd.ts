/**
 * `verify --replay latest|ID`: the replay drill on demand (src/continuous/replay-drill.ts):
 * a full backup plus its continuous-backup segments replayed to the next
 * full backup's revision, compared with that backup. ID names the later
 * backup of the pair (B2); `latest` lets the drill pick the newest pair.
 */
import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import type { Store } from '../storage/store.js';
import { err, EXIT_FAILED, EXIT_OK, interruptSignal, out, printJson } from './io.js';

export async function verifyByReplay(cfg: Config, store: Store, which: string, o: { identities?: string[] | undefined; allowUntrusted: boolean; json: boolean; log: Logger }): Promise<number> {
  // Loaded on demand: the replay talks gRPC to its throwaway etcd.
  const { runReplayDrill, replayDrillFrom } = await import('../continuous/replay-drill.js');
  const r = await runReplayDrill({
    ...(await replayDrillFrom(cfg, store)),
    allowUntrusted: o.allowUntrusted,
    ...(which === 'latest' ? {} : { endingAt: which }),
    ...(o.identities ? { identities: o.identities } : {}),
    log: o.log,
    signal: interruptSignal(),
  });
  if (o.json) printJson({ ...r, store: store.name });
  else {
    const steps = r.steps.map((s) => `${s.name} ${s.seconds.toFixed(1)}s`).join(', ');
    if (r.result === 'success') {
      out(`base ${r.base} + ${r.revisionsReplayed} revisions from ${r.segmentsUsed} segment(s) replayed to revision ${r.revision} give exactly backup ${r.id}: ${r.keys} keys, their values, create/mod revisions and versions (${steps})`);
    } else if (r.result === 'skipped') {
      err(`nothing to drill: ${r.error}`);
    } else {
      err(`replay drill ${r.base ?? '?'} -> ${r.id ?? '?'} FAILED (${r.reason}): ${r.error}`);
      if (r.hint) err(`  what to do: ${r.hint}`);
      err(`  steps: ${steps}`);
    }
  }
  return r.result === 'success' ? EXIT_OK : EXIT_FAILED;
}
