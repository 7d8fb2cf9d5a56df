#!/usr/bin/env node
// The continuous-backup benchmark (issue 17): `npm run bench -- continuous [options]`, opt-in.
//
// A 3-member etcd (plain http, 127.0.0.1), s3rver (the store) and the built
// daemon (`dist/cli.js run`, coordination etcd, continuous on at the default
// 10 s interval) after a base backup. bench/latency.mjs writes Kubernetes-shaped
// objects at --rate per second, open loop, recording each write's latency,
// revision and ack time. Windows: a baseline without the daemon, the base
// backup, the daemon for --duration, the daemon stopped and a second baseline.
// Measures the end-to-end lag (a write's ack → the manifest of the segment
// holding it in the store), the daemon's lag gauges every second, the write
// p99 with the writer vs without, the writer's RSS every 5 s, segment bytes per
// write; then `fetch latest --at T` replaying --restore-revisions revisions.
// Checks the goals and writes bench/results/<date>-continuous.{md,json}.
// See bench/README.md ("Continuous backups").
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { benchArgs, benchLog, buildDist } from './lib/cli.mjs';
import { continuousGoals, renderContinuous } from './lib/continuous-report.mjs';
import { rssMiB, sampleMetrics, segmentFollower } from './lib/continuous-probes.mjs';
import { maxOf, parseDurationMs, rssFlatness, windowStats, writeLags } from './lib/continuous-stats.mjs';
import { staticPodDir } from './lib/dataset.mjs';
import { k8sPool } from './lib/k8s-values.mjs';
import { freePort, startEtcdCluster, startS3rver } from './lib/servers.mjs';
import { launcherNodeFlags, processCpu } from './lib/stand.mjs';
import { BENCH, GiB, MiB, ROOT, TMP, fmt, median, percentile, run, sleep, timed } from './lib/util.mjs';

const USAGE = `usage: npm run bench -- continuous [options]
       node bench/continuous.mjs [options]
  --duration D          how long the daemon's writer runs under load (default 30m; e.g. 5m, 2m)
  --baseline D          each of the two windows without the daemon, before and after (default 2m)
  --rate N              writes per second, open loop (default 500)
  --keys N              Kubernetes-shaped objects the writes update round robin (default 20000)
  --members N           etcd members, 3 (default) or 1
  --dir DIR             where etcd's data, s3rver and the daemon's workDir live, in a fresh
                        subdirectory removed at the end (default /dev/shm: see bench/README.md)
  --interval D          continuous.interval (default: not set, the product's 10s)
  --max-segment-bytes N continuous.maxSegmentBytes (default: not set, the product's 4 MiB)
  --codec C             compression.codec of the config, zstd | none (default: not set, the product's zstd)
  --restore-revisions N replay about N revisions in the timed fetch --at (default 100000; 0: --at now, all)
  --compact-every D     compact etcd like the API server: every D to the revision of D ago (default 5m; 0: never)
  --daemon-mem-log      the daemon logs process.memoryUsage() every 5 s (bench/lib/mem-log-hook.mjs): the
                        report says what its RSS is made of (heap, external, array buffers)
  --daemon-node-args A  extra node flags for the daemon, space-separated (e.g. --max-old-space-size=48)
  --daemon-env LIST     extra environment for the daemon, comma-separated K=V (e.g. MALLOC_ARENA_MAX=4)
  --no-unit-env         do not give the daemon the MALLOC_* settings of systemd/etcd-backupd.service
                        (by default it runs with them, as the installed daemon does)
  --no-restore          skip the timed fetch --at (quick experiments)
  --keep                keep the run directory (daemon log, store) for a look afterwards
  --no-build            do not run \`npm run build\` first
  --out FILE            Markdown here (default bench/results/<YYYY-MM-DD>-continuous.md; .json beside it)`;

