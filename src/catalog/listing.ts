import { MANIFEST_NAME, parseBackupId, parsePinMarkerName, splitBackupKey, type PinOp } from '../layout.js';
import type { ObjectInfo } from '../storage/store.js';

/**
 * What a listing alone says about a store's backups, before any manifest is
 * read: the backup directories, which of them are committed (hold a
 * manifest), when and where each was taken (from its id) and its pin
 * markers. Pure, so planning what to read is tested from tables.
 */
export interface PinEvent {
  at: Date;
  op: PinOp;
  key: string;
  version: string;
}

export interface ListedBackup {
  id: string;
  /** From the id; undefined for a directory whose name is not an id. */
  time?: Date;
  node?: string;
  /** Every key in the backup's directory, in listing order. */
  keys: string[];
  /** The manifest, when the backup is committed: its key and the version the listing shows. */
  manifest?: { key: string; version: string };
  /** Pin markers, oldest first. */
  pins: PinEvent[];
  /** The newest modification time of any of its objects. */
  newest?: Date;
}

/**
 * A version tag for an object as listed: the ETag where the store has one,
 * else size and modification time. A cached copy is used only while the
 * listing shows the same tag.
 */
export function versionOf(o: ObjectInfo): string {
  return o.etag ? `etag:${o.etag}:${o.size}` : `mtime:${o.modifiedAt?.getTime() ?? 'none'}:${o.size}`;
}

/** Groups a listing of the cluster prefix by backup directory; newest id first. */
export function groupListing(cluster: string, objects: Iterable<ObjectInfo>): ListedBackup[] {
  const byId = new Map<string, ListedBackup>();
  for (const obj of objects) {
    const where = splitBackupKey(cluster, obj.key);
    if (!where) continue;
    let e = byId.get(where.id);
    if (!e) {
      const parsed = parseBackupId(where.id);
      e = { id: where.id, keys: [], pins: [], ...(parsed ? { time: parsed.time, node: parsed.node } : {}) };
      byId.set(where.id, e);
    }
    e.keys.push(obj.key);
    if (where.name === MANIFEST_NAME) e.manifest = { key: obj.key, version: versionOf(obj) };
    const pin = parsePinMarkerName(where.name);
    if (pin) e.pins.push({ at: pin.at, op: pin.op, key: obj.key, version: versionOf(obj) });
    if (obj.modifiedAt && (!e.newest || obj.modifiedAt > e.newest)) e.newest = obj.modifiedAt;
  }
  const out = [...byId.values()];
  for (const e of out) e.pins.sort((a, b) => a.at.getTime() - b.at.getTime() || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return out.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

/**
 * Whether a backup is pinned: the newest marker decides; without markers,
 * the manifest's own flag (a pin taken at backup time, or one written into
 * the manifest by a version before markers).
 */
export function pinnedState(manifestPinned: boolean, pins: readonly PinEvent[]): { pinned: boolean; marker?: PinEvent } {
  const last = pins[pins.length - 1];
  return last ? { pinned: last.op === 'pin', marker: last } : { pinned: manifestPinned };
}
