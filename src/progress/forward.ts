import { isatty } from 'node:tty';
import { rowKey, type ProgressEvent, type ProgressSink } from './model.js';
import type { TtyProgress } from './tty.js';

/** How often progress crosses the control socket: enough for a smooth line, a few dozen bytes a second. */
export const FORWARD_EVERY_MS = 250;

/**
 * A sink that passes on at most one event per row every `everyMs` (the
 * newest), and an end at once (after what was pending for its row), so a
 * daemon streaming 1 MiB chunks sends a handful of lines a second, not
 * thousands. `flush` sends what is pending (before the final result).
 */
export function throttled(out: ProgressSink, everyMs = FORWARD_EVERY_MS): ProgressSink & { flush(): void } {
  const pending = new Map<string, ProgressEvent>();
  const seen = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    const all = [...pending.values()];
    pending.clear();
    for (const e of all) out(e);
  };
  const sink = ((e: ProgressEvent) => {
    const key = rowKey(e);
    // A new phase and an end go out at once: the client shows every phase, however short.
    if (e.end || !seen.has(key)) {
      seen.add(key);
      pending.delete(key);
      out(e);
      return;
    }
    pending.set(key, e);
    if (!timer) {
      timer = setTimeout(flush, everyMs);
      timer.unref();
    }
  }) as ProgressSink & { flush(): void };
  sink.flush = flush;
  return sink;
}

/**
 * The CLI's progress display: live lines when a person watches stderr (a
 * terminal) and asked for no `--json`; nothing otherwise (pipes, CI, files:
 * the phase log lines say enough there). isatty, not process.stderr.isTTY:
 * asking the stream creates it (src/log.ts says why that matters on a pipe).
 * The renderer and log-update load only then: the daemon and pipes never load them.
 */
export async function cliProgress(opts: { json: boolean }): Promise<TtyProgress | undefined> {
  if (opts.json || !isatty(2) || process.env.TERM === 'dumb') return undefined;
  const { createTtyProgress } = await import('./tty.js');
  return createTtyProgress();
}

/** An event from the control socket, checked: a newer daemon may send fields this CLI does not know. */
export function progressEventOf(v: Record<string, unknown>): ProgressEvent | undefined {
  if (typeof v.phase !== 'string' || typeof v.done !== 'number') return undefined;
  return {
    phase: v.phase,
    done: v.done,
    ...(typeof v.store === 'string' ? { store: v.store } : {}),
    ...(typeof v.total === 'number' ? { total: v.total } : {}),
    ...(v.end === 'ok' || v.end === 'failed' ? { end: v.end } : {}),
  };
}
