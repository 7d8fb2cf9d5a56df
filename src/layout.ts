import { join } from 'node:path';

/*
 * Where everything lives: the keys of the stores and the paths under
 * workDir. Every other module asks here and spells no key or path itself,
 * because the remote layout is a contract (other nodes, older versions and
 * people with only `aws s3 ls` read it): it must not drift in one place.
 *
 * Remote: `<prefix>/<cluster>/<backup-id>/{backup.tar[.zst][.age],manifest.json}`
 * and `<backup-id>/pins/<stamp>-<pin|unpin>-<nonce>.json` markers; the store
 * adds its own prefix. Committed objects are never rewritten.
 * workDir: `outbox/<id>/{backup.tar[.zst][.age],manifest.json,status.json}`,
 * `runs/<id>/` (a run's scratch), `state.json`, `run.lock`, `outbox.lock`,
 * `tmp/` (verify), `drill/` (restore drills), `replay/` (restores to a time), `cache/<store>/<backup-id>.json`
 * (copies of immutable manifests and pin markers),
 * `continuous-outbox/<base-id>/<from>-<to>/` (sealed segments some store has not taken yet).
 */

export const MANIFEST_NAME = 'manifest.json';
export const BUNDLE_NAME = 'backup.tar';
/** How a bundle may be compressed; each codec gives the stored object its own name (bundleName). */
export const CODECS = ['zstd', 'none'] as const;
export type Codec = (typeof CODECS)[number];

// ---- backup ids

/** `20261125T020000Z-master-0`: sorts by time, unique per node per second. */
export function backupId(at: Date, node: string): string {
  const iso = at.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
  return `${iso}-${node}`;
}

const ID_RE = /^(\d{8}T\d{6}Z)-(.+)$/;

export function parseBackupId(id: string): { time: Date; node: string } | undefined {
  const m = ID_RE.exec(id);
  if (!m) return undefined;
  const s = m[1]!;
  const time = new Date(`${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}Z`);
  return Number.isNaN(time.getTime()) ? undefined : { time, node: m[2]! };
}

/** The node that took a backup, parsed from its id (never matched by suffix: master-0 is not ocp-master-0). */
export function nodeOfId(id: string): string | undefined {
  return parseBackupId(id)?.node;
}

// ---- remote keys

/** What a stored bundle is called: `backup.tar`, `.zst` when compressed, `.age` after that when encrypted. */
export function bundleName(o: { codec?: Codec; encrypted: boolean }): string {
  return `${BUNDLE_NAME}${o.codec === 'zstd' ? '.zst' : ''}${o.encrypted ? '.age' : ''}`;
}

/** Every name a backup's own object may have (a manifest may only speak for one of these). */
export const BUNDLE_NAMES: readonly string[] = CODECS.flatMap((codec) => [false, true].map((encrypted) => bundleName({ codec, encrypted })));

/** The prefix under which a store holds one cluster's backups. */
export function clusterPrefix(cluster: string): string {
  return `${cluster}/`;
}

/** Remote layout: `<prefix>/<cluster>/<backup-id>/{backup.tar[.zst][.age],manifest.json}`; the store adds its own prefix. */
export function objectKeys(cluster: string, id: string, o: { codec?: Codec; encrypted: boolean }): { dir: string; object: string; manifest: string } {
  const dir = `${cluster}/${id}`;
  return { dir, object: `${dir}/${bundleName(o)}`, manifest: `${dir}/${MANIFEST_NAME}` };
}

/** The key of a backup's manifest, the commit marker. */
export function manifestKey(cluster: string, id: string): string {
  return objectKeys(cluster, id, { encrypted: false }).manifest;
}

/** The manifest that commits an object: beside it in the backup's directory. */
export function manifestKeyOf(objectKey: string): string {
  return objectKey.replace(/[^/]+$/, MANIFEST_NAME);
}

/** Whether a key may be this backup's own object: a manifest may only speak for its own object (prune deletes what it names). */
export function isOwnObject(cluster: string, id: string, key: string): boolean {
  return BUNDLE_NAMES.some((n) => `${cluster}/${id}/${n}` === key);
}

