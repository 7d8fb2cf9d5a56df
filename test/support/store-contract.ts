import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../src/storage/store.js';
import { DEFAULT_LIMITS, guardStore } from '../../src/storage/guard.js';
import { backupErrorOf } from './rejections.js';
import { drain } from './streams.js';

/**
 * The behaviour every Store must have, run against the real server behind it.
 * A store file is done when this suite passes for it.
 */
export interface ContractOptions {
  /** Creates the store under test on a fresh, empty namespace. */
  make(): Promise<{ store: Store; cleanup?: () => Promise<void> }>;
  /** Objects to create for the listing test; S3 pages at 1000, so use more there. */
  listCount?: number;
  /** Size of the large streamed object. */
  largeBytes?: number;
  /** The server ignores S3's If-None-Match (s3rver): a conditional put then overwrites, and delivery's own check is what protects. */
  ignoresIfNoneMatch?: boolean;
}

/** Deterministic pseudo-random bytes, generated in chunks so the test itself stays flat in memory. */
export function generated(total: number, seed = 1): { stream: () => Readable; sha256: string } {
  const chunk = randomBytes(1 << 20);
  chunk.writeUInt32BE(seed, 0);
  const h = createHash('sha256');
  for (let left = total; left > 0; left -= chunk.length) h.update(left >= chunk.length ? chunk : chunk.subarray(0, left));
  const sha256 = h.digest('hex');
  return {
    sha256,
    stream: () =>
      Readable.from(
        (function* () {
          for (let left = total; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
        })(),
      ),
  };
}

export function storeContract(label: string, opts: ContractOptions): void {
  describe(`Store contract: ${label}`, () => {
    let store: Store;
    let cleanup: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      const made = await opts.make();
      // Through the guard, as createStore hands stores out: deadlines and watchdogs must not change behaviour.
      store = guardStore(made.store, DEFAULT_LIMITS);
      cleanup = made.cleanup;
    });
    afterAll(async () => {
      await store?.close?.();
      await cleanup?.();
    });

    it('put/head/get round-trips bytes exactly', async () => {
      const body = Buffer.from('hello etcd-backupd\n');
      const r = await store.put('c/a/one.txt', Readable.from([body]), body.length);
      expect(r).toEqual({ key: 'c/a/one.txt', size: body.length });
      expect(await store.head('c/a/one.txt')).toMatchObject({ key: 'c/a/one.txt', size: body.length });
      const got = await drain(await store.get('c/a/one.txt'));
      expect(got).toEqual({ bytes: body.length, sha: createHash('sha256').update(body).digest('hex') });
    });

    it('streams a large object without corrupting it', async () => {
      const g = generated(opts.largeBytes ?? 40 * 1024 * 1024 + 12345);
      const size = opts.largeBytes ?? 40 * 1024 * 1024 + 12345;
      const r = await store.put('c/big/backup.tar', g.stream(), size);
      expect(r.size).toBe(size);
      expect((await store.head('c/big/backup.tar'))?.size).toBe(size);
      expect(await drain(await store.get('c/big/backup.tar'))).toEqual({ bytes: size, sha: g.sha256 });
    });

    it('putFile stores a local file byte for byte (multi-part sized and small), and a missing file stores nothing', async () => {
      expect(store.putFile, 'every store has the file fast path deliverToStore uses').toBeTypeOf('function');
      expect(store.caps.putFile, 'every store has the file fast path deliverToStore uses').toBe(true);
      const dir = mkdtempSync(join(tmpdir(), 'ebd-putfile-'));
      try {
        for (const [name, size] of [
          ['big', (opts.largeBytes ?? 40 * 1024 * 1024 + 12345) + 7],
          ['small', 1000],
          ['empty', 0],
        ] as const) {
          const g = generated(size, 3);
          const file = join(dir, name);
          await pipeline(g.stream(), createWriteStream(file, { mode: 0o600 }));
          const r = await store.putFile!(`c/pf/${name}`, file);
          expect(r).toMatchObject({ key: `c/pf/${name}`, size });
          expect((await store.head(`c/pf/${name}`))?.size).toBe(size);
          expect(await drain(await store.get(`c/pf/${name}`))).toEqual({ bytes: size, sha: g.sha256 });
        }
        const e = await store.putFile!('c/pf/none', join(dir, 'no-such-file')).then(
          () => undefined,
          (err: { reason?: string; message: string }) => err,
        );
        expect(e?.reason).toBe('upload-failed');
        expect(e?.message).toMatch(/ENOENT/);
        expect(await store.head('c/pf/none')).toBeUndefined();
        // An aborted putFile (daemon shutdown) stores nothing either.
        const big = join(dir, 'big');
        const ac = new AbortController();
        ac.abort();
        const a = await store.putFile!('c/pf/aborted', big, { signal: ac.signal }).then(
          () => undefined,
          (err: { reason?: string; message: string }) => err,
        );
        expect(a?.reason).toBe('upload-failed');
        expect(a?.message).toMatch(/aborted because the daemon is shutting down/);
        expect(await store.head('c/pf/aborted')).toBeUndefined();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it(opts.ignoresIfNoneMatch ? 'put with ifAbsent creates a new key (this server ignores If-None-Match: delivery checks first)' : 'put with ifAbsent creates a new key and refuses an existing one (id-conflict), leaving it as it was', async () => {
      await store.put('c/ifa/m.json', Readable.from([Buffer.from('first')]), { ifAbsent: true });
      expect((await drain(await store.get('c/ifa/m.json'))).bytes).toBe(5);
      if (opts.ignoresIfNoneMatch) return;
      const e = await store.put('c/ifa/m.json', Readable.from([Buffer.from('second, longer')]), { ifAbsent: true }).then(
        () => undefined,
        (err: { reason?: string }) => err,
      );
      expect(e?.reason).toBe('id-conflict');
      expect((await drain(await store.get('c/ifa/m.json'))).bytes).toBe(5);
      const dir = mkdtempSync(join(tmpdir(), 'contract-ifa-'));
      try {
        writeFileSync(join(dir, 'f'), 'file body');
        const f = await store.putFile!('c/ifa/m.json', join(dir, 'f'), { ifAbsent: true }).then(
          () => undefined,
          (err: { reason?: string }) => err,
        );
        expect(f?.reason).toBe('id-conflict');
        expect((await drain(await store.get('c/ifa/m.json'))).bytes).toBe(5);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('overwrites an existing key whole', async () => {
      await store.put('c/a/over.txt', Readable.from([Buffer.from('first version, longer')]));
      await store.put('c/a/over.txt', Readable.from([Buffer.from('second')]));
      expect((await drain(await store.get('c/a/over.txt'))).bytes).toBe(6);
    });

    it('answers head of a missing key with undefined and get with not-found', async () => {
      expect(await store.head('c/nope/missing')).toBeUndefined();
      await expect(store.get('c/nope/missing')).rejects.toMatchObject({ reason: 'not-found' });
    });

    it('lists every key under a prefix, sorted, and nothing outside it', async () => {
      const n = opts.listCount ?? 25;
      const keys: string[] = [];
      for (let i = 0; i < n; i++) keys.push(`c/list/${String(i).padStart(5, '0')}/manifest.json`);
      const queue = [...keys];
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let k = queue.shift(); k; k = queue.shift()) await store.put(k, Readable.from([Buffer.from(k)]));
        }),
      );
      await store.put('c/listx/other', Readable.from([Buffer.from('x')]));
      const seen: string[] = [];
      for await (const o of store.list('c/list/')) seen.push(o.key);
      expect(seen).toEqual(keys);
    });

    it('deletes keys, and missing keys quietly', async () => {
      await store.put('c/del/a', Readable.from([Buffer.from('a')]));
      await store.put('c/del/b', Readable.from([Buffer.from('b')]));
      await store.delete(['c/del/a', 'c/del/b', 'c/del/never-existed']);
      expect(await store.head('c/del/a')).toBeUndefined();
      const left: string[] = [];
      for await (const o of store.list('c/del/')) left.push(o.key);
      expect(left).toEqual([]);
    });

    it('leaves no object behind when the body stream fails', async () => {
      const failing = new Readable({
        read() {
          this.push(randomBytes(64 * 1024));
          if ((this as unknown as { n?: number }).n === undefined) (this as unknown as { n: number }).n = 0;
          if (++(this as unknown as { n: number }).n > 100) this.destroy(new Error('source disk died'));
        },
      });
      const e = await backupErrorOf(store.put('c/fail/backup.tar', failing));
      expect(e).toMatchObject({ reason: 'upload-failed', message: expect.stringContaining('source disk died') });
      expect(await store.head('c/fail/backup.tar')).toBeUndefined();
      const left: string[] = [];
      for await (const o of store.list('c/fail/')) left.push(o.key);
      expect(left).toEqual([]);
    });
  });
}
