// Loaded with `node --import bench/lib/mem-log-hook.mjs dist/cli.js run ...`
// (bench/continuous.mjs --daemon-mem-log): appends process.memoryUsage() as
// one JSON line every 5 s to $BENCH_MEM_LOG ({t, rss, heapTotal, heapUsed,
// external, arrayBuffers} in bytes), so the report can say what the daemon's
// RSS is made of. Changes nothing else (the timer is unref'd).
import { appendFileSync } from 'node:fs';

const file = process.env.BENCH_MEM_LOG;
if (file) {
  setInterval(() => {
    appendFileSync(file, JSON.stringify({ t: Date.now(), ...process.memoryUsage() }) + '\n');
  }, 5000).unref();
}
