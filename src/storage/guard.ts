import { Transform, type Readable } from 'node:stream';
import { BackupError } from '../errors.js';
import {
  abortedByShutdown,
  raceSignal,
  type ObjectInfo,
  type OpOptions,
  type PutOptions,
  type Store,
  type TransferOptions,
} from './store.js';

/**
 * How long a store may take, per store (config: requestTimeout,
 * transferTimeout, minRate, stallWindow). A store that hangs, trickles or
 * loops fails the operation with `store-timeout` / `store-misbehaving`: it
 * never holds a run (and its lock) hostage.
 */
export interface StoreLimits {
  /** One metadata request: head, one list page, delete, a manifest. */
  requestMs: number;
  /** One object moved whole (upload, download, read-back), or one whole listing. */
  transferMs: number;
  /** Fewer bytes than this per second, averaged over stallWindowMs, is a stall. 0 turns the check off. */
  minBytesPerSecond: number;
  stallWindowMs: number;
  /** Objects one listing may yield before it counts as a server that never ends. */
  maxListEntries: number;
}

export const DEFAULT_LIMITS: StoreLimits = {
  requestMs: 60_000,
  transferMs: 6 * 3600_000,
  minBytesPerSecond: 16 * 1024,
  stallWindowMs: 60_000,
  maxListEntries: 10_000_000,
};

/**
 * Bytes a backend moves between two progress reports of putFile (S3: one
 * part; a local link: the whole file at once). The stall window widens so
 * one unit can pass at minRate; Infinity turns the rate check off there.
 */
export type ProgressUnits = { putFile?: number };

function fmtMs(ms: number): string {
  return ms >= 3600_000 && ms % 3600_000 === 0 ? `${ms / 3600_000}h` : ms >= 60_000 && ms % 60_000 === 0 ? `${ms / 60_000}m` : `${ms / 1000}s`;
}

function fmtRate(bps: number): string {
  return bps >= 1024 * 1024 ? `${(bps / 1024 / 1024).toFixed(1)} MiB/s` : bps >= 1024 ? `${(bps / 1024).toFixed(1)} KiB/s` : `${bps.toFixed(1)} B/s`;
}

/**
 * One operation's signal: the caller's signal, a deadline and (for
 * transfers) a stall watchdog, each aborting with a BackupError that says
 * which limit was hit. `done()` must be called when the operation ends.
 */
class Deadline {
  private readonly ac = new AbortController();
  private readonly timers: NodeJS.Timeout[] = [];
  private bytes = 0;
  private windowBytes = 0;
  private readonly unhook: () => void = () => undefined;

