/**
 * Reading segments out of a store (src/continuous/segments.ts) against a
 * real local store in a temp dir: which names count, what a manifest must
 * say, signatures, and what a damaged object fails with.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { Readable } from 'node:stream';
import { encryptStream } from '../../src/bundle/encrypt.js';
import { segmentKeys } from '../../src/layout.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { keyIdOf, signManifest } from '../../src/bundle/sign.js';
import { listSegments, readSegmentRecords } from '../../src/continuous/segments.js';
import { LocalStore } from '../../src/storage/local/store.js';
import { writeSegment } from '../support/segment-writer.js';
import type { RevisionRecord } from '../../src/continuous/segment.js';
import { reasonOf } from '../../src/errors.js';

const C = 'c1';
const BASE = '20261126T100000Z-master-0';
let dir: string;
let store: LocalStore;

const recs = (from: number, n: number): RevisionRecord[] =>
  Array.from({ length: n }, (_, i) => ({ rev: from + i, time: new Date(Date.UTC(2026, 10, 26, 10, 0, i)).toISOString(), ops: [{ put: Buffer.from(`/k${i}`), value: Buffer.from([i, 0, 255]), lease: '0' }] }));

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ebd-segments-'));
  store = new LocalStore('nfs', dir);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function failure(p: Promise<unknown>): Promise<{ reason: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return { reason: reasonOf(e), message: (e as Error).message };
  }
  throw new Error('expected a failure');
}

describe('listSegments', () => {
  it('lists committed segments by their manifests only, checked against their names', async () => {
    writeSegment(dir, C, BASE, recs(11, 3), 'zstd');
    writeSegment(dir, C, BASE, recs(14, 2), 'none');
    // Not segment manifests: an object alone (uncommitted), a stray file, a nested dir.
    writeFileSync(join(dir, C, 'continuous', BASE, 'notes.json'), '{}');
    const got = await listSegments(store, C, BASE, {}, false);
    expect(got.refs.map((r) => [r.fromRev, r.toRev])).toEqual([[11, 13], [14, 15]]);
    expect(got.refs[0]!.firstTime.toISOString()).toBe('2026-11-26T10:00:00.000Z');
    expect(got.manifests.size).toBe(2);
  });

  it('refuses a manifest that says another range, base or object than its name', async () => {
    const s = writeSegment(dir, C, BASE, recs(11, 3), 'zstd');
    writeFileSync(s.manifestPath, JSON.stringify({ ...s.manifest, base: 'other' }));
    expect(await failure(listSegments(store, C, BASE, {}, false))).toMatchObject({ reason: 'manifest-invalid', message: expect.stringMatching(/does not match its name: it says base other/) });
    writeFileSync(s.manifestPath, JSON.stringify({ ...s.manifest, object: { ...s.manifest.object, key: `${C}/continuous/${BASE}/../x.seg` } }));
    expect((await failure(listSegments(store, C, BASE, {}, false))).reason).toBe('manifest-invalid');
    writeFileSync(s.manifestPath, '{"format":1');
    expect(await failure(listSegments(store, C, BASE, {}, false))).toMatchObject({ reason: 'manifest-invalid', message: expect.stringMatching(/revisions 11-13/) });
  });

  it('with trusted keys: a segment signed by one counts, an unsigned one is untrusted unless allowed', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const keyId = keyIdOf(publicKey);
    const trust = { keys: new Map([[keyId, publicKey]]) };
    const a = writeSegment(dir, C, BASE, recs(11, 3), 'zstd');
    writeFileSync(a.manifestPath, JSON.stringify(signManifest(a.manifest, { privateKey, keyId })));
    expect((await listSegments(store, C, BASE, trust, false)).refs).toHaveLength(1);
    writeSegment(dir, C, BASE, recs(14, 2), 'zstd');
    expect(await failure(listSegments(store, C, BASE, trust, false))).toMatchObject({ reason: 'signature-untrusted', message: expect.stringMatching(/segment 14-15/) });
    expect((await listSegments(store, C, BASE, trust, true)).refs).toHaveLength(2);
  });
});

describe('readSegmentRecords', () => {
  it('gives the records back byte-exact, zstd or not', async () => {
    for (const codec of ['zstd', 'none'] as const) {
      const s = writeSegment(dir, C, BASE, recs(codec === 'zstd' ? 11 : 21, 4), codec);
      const got = await readSegmentRecords(store, s.manifest, undefined);
      expect(got).toEqual(recs(s.fromRev, 4));
    }
  });

  it('a flipped byte is a checksum mismatch naming the range', async () => {
    const s = writeSegment(dir, C, BASE, recs(11, 4), 'none');
    const b = readFileSync(s.objectPath);
    b[3]! ^= 1;
    writeFileSync(s.objectPath, b);
    expect(await failure(readSegmentRecords(store, s.manifest, undefined))).toMatchObject({ reason: 'checksum-mismatch', message: expect.stringMatching(/^segment 11-14 of base/) });
  });

  it('a line that is not a record is segment-corrupt, naming the range and where', async () => {
    const s = writeSegment(dir, C, BASE, recs(11, 2), 'none');
    // The manifest agrees with the bytes (a writer bug, not damage in the store): the records themselves are wrong.
    const body = Buffer.from(`${readFileSync(s.objectPath, 'utf8')}{"rev":13,"time":"x","ops":[]}\n`);
    writeFileSync(s.objectPath, body);
    const m = { ...s.manifest, object: { ...s.manifest.object, size: body.length, rawSize: body.length, sha256: createHash('sha256').update(body).digest('hex') } };
    expect(await failure(readSegmentRecords(store, m, undefined))).toMatchObject({ reason: 'segment-corrupt', message: expect.stringMatching(/segment 11-12 of base .*: record 3 \(after revision 12\) is corrupt/) });
  });

  it('an encrypted segment (age) reads back with the identity, and a wrong one is refused', async () => {
    const age = await import('age-encryption');
    const identity = await age.generateIdentity();
    const s = writeSegment(dir, C, BASE, recs(11, 3), 'zstd');
    const cipher = Buffer.concat(await (await encryptStream(Readable.from([readFileSync(s.objectPath)]), [await age.identityToRecipient(identity)])).toArray());
    const key = segmentKeys(C, BASE, 11, 13, { codec: 'zstd', encrypted: true }).object;
    writeFileSync(join(dir, key), cipher);
    const m = { ...s.manifest, object: { ...s.manifest.object, key, encrypted: true, recipients: [await age.identityToRecipient(identity)], size: cipher.length, sha256: createHash('sha256').update(cipher).digest('hex') } };
    expect(await readSegmentRecords(store, m, [identity])).toEqual(recs(11, 3));
    expect((await failure(readSegmentRecords(store, m, [await age.generateIdentity()]))).reason).toBe('checksum-mismatch');
  });

  it('an encrypted segment without an identity asks for one', async () => {
    const s = writeSegment(dir, C, BASE, recs(11, 2), 'none');
    const m = { ...s.manifest, object: { ...s.manifest.object, encrypted: true, recipients: ['age1xyz'] } };
    expect(await failure(readSegmentRecords(store, m, undefined))).toMatchObject({ reason: 'usage', message: expect.stringMatching(/--identity/) });
  });
});
