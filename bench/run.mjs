#!/usr/bin/env node
// etcd-backupd benchmark: `npm run bench -- [--size 1GiB] [--repeats 3] ...`
// See bench/README.md for what is measured and how to read the table.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { benchArgs, benchLog, buildDist } from './lib/cli.mjs';
import { ZSTD, defineCases } from './lib/cases.mjs';
import { DATASETS, ensureDataset } from './lib/dataset.mjs';
import { evaluateGoals, goalLines, renderGoals } from './lib/goals.mjs';
import { latencyTest, renderLatency } from './lib/latency-test.mjs';
import { GROUP_TITLE, renderPhases, renderRss, renderTable, renderTargets, summarize } from './lib/report.mjs';
import { RUN, backupd, setup } from './lib/stand.mjs';
import { BENCH, GiB, MiB, ROOT, TMP, fmt, parseSize, run, sizeLabel } from './lib/util.mjs';

// `npm run bench -- catalog [options]`: the catalog-scale benchmark (bench/catalog.mjs);
// `npm run bench -- leader-follower [options]`: write latency during a backup from a follower vs
// from the leader of a 3-member cluster (bench/leader-follower.mjs); `npm run bench -- continuous
// [options]`: continuous backups under load (bench/continuous.mjs); `npm run bench -- progress`: what
// the live progress lines cost (bench/progress.mjs). All opt-in and separate from the backup-path
// run below; this module waits here (top-level await) until the child exits.
const SUB = { catalog: 'catalog.mjs', 'leader-follower': 'leader-follower.mjs', continuous: 'continuous.mjs', progress: 'progress.mjs' };
if (Object.hasOwn(SUB, process.argv[2] ?? '')) {
  await new Promise(() => {
    const child = spawn(process.execPath, [join(BENCH, SUB[process.argv[2]]), ...process.argv.slice(3)], { stdio: 'inherit' });
    for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
    child.on('close', (code, sig) => process.exit(code ?? (sig ? 130 : 1)));
  });
}

const USAGE = `usage: npm run bench -- [options]
       npm run bench -- catalog [options]   the catalog benchmark (see bench/catalog.mjs --help)
       npm run bench -- leader-follower [options]   write latency, backup from a follower vs the leader (bench/leader-follower.mjs --help)
       npm run bench -- progress [options]   whole-process time of a backup with and without a terminal (bench/progress.mjs --help)
       npm run bench -- continuous [options]   continuous backups under load: lag, write p99, RSS, bytes, restore (bench/continuous.mjs --help)
  --size SIZE          etcd database / snapshot size (default 1GiB; e.g. 256MiB, 4GiB)
  --dataset KIND       incompressible | realistic | both (default both): random values, or
                       Kubernetes-shaped objects (test/support/k8s-data.ts)
  --codec CODEC        etcd-backupd compression.codec: zstd | none (default: the product's, zstd)
  --level N            etcd-backupd compression.level, 1-19 (default: the product's, 3)
  --repeats N          repetitions of every measurement, interleaved (default 3)
  --rss-sizes LIST     sizes for the peak-RSS sweep (default 256MiB,<size>; e.g. 256MiB,1GiB,4GiB; "none" skips)
  --no-latency         skip the etcd write-latency test
  --latency-rate N     background writes per second (default 100)
  --latency-nice       also measure a backup run under nice -n 19 ionice -c 3
  --experiments        afterwards run bench/experiments.mjs (knob sweeps) on the same size
  --only LIST          only these cases (ids as printed), for quick checks
  --s3-part-size MiB   etcd-backupd S3 partSize (config key; default: the code's default)
  --s3-queue-size N    etcd-backupd S3 queueSize (config key; default: the code's default)
  --no-build           do not run \`npm run build\` first
  --out FILE           write the Markdown here (default bench/results/<YYYY-MM-DD>.md)`;