  constructor(
    store: string,
    what: string,
    ms: number,
    outer: AbortSignal | undefined,
    stall?: { minBytesPerSecond: number; windowMs: number },
  ) {
    if (outer) {
      const onOuter = () => this.abort(outer.reason instanceof BackupError ? outer.reason : abortedByShutdown(store, what));
      if (outer.aborted) onOuter();
      else {
        outer.addEventListener('abort', onOuter, { once: true });
        this.unhook = () => outer.removeEventListener('abort', onOuter);
      }
    }
    this.timers.push(
      setTimeout(
        () =>
          this.abort(
            new BackupError('store-timeout', `store ${store}: ${what} did not finish within ${fmtMs(ms)}`, {
              hint: 'the store is hung or far too slow; if it is only slow, raise requestTimeout/transferTimeout of this store',
            }),
          ),
        ms,
      ),
    );
    if (stall && stall.minBytesPerSecond > 0 && Number.isFinite(stall.windowMs)) {
      const need = (stall.minBytesPerSecond * stall.windowMs) / 1000;
      this.timers.push(
        setInterval(() => {
          if (this.windowBytes < need) {
            this.abort(
              new BackupError(
                'store-timeout',
                `store ${store}: ${what} stalled: ${this.windowBytes} bytes in the last ${fmtMs(stall.windowMs)} (${fmtRate((this.windowBytes * 1000) / stall.windowMs)}), below the minimum of ${fmtRate(stall.minBytesPerSecond)}; ${this.bytes} bytes moved in all`,
                { hint: 'the store or the network trickles; if the link is merely slow, lower minRate (or raise stallWindow) of this store' },
              ),
            );
          }
          this.windowBytes = 0;
        }, stall.windowMs),
      );
    }
    for (const t of this.timers) t.unref();
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  progress(n: number): void {
    this.bytes += n;
    this.windowBytes += n;
  }

  /** Stops the clocks, and aborts a request that is still hanging (one of ours on its way out: a timeout). */
  abort(reason: Error): void {
    if (!this.ac.signal.aborted) this.ac.abort(reason);
    this.done();
  }

  done(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.length = 0;
    this.unhook();
  }
}

/**
 * A pass-through that reports every chunk, and fails (destroying its source)
 * when the deadline fires. Its buffer is small: for an upload the rate seen
 * here is the rate the store takes the bytes at, give or take 64 KiB.
 */
function watched(src: Readable, d: Deadline, onClose: () => void, onProgress?: (bytes: number) => void): Transform {
  const out = new Transform({
    highWaterMark: 64 * 1024,
    transform(chunk: Buffer, _enc, cb) {
      d.progress(chunk.length);
      onProgress?.(chunk.length);
      cb(null, chunk);
    },
  });
  const onAbort = () => {
    const reason = d.signal.reason as Error;
    out.destroy(reason);
    src.destroy(reason);
  };
  d.signal.addEventListener('abort', onAbort, { once: true });
  src.on('error', (e) => out.destroy(e));
  out.once('close', () => {
    d.signal.removeEventListener('abort', onAbort);
    if (!src.readableEnded) src.destroy();
    onClose();
  });
  src.pipe(out);
  return out;
}

/** The watchdog counts every byte; the caller's progress display (src/progress/) sees them too. */
function both(d: Deadline, caller?: (bytes: number) => void): (bytes: number) => void {
  return caller ? (n) => (d.progress(n), caller(n)) : (n) => d.progress(n);
}

/**
 * Wraps a backend so that every operation runs under a deadline (and every
 * transfer under a stall watchdog) and every listing is bounded. This is the
 * one place those limits are made; backends pass the signal they get to each
 * network call, and the race below makes sure that even a call that ignores
 * it cannot hang the caller.
 */
export function guardStore(inner: Store, limits: StoreLimits, units: ProgressUnits = {}): Store {
  const name = inner.name;
  const request = (what: string, opts?: OpOptions, factor = 1) => new Deadline(name, what, limits.requestMs * factor, opts?.signal);
  const transfer = (what: string, opts: OpOptions | undefined, unit = 0) =>
    new Deadline(name, what, limits.transferMs, opts?.signal, {
      minBytesPerSecond: limits.minBytesPerSecond,
      windowMs: Math.max(limits.stallWindowMs, limits.minBytesPerSecond > 0 ? (unit / limits.minBytesPerSecond) * 1000 : 0),
    });
  const run = async <T>(d: Deadline, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> => {
    try {
      return await raceSignal(fn(d.signal), d.signal, () => abortedByShutdown(name, what));
    } finally {
      d.done();
    }
  };

  return {
    name,
    type: inner.type,
    caps: inner.caps,
    settings: inner.settings,
    head(key, opts) {
      const what = `reading metadata of ${key}`;
      return run(request(what, opts), what, (signal) => inner.head(key, { signal }));
    },
    delete(keys, opts) {
      const what = keys.length === 1 ? `deleting ${keys[0]}` : `deleting ${keys.length} objects`;
      return run(request(what, opts, Math.max(1, Math.ceil(keys.length / 100))), what, (signal) => inner.delete(keys, { signal }));
    },
    async get(key, opts?: TransferOptions) {
      const what = `reading ${key}`;
      const d = transfer(what, opts);
      // Opening (until the first answer) is one request; the body then moves under the transfer limits.
      const open = setTimeout(() => d.abort(new BackupError('store-timeout', `store ${name}: ${what}: no answer within ${fmtMs(limits.requestMs)}`)), limits.requestMs);
      open.unref();
      let src: Readable;
      try {
        src = await raceSignal(inner.get(key, { signal: d.signal }), d.signal, () => abortedByShutdown(name, what));
      } catch (e) {
        d.done();
        throw e;
      } finally {
        clearTimeout(open);
      }
      return watched(src, d, () => d.done(), opts?.onProgress);
    },
    put(key, body, opts?: PutOptions) {
      const what = `upload of ${key}`;
      const d = transfer(what, opts);
      const counted = watched(body, d, () => undefined, opts?.onProgress);
      return run(d, what, (signal) => inner.put(key, counted, { size: opts?.size, ifAbsent: opts?.ifAbsent, signal })).finally(() => {
        if (!counted.destroyed && !counted.readableEnded) counted.destroy();
      });
    },
    list(prefix, opts) {
      const what = `listing ${prefix}`;
      return boundedList(inner, prefix, opts?.exclude, transfer(`${what} (whole listing)`, opts, Infinity), limits, what);
    },
    putFile(key, path, opts?: PutOptions) {
      const what = `upload of ${key}`;
      const d = transfer(what, opts, units.putFile ?? 0);
      return run(d, what, (signal) => inner.putFile(key, path, { ifAbsent: opts?.ifAbsent, signal, onProgress: both(d, opts?.onProgress) }));
    },
    // The server hashes on its own disk and reports nothing until done: a deadline, no rate.
    serverSha256(key, opts) {
      const what = `server-side sha256 of ${key}`;
      return run(new Deadline(name, what, limits.transferMs, opts?.signal), what, (signal) => inner.serverSha256(key, { signal }));
    },
    readBackSha256(key, opts) {
      const what = `reading back ${key}`;
      const d = transfer(what, opts);
      return run(d, what, (signal) => inner.readBackSha256(key, { signal, onProgress: both(d, opts?.onProgress) }));
    },
    cleanupIncomplete(prefix, olderThan, opts) {
      const what = `cleaning up interrupted uploads under ${prefix}`;
      return run(new Deadline(name, what, limits.transferMs, opts?.signal), what, (signal) => inner.cleanupIncomplete(prefix, olderThan, { signal }));
    },
    close: () => inner.close(),
  };
}

/** A listing where each step (one page at most) is one request and the whole is bounded in time and entries. */
async function* boundedList(inner: Store, prefix: string, exclude: string | undefined, d: Deadline, limits: StoreLimits, what: string): AsyncGenerator<ObjectInfo> {
  const name = inner.name;
  const it = inner.list(prefix, { signal: d.signal, ...(exclude !== undefined ? { exclude } : {}) })[Symbol.asyncIterator]();
  let n = 0;
  try {
    for (;;) {
      // A server that stops answering mid-listing fails it.
      const t = setTimeout(() => d.abort(new BackupError('store-timeout', `store ${name}: ${what}: no answer within ${fmtMs(limits.requestMs)}`)), limits.requestMs);
      let r: IteratorResult<ObjectInfo>;
      try {
        r = await raceSignal(it.next(), d.signal, () => abortedByShutdown(name, what));
      } finally {
        clearTimeout(t);
      }
      if (r.done) return;
      if (++n > limits.maxListEntries) {
        throw new BackupError('store-misbehaving', `store ${name}: ${what} yielded more than ${limits.maxListEntries} objects; a listing that never ends is refused`, {
          hint: 'check the server (a proxy that loops?) or remove objects that are not backups from under the prefix',
        });
      }
      yield r.value;
    }
  } finally {
    d.done();
    // Let the backend release its listing, but never wait on a hung one.
    void Promise.resolve(it.return?.()).catch(() => undefined);
  }
}
