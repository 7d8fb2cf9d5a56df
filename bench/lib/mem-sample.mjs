#!/usr/bin/env node
// What a step's peak RSS is made of: runs one step of the built code (dist/)
// while sampling process.memoryUsage() every 10 ms, prints the maxima (MiB).
//   node --initial-old-space-size=64 bench/lib/mem-sample.mjs inspect SNAPSHOT
//   node --initial-old-space-size=64 bench/lib/mem-sample.mjs bundle SNAPSHOT STATIC_ARCHIVE [zstd|none]
// (add --max-semi-space-size=1 to see how much of it is dead buffers awaiting a GC)
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './util.mjs';

const [, , step, snapshot, statics, codec = 'zstd'] = process.argv;
const load = (p) => import(pathToFileURL(join(ROOT, 'dist', p)).href);
const { writeBundle } = await load('bundle/write.js');
const { inspectSnapshot } = await load('etcd/snapshot.js');
const keys = ['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'];
const max = Object.fromEntries(keys.map((k) => [k, 0]));
let atPeak;
const timer = setInterval(() => {
  const m = process.memoryUsage();
  for (const k of keys) max[k] = Math.max(max[k], m[k]);
  if (m.rss >= max.rss) atPeak = m;
}, 10);
const start = process.memoryUsage();
if (step === 'inspect') await inspectSnapshot(snapshot);
else if (step === 'bundle') {
  const out = join(tmpdir(), `mem-sample-${process.pid}.tar`);
  await writeBundle(out, [snapshot, statics], () => Buffer.from('{}'), { codec });
  await rm(out, { force: true });
} else throw new Error('step: inspect | bundle');
clearInterval(timer);
const mib = (o) => Object.fromEntries(keys.map((k) => [k, Math.round(o[k] / 1048576)]));
console.log(JSON.stringify({ step, codec: step === 'bundle' ? codec : undefined, start: mib(start), max: mib(max), atRssPeak: mib(atPeak ?? start), maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) }));
