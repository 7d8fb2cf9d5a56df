/**
 * Putting one sealed segment into one store (docs/continuous.md), as
 * src/run/deliver.ts does for a bundle: the object, the proof of the remote
 * copy (size + sha256 read back, or what the store's verify setting says),
 * then the manifest LAST, created only if absent: until it exists the
 * segment does not exist for a reader. Also the listing of what a store
 * holds under a base (where a chain continues after a failover).
 */
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { BackupError, messageOf, reasonOf, type Reason } from '../errors.js';
import { continuousPrefix, parseSegmentManifestName, segmentKeys } from '../layout.js';
import type { Logger } from '../log.js';
import { ObjectExistsError, type Store } from '../storage/store.js';
import { verifyRemoteCopy } from '../storage/verify.js';
import { segmentManifestSchema, type SegmentManifest } from './segment.js';
import { serializeSegmentManifest, type SealedSegment } from './seal.js';

export type SegmentOutcome = { ok: true; proof: string } | { ok: false; reason: Reason; error: string };

/** A segment manifest is small: more is not one of ours. */
const MAX_MANIFEST_BYTES = 64 * 1024;

async function readSegmentManifest(store: Store, key: string, signal?: AbortSignal): Promise<SegmentManifest | undefined> {
  if ((await store.head(key, { signal })) === undefined) return undefined;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of await store.get(key, { signal })) {
    n += (c as Buffer).length;
    if (n > MAX_MANIFEST_BYTES) throw new BackupError('manifest-invalid', `store ${store.name}: ${key} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    chunks.push(c as Buffer);
  }
  return segmentManifestSchema.parse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
}

/**
 * Delivers `seg` to `store`. A manifest already committed for this range
 * means delivered: the same object (a retry after a crash), or another
 * writer's copy of the same revisions (a failover: etcd gave both writers
 * the same events; only the wall times differ), which readers use as well.
 */
export async function deliverSegment(store: Store, seg: SealedSegment, log: Logger, signal?: AbortSignal): Promise<SegmentOutcome> {
  const m = seg.manifest;
  const keys = segmentKeys(m.cluster, m.base, m.fromRev, m.toRev, m.object);
  let wroteObject = false;
  try {
    const before = await readSegmentManifest(store, keys.manifest, signal).catch((e) => {
      throw new BackupError(reasonOf(e) === 'internal' ? 'store-unavailable' : reasonOf(e), `store ${store.name}: cannot read ${keys.manifest}: ${messageOf(e)}`);
    });
    if (before) {
      if (before.object.sha256 !== m.object.sha256) log.info({ store: store.name, key: keys.manifest, node: before.node }, 'segment range already committed by another writer (failover overlap): kept theirs');
      return { ok: true, proof: 'committed-before' };
    }
    wroteObject = true;
    const put = await store.putFile(keys.object, seg.objectPath, { size: m.object.size, signal });
    if (put.size !== m.object.size) throw new BackupError('upload-failed', `store ${store.name} accepted ${put.size} bytes of ${m.object.size}`);
    const v = await verifyRemoteCopy(store, keys.object, m.object.size, m.object.sha256, store.settings.verify, { serverHash: true, signal });
    try {
      await store.put(keys.manifest, Readable.from([serializeSegmentManifest(m)]), { ifAbsent: true, signal });
    } catch (e) {
      if (!(e instanceof ObjectExistsError)) throw e;
      wroteObject = false; // another writer committed this range meanwhile: its manifest may name this very key
      log.info({ store: store.name, key: keys.manifest }, 'segment range committed by another writer meanwhile: kept theirs');
    }
    return { ok: true, proof: v.proof };
  } catch (e) {
    if (wroteObject) await removeUncommitted(store, keys.manifest, keys.object);
    const reason = reasonOf(e) === 'internal' ? 'upload-failed' : reasonOf(e);
    return { ok: false, reason, error: messageOf(e) };
  }
}

/** An object without its manifest is no segment: removed while the store says no manifest commits it. */
async function removeUncommitted(store: Store, manifestKey: string, objectKey: string): Promise<void> {
  try {
    if ((await store.head(manifestKey)) === undefined) await store.delete([objectKey]);
  } catch {
    // The store cannot say now: a manifest-less object is never read as a segment.
  }
}

/** The revision ranges committed under a base in a store, from the listing alone (manifest names carry them). */
export async function listCommittedRanges(store: Store, cluster: string, baseId: string, signal?: AbortSignal): Promise<{ fromRev: number; toRev: number }[]> {
  const dir = `${continuousPrefix(cluster)}${baseId}/`;
  const out: { fromRev: number; toRev: number }[] = [];
  for await (const o of store.list(dir, { signal })) {
    const name = o.key.slice(dir.length);
    const r = name.includes('/') ? undefined : parseSegmentManifestName(name);
    if (r) out.push(r);
  }
  return out;
}

/** A sealed segment read back from its outbox entry (after a restart). */
export async function readSealed(dir: string, manifestPath: string, objectPath: string): Promise<SealedSegment> {
  const manifest = segmentManifestSchema.parse(JSON.parse(await readFile(manifestPath, 'utf8')));
  return { dir, objectPath, manifest };
}
