// Loaded with `node --import bench/lib/prune-timing-hook.mjs dist/cli.js backup ...`:
// times the retention step of a real backup run. A module hook rewrites
// dist/catalog/prune.js as it loads: the exported pruneStore becomes a wrapper
// that appends one JSON line per call to $BENCH_PRUNE_TIMING
// ({store, dryRun, start, end (epoch ms), seconds, ok}). Nothing else changes;
// if pruneStore is no longer exported under that name the file stays empty and
// the bench says the step was not measured.
import { register } from 'node:module';

if (process.env.BENCH_PRUNE_TIMING) {
  const hook = `
export async function load(url, context, nextLoad) {
  const r = await nextLoad(url, context);
  if (!url.endsWith('/dist/catalog/prune.js') || r.source == null) return r;
  const src = String(r.source);
  if (!src.includes('export async function pruneStore(')) return r;
  const wrapped = src.replace('export async function pruneStore(', 'async function pruneStore__benchInner(') + \`
export async function pruneStore(...args) {
  const start = Date.now();
  const t0 = performance.now();
  let ok = false;
  try {
    const out = await pruneStore__benchInner(...args);
    ok = true;
    return out;
  } finally {
    const { appendFileSync } = await import('node:fs');
    appendFileSync(process.env.BENCH_PRUNE_TIMING, JSON.stringify({ store: args[1]?.name, dryRun: args[3]?.dryRun, start, end: Date.now(), seconds: (performance.now() - t0) / 1000, ok }) + '\\\\n');
  }
}
\`;
  return { ...r, source: wrapped };
}
`;
  register(`data:text/javascript,${encodeURIComponent(hook)}`);
}
