import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError } from '../../src/errors.js';
import {
  BboltFormatError,
  checkMetaPage,
  chooseMeta,
  crc32c,
  fnv1a64,
  parseBucketValue,
  readBranchChildren,
  readFreelistIds,
  readLeafElements,
  revisionMain,
} from '../../src/etcd/bbolt.js';
import { inspectSnapshot, verifySnapshotTrailer } from '../../src/etcd/snapshot.js';

const PS = 4096;

// ---------------------------------------------------------------------------
// A tiny bbolt writer, test-only, for crafted (and deliberately broken) files.

function metaPage(id: number, o: { root: number; freelist: number; pgid: number; txid: number; pageSize?: number }): Buffer {
  const b = Buffer.alloc(PS);
  b.writeBigUInt64LE(BigInt(id), 0);
  b.writeUInt16LE(0x04, 8);
  const m = 16;
  b.writeUInt32LE(0xed0cdaed, m);
  b.writeUInt32LE(2, m + 4);
  b.writeUInt32LE(o.pageSize ?? PS, m + 8);
  b.writeBigUInt64LE(BigInt(o.root), m + 16);
  b.writeBigUInt64LE(o.freelist < 0 ? 0xffffffffffffffffn : BigInt(o.freelist), m + 32);
  b.writeBigUInt64LE(BigInt(o.pgid), m + 40);
  b.writeBigUInt64LE(BigInt(o.txid), m + 48);
  b.writeBigUInt64LE(fnv1a64(b.subarray(m, m + 56)), m + 56);
  return b;
}

type Entry = { key: Buffer | string; value: Buffer | string; bucket?: boolean };

/** A leaf page (size = whole pages, or exact for inline pages when size is undefined). */
function leafPage(id: number, entries: Entry[], size?: number): Buffer {
  const ks = entries.map((e) => Buffer.from(e.key));
  const vs = entries.map((e) => Buffer.from(e.value));
  const dataLen = ks.reduce((n, k, i) => n + k.length + vs[i]!.length, 0);
  const need = 16 + 16 * entries.length + dataLen;
  const len = size ?? need;
  const b = Buffer.alloc(Math.max(len, need));
  b.writeBigUInt64LE(BigInt(id), 0);
  b.writeUInt16LE(0x02, 8);
  b.writeUInt16LE(entries.length, 10);
  b.writeUInt32LE(size ? Math.ceil(b.length / PS) - 1 : 0, 12);
  let data = 16 + 16 * entries.length;
  entries.forEach((e, i) => {
    const el = 16 + 16 * i;
    b.writeUInt32LE(e.bucket ? 1 : 0, el);
    b.writeUInt32LE(data - el, el + 4);
    b.writeUInt32LE(ks[i]!.length, el + 8);
    b.writeUInt32LE(vs[i]!.length, el + 12);
    ks[i]!.copy(b, data);
    vs[i]!.copy(b, data + ks[i]!.length);
    data += ks[i]!.length + vs[i]!.length;
  });
  return b;
}

function branchPage(id: number, children: Array<[string, number]>): Buffer {
  const b = Buffer.alloc(PS);
  b.writeBigUInt64LE(BigInt(id), 0);
  b.writeUInt16LE(0x01, 8);
  b.writeUInt16LE(children.length, 10);
  let data = 16 + 16 * children.length;
  children.forEach(([k, pg], i) => {
    const el = 16 + 16 * i;
    b.writeUInt32LE(data - el, el);
    b.writeUInt32LE(k.length, el + 4);
    b.writeBigUInt64LE(BigInt(pg), el + 8);
    b.write(k, data, 'latin1');
    data += k.length;
  });
  return b;
}

function freelistPage(id: number, ids: number[]): Buffer {
  const b = Buffer.alloc(PS);
  b.writeBigUInt64LE(BigInt(id), 0);
  b.writeUInt16LE(0x10, 8);
  b.writeUInt16LE(ids.length, 10);
  ids.forEach((x, i) => b.writeBigUInt64LE(BigInt(x), 16 + 8 * i));
  return b;
}

function bucketRef(root: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(root), 0);
  return b;
}

