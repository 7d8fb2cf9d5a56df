/**
 * inspectSnapshot against the real thing: snapshots saved by etcdctl from a
 * live single-member etcd 3.4, compared field by field with
 * `etcdctl snapshot status -w json`, then damaged in many ways.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError } from '../../src/errors.js';
import { PGID_NO_FREELIST, checkMetaPage, chooseMeta, readPageHeader } from '../../src/etcd/bbolt.js';
import { inspectSnapshot, verifySnapshotTrailer, type SnapshotReport } from '../../src/etcd/snapshot.js';
import { etcdctl, startSingleEtcd, type SingleEtcd } from '../support/etcd-single.js';

interface CtlStatus {
  hash: number;
  revision: number;
  totalKey: number;
  totalSize: number;
}

let etcd: SingleEtcd;
let dir: string;
/** Snapshots saved along the way, by scenario name. */
const saved = new Map<string, string>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapinspect-'));
  etcd = await startSingleEtcd();
});

afterAll(async () => {
  await etcd?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function ctlStatus(file: string): Promise<CtlStatus> {
  return JSON.parse(await etcdctl(['snapshot', 'status', file, '-w', 'json'])) as CtlStatus;
}

/** etcdctl's status, or undefined when etcdctl refuses (or crashes on) the file. */
async function ctlStatusOrFailure(file: string): Promise<CtlStatus | undefined> {
  try {
    return await ctlStatus(file);
  } catch {
    return undefined;
  }
}

async function save(name: string): Promise<string> {
  const f = join(dir, `${name}.db`);
  await etcd.ctl('snapshot', 'save', f);
  saved.set(name, f);
  return f;
}

async function expectMatchesEtcdctl(name: string): Promise<SnapshotReport> {
  const f = await save(name);
  const { size } = await stat(f);
  expect(size % 512).toBe(32);
  const [mine, theirs] = await Promise.all([inspectSnapshot(f), ctlStatus(f)]);
  expect({ hash: mine.hash, revision: mine.revision, totalKey: mine.totalKey, totalSize: mine.totalSize }).toEqual(
    theirs,
  );
  expect(mine.trailer).toBe('ok');
  return mine;
}

type Outcome = { report: SnapshotReport; error?: undefined } | { report?: undefined; error: unknown };

async function outcome(file: string): Promise<Outcome> {
  try {
    return { report: await inspectSnapshot(file) };
  } catch (error) {
    return { error };
  }
}

function expectCorruptError(o: Outcome, what: string): void {
  expect(o.error, `${what}: expected a thrown error, got ${JSON.stringify(o.report)}`).toBeInstanceOf(BackupError);
  expect((o.error as BackupError).reason, what).toBe('snapshot-corrupt');
}

/** Detected = thrown BackupError('snapshot-corrupt') or a trailer verdict other than 'ok'. */
function expectDetected(o: Outcome, what: string): void {
  if (o.error !== undefined) expectCorruptError(o, what);
  else expect(o.report.trailer, `${what}: undetected, ${JSON.stringify(o.report)}`).not.toBe('ok');
}

function reseal(db: Buffer): Buffer {
  return Buffer.concat([db, createHash('sha256').update(db).digest()]);
}

const bigValue = (i: number, size: number): Buffer => {
  const b = Buffer.alloc(size);
  for (let j = 0; j < size; j++) b[j] = 0x41 + ((i * 7 + j) % 26);
  return b;
};

describe('inspectSnapshot matches etcdctl snapshot status', () => {
  it('empty cluster', async () => {
    const r = await expectMatchesEtcdctl('empty');
    expect(r.revision).toBe(0); // no key in the "key" bucket yet
    expect(r.totalKey).toBeGreaterThan(0); // but members, cluster version, consistent index...
  });

  it('thousands of small keys', async () => {
    const entries: Array<[string, string]> = [];
    for (let i = 0; i < 4000; i++) entries.push([`/registry/small/${String(i).padStart(6, '0')}`, `value-${i}-${'x'.repeat(i % 50)}`]);
    const last = await etcd.putMany(entries, 48);
    const r = await expectMatchesEtcdctl('small');
    expect(r.revision).toBe(last);
    expect(r.totalKey).toBeGreaterThan(4000);
  });

  it('large values spanning overflow pages', async () => {
    const entries: Array<[string, Buffer]> = [];
    for (let i = 0; i < 12; i++) entries.push([`/registry/big/${i}`, bigValue(i, 100 * 1024 + i * 70 * 1024)]);
    await etcd.putMany(entries, 4);
    await expectMatchesEtcdctl('large');
  });

  it('overwrites and deletes', async () => {
    await etcd.putMany(
      Array.from({ length: 500 }, (_, i): [string, string] => [`/registry/small/${String(i).padStart(6, '0')}`, `v2-${i}`]),
    );
    await etcd.deleteRange('/registry/small/001000', '/registry/small/002000');
    await etcd.deleteRange('/registry/big/3');
    await expectMatchesEtcdctl('deletes');
  });

  it('leases', async () => {
    const lease = await etcd.grantLease(3600);
    for (let i = 0; i < 20; i++) await etcd.put(`/registry/leased/${i}`, `l${i}`, lease);
    await etcd.grantLease(600);
    await expectMatchesEtcdctl('leases');
  });

  it('compaction', async () => {
    const rev = await etcd.revision();
    await etcd.ctl('compact', String(rev), '--physical');
    await expectMatchesEtcdctl('compacted');
  });

  it('defragmentation', async () => {
    await etcd.ctl('defrag');
    await expectMatchesEtcdctl('defragged');
  });

  it('more keys after defrag (the tree grows again into reused pages)', async () => {
    await etcd.putMany(
      Array.from({ length: 1500 }, (_, i): [string, string] => [`/registry/again/${String(i).padStart(5, '0')}`, 'y'.repeat(200)]),
      48,
    );
    await etcd.deleteRange('/registry/again/00', '/registry/again/01');
    await expectMatchesEtcdctl('regrown');
  });
});

describe('damaged snapshots are never reported as good', () => {
  let src: string;
  let orig: Buffer;
  let pageSize: number;
  let highWater: number;
  let dataLen: number;
  let hasFreelist: boolean;
  let freelistPgid: number;
  /** Offsets of live pages by type (id matches position, walked with overflow). */
  const pagesOf: Record<'branch' | 'leaf' | 'freelist', number[]> = { branch: [], leaf: [], freelist: [] };
  let good: CtlStatus;
  let n = 0;

  beforeAll(async () => {
    src = saved.get('regrown') ?? (await save('regrown'));
    orig = await readFile(src);
    good = await ctlStatus(src);
    dataLen = orig.length - 32;
    const meta = chooseMeta(checkMetaPage(orig, 0), checkMetaPage(orig.subarray(4096), 1));
    pageSize = meta.pageSize;
    highWater = meta.pgid;
    // etcd opens bbolt with NoFreelistSync on Linux, so its snapshots usually carry no freelist page.
    hasFreelist = meta.freelist !== PGID_NO_FREELIST;
    freelistPgid = hasFreelist ? meta.freelist : 0;
    for (let i = 2; i < highWater; ) {
      const h = readPageHeader(orig, i * pageSize);
      if (h.id === i && h.flags === 0x01) pagesOf.branch.push(i);
      if (h.id === i && h.flags === 0x02) pagesOf.leaf.push(i);
      if (h.id === i && h.flags === 0x10) pagesOf.freelist.push(i);
      i += h.id === i ? 1 + h.overflow : 1;
    }
  });

  async function variant(content: Buffer): Promise<string> {
    const f = join(dir, `mut-${n++}.db`);
    await writeFile(f, content);
    return f;
  }

  it('the chosen snapshot has branch and leaf pages', () => {
    expect(pageSize).toBe(4096);
    expect(pagesOf.branch.length).toBeGreaterThan(0);
    expect(pagesOf.leaf.length).toBeGreaterThan(10);
    if (hasFreelist) expect(pagesOf.freelist.length).toBeGreaterThan(0);
  });

  /** Freelist mutations only make sense when the snapshot has a freelist page. */
  const freelistCases = (freelist: number, list: Array<[string, number, number]>): Array<[string, number, number]> =>
    hasFreelist ? list.map(([w, off, m]) => [w, freelist + off, m]) : [];

  it('truncations', async () => {
    const cuts: Array<[string, number]> = [
      ['mid meta page 0', 100],
      ['mid meta page 1', pageSize + 1000],
      ['after the meta pages', 2 * pageSize],
      ['mid tree', Math.floor(dataLen / 2) + 123],
      ['mid tree, page aligned', Math.floor(dataLen / 2 / pageSize) * pageSize],
      ['mid tree, aligned to 512 + 32', Math.floor(dataLen / 2 / 512) * 512 + 32],
      ['last page', dataLen - pageSize],
      ['half the trailer', dataLen + 16],
      ['one byte', orig.length - 1],
    ];
    for (const [what, at] of cuts) {
      const o = await outcome(await variant(orig.subarray(0, at)));
      expectCorruptError(o, `truncated ${what} at ${at}`);
    }
    // Cutting exactly the trailer leaves a valid raw bbolt file: only the verdict says so.
    const raw = await outcome(await variant(orig.subarray(0, dataLen)));
    expect(raw.report).toEqual({ ...good, trailer: 'missing' });
    // Truncated and re-sealed with a fresh trailer: the walk alone must catch it.
    for (const at of [Math.floor(dataLen / 2 / 512) * 512, dataLen - pageSize]) {
      expectCorruptError(await outcome(await variant(reseal(orig.subarray(0, at)))), `re-sealed truncation at ${at}`);
    }
  });

  it('bit flips are detected (the trailer sees all of them)', async () => {
    const branch = pagesOf.branch[0]! * pageSize;
    const leaf = pagesOf.leaf[Math.floor(pagesOf.leaf.length / 2)]! * pageSize;
    const freelist = freelistPgid * pageSize;
    const valueAt = orig.indexOf(bigValue(5, 64)) + 50_000;
    expect(valueAt).toBeGreaterThan(50_000);
    const flips: Array<[string, number, number]> = [
      ['meta 0 magic', 16, 0x01],
      ['meta 0 checksum', 16 + 56, 0x80],
      ['meta 1 high-water mark', pageSize + 16 + 40, 0x04],
      ['meta 0 page header flags', 8, 0x01],
      ['branch page flags', branch + 8, 0x03],
      ['branch page count', branch + 10, 0x40],
      ['branch child pgid (high byte)', branch + 16 + 8 + 6, 0x10],
      ['branch child pgid (low byte)', branch + 16 + 8, 0x01],
      ['leaf page id', leaf, 0x01],
      ['leaf element pos', leaf + 16 + 4 + 2, 0x01],
      ['leaf element ksize', leaf + 16 + 8, 0x08],
      ['leaf element vsize', leaf + 16 + 12 + 3, 0x80],
      ['leaf element flags', leaf + 16, 0x01],
      ...freelistCases(freelist, [
        ['freelist page flags', 8, 0x10],
        ['freelist id', 16, 0x01],
      ]),
      ['a byte in the middle of a large value', valueAt, 0x20],
      ['the trailer', orig.length - 1, 0x01],
      ['the first trailer byte', dataLen, 0x80],
    ];
    for (const [what, at, mask] of flips) {
      const b = Buffer.from(orig);
      b[at]! ^= mask;
      expectDetected(await outcome(await variant(b)), `flip ${what} @${at}`);
    }
  });

  it('structural damage is caught by the walk even behind a valid (re-sealed) trailer', async () => {
    const branch = pagesOf.branch[0]! * pageSize;
    const leaf = pagesOf.leaf[Math.floor(pagesOf.leaf.length / 2)]! * pageSize;
    const freelist = freelistPgid * pageSize;
    const structural: Array<[string, number, number]> = [
      ['branch page flags', branch + 8, 0x03],
      ['branch child pgid (high byte)', branch + 16 + 8 + 6, 0x10],
      ['branch child pgid (low byte)', branch + 16 + 8, 0x01],
      ['leaf page id', leaf, 0x01],
      ['leaf element pos', leaf + 16 + 4 + 3, 0x01],
      ['leaf element ksize', leaf + 16 + 8 + 2, 0x08],
      ['leaf element vsize', leaf + 16 + 12 + 3, 0x80],
      ['leaf element flags', leaf + 16, 0x02],
      ...freelistCases(freelist, [
        ['freelist page flags', 8, 0x10],
        ['freelist id', 16, 0x01],
      ]),
    ];
    for (const [what, at, mask] of structural) {
      const b = Buffer.from(orig.subarray(0, dataLen));
      b[at]! ^= mask;
      const f = await variant(reseal(b));
      const [mine, theirs] = await Promise.all([outcome(f), ctlStatusOrFailure(f)]);
      expectCorruptError(mine, `re-sealed flip ${what} @${at} (etcdctl: ${JSON.stringify(theirs)})`);
    }
    // Both meta pages broken: nothing to fall back on.
    const both = Buffer.from(orig.subarray(0, dataLen));
    both[16]! ^= 1;
    both[pageSize + 16]! ^= 1;
    expectCorruptError(await outcome(await variant(reseal(both))), 're-sealed, both metas broken');
  });

  it('behind a re-sealed trailer, one damaged meta page falls back to the other and a value flip changes the hash as in etcdctl', async () => {
    const m0 = Buffer.from(orig.subarray(0, dataLen));
    m0[16 + 60]! ^= 1; // meta 0 checksum
    const f0 = await variant(reseal(m0));
    expect(await inspectSnapshot(f0)).toEqual({ ...(await ctlStatus(f0)), trailer: 'ok' });

    const v = Buffer.from(orig.subarray(0, dataLen));
    v[v.indexOf(bigValue(7, 64)) + 1000]! ^= 0x20;
    const fv = await variant(reseal(v));
    const mine = await inspectSnapshot(fv);
    expect(mine.hash).not.toBe(good.hash);
    expect(mine).toEqual({ ...(await ctlStatus(fv)), trailer: 'ok' });
  });

  it('random re-sealed flips: whenever etcdctl refuses the file we do too, and when we accept it we agree with etcdctl', async () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const live = [...pagesOf.branch, ...pagesOf.leaf, ...pagesOf.freelist];
    let refusedByBoth = 0;
    for (let i = 0; i < 40; i++) {
      // Half anywhere in the data, half in page headers / element arrays where structure lives.
      const at = i % 2 === 0 ? rnd(dataLen) : live[rnd(live.length)]! * pageSize + rnd(64);
      const b = Buffer.from(orig.subarray(0, dataLen));
      b[at]! ^= 1 << rnd(8);
      const f = await variant(reseal(b));
      const [mine, theirs] = await Promise.all([outcome(f), ctlStatusOrFailure(f)]);
      const what = `flip @${at} (page ${Math.floor(at / pageSize)} +${at % pageSize})`;
      if (theirs === undefined) {
        expectCorruptError(mine, `${what}: etcdctl refused it`);
        refusedByBoth++;
      } else if (mine.report) {
        expect(mine.report, what).toEqual({ ...theirs, trailer: 'ok' });
      } else {
        // Stricter than etcdctl is allowed (e.g. page header ids), but it must be a clean error.
        expectCorruptError(mine, what);
      }
      await rm(f);
    }
    expect(refusedByBoth).toBeGreaterThan(0);
  });

  it('a raw bbolt file (member/snap/db, no trailer) is read like etcdctl reads it', async () => {
    await etcd.stop({ keepData: true });
    const raw = join(dir, 'raw.db');
    await copyFile(join(etcd.dataDir, 'member', 'snap', 'db'), raw);
    await etcd.cleanup();
    expect(await verifySnapshotTrailer(raw)).toBe('missing');
    const mine = await inspectSnapshot(raw);
    expect(mine).toEqual({ ...(await ctlStatus(raw)), trailer: 'missing' });
    expect((await stat(raw)).size).toBeGreaterThanOrEqual(mine.totalSize);
  });
});
