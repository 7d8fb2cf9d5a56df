/**
 * Live progress of interactive work (issue 19): what a phase has moved so
 * far. Producers report cumulative bytes; a sink decides what to show. With
 * no sink (the daemon's own runs) every meter is a no-op: nothing is counted,
 * nothing is timed.
 */
export interface ProgressEvent {
  /** source, verify-local, bundle, deliver, read-back, download, verify, restore... */
  phase: string;
  /** The store a per-store phase works on (deliver, read-back, download). */
  store?: string;
  /** Bytes done so far (cumulative). */
  done: number;
  /** Bytes the phase will move, when known (an estimate for the source: etcd's db size). */
  total?: number;
  /** The phase is over: `ok` or `failed`. */
  end?: 'ok' | 'failed';
}

export type ProgressSink = (e: ProgressEvent) => void;

/** One phase's counter: `add` per chunk, `end` once. */
export interface Meter {
  add(bytes: number): void;
  set(done: number, total?: number): void;
  end(ok?: boolean): void;
}

const NOOP_METER: Meter = { add: () => undefined, set: () => undefined, end: () => undefined };

/**
 * A meter for one phase (and store). The first report is sent at once so a
 * renderer can show the phase before its first chunk; the sink throttles
 * what it draws, so `add` stays a counter bump plus a function call.
 */
export function meter(sink: ProgressSink | undefined, phase: string, opts: { store?: string; total?: number } = {}): Meter {
  if (!sink) return NOOP_METER;
  let done = 0;
  let total = opts.total;
  let ended = false;
  const base = opts.store === undefined ? { phase } : { phase, store: opts.store };
  const send = (end?: 'ok' | 'failed') => sink({ ...base, done, ...(total !== undefined ? { total } : {}), ...(end ? { end } : {}) });
  send();
  return {
    add(n) {
      if (ended) return;
      done += n;
      send();
    },
    set(d, t) {
      if (ended) return;
      done = d;
      if (t !== undefined) total = t;
      send();
    },
    end(ok = true) {
      if (ended) return;
      ended = true;
      send(ok ? 'ok' : 'failed');
    },
  };
}

/** Runs `fn` under a meter that ends ok when it resolves and failed when it throws. */
export async function metered<T>(sink: ProgressSink | undefined, phase: string, opts: { store?: string; total?: number }, fn: (m: Meter) => Promise<T>): Promise<T> {
  const m = meter(sink, phase, opts);
  try {
    const r = await fn(m);
    m.end(true);
    return r;
  } catch (e) {
    m.end(false);
    throw e;
  }
}

/** The key a renderer or a forwarder keeps one row per. */
export function rowKey(e: Pick<ProgressEvent, 'phase' | 'store'>): string {
  return e.store === undefined ? e.phase : `${e.phase}\u0000${e.store}`;
}