function inlineBucket(entries: Entry[]): Buffer {
  return Buffer.concat([bucketRef(0), leafPage(0, entries)]);
}

function withTrailer(db: Buffer): Buffer {
  return Buffer.concat([db, createHash('sha256').update(db).digest()]);
}

function rev(main: number, sub = 0): Buffer {
  const b = Buffer.alloc(17);
  b.writeBigUInt64BE(BigInt(main), 0);
  b[8] = 0x5f;
  b.writeBigUInt64BE(BigInt(sub), 9);
  return b;
}

/**
 * Pages: 0,1 meta | 2 freelist (lists page 7) | 3 root leaf | 4 branch of "key"
 * | 5,6 leaves of "key" | 7 free.  Top-level buckets: "key" (paged), "meta" (inline).
 */
function sampleDb(over: Partial<Record<number, Buffer>> = {}): Buffer {
  const pages: Buffer[] = [
    metaPage(0, { root: 3, freelist: 2, pgid: 8, txid: 10 }),
    metaPage(1, { root: 3, freelist: 2, pgid: 8, txid: 9 }),
    freelistPage(2, [7]),
    leafPage(
      3,
      [
        { key: 'key', value: bucketRef(4), bucket: true },
        { key: 'meta', value: inlineBucket([{ key: 'consistent_index', value: Buffer.from([0, 0, 0, 0, 0, 0, 0, 9]) }]), bucket: true },
      ],
      PS,
    ),
    branchPage(4, [
      [rev(2).toString('latin1'), 5],
      [rev(4).toString('latin1'), 6],
    ]),
    leafPage(5, [{ key: rev(2), value: 'a' }, { key: rev(3), value: 'bb' }], PS),
    leafPage(6, [{ key: rev(4), value: 'ccc' }], PS),
    Buffer.alloc(PS),
  ];
  for (const [i, p] of Object.entries(over)) pages[Number(i)] = p!;
  return Buffer.concat(pages);
}

function expectedSampleHash(): number {
  let h = 0;
  for (const piece of [
    Buffer.from('key'),
    rev(2), Buffer.from('a'),
    rev(3), Buffer.from('bb'),
    rev(4), Buffer.from('ccc'),
    Buffer.from('meta'),
    Buffer.from('consistent_index'), Buffer.from([0, 0, 0, 0, 0, 0, 0, 9]),
  ]) {
    h = crc32c(piece, h);
  }
  return h;
}

// ---------------------------------------------------------------------------

describe('hash primitives', () => {
  it('FNV-1a 64 matches the published test vectors', () => {
    expect(fnv1a64(Buffer.from(''))).toBe(0xcbf29ce484222325n);
    expect(fnv1a64(Buffer.from('a'))).toBe(0xaf63dc4c8601ec8cn);
    expect(fnv1a64(Buffer.from('foobar'))).toBe(0x85944171f73967e8n);
  });

  it('CRC-32C matches the check value and chains like a streaming hash', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.from('56789'), crc32c(Buffer.from('1234')))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0), 0xe3069283)).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
  });

  it('reads etcd revisions from key bucket keys', () => {
    expect(revisionMain(rev(12345, 7))).toBe(12345);
    expect(() => revisionMain(Buffer.from('short'))).toThrow(BboltFormatError);
  });
});

