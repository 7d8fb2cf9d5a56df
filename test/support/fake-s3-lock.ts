/**
 * S3 Object Lock (WORM) for test/support/fake-s3.ts, modelled on AWS:
 *
 * - A lock-enabled bucket is versioned. A PUT over an existing key adds a
 *   version; the one it replaces stays (noncurrent), lock and all.
 * - PutObject and CreateMultipartUpload take `x-amz-object-lock-mode` and
 *   `x-amz-object-lock-retain-until-date` (both or neither, a future date,
 *   GOVERNANCE or COMPLIANCE); a bucket without lock refuses them (400
 *   InvalidRequest "Bucket is missing Object Lock Configuration").
 * - On a lock bucket PutObject and UploadPart need Content-MD5 or an
 *   x-amz-checksum-* header (400 InvalidRequest otherwise). Checksums sent
 *   are checked on every bucket (CRC32, SHA-1, SHA-256; BadDigest on a
 *   mismatch) and echoed, as S3 does.
 * - HeadObject/GetObject report the lock and the version id.
 * - DeleteObject / DeleteObjects without a version id on a lock bucket add a
 *   delete marker: the key vanishes from listings and GET, every version
 *   stays. Each marker is recorded (`deleteMarkers`, with whether the version
 *   it hid was still locked), so a test can assert that none was made.
 * - DeleteObject with a version id removes that version, unless it is locked:
 *   403 AccessDenied (GOVERNANCE yields to `x-amz-bypass-governance-retention: true`).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { crc32 } from 'node:zlib';

export type LockMode = 'GOVERNANCE' | 'COMPLIANCE';

export interface FakeLock {
  mode: LockMode;
  until: Date;
}

/** An S3 error answer: status, code, message. */
export interface FakeError {
  status: number;
  code: string;
  message: string;
}

/** An object as the fake stores it (test/support/fake-s3.ts FakeObject). */
export interface StoredObject {
  body: Buffer;
  modified: Date;
  etag: string;
  contentType?: string;
  lock?: FakeLock;
}

/** One version of a key in a lock (versioned) bucket: an object, or a delete marker. */
export interface FakeVersion {
  versionId: string;
  at: Date;
  deleteMarker: boolean;
  /** The object as stored (absent for a delete marker). */
  object?: StoredObject;
}

export interface DeleteMarkerRecord {
  key: string;
  at: Date;
  /** The version the marker hid was under a lock that had not expired. */
  hidLocked: boolean;
}

const bad = (status: number, code: string, message: string): { error: FakeError } => ({ error: { status, code, message } });

const CHECKSUMS: Record<string, (b: Buffer) => string> = {
  'x-amz-checksum-crc32': (b) => {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(crc32(b) >>> 0);
    return out.toString('base64');
  },
  'x-amz-checksum-sha1': (b) => createHash('sha1').update(b).digest('base64'),
  'x-amz-checksum-sha256': (b) => createHash('sha256').update(b).digest('base64'),
};
/** Accepted as integrity headers but not checked (the fake computes no CRC32C / CRC64NVME). */
const UNCHECKED = ['x-amz-checksum-crc32c', 'x-amz-checksum-crc64nvme'];

export class FakeObjectLock {
  /** Every version of every key, oldest first (lock buckets only). */
  readonly versions = new Map<string, FakeVersion[]>();
  /** Delete markers made, in order. */
  readonly deleteMarkers: DeleteMarkerRecord[] = [];
  /** Versions removed for good (a DELETE naming the version). */
  readonly versionDeletes: { key: string; versionId: string; at: Date }[] = [];

  constructor(readonly enabled: boolean) {}

  /** The lock a PutObject / CreateMultipartUpload asks for, or the error S3 gives. */
  lockFrom(h: IncomingHttpHeaders): { lock?: FakeLock; error?: FakeError } {
    const mode = h['x-amz-object-lock-mode'];
    const until = h['x-amz-object-lock-retain-until-date'];
    if (mode === undefined && until === undefined) return {};
    if (!this.enabled) return bad(400, 'InvalidRequest', 'Bucket is missing Object Lock Configuration');
    if (mode === undefined || until === undefined) return bad(400, 'InvalidArgument', 'x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied');
    if (mode !== 'GOVERNANCE' && mode !== 'COMPLIANCE') return bad(400, 'InvalidArgument', 'Unknown wormMode directive.');
    const date = new Date(String(until));
    if (Number.isNaN(date.getTime())) return bad(400, 'InvalidArgument', 'The retain until date is not a valid date');
    if (date.getTime() <= Date.now()) return bad(400, 'InvalidArgument', 'The retain until date must be in the future!');
    return { lock: { mode, until: date } };
  }