/**
 * A listed key of this cluster, split into the backup id (its directory) and
 * the name within it; undefined for a key outside any backup directory.
 */
export function splitBackupKey(cluster: string, key: string): { id: string; name: string } | undefined {
  // Segments of continuous backups are not backups: listing, `latest` and retention never see them as one
  // (the catalog's listing leaves them out unread; this keeps any other listing of the cluster honest).
  if (key.startsWith(continuousPrefix(cluster))) return undefined;
  const rest = key.slice(clusterPrefix(cluster).length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  return { id: rest.slice(0, slash), name: rest.slice(slash + 1) };
}

// ---- pin markers

/**
 * Pins are small immutable marker objects beside the manifest, never a
 * rewrite of it: `<cluster>/<id>/pins/20261126T192400.123Z-pin-1a2b3c4d.json`.
 * The name carries all that planning needs (when, pin or unpin), so a
 * listing alone says whether a backup is pinned; the body adds the reason
 * and who. The nonce keeps two markers of the same millisecond apart.
 */
export const PINS_DIR = 'pins';
export type PinOp = 'pin' | 'unpin';

export function pinMarkerKey(cluster: string, id: string, at: Date, op: PinOp, nonce: string): string {
  const stamp = at.toISOString().replace(/[-:]/g, '');
  return `${cluster}/${id}/${PINS_DIR}/${stamp}-${op}-${nonce}.json`;
}

const PIN_MARKER_RE = /^pins\/(\d{8}T\d{6}\.\d{3}Z)-(pin|unpin)-([0-9a-f]{1,32})\.json$/;

/** A name within a backup directory (as splitBackupKey gives it) read as a pin marker; undefined when it is none. */
export function parsePinMarkerName(name: string): { at: Date; op: PinOp; name: string } | undefined {
  const m = PIN_MARKER_RE.exec(name);
  if (!m) return undefined;
  const s = m[1]!;
  const at = new Date(`${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13)}`);
  return Number.isNaN(at.getTime()) ? undefined : { at, op: m[2] as PinOp, name };
}

// ---- workDir

/** Sealed bundles waiting for (or kept after) delivery, one directory per backup id. */
export function outboxDir(workDir: string): string {
  return join(workDir, 'outbox');
}

export function outboxEntryDir(workDir: string, id: string): string {
  return join(outboxDir(workDir), id);
}

/** The sealed object in an outbox entry, named as in the stores (`backup.tar[.zst][.age]`). */
export function outboxBundlePath(entryDir: string, o: { codec?: Codec; encrypted: boolean }): string {
  return join(entryDir, bundleName(o));
}

/** The sealed manifest of an outbox entry: written last, so an entry without it is not sealed. */
export function outboxManifestPath(entryDir: string): string {
  return join(entryDir, MANIFEST_NAME);
}

/** What each store holds of an outbox entry (delivery attempts, backoff). */
export function outboxStatusPath(entryDir: string): string {
  return join(entryDir, 'status.json');
}

/** Scratch of the runs: snapshots and keys of a run, removed when it ends (or by the next lock holder). */
export function runsDir(workDir: string): string {
  return join(workDir, 'runs');
}

export function runScratchDir(workDir: string, id: string): string {
  return join(runsDir(workDir), id);
}

/** What the daemon remembers across restarts. */
export function statePath(workDir: string): string {
  return join(workDir, 'state.json');
}

/** One run at a time (run.lock); one outbox delivery at a time (outbox.lock). */
export type LockName = 'run.lock' | 'outbox.lock';

export function lockPath(workDir: string, name: LockName): string {
  return join(workDir, name);
}

/** Scratch of `verify`: a backup is fetched here and removed after the check. */
export function verifyScratchDir(workDir: string): string {
  return join(workDir, 'tmp');
}

/**
 * Local copies of one store's immutable catalog objects (manifests, pin
 * markers), one file per backup id. Only a cache: the listing decides what
 * exists, so a deletion or addition elsewhere is never hidden.
 */
export function catalogCacheDir(workDir: string, storeName: string): string {
  return join(workDir, 'cache', storeName.replace(/[^A-Za-z0-9._-]/g, '_'));
}

export function catalogCachePath(cacheDir: string, id: string): string {
  return join(cacheDir, `${id}.json`);
}

/** Scratch of restore drills. */
export function drillScratchDir(workDir: string): string {
  return join(workDir, 'drill');
}

/** Scratch of restores to a time (`fetch`/`restore --at` with segments): the throwaway etcd the segments are replayed into. */
export function replayScratchDir(workDir: string): string {
  return join(workDir, 'replay');
}

// ---- continuous backups (docs/continuous.md; the records and manifest schema in src/continuous/segment.ts)

/** Revisions in segment names: 20 digits hold any uint64, and names sort by revision. */
const REV_DIGITS = 20;

function padRev(rev: number): string {
  if (!Number.isSafeInteger(rev) || rev < 1) throw new Error(`segment: bad revision ${rev}`);
  return String(rev).padStart(REV_DIGITS, '0');
}

/** `<from>-<to>` of a segment's object and manifest names. */
export function segmentStem(fromRev: number, toRev: number): string {
  if (toRev < fromRev) throw new Error(`segment: range ${fromRev}-${toRev} is backwards`);
  return `${padRev(fromRev)}-${padRev(toRev)}`;
}

/** The object's file name: `.seg`, `.zst` when compressed, `.age` after that when encrypted. */
export function segmentObjectName(fromRev: number, toRev: number, o: { codec: Codec; encrypted: boolean }): string {
  return `${segmentStem(fromRev, toRev)}.seg${o.codec === 'zstd' ? '.zst' : ''}${o.encrypted ? '.age' : ''}`;
}

export function segmentManifestName(fromRev: number, toRev: number): string {
  return `${segmentStem(fromRev, toRev)}.json`;
}

const MANIFEST_NAME_RE = /^(\d{20})-(\d{20})\.json$/;

/** The revision range a segment manifest's file name carries, or undefined for anything else. */
export function parseSegmentManifestName(name: string): { fromRev: number; toRev: number } | undefined {
  const m = MANIFEST_NAME_RE.exec(name);
  if (!m) return undefined;
  const fromRev = Number(m[1]);
  const toRev = Number(m[2]);
  if (!Number.isSafeInteger(fromRev) || !Number.isSafeInteger(toRev) || fromRev < 1 || toRev < fromRev) return undefined;
  return { fromRev, toRev };
}

/** Where a cluster's segments live: `<cluster>/continuous/`; one directory per base backup. */
export function continuousPrefix(cluster: string): string {
  return `${cluster}/continuous/`;
}

/** `<cluster>/continuous/<base-id>/{<from>-<to>.seg[.zst][.age], <from>-<to>.json}`: the object, and its manifest (written last). */
export function segmentKeys(cluster: string, baseId: string, fromRev: number, toRev: number, o: { codec: Codec; encrypted: boolean }): { dir: string; object: string; manifest: string } {
  const dir = `${continuousPrefix(cluster)}${baseId}`;
  return { dir, object: `${dir}/${segmentObjectName(fromRev, toRev, o)}`, manifest: `${dir}/${segmentManifestName(fromRev, toRev)}` };
}

/** Sealed segments waiting for a store that did not take them yet: `continuous-outbox/<base-id>/<from>-<to>/`. */
export function continuousOutboxDir(workDir: string): string {
  return join(workDir, 'continuous-outbox');
}

/** One sealed segment: its object (named as in the stores), its manifest, and which stores still owe it (status.json). */
export function continuousOutboxEntryDir(workDir: string, baseId: string, fromRev: number, toRev: number): string {
  return join(continuousOutboxDir(workDir), baseId, segmentStem(fromRev, toRev));
}

/**
 * A segment being written (its last revision not known yet): `continuous-outbox/<base-id>/.open-<from>/`,
 * renamed to its entry directory once sealed. Holding no manifest, it is dropped by the outbox's load after a crash.
 */
export function continuousOutboxOpenDir(workDir: string, baseId: string, fromRev: number): string {
  return join(continuousOutboxDir(workDir), baseId, `.open-${padRev(fromRev)}`);
}
