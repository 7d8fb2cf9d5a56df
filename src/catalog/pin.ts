import { Readable } from 'node:stream';
import { readFile } from 'node:fs/promises';
import { parseManifest, serializeManifest, type Manifest } from '../bundle/manifest.js';
import { writeFileAtomic } from '../fsutil.js';
import { manifestKey, outboxEntryDir, outboxManifestPath } from '../layout.js';
import type { Config } from '../config/load.js';
import { BackupError, messageOf } from '../errors.js';
import type { Store } from '../storage/store.js';
import { readManifest } from './catalog.js';

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
 * Pins live in the manifest, so a pin travels with the backup and any node
 * or CLI sees it. Every store holding the backup gets the rewritten manifest.
 */
export async function setPinned(cfg: Config, stores: Store[], id: string, pinned: boolean, reason?: string): Promise<PinOutcome> {
  const out: PinOutcome = { id, pinned, stores: {} };
  const key = manifestKey(cfg.cluster, id);
  for (const store of stores) {
    try {
      if (!(await store.head(key))) {
        out.stores[store.name] = { result: 'absent' };
        continue;
      }
      const m = setPin(await readManifest(store, key), pinned, reason);
      await store.put(key, Readable.from([serializeManifest(m)]));
      out.stores[store.name] = { result: 'success' };
    } catch (e) {
      out.stores[store.name] = { result: 'failed', error: messageOf(e) };
    }
  }
  // A bundle still owed to some store carries its manifest in the outbox: keep that copy in step,
  // or a later delivery would commit the old pin state.
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