const opt = benchArgs(
  USAGE,
  {
    duration: { type: 'string', default: '30m' },
    baseline: { type: 'string', default: '2m' },
    rate: { type: 'string', default: '500' },
    keys: { type: 'string', default: '20000' },
    members: { type: 'string', default: '3' },
    dir: { type: 'string', default: '/dev/shm' },
    interval: { type: 'string' },
    'max-segment-bytes': { type: 'string' },
    codec: { type: 'string' },
    'restore-revisions': { type: 'string', default: '100000' },
    'compact-every': { type: 'string', default: '5m' },
    'daemon-mem-log': { type: 'boolean', default: false },
    'daemon-node-args': { type: 'string' },
    'daemon-env': { type: 'string' },
    'no-unit-env': { type: 'boolean', default: false },
    'no-restore': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
  { subcommand: 'continuous' },
);
const log = benchLog('continuous');
const DURATION_MS = parseDurationMs(opt.duration);
const BASELINE_MS = parseDurationMs(opt.baseline);
const COMPACT_MS = parseDurationMs(opt['compact-every']);
const RATE = Number(opt.rate);
const KEYS = Number(opt.keys);
const MEMBERS = Number(opt.members);
const RESTORE_REVS = Number(opt['restore-revisions']);
if (![1, 3].includes(MEMBERS)) throw new Error('--members: 1 or 3');
const CLI = join(ROOT, 'dist', 'cli.js');
const DIR = join(opt.dir, `ebd-continuous-${process.pid}`);
const MEM_LOG = join(DIR, 'daemon-memory.ndjson');
const CLUSTER = 'bench';
const PREFIX = 'backupd';
// The daemon and the load, killed if this process exits early (lib/servers.mjs does the same for the servers).
const children = new Set();
process.once('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
const cliEnv = { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1', ETCD_BACKUPD_LOG_LEVEL: 'warn' };

async function writeConfig(cluster, s3, metricsPort) {
  const creds = join(DIR, 'creds');
  await mkdir(creds, { recursive: true, mode: 0o700 });
  await writeFile(join(creds, 'akid'), 'S3RVER\n', { mode: 0o600 });
  await writeFile(join(creds, 'secret'), 'S3RVER\n', { mode: 0o600 });
  const file = join(DIR, 'config.json');
  await writeFile(
    file,
    JSON.stringify({
      cluster: CLUSTER,
      node: 'master-0',
      workDir: join(DIR, 'work'),
      schedule: '0 0 1 1 *', // no scheduled backup during the run: the base is taken first, by the CLI
      source: { type: 'etcdctl', staticPodDir: await staticPodDir(), timeout: '10m' },
      etcd: { endpoints: cluster.endpoints, timeout: '10s' },
      stores: [{ name: 's3', type: 's3', bucket: 'bench', prefix: PREFIX, endpoint: s3.endpoint, forcePathStyle: true, accessKeyIdFile: join(creds, 'akid'), secretAccessKeyFile: join(creds, 'secret') }],
      retention: { keepLast: 1000, daily: 0, weekly: 0, monthly: 0 },
      local: { keep: 1 },
      metrics: { listen: `127.0.0.1:${metricsPort}` },
      control: { socket: join(DIR, 'ctl', 'control.sock') },
      shutdownTimeout: '60s',
      recovery: { dir: '' },
      coordination: { mode: 'etcd' },
      ...(opt.codec ? { compression: { codec: opt.codec } } : {}),
      continuous: { enabled: true, ...(opt.interval ? { interval: opt.interval } : {}), ...(opt['max-segment-bytes'] ? { maxSegmentBytes: Number(opt['max-segment-bytes']) } : {}) },
    }),
    { mode: 0o600 },
  );
  return file;
}

/** The objects the load updates, put once (the base holds them, as a cluster's snapshot holds its objects). */
async function fillPool(leader) {
  const pool = await k8sPool(KEYS);
  let batch = [];
  let bytes = 0;
  for (let n = 0; n < pool.entries.length; n++) {
    const w = pool.write(n);
    batch.push(w);
    bytes += w.value.length;
    if (bytes > 1 * MiB || batch.length >= 500 || n === pool.entries.length - 1) {
      await leader.txnPuts(batch, 60_000);
      batch = [];
      bytes = 0;
    }
  }
  return pool.bytes;
}

/** The unit's Environment=MALLOC_* lines (the daemon as installed), then --daemon-env K=V,K2=V2 over them. */
function daemonEnv() {
  const kv = (s) => [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)];
  const unit = opt['no-unit-env'] ? [] : [...readFileSync(join(ROOT, 'systemd', 'etcd-backupd.service'), 'utf8').matchAll(/^Environment=(MALLOC_\w+=\S+)$/gm)].map((m) => kv(m[1]));
  return Object.fromEntries([...unit, ...(opt['daemon-env'] ?? '').split(',').filter(Boolean).map(kv)]);
}

/** The daemon (the binary's node flags, its own process: its pid is the writer's RSS), its JSON log to a file. */
function startDaemon(config) {
  const extra = [...(opt['daemon-node-args']?.split(/\s+/).filter(Boolean) ?? []), ...(opt['daemon-mem-log'] ? ['--import', join(BENCH, 'lib', 'mem-log-hook.mjs')] : [])];
  const env = { ...process.env, ETCD_BACKUPD_LOG_LEVEL: 'info', ...(opt['daemon-mem-log'] ? { BENCH_MEM_LOG: MEM_LOG } : {}), ...daemonEnv() };
  const child = spawn(process.execPath, [...launcherNodeFlags(), ...extra, CLI, 'run', '--config', config], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  const file = createWriteStream(join(DIR, 'daemon.log'));
  child.stderr.pipe(file);
  let buf = '';
  const waiters = [];
  const lines = [];
  child.stderr.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let l;
      try {
        l = JSON.parse(raw);
      } catch {
        continue;
      }
      if (l.level >= 40 || /continuous/.test(l.msg)) lines.push({ time: l.time, level: l.level, msg: l.msg, reason: l.reason, err: l.err?.message ?? l.err });
      for (const w of [...waiters]) if (w.pred(l)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(l));
    }
  });
  const exited = new Promise((r) => child.on('exit', (code, sig) => r(code ?? sig)));
  return {
    pid: child.pid,
    lines,
    exited,
    waitFor: (pred, ms, what) =>
      Promise.race([
        new Promise((resolve) => waiters.push({ pred, resolve })),
        sleep(ms).then(() => Promise.reject(new Error(`the daemon did not log ${what} within ${ms / 1000} s (see ${join(DIR, 'daemon.log')})`))),
        exited.then((c) => Promise.reject(new Error(`the daemon exited (${c}) before ${what}`))),
      ]),
    stop: async () => {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 90_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** bench/latency.mjs with k8s values and revisions; resolves once its clock runs. */
async function startLoad(endpoint) {
  const child = spawn(process.execPath, [join(BENCH, 'latency.mjs'), '--endpoint', endpoint, '--rate', String(RATE), '--values', 'k8s', '--keys', String(KEYS), '--revisions'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const chunks = [];
  child.stdout.on('data', (d) => chunks.push(d));
  const done = new Promise((r) => child.on('close', r));
  await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => (String(d).includes('latency.mjs: started') ? resolve() : process.stderr.write(d)));
    child.on('close', (c) => reject(new Error(`latency.mjs exited (${c}) before it started`)));
  });
  return {
    stop: async () => {
      child.kill('SIGTERM');
      await done;
      return JSON.parse(Buffer.concat(chunks).toString('utf8').trim().split('\n').pop() || '[]');
    },
  };
}

/** Compacts etcd every COMPACT_MS to the revision seen COMPACT_MS before, as the API server does. */
function startCompactor(leader) {
  if (!COMPACT_MS) return { stop: () => undefined, done: [] };
  const done = [];
  let prev;
  const timer = setInterval(async () => {
    try {
      const cur = Number((await leader.client.etcd3.kv.range({ key: Buffer.from('/') }, { deadline: Date.now() + 10_000 })).header.revision);
      if (prev) {
        await leader.client.etcd3.kv.compact({ revision: String(prev) }, { deadline: Date.now() + 30_000 });
        done.push({ t: Date.now(), revision: prev });
      }
      prev = cur;
    } catch (e) {
      done.push({ t: Date.now(), error: String(e.message ?? e) });
    }
  }, COMPACT_MS);
  return { stop: () => clearInterval(timer), done };
}

/** Samples the daemon's metrics every second and its RSS every 5 s, and polls the store's segments, until stop(). */
function startSampling(daemon, metricsUrl, follower) {
  const metrics = [];
  const rss = [];
  let stopped = false;
  const loop = async (ms, fn) => {
    while (!stopped) {
      const t = Date.now();
      await fn();
      await sleep(Math.max(0, ms - (Date.now() - t)));
    }
  };
  const loops = [
    loop(1000, async () => {
      const m = await sampleMetrics(metricsUrl);
      if (m) metrics.push(m);
    }),
    loop(5000, async () => rss.push([Date.now(), rssMiB(daemon.pid)])),
    loop(1000, () => follower.poll()),
  ];
  return {
    metrics,
    rss,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

async function main() {
  const started = Date.now();
  if (!opt['no-build']) await buildDist(log);
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run npm run build');
  await mkdir(TMP, { recursive: true });
  await rm(DIR, { recursive: true, force: true });
  await mkdir(DIR, { recursive: true, mode: 0o700 });
  const out = { daemonEnv: daemonEnv(), daemonNodeArgs: opt['daemon-node-args'], rate: RATE, keys: KEYS, members: MEMBERS, dir: opt.dir, durationSeconds: DURATION_MS / 1000, baselineSeconds: BASELINE_MS / 1000, interval: opt.interval ?? '10s (default)', maxSegmentBytes: opt['max-segment-bytes'] ?? '4194304 (default)', codec: opt.codec ?? 'zstd (default)', compactEverySeconds: COMPACT_MS / 1000, argv: process.argv.slice(2) };
  out.uptimeStart = (await run('uptime', [])).trim();
  out.load = { start: loadavg() };
  const etcdVersion = (await run('etcd', ['--version'])).split('\n')[0].trim();
  log(`starting a ${MEMBERS}-member etcd and s3rver under ${DIR}`);
  const cluster = await startEtcdCluster(join(DIR, 'etcd'), { members: MEMBERS });
  const s3 = await startS3rver(join(DIR, 's3rver'), 'bench');
  let load;
  let daemon;
  let compactor;
  let sampling;
  try {
    const leader = (await cluster.leader()).node;
    const metricsPort = await freePort();
    const config = await writeConfig(cluster, s3, metricsPort);
    log(`putting ${KEYS} Kubernetes-shaped objects through the leader ${leader.name}`);
    out.poolBytes = await fillPool(leader);
    const follower = await segmentFollower(join(s3.dir, 'bench'), PREFIX, CLUSTER);

    log(`load: ${RATE} writes/s to ${leader.endpoint}; baseline ${BASELINE_MS / 1000} s without the daemon`);
    load = await startLoad(leader.endpoint);
    compactor = startCompactor(leader);
    await sleep(5_000); // warm-up: the channel, etcd's caches
    const cpu0 = cluster.members.map((m) => processCpu(m.pid));
    out.windows = { before: { from: Date.now() } };
    await sleep(BASELINE_MS);
    out.windows.before.to = Date.now();
    out.windows.before.etcdCpu = cluster.members.map((m, i) => processCpu(m.pid) - cpu0[i]);

    log('base backup (CLI, under the load)');
    const b = await timed([process.execPath, CLI, 'backup', '--config', config, '--json'], { env: cliEnv, allowFail: true });
    const bdoc = JSON.parse(b.stdout || '{}');
    if (bdoc.result !== 'success') throw new Error(`base backup failed (exit ${b.code}): ${b.stdout.slice(0, 500)} ${b.stderr.slice(-1500)}`);
    out.base = { id: bdoc.id, wall: b.wall, phases: bdoc.phases };

    log('starting the daemon (continuous on)');
    daemon = startDaemon(config);
    const following = await daemon.waitFor((l) => l.msg === 'continuous: following etcd', 180_000, '"continuous: following etcd"');
    out.base.revision = Number(following.baseRevision);
    if (following.base !== out.base.id) log(`  the writer's base is ${following.base}, not the CLI's ${out.base.id}`);
    const cpuD0 = processCpu(daemon.pid);
    const cpu1 = cluster.members.map((m) => processCpu(m.pid));
    sampling = startSampling(daemon, `http://127.0.0.1:${metricsPort}`, follower);
    out.windows.writer = { from: Date.now() };
    log(`writer following etcd from revision ${out.base.revision + 1}; measuring for ${DURATION_MS / 1000} s`);
    for (let t = 0; t < DURATION_MS; t += 60_000) {
      await sleep(Math.min(60_000, DURATION_MS - t));
      const m = sampling.metrics.at(-1);
      log(`  ${Math.round((t + Math.min(60_000, DURATION_MS - t)) / 1000)} s: lag ${fmt(m?.lagSeconds, 1)} s / ${m?.lagRevisions ?? '–'} revs, segments ${m?.segmentsOk ?? '–'}, RSS ${fmt(sampling.rss.at(-1)?.[1], 0)} MiB, load ${loadavg()[0].toFixed(1)}`);
    }
    out.windows.writer.to = Date.now();
    out.daemonCpuSeconds = processCpu(daemon.pid) - cpuD0;
    out.windows.writer.etcdCpu = cluster.members.map((m, i) => processCpu(m.pid) - cpu1[i]);
    log('stopping the daemon (SIGTERM: seals and commits what it holds)');
    out.daemonExit = await daemon.stop();
    out.daemonStoppedAt = Date.now();
    await sampling.stop();
    const cpu2 = cluster.members.map((m) => processCpu(m.pid));
    await sleep(5_000);
    out.windows.after = { from: Date.now() };
    await sleep(BASELINE_MS);
    out.windows.after.to = Date.now();
    out.windows.after.etcdCpu = cluster.members.map((m, i) => processCpu(m.pid) - cpu2[i]);
    const writes = await load.stop();
    load = undefined;
    compactor.stop();
    await follower.poll();
    out.compactions = compactor.done;
    if (opt['daemon-mem-log']) out.daemonMemory = await readMemLog(out.windows.writer);
    out.daemonLog = daemon.lines.filter((l) => l.level >= 40 || !/segment (committed|sealed)/.test(l.msg)).slice(-30);
    await cluster.stop();
    // The raw samples first: a failure in the figures below must not lose a 30-minute run.
    await writeFile(join(TMP, `continuous-${process.pid}-raw.json`), JSON.stringify({ out, writes, segments: follower.segments(), metrics: sampling.metrics, rss: sampling.rss }));
    measure(out, writes, follower.segments(), sampling);

    if (!opt['no-restore']) {
      log('restore: fetch latest --at');
      out.restore = await timedFetch(config, writes, out.base.revision);
    }
  } finally {
    sampling?.stop();
    compactor?.stop();
    if (load) await load.stop().catch(() => undefined);
    if (daemon) await daemon.stop().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
    await s3.stop();
    if (!opt.keep) await rm(DIR, { recursive: true, force: true }).catch(() => undefined);
  }
  out.uptimeEnd = (await run('uptime', [])).trim();
  out.load.end = loadavg();
  out.machine = { cpus: cpus().length, model: cpus()[0]?.model, memGiB: totalmem() / GiB };
  out.versions = { node: process.version, etcd: etcdVersion };
  out.minutes = (Date.now() - started) / 60000;
  out.goals = continuousGoals(out);

  const day = new Date().toISOString().slice(0, 10);
  const outFile = opt.out ?? join(BENCH, 'results', `${day}-continuous.md`);
  const md = renderContinuous(out, day);
  await mkdir(dirname(outFile), { recursive: true });
  await writeFile(outFile, md);
  await writeFile(outFile.replace(/\.md$/, '.json'), JSON.stringify(out, null, 2) + '\n');
  console.log(md);
  log(`wrote ${outFile}`);
  if (opt.keep) log(`kept ${DIR}`);
}

/** The figures: lag (end-to-end and the gauges), write latency per window, RSS, segment bytes. */
function measure(out, writes, segments, sampling) {
  const w = out.windows;
  for (const k of ['before', 'writer', 'after']) Object.assign(w[k], windowStats(writes, w[k].from, w[k].to));
  const baseline = writes.filter(([due]) => (due >= w.before.from && due <= w.before.to) || (due >= w.after.from && due <= w.after.to));
  w.baselinePooled = windowStats(baseline, -Infinity, Infinity);
  out.writes = { total: writes.length, failed: writes.filter(([, , ok]) => !ok).length };
  // Writes the writer had to commit: after the base, acked before the daemon was asked to stop. Those
  // acked before it followed etcd (the base backup and the daemon's start) wait for it by construction:
  // they are the catch-up, reported apart; the lag is of the writes acked while it followed.
  const owed = writes.filter(([, , ok, rev, ack]) => ok && rev > out.base.revision && ack <= w.writer.to);
  const catchUp = writeLags(owed.filter(([, , , , ack]) => ack < w.writer.from), segments);
  out.catchUp = { writes: catchUp.lags.length + catchUp.missing.length, uncommitted: catchUp.missing.length, max: maxOf(catchUp.lags) };
  const { lags, missing } = writeLags(owed.filter(([, , , , ack]) => ack >= w.writer.from), segments);
  out.lag = {
    writes: owed.length,
    uncommitted: missing.length,
    firstUncommitted: missing.slice(0, 5).map(([, , , rev, ack]) => ({ rev, ack: new Date(ack).toISOString() })),
    p50: percentile(lags, 50),
    p99: percentile(lags, 99),
    max: maxOf(lags),
  };
  const gauge = sampling.metrics.filter((m) => m.lagSeconds !== undefined);
  out.lagGauge = {
    samples: gauge.length,
    secondsP50: percentile(gauge.map((m) => m.lagSeconds), 50),
    secondsP99: percentile(gauge.map((m) => m.lagSeconds), 99),
    secondsMax: maxOf(gauge.map((m) => m.lagSeconds)),
    revisionsP50: percentile(gauge.map((m) => m.lagRevisions), 50),
    revisionsP99: percentile(gauge.map((m) => m.lagRevisions), 99),
    last: sampling.metrics.at(-1),
  };
  out.p99PerMinute = perMinuteP99(writes);
  // Whole minutes inside a window only (a minute straddling the base backup or the daemon's start is left out).
  const inside = (k) => out.p99PerMinute.p99.filter((x, i) => { const a = out.p99PerMinute.from + i * 60_000; return a >= w[k].from && a + 60_000 <= w[k].to; });
  out.p99PerMinute.writerMedian = median(inside('writer'));
  out.p99PerMinute.baselineMedian = median([...inside('before'), ...inside('after')]);
  out.rss = { ...rssFlatness(sampling.rss), samples: sampling.rss };
  const segs = segments.sort((a, b) => a.fromRev - b.fromRev);
  const bytes = segs.reduce((s, x) => s + x.size, 0);
  const raw = segs.reduce((s, x) => s + (x.rawSize ?? 0), 0);
  const manifests = segs.reduce((s, x) => s + x.manifestBytes, 0);
  const revs = segs.length ? segs.at(-1).toRev - segs[0].fromRev + 1 : 0;
  const spans = segs.slice(1).map((x, i) => (x.committedMs - segs[i].committedMs) / 1000);
  out.segments = { count: segs.length, bases: [...new Set(segs.map((x) => x.base))], bytes, rawBytes: raw, manifestBytes: manifests, revisions: revs, bytesPerWrite: owed.length ? bytes / owed.length : NaN, bytesPerRevision: revs ? bytes / revs : NaN, secondsBetweenP50: percentile(spans, 50), revisionsPerSegmentP50: percentile(segs.map((x) => x.toRev - x.fromRev + 1), 50), list: segs.map((x) => [x.fromRev, x.toRev, Math.round(x.committedMs), x.size]) };
}

/** The daemon's memoryUsage() lines in the writer window (MiB), and the one at the highest RSS. */
async function readMemLog(win) {
  const mib = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, k === 't' ? v : Math.round((v / MiB) * 10) / 10]));
  const rows = (await readFile(MEM_LOG, 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => mib(JSON.parse(l))).filter((r) => r.t >= win.from && r.t <= win.to);
  const atMax = rows.reduce((a, r) => (!a || r.rss > a.rss ? r : a), undefined);
  return { samples: rows, atMaxRss: atMax, nodeArgs: opt['daemon-node-args'] };
}

/** p99 write latency (ms) per minute of the whole run, from the first write: the machine's noise beside the windows. */
function perMinuteP99(writes) {
  const t0 = writes[0]?.[0] ?? 0;
  const by = [];
  for (const [due, lat, ok] of writes) if (ok) (by[Math.floor((due - t0) / 60_000)] ??= []).push(lat);
  return { from: t0, p99: [...by].map((xs) => (xs ? percentile(xs, 99) : NaN)) };
}

/**
 * `fetch latest --at T --json`, timed: T is when the write reaching the base's
 * revision + RESTORE_REVS was acked (replay stops at the last revision seen by
 * T), or `now` (everything) with --restore-revisions 0 or when the run wrote fewer.
 */
async function timedFetch(config, writes, baseRev) {
  const acked = writes.filter(([, , ok]) => ok).sort((a, b) => a[3] - b[3]);
  const target = acked.find(([, , , rev]) => rev >= baseRev + RESTORE_REVS);
  const at = RESTORE_REVS > 0 && target ? new Date(target[4]).toISOString() : 'now';
  const to = join(DIR, 'restored');
  const r = await timed([process.execPath, CLI, 'fetch', '--config', config, 'latest', '--at', at, '--to', to, '--json'], { env: cliEnv, allowFail: true });
  let doc = {};
  try {
    doc = JSON.parse(r.stdout);
  } catch {
    /* reported below */
  }
  const atMs = at === 'now' ? Date.now() : Date.parse(at);
  // Every write acked 5 s before T must be in what was restored (the writer saw it by T).
  const expectRev = Math.max(0, maxOf(acked.filter(([, , , , ack]) => ack <= atMs - 5000).map(([, , , rev]) => rev)) || 0);
  const replayed = doc.revisionsReplayed ?? NaN;
  return { at, code: r.code, wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, json: doc, error: r.code === 0 ? undefined : r.stderr.slice(-1500), expectRevisionAtLeast: expectRev, holdsExpected: doc.revisionReached >= expectRev, secondsPer100k: (r.wall / replayed) * 100_000 };
}

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130)); // the exit hook in lib/servers.mjs kills the servers

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
