// Loaded with `node --import bench/lib/mem-log-hook.mjs dist/cli.js run ...`
// (bench/continuous.mjs --daemon-mem-log): appends process.memoryUsage() as
// one JSON line every 5 s to $BENCH_MEM_LOG ({t, rss, heapTotal, heapUsed,
// external, arrayBuffers} in bytes), so the report can say what the daemon's
// RSS is made of; with BENCH_MEM_SPACES=1 also V8's heap spaces ({spaces: {name: committed bytes}}).
// Changes nothing else (the timer is unref'd).
import { appendFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';

const file = process.env.BENCH_MEM_LOG;
if (file) {
  setInterval(() => {
    const spaces = process.env.BENCH_MEM_SPACES ? { spaces: Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.physical_space_size])) } : {};
    appendFileSync(file, JSON.stringify({ t: Date.now(), ...process.memoryUsage(), ...spaces }) + '\n');
  }, 5000).unref();
}