const opt = benchArgs(USAGE, {
    size: { type: 'string', default: '1GiB' },
    dataset: { type: 'string', default: 'both' },
    codec: { type: 'string' },
    level: { type: 'string' },
    repeats: { type: 'string', default: '3' },
    'rss-sizes': { type: 'string' },
    'no-latency': { type: 'boolean', default: false },
    'latency-rate': { type: 'string', default: '100' },
    'latency-nice': { type: 'boolean', default: false },
    experiments: { type: 'boolean', default: false },
    only: { type: 'string' },
    's3-part-size': { type: 'string' },
    's3-queue-size': { type: 'string' },
});
const log = benchLog('bench');
const SIZE = parseSize(opt.size);
const REPEATS = Math.max(1, Number(opt.repeats));
const RSS_SIZES = opt['rss-sizes'] === 'none' ? [] : (opt['rss-sizes'] ?? `256MiB,${opt.size}`).split(',').map(parseSize);
if (SIZE > 7 * GiB) throw new Error('--size: etcd allows at most 8 GiB (--quota-backend-bytes); use 7GiB or less');
const ONLY = opt.only ? new Set(opt.only.split(',')) : undefined;
const KINDS = opt.dataset === 'both' ? DATASETS : [opt.dataset];
if (!KINDS.every((k) => DATASETS.includes(k))) throw new Error(`--dataset: ${opt.dataset}? use incompressible, realistic or both`);
// Passed as etcd-backupd's config key; absent: the product's defaults (its config schema's).
const COMPRESSION = opt.codec || opt.level ? { ...(opt.codec ? { codec: opt.codec } : {}), ...(opt.level ? { level: Number(opt.level) } : {}) } : undefined;
const CLI = join(ROOT, 'dist', 'cli.js');

// ------------------------------------------------------------------ build

