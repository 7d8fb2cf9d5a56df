import { createLogUpdate } from 'log-update';
import { setLiveArea } from '../log.js';
import { addSample, formatRow, rateOf, type Sample } from './format.js';
import { rowKey, type ProgressEvent, type ProgressSink } from './model.js';

/** At most this often a frame is drawn: a stream of 1 MiB chunks at 1 GiB/s costs a few string joins a second. */
export const RENDER_EVERY_MS = 100;
/** A frame without news: elapsed time, a falling rate. */
export const TICK_MS = 1000;

interface LiveRow {
  last: ProgressEvent;
  samples: Sample[];
  startedAt: number;
}

export interface TtyProgress {
  sink: ProgressSink;
  /** Draws what is left as it stands and gives the terminal back (the cursor too). */
  close(): void;
}

/**
 * One live line per running phase on the terminal (stderr), through
 * log-update; a phase that ends leaves one static line in the scrollback.
 * Log lines written meanwhile step around the live lines (src/log.ts).
 */
export function createTtyProgress(now: () => number = () => performance.now()): TtyProgress {
  const stderr = process.stderr;
  // A pseudo-terminal without a size (script(1) run by a program) reports 0 x 0; log-update would
  // wrap at 0 columns and draw nothing at 0 rows.
  const screen = {
    write: (s: string) => stderr.write(s),
    get columns() {
      return stderr.columns || 100;
    },
    get rows() {
      return stderr.rows || 24;
    },
    isTTY: true,
  };
  const draw = createLogUpdate(screen as unknown as NodeJS.WriteStream);
  const rows = new Map<string, LiveRow>();
  let timer: NodeJS.Timeout | undefined;
  let due = Infinity;
  let fastPending = false;
  let lastDraw = -Infinity;
  let closed = false;

  // Sampled when a frame is drawn (at most every RENDER_EVERY_MS), not per chunk: the sink stays a map lookup.
  const frame = (): string => {
    const t = now();
    return [...rows.values()]
      .map((r) => {
        addSample(r.samples, { t, done: r.last.done });
        return formatRow({ ...r.last, rate: rateOf(r.samples), elapsedMs: t - r.startedAt }, screen.columns - 1);
      })
      .join('\n');
  };
  const arm = (wait: number) => {
    const at = now() + wait;
    if (timer !== undefined && due <= at) return;
    if (timer !== undefined) clearTimeout(timer);
    due = at;
    timer = setTimeout(render, wait);
    timer.unref();
  };
  const render = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    due = Infinity;
    fastPending = false;
    lastDraw = now();
    if (rows.size === 0) return draw.clear();
    draw(frame());
    // Drawn again within a second even without news: a stalled transfer's rate falls, a phase without bytes counts its seconds.
    if (!closed) arm(TICK_MS);
  };
  const schedule = () => {
    if (fastPending || closed) return;
    fastPending = true;
    arm(Math.max(0, RENDER_EVERY_MS - (now() - lastDraw)));
  };

  const sink: ProgressSink = (e) => {
    if (closed) return;
    const key = rowKey(e);
    let row = rows.get(key);
    const fresh = !row;
    if (!row) rows.set(key, (row = { last: e, samples: [], startedAt: now() }));
    row.last = e;
    // A new phase shows at once, however short it turns out; then at most every RENDER_EVERY_MS.
    if (!e.end) return fresh ? render() : schedule();
    rows.delete(key);
    draw.persist(formatRow({ ...e, elapsedMs: now() - row.startedAt }, screen.columns - 1));
    render();
  };

  setLiveArea({ suspend: () => draw.clear(), resume: () => rows.size > 0 && !closed && draw(frame()) });
  return {
    sink,
    close() {
      if (closed) return;
      if (timer !== undefined) clearTimeout(timer);
      if (rows.size > 0) draw.persist(frame());
      else draw.clear();
      draw.done();
      closed = true;
      setLiveArea(undefined);
    },
  };
}