describe('meta pages', () => {
  const good = metaPage(0, { root: 3, freelist: 2, pgid: 8, txid: 10 });

  it('accepts a well-formed meta page', () => {
    const m = checkMetaPage(good, 0);
    expect(m.ok).toBe(true);
    if (m.ok) expect(m.meta).toMatchObject({ pageSize: PS, root: 3, freelist: 2, pgid: 8, txid: 10n });
  });

  it.each([
    ['magic', 16],
    ['version', 20],
    ['page size', 24],
    ['root', 32],
    ['high-water mark', 56],
    ['txid', 64],
    ['checksum', 72],
  ])('rejects a flipped %s byte', (_name, off) => {
    const b = Buffer.from(good);
    b[off]! ^= 0x01;
    expect(checkMetaPage(b, 0).ok).toBe(false);
  });

  it('rejects wrong page header flags / id, a short buffer and a silly page size', () => {
    const flags = Buffer.from(good);
    flags[8] = 0x02;
    expect(checkMetaPage(flags, 0).ok).toBe(false);
    expect(checkMetaPage(good, 1).ok).toBe(false);
    expect(checkMetaPage(good.subarray(0, 50), 0).ok).toBe(false);
    expect(checkMetaPage(metaPage(0, { root: 3, freelist: 2, pgid: 8, txid: 1, pageSize: 3000 }), 0).ok).toBe(false);
  });

  it('chooses the valid meta with the highest txid, and fails when neither is valid', () => {
    const m0 = checkMetaPage(metaPage(0, { root: 3, freelist: 2, pgid: 8, txid: 5 }), 0);
    const m1 = checkMetaPage(metaPage(1, { root: 4, freelist: 2, pgid: 9, txid: 6 }), 1);
    expect(chooseMeta(m0, m1).root).toBe(4);
    expect(chooseMeta(m0, { ok: false, reason: 'x' }).root).toBe(3);
    expect(() => chooseMeta({ ok: false, reason: 'a' }, { ok: false, reason: 'b' })).toThrow(/both meta pages/);
  });
});

describe('page parsing is bounds-checked', () => {
  it('parses leaf elements and rejects elements pointing outside the page', () => {
    const p = leafPage(5, [{ key: 'k1', value: 'v1' }, { key: 'k2', value: 'v2', bucket: true }], PS);
    const els = readLeafElements(p, 'p');
    expect(els.map((e) => [e.key.toString(), e.value.toString(), e.isBucket])).toEqual([
      ['k1', 'v1', false],
      ['k2', 'v2', true],
    ]);
    const bad = Buffer.from(p);
    bad.writeUInt32LE(0xfffffff0, 16 + 4); // pos of element 0
    expect(() => readLeafElements(bad, 'p')).toThrow(BboltFormatError);
    const huge = Buffer.from(p);
    huge.writeUInt16LE(0xffff, 10); // count
    expect(() => readLeafElements(huge, 'p')).toThrow(BboltFormatError);
    const flags = Buffer.from(p);
    flags.writeUInt32LE(0x80, 16);
    expect(() => readLeafElements(flags, 'p')).toThrow(/unknown flags/);
  });

  it('parses branch children and freelist ids, including the 0xFFFF count escape', () => {
    expect(readBranchChildren(branchPage(4, [['a', 5], ['b', 6]]), 4)).toEqual([5, 6]);
    expect(readFreelistIds(freelistPage(2, [7, 9]), 2)).toEqual([7, 9]);
    const big = Buffer.alloc(PS * 2);
    big.writeUInt16LE(0x10, 8);
    big.writeUInt16LE(0xffff, 10);
    big.writeBigUInt64LE(3n, 16);
    [11, 12, 13].forEach((x, i) => big.writeBigUInt64LE(BigInt(x), 24 + 8 * i));
    expect(readFreelistIds(big, 2)).toEqual([11, 12, 13]);
    big.writeBigUInt64LE(1_000_000n, 16);
    expect(() => readFreelistIds(big, 2)).toThrow(/do not fit/);
  });

  it('parses bucket values (paged and inline) and rejects short ones', () => {
    expect(parseBucketValue(bucketRef(9), 'b')).toEqual({ root: 9 });
    const inl = parseBucketValue(inlineBucket([{ key: 'x', value: 'y' }]), 'b');
    expect(inl.root).toBe(0);
    expect(() => parseBucketValue(Buffer.alloc(8), 'b')).toThrow(/shorter than/);
    expect(() => parseBucketValue(bucketRef(0), 'b')).toThrow(/inline/);
  });
});

