#!/usr/bin/env node
// Summarizes a V8 .cpuprofile (node --cpu-prof): self time by function and by package.
//   node bench/lib/profile-summary.mjs FILE.cpuprofile [topN]
import { readFileSync } from 'node:fs';

const [file, topArg] = process.argv.slice(2);
const top = Number(topArg ?? 25);
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const selfUs = new Map();
p.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
const fn = new Map();
const pkg = new Map();
let total = 0;
for (const [id, us] of selfUs) {
  const n = byId.get(id);
  const url = n.callFrame.url;
  const short = url.replace(/^.*node_modules\//, 'nm:').replace(/^.*\/work\/main\//, '');
  const key = `${n.callFrame.functionName || '(anon)'} ${short}:${n.callFrame.lineNumber + 1}`;
  fn.set(key, (fn.get(key) ?? 0) + us);
  const where = n.callFrame.functionName === '(idle)' ? '(idle)' : url.includes('node_modules/') ? url.replace(/^.*node_modules\/((@[^/]+\/)?[^/]+).*/, '$1') : url.startsWith('node:') ? 'node-core' : url.includes('/dist/') ? 'etcd-backupd dist' : url ? 'other js' : `(native/${n.callFrame.functionName || 'program'})`;
  pkg.set(where, (pkg.get(where) ?? 0) + us);
  total += us;
}
const show = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, us]) => `${(us / 1e6).toFixed(2).padStart(7)} s ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`).join('\n');
console.log(`total ${(total / 1e6).toFixed(2)} s sampled\n-- by package\n${show(pkg, 15)}\n-- by function (self)\n${show(fn, top)}`);