async function versions() {
  const v = async (cmd, args, re = /.*/) => {
    try {
      const out = await run(cmd, args);
      return (re.exec(out)?.[0] ?? out).trim();
    } catch (e) {
      return `n/a (${String(e.message).split('\n')[0].slice(0, 60)})`;
    }
  };
  const sshV = await new Promise((r) => {
    const c = spawn('ssh', ['-V'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let s = '';
    c.stderr.on('data', (d) => (s += d));
    c.on('close', () => r(s.trim()));
  });
  return {
    node: process.version,
    etcd: await v('etcd', ['--version'], /etcd Version: \S+/),
    rclone: await v('rclone', ['version'], /rclone \S+/),
    aws: await v('aws', ['--version'], /aws-cli\/\S+/),
    zstd: await v('zstd', ['--version'], /v\d+\.\d+\.\d+/),
    openssh: sshV.split(',')[0],
    coreutils: await v('sha256sum', ['--version'], /sha256sum .*$/m),
    s3rver: JSON.parse(readFileSync(join(ROOT, 'node_modules/s3rver/package.json'), 'utf8')).version,
    ssh2: JSON.parse(readFileSync(join(ROOT, 'node_modules/ssh2/package.json'), 'utf8')).version,
    awsSdk: JSON.parse(readFileSync(join(ROOT, 'node_modules/@aws-sdk/lib-storage/package.json'), 'utf8')).version,
  };
}

// ------------------------------------------------------------------ one dataset

const mib = (b) => b / MiB;

/** Cases (interleaved rounds), peak-RSS sweep and latency test on one dataset. */
async function runDataset(kind, srv) {
  const ds = await ensureDataset(SIZE, log, { kind });
  log(`[${kind}] snapshot ${fmt(mib(ds.snapshotBytes), 0)} MiB (${ds.keys} keys, zstd -3 → ${fmt(mib(ds.zstdBytes), 0)} MiB)${ds.cached ? ' from cache' : ''}: ${ds.snapshot}`);
  const cases = defineCases(ds, srv, { only: ONLY, compression: COMPRESSION });
  const samples = Object.fromEntries(cases.map((c) => [c.id, []]));
  const rss = [];
  let lat;
  for (const c of cases) await c.clean?.();
  await srv.clean.peerLocal();
  // Warm-up: one untimed pass over the snapshot so every case starts with it in the page cache.
  await run('sh', ['-c', 'cat "$0" "$1" > /dev/null', ds.snapshot, ds.staticResources]);
  for (let rep = 1; rep <= REPEATS; rep++) {
    for (const c of cases) {
      const load = loadavg()[0];
      let s;
      try {
        s = { ...(await c.run()), load };
        s.bytes ??= c.bytes;
        log(`[${kind}] rep ${rep}/${REPEATS} ${c.id.padEnd(18)} ${fmt(s.wall).padStart(7)} s  ${fmt(mib(s.bytes) / s.wall, 0).padStart(5)} MiB/s  cpu ${fmt(s.cpu)} s  rss ${fmt(s.rssKiB / 1024, 0)} MiB  (load ${fmt(load, 1)})`);
      } catch (e) {
        s = { error: String(e.message ?? e).split('\n')[0] };
        log(`[${kind}] rep ${rep}/${REPEATS} ${c.id}: FAILED ${s.error}`);
      }
      delete s.stdout;
      delete s.stderr;
      delete s.doc?.inspect;
      samples[c.id].push(s);
      await c.clean?.();
      await srv.clean.work();
    }
  }
  for (const size of RSS_SIZES) {
    try {
      const d = size === SIZE ? ds : await ensureDataset(size, log, { kind });
      await srv.clean.s3();
      await srv.clean.sftp();
      await srv.clean.local();
      const args = { snapshot: d.snapshot, staticResources: d.staticResources, workDir: join(RUN, 'work'), mode: 'all', stores: [srv.stores.local, srv.stores.s3, srv.stores.sftp], ...(COMPRESSION ? { compression: COMPRESSION } : {}) };
      const r = await backupd(args, srv.env);
      rss.push({ size: sizeLabel(size), snapshotBytes: d.snapshotBytes, bytes: r.bytes, stored: r.storedBytes, wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, phases: r.phases, phaseCpu: r.doc.phaseCpu, rssAfter: r.doc.rssAfter, rssNow: r.doc.rssNow, memoryAtEnd: r.doc.memoryAtEnd });
      log(`[${kind}] rss sweep ${sizeLabel(size)}: peak RSS ${fmt(r.rssKiB / 1024, 0)} MiB, wall ${fmt(r.wall)} s`);
    } catch (e) {
      rss.push({ size: sizeLabel(size), error: String(e.message ?? e).split('\n')[0] });
      log(`[${kind}] rss sweep ${sizeLabel(size)} failed: ${e.message}`);
    }
    await srv.clean.s3();
    await srv.clean.sftp();
    await srv.clean.local();
    await srv.clean.work();
  }
  if (!opt['no-latency']) {
    try {
      lat = await latencyTest(ds, srv, { rate: Number(opt['latency-rate']), nice: opt['latency-nice'], repeats: REPEATS, compression: COMPRESSION, log });
    } catch (e) {
      lat = { error: String(e.message ?? e).split('\n')[0] };
      log(`[${kind}] latency test failed: ${e.message}`);
    }
    await srv.clean.s3();
    await srv.clean.sftp();
  }
  const sums = Object.fromEntries(cases.map((c) => [c.id, summarize(c, samples[c.id])]));
  return { kind, ds, cases, samples, sums, rss, lat };
}

const DATASET_TEXT = {
  incompressible: '10,000 Kubernetes-sized random objects (1–4 KiB), then 512 KiB–1 MiB random values: the worst case for compression',
  realistic: 'Kubernetes-shaped objects from `test/support/k8s-data.ts` (seed 42, under `/kubernetes.io`): pods with managedFields, configmaps, secrets, events, leases as JSON, 1 in 10 values opaque binary',
};

function datasetSection(d) {
  const { ds, cases, sums, samples, rss, lat } = d;
  const bd = sums['bd-bundle'];
  const kinds = ds.kinds ? ` (${Object.entries(ds.kinds).map(([k, n]) => `${k} ${n}`).join(', ')})` : '';
  return [
    `## Dataset: ${d.kind}`,
    '',
    `${DATASET_TEXT[d.kind]}. Snapshot **${fmt(mib(ds.snapshotBytes), 0)} MiB**, ${ds.keys} keys${kinds}; \`zstd -3\` makes **${fmt(mib(ds.zstdBytes), 0)} MiB** of it (${fmt(ds.snapshotBytes / ds.zstdBytes, 2)}×). ` +
      (bd && !bd.na ? `etcd-backupd's bundle (codec ${bd.codec}${bd.level ? `, level ${bd.level}` : ''}): ${fmt(mib(bd.stored), 0)} MiB stored of ${fmt(mib(bd.bytes), 0)} MiB of tar.` : ''),
    '',
    '### Targets (issue #6)',
    '',
    "For each destination: etcd-backupd's upload phase and its upload + remote-verification phases (seconds inside the process, median) against the fastest peer's whole copy (process wall, median), compressing peers included. The bundle (tar + zstd + hashes) is made once per backup whatever the number of stores, and is shown in the phases table below; the last column is the whole etcd-backupd process (start-up, bundle, upload, verify, manifest) against the same peer.",
    '',
    renderTargets(cases, sums, samples),
    '',
    '### Full path and peers',
    '',
    `Wall time is the whole process (start-up included, for etcd-backupd as for every peer). MiB/s: bytes handled (raw) / wall. Stored MiB: what lands in the destination (≈: \`${ZSTD}\` of the snapshot, measured once). "× fastest peer" = etcd-backupd median wall / the fastest peer of the same destination, which does less work (no bundle, no read-back, usually no fsync).`,
    '',
    renderTable(cases, sums),
    '',
    '### etcd-backupd phases per store',
    '',
    'Seconds inside the process, median (min–max) [median CPU seconds of the process in that phase, zstd\'s thread-pool work included]; the rest of the process wall is Node start-up and module loading.',
    '',
    renderPhases(sums, samples),
    '',
    '### Peak RSS by snapshot size (one process: verify-local, bundle, then local + S3 + SFTP delivery)',
    '',
    rss.length ? renderRss(rss) : '_skipped (--rss-sizes none)_',
    '',
    '### etcd write latency with and without a backup',
    '',
    lat ? (lat.error ? `n/a: ${lat.error}` : renderLatency(lat)) : '_skipped (--no-latency)_',
    '',
  ].join('\n');
}

// ------------------------------------------------------------------ main

async function main() {
  const started = Date.now();
  if (!opt['no-build']) await buildDist(log);
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run npm run build');
  await mkdir(TMP, { recursive: true });
  const vers = await versions();
  const load0 = loadavg();
  // Datasets first (building one is not a measurement), then the stand once for all of them.
  for (const kind of KINDS) await ensureDataset(SIZE, log, { kind });
  const srv = await setup(undefined, { s3PartSize: opt['s3-part-size'] && Number(opt['s3-part-size']) * MiB, s3QueueSize: opt['s3-queue-size'] && Number(opt['s3-queue-size']) });
  const results = [];
  try {
    for (const kind of KINDS) results.push(await runDataset(kind, srv));
  } finally {
    await srv.stop();
    // Stores, outbox and server data: gigabytes; the dataset cache under bench/tmp/data stays.
    await rm(RUN, { recursive: true, force: true }).catch(() => undefined);
  }

  const goals = evaluateGoals(results);
  const day = new Date().toISOString().slice(0, 10);
  const minutes = (Date.now() - started) / 60000;
  const load1 = loadavg();
  const md = [
    `# etcd-backupd benchmark, ${day}`,
    '',
    `Command: \`node bench/run.mjs ${process.argv.slice(2).join(' ')}\`. ` +
      `\`--size ${sizeLabel(SIZE)}\`, dataset${KINDS.length > 1 ? 's' : ''} ${KINDS.join(' and ')} (snapshots taken by etcd-backupd's etcdctl source; static archive ${fmt(results[0].ds.staticBytes / 1024, 0)} KiB). ` +
      `${REPEATS} repetition${REPEATS > 1 ? 's' : ''}, interleaved (every case once per round), page cache warm. All servers on 127.0.0.1: one s3rver ${vers.s3rver}, one OpenSSH sshd (internal-sftp).`,
    '',
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${fmt(totalmem() / GiB, 0)} GiB RAM; load average ${load0.map((x) => fmt(x, 1)).join('/')} at start, ${load1.map((x) => fmt(x, 1)).join('/')} at end (other work on the machine skews wall times: compare CPU seconds too). ` +
      `Tools: node ${vers.node}, ${vers.etcd}, ${vers.rclone}, ${vers.aws}, zstd ${vers.zstd}, ${vers.openssh}, ${vers.coreutils}; ssh2 ${vers.ssh2}, @aws-sdk/lib-storage ${vers.awsSdk}.`,
    '',
    `etcd-backupd compression: ${COMPRESSION ? `\`${JSON.stringify(COMPRESSION)}\` (--codec/--level)` : "the product's default (zstd, level 3)"}; compressing peers run \`${ZSTD}\` (zstd's defaults). ` +
      `S3 store settings: partSize ${srv.stores.s3.partSize ? srv.stores.s3.partSize / MiB + ' MiB' : 'default'}, queueSize ${srv.stores.s3.queueSize ?? 'default'}. Latency load: ${opt['latency-rate']} puts/s. Run took ${fmt(minutes, 1)} min.`,
    '',
    '## Goals',
    '',
    "Ratios measured in this run, medians; ✓ met, ✗ missed. Upload goals: etcd-backupd's upload phase (and upload + remote verification) against the fastest peer's whole process, per destination, on each dataset. Latency: p99 of the background writes over the etcd-backupd backup windows against the p99 over the windows of the seed's path (`etcdctl snapshot save` + `aws s3 cp` of the file), same etcd, same load.",
    '',
    renderGoals(goals),
    '',
    ...results.map(datasetSection),
  ].join('\n');
  const outFile = opt.out ?? join(BENCH, 'results', `${day}.md`);
  await mkdir(dirname(outFile), { recursive: true });
  await writeFile(outFile, md);
  const datasets = {};
  const latSamples = {};
  for (const d of results) {
    const { samples: ls, ...latSummary } = d.lat ?? {};
    if (ls) latSamples[d.kind] = ls;
    datasets[d.kind] = { dataset: d.ds, samples: d.samples, sums: d.sums, rss: d.rss, latency: d.lat && latSummary };
  }
  await writeFile(outFile.replace(/\.md$/, '.json'), JSON.stringify({ size: sizeLabel(SIZE), repeats: REPEATS, compression: COMPRESSION ?? 'default', versions: vers, load: { start: load0, end: load1 }, goals, datasets }, null, 2));
  // Every background write [dueEpochMs, latencyMs, ok] per dataset: for plotting.
  if (Object.keys(latSamples).length) await writeFile(outFile.replace(/\.md$/, '-latency.json'), JSON.stringify(latSamples) + '\n');
  console.log(md);
  log('goals:');
  for (const l of goalLines(goals)) console.error(`  ${l}`);
  log(`wrote ${outFile}`);
  if (opt.experiments) {
    const code = await new Promise((r) =>
      spawn(process.execPath, [join(BENCH, 'experiments.mjs'), '--size', sizeLabel(SIZE), '--repeats', String(REPEATS)], { stdio: 'inherit' }).on('close', r),
    );
    if (code !== 0) process.exitCode = code;
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130)); // the exit hook in lib/servers.mjs kills the servers

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