  /**
   * The integrity headers of a PutObject / UploadPart body: checked when
   * sent, required on a lock bucket. Returns the checksum headers to echo.
   */
  integrity(h: IncomingHttpHeaders, body: Buffer, op: 'PutObject' | 'UploadPart'): { echo: Record<string, string>; error?: FakeError } {
    const echo: Record<string, string> = {};
    for (const [name, compute] of Object.entries(CHECKSUMS)) {
      const want = h[name];
      if (typeof want !== 'string') continue;
      if (compute(body) !== want) return { echo, ...bad(400, 'BadDigest', `The ${name.slice('x-amz-checksum-'.length).toUpperCase()} you specified did not match the calculated checksum.`) };
      echo[name] = want;
    }
    for (const name of UNCHECKED) if (typeof h[name] === 'string') echo[name] = h[name] as string;
    if (this.enabled && h['content-md5'] === undefined && Object.keys(echo).length === 0) {
      return { echo, ...bad(400, 'InvalidRequest', `Content-MD5 OR x-amz-checksum- HTTP header is required for ${op === 'PutObject' ? 'Put Object' : 'Upload Part'} requests with Object Lock parameters`) };
    }
    return { echo };
  }

  /** An object became current under `key`: on a lock bucket a new version. Returns the headers to answer with. */
  stored(key: string, object: StoredObject): Record<string, string> {
    if (!this.enabled) return {};
    const v: FakeVersion = { versionId: newVersionId(), at: new Date(), deleteMarker: false, object };
    this.versions.set(key, [...(this.versions.get(key) ?? []), v]);
    return { 'x-amz-version-id': v.versionId };
  }

  /** HeadObject / GetObject: the current version's id and lock. */
  headers(key: string): Record<string, string> {
    const v = this.current(key);
    if (!v || v.deleteMarker) return {};
    const lock = v.object?.lock;
    return {
      'x-amz-version-id': v.versionId,
      ...(lock ? { 'x-amz-object-lock-mode': lock.mode, 'x-amz-object-lock-retain-until-date': lock.until.toISOString() } : {}),
    };
  }

  /**
   * A DELETE of `key`; `remove(key)` drops it from the current view (what
   * listings and GET see). Without a lock configuration: a plain delete.
   */
  delete(key: string, versionId: string | undefined, h: IncomingHttpHeaders, remove: (key: string) => void): { status: number; headers: Record<string, string>; error?: FakeError } {
    if (!this.enabled) {
      if (versionId !== undefined && versionId !== 'null') return { status: 400, headers: {}, ...bad(400, 'InvalidArgument', 'Invalid version id specified') };
      remove(key);
      return { status: 204, headers: {} };
    }
    const list = this.versions.get(key) ?? [];
    if (versionId === undefined) {
      const hid = this.current(key);
      const marker: FakeVersion = { versionId: newVersionId(), at: new Date(), deleteMarker: true };
      this.versions.set(key, [...list, marker]);
      this.deleteMarkers.push({ key, at: marker.at, hidLocked: !!hid && !hid.deleteMarker && isLocked(hid.object?.lock) });
      remove(key);
      return { status: 204, headers: { 'x-amz-delete-marker': 'true', 'x-amz-version-id': marker.versionId } };
    }
    const i = list.findIndex((v) => v.versionId === versionId);
    if (i < 0) return { status: 404, headers: {}, ...bad(404, 'NoSuchVersion', 'The specified version does not exist.') };
    const lock = list[i]!.object?.lock;
    const bypass = String(h['x-amz-bypass-governance-retention'] ?? '').toLowerCase() === 'true';
    if (isLocked(lock) && !(lock!.mode === 'GOVERNANCE' && bypass)) return { status: 403, headers: {}, ...bad(403, 'AccessDenied', 'Access Denied because object protected by object lock.') };
    const wasCurrent = i === list.length - 1;
    list.splice(i, 1);
    this.versionDeletes.push({ key, versionId, at: new Date() });
    if (wasCurrent) remove(key); // the caller restores the new current version, if any (see currentObject)
    return { status: 204, headers: { 'x-amz-version-id': versionId } };
  }

  /** The object a key shows after its current version went away (undefined: absent or a delete marker). */
  currentObject(key: string): StoredObject | undefined {
    const v = this.current(key);
    return v && !v.deleteMarker ? v.object : undefined;
  }

  /** Versions of `key` still stored (objects, not markers): what a delete marker leaves behind. */
  objectVersions(key: string): FakeVersion[] {
    return (this.versions.get(key) ?? []).filter((v) => !v.deleteMarker);
  }

  clear(): void {
    this.versions.clear();
    this.deleteMarkers.length = 0;
    this.versionDeletes.length = 0;
  }

  private current(key: string): FakeVersion | undefined {
    const list = this.versions.get(key);
    return list?.[list.length - 1];
  }
}

export function isLocked(lock: FakeLock | undefined, now = Date.now()): boolean {
  return !!lock && lock.until.getTime() > now;
}

function newVersionId(): string {
  return randomBytes(16).toString('base64url');
}
