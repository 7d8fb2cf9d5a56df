// What the continuous-backup bench samples while it runs: the daemon's
// /metrics (every second), its RSS (every 5 s), and the segment manifests
// committed to the S3 store, read from s3rver's directory (every second),
// with the moment each manifest was written there (its file's mtime: the
// commit, since the manifest is the last thing a delivery writes).
import { readFileSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './util.mjs';

const S3RVER_OBJECT = '._S3rver_object';

/** The value of an unlabelled series, or of one with these labels; undefined when absent. */
export function metricValue(text, name, labels = {}) {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}

const P = 'etcd_backup_continuous_';

/** One /metrics sample of the continuous series (2 s deadline); undefined if the daemon did not answer. */
export async function sampleMetrics(url) {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) });
    const text = await res.text();
    return {
      t: Date.now(),
      writer: metricValue(text, `${P}writer`),
      lagSeconds: metricValue(text, `${P}lag_seconds`),
      lagRevisions: metricValue(text, `${P}lag_revisions`),
      segmentsOk: metricValue(text, `${P}segments_total`, { result: 'success' }),
      segmentsFailed: metricValue(text, `${P}segments_total`, { result: 'failed' }),
      bytes: metricValue(text, `${P}segment_bytes_total`),
      outbox: metricValue(text, `${P}outbox_segments`),
    };
  } catch {
    return undefined;
  }
}

/** VmRSS of a process in MiB (NaN once it is gone). */
export function rssMiB(pid) {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * Follows the committed segments of `cluster` in s3rver's bucket directory
 * (`<bucketDir>/<prefix>/<cluster>/continuous/<base>/<from>-<to>.json`, each
 * object stored by s3rver 3.7.1 as `<key>._S3rver_object`). The key layout
 * comes from dist/layout.js, the one place that spells it.
 */
export async function segmentFollower(bucketDir, prefix, cluster) {
  const layout = await import(pathToFileURL(join(ROOT, 'dist', 'layout.js')).href);
  const root = join(bucketDir, prefix, layout.continuousPrefix(cluster));
  const seen = new Map(); // manifest file → segment
  async function poll() {
    let bases = [];
    try {
      bases = await readdir(root);
    } catch {
      return; // no segment yet
    }
    for (const base of bases) {
      let names = [];
      try {
        names = await readdir(join(root, base));
      } catch {
        continue;
      }
      for (const n of names) {
        if (!n.endsWith(S3RVER_OBJECT)) continue;
        const r = layout.parseSegmentManifestName(n.slice(0, -S3RVER_OBJECT.length));
        const file = join(root, base, n);
        if (!r || seen.has(file)) continue;
        try {
          const m = JSON.parse(await readFile(file, 'utf8'));
          const st = await stat(file);
          seen.set(file, { base, fromRev: r.fromRev, toRev: r.toRev, committedMs: st.mtimeMs, size: m.object.size, rawSize: m.object.rawSize, manifestBytes: st.size, firstTime: m.firstTime, lastTime: m.lastTime });
        } catch {
          /* still being written: the next poll reads it */
        }
      }
    }
  }
  return { poll, segments: () => [...seen.values()] };
}
