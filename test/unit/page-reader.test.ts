import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BboltFormatError } from '../../src/etcd/bbolt.js';
import { PageReader } from '../../src/etcd/page-reader.js';
import { rng as seeded } from '../support/rng.js';

const PS = 4096;
/** Pages of the file: each a run of 1 + overflow pages, random bytes after a bbolt page header. */
const RUNS: { id: number; overflow: number }[] = [];
let file: Buffer;
let dir: string;
let fh: FileHandle;

beforeAll(async () => {
  const next = seeded(7);
  const chunks: Buffer[] = [];
  let id = 0;
  while (id < 600) {
    // Mostly single pages, some long runs that cross the reader's 64 KiB blocks (values of a few hundred KiB).
    const overflow = next() < 0.85 ? 0 : Math.floor(next() * 70);
    const run = randomBytes((1 + overflow) * PS);
    run.writeBigUInt64LE(BigInt(id), 0);
    run.writeUInt16LE(0x02, 8); // a leaf page
    run.writeUInt16LE(0, 10);
    run.writeUInt32LE(overflow, 12);
    RUNS.push({ id, overflow });
    chunks.push(run);
    id += 1 + overflow;
  }
  file = Buffer.concat(chunks);
  dir = await mkdtemp(join(tmpdir(), 'page-reader-'));
  await writeFile(join(dir, 'db'), file);
  fh = await open(join(dir, 'db'), 'r');
});

afterAll(async () => {
  await fh?.close();
  await rm(dir, { recursive: true, force: true });
});

const expected = (r: { id: number; overflow: number }) => file.subarray(r.id * PS, (r.id + 1 + r.overflow) * PS);

describe('PageReader', () => {
  for (const borrowed of [false, true]) {
    it(`${borrowed ? 'borrowed' : 'owned'} pages: every page, in order and shuffled, has the file's bytes (small cache: evictions, read-ahead, slot reuse)`, async () => {
      const highWater = file.length / PS;
      const reader = new PageReader(fh, PS, highWater, { borrowed, maxBlocks: 3 });
      const rng = seeded(11);
      const shuffled = [...RUNS].sort(() => rng() - 0.5);
      for (const r of [...RUNS, ...shuffled, ...RUNS]) {
        const page = await reader.page(r.id);
        expect(page.length).toBe((1 + r.overflow) * PS);
        // Compared before the next page() call: all a borrowed page promises.
        expect(page.equals(expected(r))).toBe(true);
      }
    });
  }

  it('owned pages stay valid after later reads; borrowed ones are reused (the contract the walker relies on)', async () => {
    const highWater = file.length / PS;
    const owned = new PageReader(fh, PS, highWater, { maxBlocks: 3 });
    const kept = await Promise.all(RUNS.slice(0, 20).map(async (r) => ({ r, page: await owned.page(r.id) })));
    for (const r of RUNS) await owned.page(r.id);
    for (const { r, page } of kept) expect(page.equals(expected(r))).toBe(true);

    const borrowed = new PageReader(fh, PS, highWater, { borrowed: true, maxBlocks: 3 });
    const big = RUNS.filter((r) => r.overflow > 20);
    expect(big.length).toBeGreaterThan(1);
    const first = await borrowed.page(big[0]!.id);
    const second = await borrowed.page(big[1]!.id);
    // Both multi-block spans land in the one span buffer: no fresh allocation per large value.
    expect(first.buffer).toBe(second.buffer);
  });

  it('a page beyond the high-water mark or a header naming another page is corruption, in both modes', async () => {
    const highWater = file.length / PS;
    for (const borrowed of [false, true]) {
      const reader = new PageReader(fh, PS, highWater, { borrowed });
      await expect(reader.page(highWater)).rejects.toThrow(BboltFormatError);
      const inside = RUNS.find((r) => r.overflow > 0)!;
      await expect(reader.page(inside.id + 1)).rejects.toThrow(/header says it is page/);
    }
  });
});
