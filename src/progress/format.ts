import { fmtBytes } from '../etcd/health.js';

/**
 * The pure half of the live progress line: rate over a sliding window, ETA,
 * and the text of one row. Time is passed in (milliseconds), so every
 * function here is table-tested without a clock.
 */

/** Samples older than this do not count toward the rate: it follows a change of pace within seconds. */
export const RATE_WINDOW_MS = 5_000;

export interface Sample {
  t: number;
  done: number;
}

/**
 * Bytes per second over the samples of the last `windowMs` (the oldest kept
 * sample against the newest). Undefined until two samples at least 200 ms
 * apart exist: a rate from one chunk is noise.
 */
export function rateOf(samples: readonly Sample[], windowMs = RATE_WINDOW_MS): number | undefined {
  if (samples.length < 2) return undefined;
  const last = samples[samples.length - 1]!;
  let first = samples[0]!;
  for (const s of samples) {
    if (last.t - s.t <= windowMs) {
      first = s;
      break;
    }
  }
  const dt = last.t - first.t;
  if (dt < 200) return undefined;
  return Math.max(0, ((last.done - first.done) * 1000) / dt);
}

/** Samples closer together than this are one: the list stays ~50 long however many chunks a second arrive. */
export const SAMPLE_EVERY_MS = 100;

/**
 * Keeps the samples a rate needs (one just outside the window, for its
 * start), adding `s`: a sample within SAMPLE_EVERY_MS of the one before the
 * last replaces the last, so a stream of small chunks costs no memory and no
 * array shifting.
 */
export function addSample(samples: Sample[], s: Sample, windowMs = RATE_WINDOW_MS): void {
  const n = samples.length;
  if (n >= 2 && s.t - samples[n - 2]!.t < SAMPLE_EVERY_MS) samples[n - 1] = s;
  else samples.push(s);
  while (samples.length > 2 && s.t - samples[1]!.t >= windowMs) samples.shift();
}

/** Seconds left at `rate`, or undefined when it cannot be told (no total, no rate yet, a stalled phase). */
export function etaSeconds(done: number, total: number | undefined, rate: number | undefined): number | undefined {
  if (total === undefined || rate === undefined || rate <= 0) return undefined;
  return Math.max(0, (total - done) / rate);
}

/** `7s`, `4m05s`, `1h02m`: what a person reads at a glance. */
export function fmtSeconds(s: number): string {
  const n = Math.round(s);
  if (n < 60) return `${n}s`;
  if (n < 3600) return `${Math.floor(n / 60)}m${String(n % 60).padStart(2, '0')}s`;
  return `${Math.floor(n / 3600)}h${String(Math.floor((n % 3600) / 60)).padStart(2, '0')}m`;
}

const BAR = 20;

function bar(fraction: number): string {
  const full = Math.min(BAR, Math.floor(fraction * BAR));
  return `[${'#'.repeat(full)}${'-'.repeat(BAR - full)}]`;
}

export interface Row {
  phase: string;
  store?: string;
  done: number;
  total?: number;
  /** Bytes per second, when known. */
  rate?: number;
  /** For a finished row: milliseconds the phase took. */
  elapsedMs?: number;
  end?: 'ok' | 'failed';
}

/** Phase names padded to one column; "deliver s3" and "read-back s3" line up with "bundle". */
const LABEL_WIDTH = 22;

export function labelOf(r: Pick<Row, 'phase' | 'store'>): string {
  return r.store === undefined ? r.phase : `${r.phase} ${r.store}`;
}

/**
 * One line of progress. Live: `deliver s3   [#####---] 256.0 MiB / 1.0 GiB  25%  85.3 MiB/s  ETA 9s`.
 * Finished: `deliver s3   done 1.0 GiB in 12s, 85.3 MiB/s`. Within `width` columns: the bar
 * goes first, then the end is cut (a wrapped live line would take two rows of the screen).
 */
export function formatRow(r: Row, width = Infinity): string {
  const line = rowText(r, true);
  if (line.length <= width) return line;
  const bare = rowText(r, false);
  return bare.length <= width ? bare : bare.slice(0, Math.max(0, width - 1));
}

function rowText(r: Row, withBar: boolean): string {
  const label = labelOf(r).padEnd(LABEL_WIDTH);
  // A phase that moves no bytes we can count (the restore tool): its time only.
  if (r.total === undefined && r.done === 0) {
    const took = fmtSeconds((r.elapsedMs ?? 0) / 1000);
    return `${label} ${r.end === 'ok' ? 'done in' : r.end === 'failed' ? 'FAILED after' : 'running'} ${took}`;
  }
  if (r.end) {
    const secs = (r.elapsedMs ?? 0) / 1000;
    const avg = secs > 0 ? `, ${fmtBytes(Math.round(r.done / secs))}/s` : '';
    if (r.end === 'failed') return `${label} FAILED after ${fmtBytes(r.done)}${r.total !== undefined ? ` of ${fmtBytes(r.total)}` : ''}`;
    return `${label} done ${fmtBytes(r.done)} in ${fmtSeconds(secs)}${avg}`;
  }
  const parts: string[] = [];
  if (r.total !== undefined && r.total > 0) {
    const f = Math.min(1, r.done / r.total);
    if (withBar) parts.push(bar(f));
    parts.push(`${fmtBytes(r.done)} / ${fmtBytes(r.total)}`, `${Math.floor(f * 100)}%`.padStart(4));
  } else {
    parts.push(fmtBytes(r.done));
  }
  parts.push(r.rate === undefined ? '-- /s' : `${fmtBytes(Math.round(r.rate))}/s`);
  const eta = etaSeconds(r.done, r.total, r.rate);
  if (eta !== undefined) parts.push(`ETA ${fmtSeconds(eta)}`);
  return `${label} ${parts.join('  ')}`;
}