describe('inspectSnapshot on hand-built bbolt files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapunit-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  let n = 0;
  async function file(content: Buffer): Promise<string> {
    const f = join(dir, `f${n++}.db`);
    await writeFile(f, content);
    return f;
  }

  async function expectCorrupt(content: Buffer, re: RegExp): Promise<void> {
    const err = await inspectSnapshot(await file(content)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BackupError);
    expect((err as BackupError).reason).toBe('snapshot-corrupt');
    expect((err as BackupError).message).toMatch(re);
  }

  it('computes the status of a valid file, with and without trailer', async () => {
    const db = sampleDb();
    const want = { hash: expectedSampleHash(), revision: 4, totalKey: 4, totalSize: 8 * PS };
    expect(await inspectSnapshot(await file(withTrailer(db)))).toEqual({ ...want, trailer: 'ok' });
    expect(await inspectSnapshot(await file(db))).toEqual({ ...want, trailer: 'missing' });
    const bad = withTrailer(db);
    bad[bad.length - 1]! ^= 1;
    expect(await inspectSnapshot(await file(bad))).toEqual({ ...want, trailer: 'mismatch' });
    expect(await verifySnapshotTrailer(await file(bad))).toBe('mismatch');
  });

  it('falls back to meta page 1 when meta page 0 is damaged', async () => {
    const db = sampleDb();
    db[16 + 8]! ^= 0xff; // meta 0 page size
    const r = await inspectSnapshot(await file(db));
    expect(r.totalSize).toBe(8 * PS);
  });

  it('detects a branch page that points at itself (a cycle) without looping', async () => {
    await expectCorrupt(sampleDb({ 4: branchPage(4, [['a', 4]]) }), /more than once/);
  });

  it('detects a child beyond the high-water mark', async () => {
    await expectCorrupt(sampleDb({ 4: branchPage(4, [['a', 5], ['b', 99]]) }), /high-water/);
  });

  it('detects a page whose header names another page', async () => {
    await expectCorrupt(sampleDb({ 6: leafPage(5, [{ key: rev(4), value: 'ccc' }], PS) }), /header says/);
  });

  it('detects a tree page of the wrong type', async () => {
    await expectCorrupt(sampleDb({ 4: branchPage(4, [['a', 5], ['b', 2]]) }), /more than once/);
    const odd = Buffer.alloc(PS);
    odd.writeBigUInt64LE(7n, 0);
    odd.writeUInt16LE(0x08, 8);
    await expectCorrupt(
      sampleDb({ 2: freelistPage(2, []), 4: branchPage(4, [['a', 5], ['b', 7]]), 7: odd }),
      /flags 0x8, expected a branch or leaf/,
    );
  });

  it('detects keys out of order', async () => {
    await expectCorrupt(
      sampleDb({ 6: leafPage(6, [{ key: rev(1), value: 'ccc' }], PS) }),
      /out of order/,
    );
  });

  it('detects an unreachable page that is not on the freelist', async () => {
    await expectCorrupt(sampleDb({ 2: freelistPage(2, []) }), /neither reachable nor on the freelist/);
  });

  it('detects a reachable page that is on the freelist', async () => {
    await expectCorrupt(sampleDb({ 2: freelistPage(2, [6, 7]) }), /on the freelist/);
  });

  it('detects a top-level key that is not a bucket', async () => {
    await expectCorrupt(
      sampleDb({ 3: leafPage(3, [{ key: 'key', value: bucketRef(4) }], PS) }),
      /not a bucket/,
    );
  });

  it('detects truncation: of pages, of meta pages, to nothing', async () => {
    const db = sampleDb();
    await expectCorrupt(db.subarray(0, 6 * PS), /truncated/);
    await expectCorrupt(withTrailer(db.subarray(0, 6 * PS)), /truncated/);
    await expectCorrupt(db.subarray(0, 7 * PS + 100), /truncated|multiple/);
    await expectCorrupt(db.subarray(0, 100), /too small/);
    await expectCorrupt(Buffer.alloc(0), /too small/);
  });

  it('survives every single-byte corruption of the crafted file without non-BackupErrors', async () => {
    const db = sampleDb();
    for (let off = 0; off < db.length; off += 11) {
      const b = Buffer.from(db);
      b[off]! ^= 0x5a;
      const f = await file(b);
      await inspectSnapshot(f).then(
        () => undefined,
        (e: unknown) => {
          expect(e, `offset ${off}`).toBeInstanceOf(BackupError);
          expect((e as BackupError).reason).toBe('snapshot-corrupt');
        },
      );
      await rm(f);
    }
  });
});
