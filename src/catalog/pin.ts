import { Readable } from 'node:stream';
import { readFile } from 'node:fs/promises';
import { parseManifest, serializeManifest, type Manifest } from '../bundle/manifest.js';
import { writeFileAtomic } from '../fsutil.js';
import { randomBytes } from 'node:crypto';
import { manifestKey, outboxEntryDir, outboxManifestPath, pinMarkerKey } from '../layout.js';
import type { Config } from '../config/load.js';
import { BackupError, messageOf } from '../errors.js';
import type { Store } from '../storage/store.js';
import { pinMarkerBody } from './pin-marker.js';

/** Checking and marking one store: two small requests. */
const PIN_DEADLINE_MS = 60_000;

export interface PinOutcome {
  id: string;
  pinned: boolean;
  stores: Record<string, { result: 'success' | 'failed' | 'absent'; error?: string }>;
}

function setPin(m: Manifest, pinned: boolean, reason?: string): Manifest {
  m.pinned = pinned;
  if (pinned && reason) m.pinReason = reason;
  if (!pinned) delete m.pinReason;
  return m;
}

/**
 * A pin is a marker object beside the backup's manifest in every store that
 * holds it (layout.ts pinMarkerKey); the committed manifest is never
 * rewritten, so it stays immutable (WORM buckets, every node's cache) and
 * any node or CLI sees the pin from a listing. The newest marker wins.
 */
export async function setPinned(cfg: Config, stores: Store[], id: string, pinned: boolean, reason?: string): Promise<PinOutcome> {
  const out: PinOutcome = { id, pinned, stores: {} };
  const key = manifestKey(cfg.cluster, id);
  const at = new Date();
  const op = pinned ? 'pin' : 'unpin';
  const markerKey = pinMarkerKey(cfg.cluster, id, at, op, randomBytes(4).toString('hex'));
  const body = pinMarkerBody(id, op, at, cfg.node, pinned ? reason : undefined);
  for (const store of stores) {
    try {
      const signal = AbortSignal.timeout(PIN_DEADLINE_MS);
      if (!(await store.head(key, { signal }))) {
        out.stores[store.name] = { result: 'absent' };
        continue;
      }
      const bytes = Buffer.from(body);
      await store.put(markerKey, Readable.from([bytes]), { signal, size: bytes.length, ifAbsent: true });
      out.stores[store.name] = { result: 'success' };
    } catch (e) {
      out.stores[store.name] = { result: 'failed', error: messageOf(e) };
    }
  }
  // A bundle still owed to some store carries its manifest in the outbox, not yet committed there:
  // keep that copy in step, or a later delivery would commit the old pin state.
  const boxManifest = outboxManifestPath(outboxEntryDir(cfg.workDir, id));
  try {
    const m = setPin(parseManifest(await readFile(boxManifest), `outbox ${id}`), pinned, reason);
    await writeFileAtomic(boxManifest, serializeManifest(m));
  } catch {
    /* not in the outbox */
  }
  const results = Object.values(out.stores);
  if (results.every((r) => r.result === 'absent')) {
    throw new BackupError('not-found', `no store holds a committed backup with id ${id}`, { hint: 'run `etcd-backupd list` for the ids' });
  }
  if (results.some((r) => r.result === 'failed')) {
    const failed = Object.entries(out.stores).filter(([, r]) => r.result === 'failed');
    throw new BackupError('store-unavailable', `could not ${pinned ? 'pin' : 'unpin'} ${id} in ${failed.map(([n, r]) => `${n} (${r.error})`).join(', ')}`);
  }
  return out;
}
