import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BackupError } from '../../src/errors.js';
import { guardStore, type StoreLimits } from '../../src/storage/guard.js';
import type { ObjectInfo, Store } from '../../src/storage/store.js';
import { backupErrorOf } from '../support/rejections.js';
import { drain } from '../support/streams.js';

/**
 * The guard alone, over small in-memory backends that hang, trickle or loop
 * on purpose (the real servers that do so are in
 * test/integration/hostile-stores.test.ts): every operation ends, with the
 * reason that says which limit was hit.
 */
const limits: StoreLimits = { requestMs: 200, transferMs: 5_000, minBytesPerSecond: 1000, stallWindowMs: 300, maxListEntries: 50 };
const never = <T>() => new Promise<T>(() => undefined);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function backend(over: Partial<Store>): Store {
  return {
    name: 'b',
    type: 'test',
    put: () => never(),
    head: () => never(),
    get: () => never(),
    list: async function* () {
      yield* [] as ObjectInfo[];
    },
    delete: () => never(),
    ...over,
  };
}

function trickle(bytesPerTick: number, everyMs: number, total: number): Readable & { destroyedByGuard?: boolean } {
  let sent = 0;
  let timer: NodeJS.Timeout | undefined;
  const r = new Readable({
    read() {
      if (timer) return;
      timer = setTimeout(() => {
        timer = undefined;
        const n = Math.min(bytesPerTick, total - sent);
        sent += n;
        this.push(Buffer.alloc(n, 1));
        if (sent >= total) this.push(null);
      }, everyMs);
    },
    destroy(err, cb) {
      clearTimeout(timer);
      cb(err);
    },
  });
  return r;
}

describe('guardStore', () => {
  it('a request that never answers fails with store-timeout after requestMs', async () => {
    const s = guardStore(backend({}), limits);
    const t0 = Date.now();
    const e = await backupErrorOf(s.head('k'));
    expect(e.reason).toBe('store-timeout');
    expect(e.message).toMatch(/store b: reading metadata of k did not finish within 0.2s/);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect((await backupErrorOf(s.delete(['k']))).reason).toBe('store-timeout');
  });

  it("the backend sees the signal abort, and the caller's own abort ends the operation with the caller's reason", async () => {
    let seen: AbortSignal | undefined;
    const s = guardStore(backend({ head: (_k, o) => ((seen = o?.signal), never()) }), limits);
    await backupErrorOf(s.head('k'));
    expect(seen?.aborted).toBe(true);
    const ac = new AbortController();
    const p = s.head('k', { signal: ac.signal });
    ac.abort();
    const e = await backupErrorOf(p);
    expect(e.reason).toBe('upload-failed');
    expect(e.message).toMatch(/shutting down/);
    const custom = new AbortController();
    const q = s.head('k', { signal: custom.signal });
    custom.abort(new BackupError('drill-aborted', 'stopped'));
    expect((await backupErrorOf(q)).reason).toBe('drill-aborted');
  });

  it('answers pass through; an error is never turned into "absent"', async () => {
    const s = guardStore(backend({ head: async (k) => (k === 'yes' ? { key: k, size: 3 } : undefined) }), limits);
    expect(await s.head('yes')).toEqual({ key: 'yes', size: 3 });
    expect(await s.head('no')).toBeUndefined();
    const failing = guardStore(backend({ head: async () => Promise.reject(new BackupError('store-unavailable', 'HTTP 503')) }), limits);
    expect((await backupErrorOf(failing.head('k'))).reason).toBe('store-unavailable');
  });

  it('a download trickling below minRate fails with store-timeout (stalled) and destroys the source', async () => {
    const src = trickle(10, 100, 100_000); // ~100 B/s, minimum 1000 B/s
    const s = guardStore(backend({ get: async () => src }), limits);
    const t0 = Date.now();
    const e = await backupErrorOf(drain(await s.get('k')));
    expect(e.reason).toBe('store-timeout');
    expect(e.message).toMatch(/reading k stalled: \d+ bytes in the last 0.3s/);
    expect(src.destroyed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('a fast download passes whole; a download that never starts fails within requestMs', async () => {
    const s = guardStore(backend({ get: async () => Readable.from([Buffer.alloc(64 * 1024), Buffer.alloc(1000)]) }), limits);
    expect((await drain(await s.get('k'))).bytes).toBe(65 * 1024 + 1000 - 1024);
    const hung = guardStore(backend({}), limits);
    expect((await backupErrorOf(hung.get('k'))).message).toMatch(/no answer within 0.2s/);
  });

  it('an upload the store consumes too slowly fails with store-timeout', async () => {
    const slowSink = backend({
      put: async (key, body) => {
        let n = 0;
        for await (const c of body) {
          n += (c as Buffer).length;
          await sleep(200);
        }
        return { key, size: n };
      },
    });
    // It takes at most one buffer (64 KiB) per 200 ms, about 320 KiB/s; the minimum here is 1 MiB/s.
    const s = guardStore(slowSink, { ...limits, minBytesPerSecond: 1024 * 1024 });
    const body = Readable.from((function* () {
      for (let i = 0; i < 1000; i++) yield Buffer.alloc(16 * 1024);
    })());
    expect((await backupErrorOf(s.put('k', body))).reason).toBe('store-timeout');
  });

  it('putFile: progress reports keep it alive; a backend that reports nothing is judged by the deadline alone when its unit is Infinity', async () => {
    const quietForASecond = backend({ putFile: async (key) => (await sleep(1000), { key, size: 1 }) });
    expect(await guardStore(quietForASecond, limits, { putFile: Infinity }).putFile!('k', '/f')).toEqual({ key: 'k', size: 1 });
    expect((await backupErrorOf(guardStore(quietForASecond, limits).putFile!('k', '/f'))).reason).toBe('store-timeout');
    const reporting = backend({
      putFile: async (key, _p, o) => {
        for (let i = 0; i < 10; i++) {
          await sleep(100);
          o?.onProgress?.(5000);
        }
        return { key, size: 50_000 };
      },
    });
    expect(await guardStore(reporting, limits).putFile!('k', '/f')).toEqual({ key: 'k', size: 50_000 });
  });

  it('a listing that never ends is refused (store-misbehaving); one that stops answering fails with store-timeout', async () => {
    const endless = guardStore(
      backend({
        list: async function* () {
          for (let i = 0; ; i++) yield { key: `k${i}`, size: 1 };
        },
      }),
      limits,
    );
    const seen: string[] = [];
    const e = await backupErrorOf((async () => {
      for await (const o of endless.list('')) seen.push(o.key);
    })());
    expect(e.reason).toBe('store-misbehaving');
    expect(seen).toHaveLength(50);
    const stuck = guardStore(
      backend({
        list: async function* () {
          yield { key: 'a', size: 1 };
          await never();
        },
      }),
      limits,
    );
    const got: string[] = [];
    const e2 = await backupErrorOf((async () => {
      for await (const o of stuck.list('')) got.push(o.key);
    })());
    expect(got).toEqual(['a']);
    expect(e2.reason).toBe('store-timeout');
  });

  it('a whole transfer is bounded by transferMs even when it moves fast enough', async () => {
    const endlessButFast = backend({ get: async () => trickle(100_000, 10, Number.MAX_SAFE_INTEGER) });
    const s = guardStore(endlessButFast, { ...limits, transferMs: 500 });
    const e = await backupErrorOf(drain(await s.get('k')));
    expect(e.message).toMatch(/did not finish within 0.5s/);
  });
});
