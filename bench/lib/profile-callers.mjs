#!/usr/bin/env node
// Self time of functions matching NAME, split by their call stacks (N frames up).
//   node bench/lib/profile-callers.mjs FILE.cpuprofile NAME [depth]
import { readFileSync } from 'node:fs';
const [file, name, depthArg] = process.argv.slice(2);
const depth = Number(depthArg ?? 4);
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map();
p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
const stacks = new Map();
const label = (n) => `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.replace(/^.*node_modules\//, 'nm:').replace(/^.*\/work\/main\//, '')}:${n.callFrame.lineNumber + 1}`;
for (const [id, us] of self) {
  const n = byId.get(id);
  if (!n.callFrame.functionName.includes(name)) continue;
  const chain = [];
  for (let cur = parent.get(id), k = 0; cur !== undefined && k < depth; cur = parent.get(cur), k++) chain.push(label(byId.get(cur)));
  const key = chain.join(' <- ');
  stacks.set(key, (stacks.get(key) ?? 0) + us);
}
for (const [k, us] of [...stacks].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${(us / 1e6).toFixed(2).padStart(7)} s  ${k}`);
