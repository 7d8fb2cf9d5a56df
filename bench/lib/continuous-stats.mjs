// Pure figures of the continuous-backup bench (bench/continuous.mjs): the
// end-to-end lag of each write, write-latency windows, RSS flatness.
import { median, percentile } from './util.mjs';

/** The largest of xs, NaN when empty (no spread: a run has ~10^6 writes, more than a call's arguments may be). */
export function maxOf(xs) {
  let m = -Infinity;
  for (const x of xs) if (x > m) m = x;
  return xs.length ? m : NaN;
}

/**
 * End-to-end lag of each write: from its ack (the put's response) to the
 * moment the manifest of a segment holding its revision existed in the
 * store (the commit). `writes`: [dueMs, latMs, ok, rev, ackMs] (bench/latency.mjs
 * --revisions); `segments`: [{ fromRev, toRev, committedMs }]. A revision in
 * two segments (a failover overlap) counts from the first commit. Returns
 * the lags in seconds and the writes no committed segment holds.
 */
export function writeLags(writes, segments) {
  const segs = [...segments].sort((a, b) => a.fromRev - b.fromRev);
  const lags = [];
  const missing = [];
  for (const w of writes) {
    const [, , ok, rev, ack] = w;
    if (!ok) continue;
    // The last segment starting at or before rev; overlaps are rare and short: look back a few.
    let lo = 0;
    let hi = segs.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (segs[mid].fromRev <= rev) (at = mid), (lo = mid + 1);
      else hi = mid - 1;
    }
    let best = Infinity;
    for (let k = at; k >= 0 && k > at - 4; k--) if (segs[k].toRev >= rev) best = Math.min(best, segs[k].committedMs);
    if (best === Infinity) missing.push(w);
    else lags.push((best - ack) / 1000);
  }
  return { lags, missing };
}

/** p50/p99/max of the ok writes due in [from, to], and how many failed. */
export function windowStats(writes, from, to) {
  const w = writes.filter(([due]) => due >= from && due <= to);
  const lat = w.filter(([, , ok]) => ok).map(([, l]) => l);
  return { n: w.length, errors: w.length - lat.length, p50: percentile(lat, 50), p99: percentile(lat, 99), max: maxOf(lat) };
}

/** Least-squares slope of ys over xs (units of y per unit of x); NaN with fewer than 2 points. */
export function slope(xs, ys) {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

/**
 * RSS flatness over a run: `samples` [[epochMs, MiB], ...]. The slope of a
 * linear fit over the second half (MiB per 10 min: start-up and warm-up are
 * out of it), and the medians of the first and last `edgeMs` (5 min, or a
 * quarter of a shorter run).
 */
export function rssFlatness(samples, edgeMs = 5 * 60_000) {
  if (samples.length === 0) return { max: NaN, slopePer10Min: NaN, firstMedian: NaN, lastMedian: NaN, edgeMinutes: NaN };
  const t0 = samples[0][0];
  const t1 = samples.at(-1)[0];
  const edge = Math.min(edgeMs, (t1 - t0) / 4);
  const half = samples.filter(([t]) => t >= t0 + (t1 - t0) / 2);
  return {
    max: maxOf(samples.map(([, m]) => m)),
    slopePer10Min: slope(half.map(([t]) => t), half.map(([, m]) => m)) * 600_000,
    firstMedian: median(samples.filter(([t]) => t <= t0 + edge).map(([, m]) => m)),
    lastMedian: median(samples.filter(([t]) => t >= t1 - edge).map(([, m]) => m)),
    edgeMinutes: edge / 60_000,
  };
}

/** "30m", "5m", "90s", "1h", "2m30s", or plain seconds → milliseconds. */
export function parseDurationMs(s) {
  const str = String(s).trim();
  if (/^\d+(\.\d+)?$/.test(str)) return Number(str) * 1000;
  const re = /(\d+(?:\.\d+)?)(h|m|s)/gy;
  let ms = 0;
  let m;
  let end = 0;
  while ((m = re.exec(str))) {
    ms += Number(m[1]) * { h: 3_600_000, m: 60_000, s: 1000 }[m[2]];
    end = re.lastIndex;
  }
  if (end !== str.length || end === 0) throw new Error(`cannot read duration ${JSON.stringify(s)} (use e.g. 30m, 5m, 90s)`);
  return ms;
}
