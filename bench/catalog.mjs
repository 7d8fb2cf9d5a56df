#!/usr/bin/env node
// Catalog-scale benchmark: `npm run bench -- catalog [options]` (or `node bench/catalog.mjs`).
// N committed backups of one cluster (3 nodes, every 15 minutes) in an S3
// store (s3rver) and an SFTP store (OpenSSH sshd), reached through a delay
// proxy that adds 10 ms each way to every chunk (a 20 ms round trip), and the
// real CLI timed on them: `list --json` cold and warm, `prune --dry-run
// --json` warm, and the retention step of one real `backup` run. See
// bench/README.md ("Catalog benchmark").
import { spawn } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { createServer, connect } from 'node:net';
import { dirname, join } from 'node:path';
import { benchArgs, benchLog, buildDist } from './lib/cli.mjs';
import { seedDirectory, seedIds, seedS3rverDir, SLOT_MS, NODES } from './lib/catalog-seed.mjs';
import { diffCounters, startDelayProxy } from './lib/delay-proxy.mjs';
import { staticPodDir } from './lib/dataset.mjs';
import { startEtcd, startS3rver, startSshd } from './lib/servers.mjs';
import { launcherNodeFlags } from './lib/stand.mjs';
import { BENCH, GiB, ROOT, TMP, fmt, median } from './lib/util.mjs';

const OPS = ['list-cold', 'list-warm', 'prune-warm', 'backup'];
const USAGE = `usage: npm run bench -- catalog [options]     (or: node bench/catalog.mjs [options])
  --sizes LIST        numbers of backups in the store (default 2001,10000)
  --stores LIST       s3,sftp (default both)
  --ops LIST          ${OPS.join(',')} (default all; also prune-cold)
  --delay-ms MS       one-way delay per chunk (default 10: a 20 ms round trip)
  --pin-every K       pin every K-th seeded backup (default 1000; 0: none)
  --op-timeout S      kill an operation after S seconds and report it as timed out (default 600)
  --concurrent        measure the stores at the same time (each has its own server and proxy;
                      the CLI is latency-bound, but two at once share the CPUs: noted in the report)
  --no-build          do not run \`npm run build\` first
  --out FILE          Markdown report (default bench/results/<YYYY-MM-DD>-catalog.md; .json beside it)`;

const opt = benchArgs(
  USAGE,
  {
    sizes: { type: 'string', default: '2001,10000' },
    stores: { type: 'string', default: 's3,sftp' },
    ops: { type: 'string', default: OPS.join(',') },
    'delay-ms': { type: 'string', default: '10' },
    'pin-every': { type: 'string', default: '1000' },
    'op-timeout': { type: 'string', default: '600' },
    concurrent: { type: 'boolean', default: false },
  },
);
const log = benchLog('catalog');
const SIZES = opt.sizes.split(',').map(Number);
const STORES = opt.stores.split(',');
const RUN_OPS = opt.ops.split(',');
const DELAY = Number(opt['delay-ms']);
const PIN_EVERY = Number(opt['pin-every']);
const OP_TIMEOUT = Number(opt['op-timeout']);
if (!SIZES.every((n) => Number.isInteger(n) && n > 0)) throw new Error(`--sizes: ${opt.sizes}?`);
if (!STORES.every((s) => ['s3', 'sftp'].includes(s))) throw new Error(`--stores: ${opt.stores}? use s3, sftp`);
if (!RUN_OPS.every((o) => [...OPS, 'prune-cold'].includes(o))) throw new Error(`--ops: ${opt.ops}? use ${OPS.join(', ')}, prune-cold`);
const CLI = join(ROOT, 'dist', 'cli.js');
const HOOK = join(BENCH, 'lib', 'prune-timing-hook.mjs');
const DIR = join(TMP, `catalog-${process.pid}`);
const CLUSTER = 'bench';
const NODE = 'master-0';
const S3_PREFIX = 'backupd';
const SFTP_PATH = 'backupd';

// ------------------------------------------------------------------ helpers

/** Process groups of operations still running: killed if the bench exits early. */
const running = new Set();
process.once('exit', () => {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  rmSync(DIR, { recursive: true, force: true }); // seeded stores, keys, workDirs
});

/**
 * Runs argv under /usr/bin/time with a deadline (the whole process group is
 * killed then). Whole stdout (a 10k-backup listing is megabytes).
 */
async function timedOp(argv, { env, timeoutS }) {
  const timeFile = join(DIR, `time-${Math.random().toString(16).slice(2)}.txt`);
  const t0 = performance.now();
  const child = spawn('/usr/bin/time', ['-o', timeFile, '-f', '%e %U %S %M', ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  running.add(child.pid);
  child.on('close', () => running.delete(child.pid));
  const out = [];
  let stderr = '';
  child.stdout.on('data', (d) => out.push(d));
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-20000)));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, timeoutS * 1000);
  const code = await new Promise((r) => child.on('close', (c) => r(c)));
  clearTimeout(timer);
  const wall = (performance.now() - t0) / 1000;
  let user = NaN;
  let sys = NaN;
  let rssKiB = NaN;
  try {
    [, user, sys, rssKiB] = (await readFile(timeFile, 'utf8')).trim().split('\n').pop().split(/\s+/).map(Number);
  } catch {
    /* killed */
  }
  await rm(timeFile, { force: true });
  return { wall, cpu: user + sys, rssKiB, code, timedOut, stdout: Buffer.concat(out).toString(), stderr };
}

/** Median round trip of 1-byte pings through a fresh delay proxy (what the timers really add). */
async function calibrate() {
  const echo = createServer((s) => s.pipe(s));
  await new Promise((r) => echo.listen(0, '127.0.0.1', r));
  const p = await startDelayProxy({ targetPort: echo.address().port, delayMs: DELAY });
  const sock = connect({ host: '127.0.0.1', port: p.port, noDelay: true });
  await new Promise((r) => sock.once('connect', r));
  const rtts = [];
  for (let i = 0; i < 30; i++) {
    const t = performance.now();
    await new Promise((r) => {
      sock.once('data', r);
      sock.write('x');
    });
    if (i > 0) rtts.push(performance.now() - t); // the first one also pays the handshake round trip
  }
  sock.destroy();
  await p.close();
  echo.close();
  return median(rtts);
}

// ------------------------------------------------------------------ stand

async function setupStand() {
  await rm(DIR, { recursive: true, force: true });
  await mkdir(DIR, { recursive: true, mode: 0o700 });
  const sftpLog = join(DIR, 'sftp-server.log');
  await writeFile(sftpLog, '', { mode: 0o600 });
  log('starting s3rver, sshd (sftp-server logging its requests) and the delay proxies on 127.0.0.1');
  const s3 = await startS3rver(join(DIR, 's3rver'), 'bench');
  const sshd = await startSshd(join(DIR, 'sshd'), { sftpLogFile: sftpLog });
  const s3Proxy = await startDelayProxy({ targetPort: s3.port, delayMs: DELAY, http: true });
  const sftpProxy = await startDelayProxy({ targetPort: sshd.port, delayMs: DELAY, events: true });
  let etcd;
  if (RUN_OPS.includes('backup')) {
    etcd = await startEtcd(join(DIR, 'etcd'));
    // A little data, so the snapshot is not empty; the backup itself is not what is measured.
    for (let i = 0; i < 50; i++) await etcd.put(`/bench/k${i}`, Buffer.alloc(200, i));
  }
  const creds = join(DIR, 'creds');
  await mkdir(creds, { recursive: true, mode: 0o700 });
  await writeFile(join(creds, 'akid'), 'S3RVER\n', { mode: 0o600 });
  await writeFile(join(creds, 'secret'), 'S3RVER\n', { mode: 0o600 });
  const stores = {
    s3: {
      name: 's3',
      type: 's3',
      bucket: 'bench',
      prefix: S3_PREFIX,
      endpoint: `http://127.0.0.1:${s3Proxy.port}`,
      forcePathStyle: true,
      accessKeyIdFile: join(creds, 'akid'),
      secretAccessKeyFile: join(creds, 'secret'),
    },
    sftp: {
      name: 'sftp',
      type: 'sftp',
      host: '127.0.0.1',
      port: sftpProxy.port,
      username: sshd.username,
      privateKeyFile: sshd.privateKeyFile,
      hostKey: sshd.hostKeyFingerprint,
      path: join(sshd.root, SFTP_PATH),
    },
  };
  // Where each store's backups are on the server's disk.
  const backing = {
    s3: join(s3.dir, 'bench', S3_PREFIX),
    sftp: join(sshd.root, SFTP_PATH),
  };
  return {
    s3,
    sshd,
    etcd,
    proxies: { s3: s3Proxy, sftp: sftpProxy },
    stores,
    backing,
    sftpLog,
    async stop() {
      await s3Proxy.close();
      await sftpProxy.close();
      await etcd?.stop();
      await s3.stop();
      await sshd.stop();
    },
  };
}

async function seed(stand, store, n) {
  await rm(stand.backing[store], { recursive: true, force: true });
  const t0 = performance.now();
  const now = new Date();
  const objects =
    store === 's3'
      ? await seedS3rverDir(join(stand.s3.dir), 'bench', S3_PREFIX, CLUSTER, n, { now, pinEvery: PIN_EVERY })
      : await seedDirectory(stand.backing.sftp, CLUSTER, n, { now, pinEvery: PIN_EVERY });
  const ids = seedIds(n, now);
  const manifestFile = join(stand.backing[store], CLUSTER, ids[0].id, store === 's3' ? 'manifest.json._S3rver_object' : 'manifest.json');
  const manifestBytes = statSync(manifestFile).size;
  const newest = ids.slice(0, NODES).reduce((a, b) => (b.at > a.at ? b : a));
  return { seconds: (performance.now() - t0) / 1000, objects, manifestBytes, newest: newest.id, oldest: ids.at(-1).id, series: ids.filter((b) => b.node === NODE).length, now };
}

async function writeConfig(stand, store, n, workDir) {
  // Everything seeded stays inside keepWithin: the store is in a steady state where a
  // run prunes nothing, and every op reads the same N backups.
  const spanDays = Math.ceil((Math.ceil(n / NODES) * SLOT_MS) / 86_400_000) + 2;
  const file = join(DIR, `config-${store}-${n}.json`);
  await writeFile(
    file,
    JSON.stringify(
      {
        cluster: CLUSTER,
        node: NODE,
        workDir,
        source: { type: 'etcdctl', staticPodDir: await staticPodDir(), timeout: '10m' },
        etcd: { endpoints: [stand.etcd?.endpoint ?? 'http://127.0.0.1:9'] },
        stores: [stand.stores[store]],
        retention: { keepWithin: `${spanDays}d` },
        local: { keep: 0 },
        control: { socket: join(workDir, 'control.sock') },
      },
      null,
      2,
    ),
    { mode: 0o600 },
  );
  return { file, keepWithin: `${spanDays}d` };
}

/** What the store's server saw during an op. */
async function sftpLogSince(stand, offset) {
  const fh = await open(stand.sftpLog, 'r');
  try {
    const size = (await fh.stat()).size;
    const buf = Buffer.alloc(size - offset);
    await fh.read(buf, 0, buf.length, offset);
    return { text: buf.toString(), end: size };
  } finally {
    await fh.close();
  }
}

function s3Requests(reqs) {
  const path = (t) => t.split('?')[0];
  return {
    requests: reqs.length,
    manifestGets: reqs.filter(([, m, t]) => m === 'GET' && path(t).endsWith('/manifest.json')).length,
    lists: reqs.filter(([, m, t]) => m === 'GET' && /[?&]list-type=2/.test(t)).length,
    heads: reqs.filter(([, m]) => m === 'HEAD').length,
    puts: reqs.filter(([, m]) => m === 'PUT' || m === 'POST').length,
    deletes: reqs.filter(([, m, t]) => m === 'DELETE' || (m === 'POST' && /[?&]delete/.test(t))).length,
    otherGets: reqs.filter(([, m, t]) => m === 'GET' && !path(t).endsWith('/manifest.json') && !/[?&]list-type=2/.test(t)).length,
  };
}

function sftpRequests(text) {
  const lines = text.split('\n').filter(Boolean);
  const opens = lines.filter((l) => l.startsWith('open "'));
  return {
    // sftp-server logs open/opendir/remove/rename etc. at INFO; stat, read and close-less calls are not logged.
    loggedRequests: lines.filter((l) => !/^session (opened|closed)/.test(l) && !/^(close|closedir) "/.test(l)).length,
    manifestGets: opens.filter((l) => /\/manifest\.json" flags READ\b/.test(l)).length,
    opens: opens.length,
    opendirs: lines.filter((l) => l.startsWith('opendir "')).length,
    sessions: lines.filter((l) => l.startsWith('session opened')).length,
  };
}

/** One CLI operation through the proxy, with what the link and the server saw. */
async function measure(stand, store, argv, extraEnv = {}) {
  const proxy = stand.proxies[store];
  proxy.clearLogs();
  const c0 = proxy.counters();
  const logOffset = statSync(stand.sftpLog).size;
  const env = { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1', ETCD_BACKUPD_LOG_LEVEL: 'warn', ...extraEnv };
  delete env.AWS_CA_BUNDLE;
  const r = await timedOp(argv, { env, timeoutS: OP_TIMEOUT });
  await new Promise((res) => setTimeout(res, 200)); // sftp-server's last log lines, the proxy's last chunks
  const link = diffCounters(c0, proxy.counters());
  const reqs = proxy.requests();
  const server = store === 's3' ? s3Requests(reqs) : sftpRequests((await sftpLogSince(stand, logOffset)).text);
  return { r, link, server, reqs, chunks: proxy.chunks() };
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function runOps(stand, store, n, seeded) {
  const workDir = join(DIR, 'work', `${store}-${n}`);
  const cfg = await writeConfig(stand, store, n, workDir);
  const node = [process.execPath, ...launcherNodeFlags()];
  const rows = [];
  const fresh = async () => {
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { recursive: true, mode: 0o700 });
  };
  const record = (op, m, check, extra = {}) => {
    const row = {
      store,
      n,
      op,
      seconds: m.r.wall,
      cpu: m.r.cpu,
      rssKiB: m.r.rssKiB,
      exit: m.r.code,
      timedOut: m.r.timedOut,
      link: m.link,
      server: m.server,
      check,
      ...extra,
    };
    rows.push(row);
    const mg = row.server.manifestGets;
    log(`  ${store} N=${n} ${op.padEnd(10)} ${m.r.timedOut ? `TIMED OUT after ${OP_TIMEOUT}` : fmt(m.r.wall)} s  cpu ${fmt(m.r.cpu)} s  manifest reads ${mg}  ${store === 's3' ? `requests ${row.server.requests}` : `opendirs ${row.server.opendirs}`}  conns ${m.link.connections}  ${check.ok ? 'ok' : `CHECK FAILED: ${check.error}`}`);
    if (!check.ok && !m.r.timedOut && m.r.stderr) log(`    stderr: ${m.r.stderr.slice(-800)}`);
    return row;
  };
  const checkList = (m) => {
    if (m.r.timedOut) return { ok: false, error: 'timed out' };
    const doc = parseJson(m.r.stdout);
    if (!doc) return { ok: false, error: `no whole JSON document on stdout (exit ${m.r.code}, ${m.r.stdout.length} bytes)` };
    const got = doc.backups?.length;
    const bad = [];
    if (got !== n) bad.push(`${got} backups, expected ${n}`);
    if (doc.problems?.length) bad.push(`${doc.problems.length} problems (${doc.problems[0]?.error})`);
    if (doc.incomplete?.length) bad.push(`${doc.incomplete.length} incomplete`);
    if (got && doc.backups[0].id !== seeded.newest) bad.push(`newest ${doc.backups[0].id}, expected ${seeded.newest}`);
    const pinned = doc.backups?.filter((b) => b.pinned).length;
    return bad.length ? { ok: false, error: bad.join('; ') } : { ok: true, backups: got, pinned };
  };
  const checkPrune = (m) => {
    if (m.r.timedOut) return { ok: false, error: 'timed out' };
    const doc = parseJson(m.r.stdout);
    if (!doc) return { ok: false, error: `no whole JSON document on stdout (exit ${m.r.code})` };
    const keep = doc.keep?.length ?? NaN;
    const prune = doc.prune?.length ?? NaN;
    if (keep + prune !== seeded.series) return { ok: false, error: `plan covers ${keep + prune} backups, expected this node's ${seeded.series}` };
    return { ok: m.r.code === 0, keep, prune, ...(m.r.code !== 0 ? { error: `exit ${m.r.code}` } : {}) };
  };
  const listArgv = [...node, CLI, 'list', '--config', cfg.file, '--json'];
  const pruneArgv = [...node, CLI, 'prune', '--dry-run', '--config', cfg.file, '--json'];

  await fresh();
  if (RUN_OPS.includes('list-cold')) {
    const m = await measure(stand, store, listArgv);
    record('list cold', m, checkList(m));
  }
  if (RUN_OPS.includes('list-warm')) {
    // Warm: the same workDir as a list before it (a cold list ran first, or one runs now untimed).
    if (!RUN_OPS.includes('list-cold')) await measure(stand, store, listArgv);
    const m = await measure(stand, store, listArgv);
    record('list warm', m, checkList(m));
  }
  if (RUN_OPS.includes('prune-warm')) {
    if (!RUN_OPS.includes('list-cold') && !RUN_OPS.includes('list-warm')) await measure(stand, store, listArgv);
    const m = await measure(stand, store, pruneArgv);
    record('prune --dry-run warm', m, checkPrune(m));
  }
  if (RUN_OPS.includes('prune-cold')) {
    await fresh();
    const m = await measure(stand, store, pruneArgv);
    record('prune --dry-run cold', m, checkPrune(m));
  }
  if (RUN_OPS.includes('backup')) {
    // The retention step of one real run (etcdctl snapshot of a small etcd, bundle, upload,
    // verify, then runCycle's retention: pruneStore on this store), in the warm workDir.
    if (RUN_OPS.includes('prune-cold') || !['list-cold', 'list-warm', 'prune-warm'].some((o) => RUN_OPS.includes(o))) {
      await fresh();
      await measure(stand, store, listArgv);
    }
    const timing = join(DIR, `prune-timing-${store}-${n}.jsonl`);
    await writeFile(timing, '', { mode: 0o600 });
    const m = await measure(stand, store, [...node, '--import', HOOK, CLI, 'backup', '--config', cfg.file, '--json'], { BENCH_PRUNE_TIMING: timing });
    const doc = parseJson(m.r.stdout);
    const calls = (await readFile(timing, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const t = calls.find((c) => c.store === store);
    // Only the retention step's share of the link: requests (S3) or chunks (SFTP) inside its window.
    let step;
    if (t) {
      const inWin = ([at]) => at >= t.start && at <= t.end;
      step = store === 's3' ? s3Requests(m.reqs.filter(inWin)) : { upChunks: m.chunks.filter((c) => inWin(c) && c[1] === 'up').length, downBytes: m.chunks.filter((c) => inWin(c) && c[1] === 'down').reduce((a, c) => a + c[2], 0) };
    }
    let check;
    if (m.r.timedOut) check = { ok: false, error: 'timed out' };
    else if (doc?.result !== 'success') check = { ok: false, error: `backup ${doc?.result ?? 'printed no JSON'} (exit ${m.r.code}): ${doc?.error ?? m.r.stderr.slice(-300)}` };
    else if (!t) check = { ok: false, error: 'no retention timing: pruneStore was not called or the hook did not find it in dist/catalog/prune.js' };
    else check = { ok: t.ok, ...(t.ok ? {} : { error: 'pruneStore threw' }) };
    const retentionPhase = Object.entries(doc?.phases ?? {}).find(([k]) => /prune|retention/i.test(k));
    record('backup run', m, check, { phases: doc?.phases, retention: t && { seconds: t.seconds, step }, ...(retentionPhase ? { retentionPhase: { [retentionPhase[0]]: retentionPhase[1] } } : {}) });
    // Back to N backups: the run's own backup goes (straight from the server's disk).
    if (doc?.id) await rm(join(stand.backing[store], CLUSTER, doc.id), { recursive: true, force: true });
  }
  return rows;
}

// ------------------------------------------------------------------ report

const GOALS = [
  { op: 'list warm', max: 3, noManifests: true, text: 'warm `list` ≤ 3 s, reading no manifest again' },
  { op: 'list cold', max: 20, text: 'cold `list` ≤ 20 s' },
  { op: 'prune --dry-run warm', max: 3, text: '`prune --dry-run` ≤ 3 s warm' },
];

function goalLines(rows) {
  const out = [];
  for (const store of STORES) {
    for (const g of GOALS) {
      const r = rows.find((x) => x.store === store && x.n === 2001 && x.op === g.op);
      if (!r) continue;
      const ok = r.check.ok && !r.timedOut && r.seconds <= g.max && (!g.noManifests || r.server.manifestGets === 0);
      out.push(`| ${store} | ${g.text} | ${r.timedOut ? `> ${OP_TIMEOUT}` : fmt(r.seconds)} s, ${r.server.manifestGets} manifest reads | ${ok ? '✓' : '✗'} |`);
    }
  }
  return out;
}

function storeTable(rows, store) {
  const s3 = store === 's3';
  const lines = [
    s3
      ? '| N | operation | seconds | CPU s | HTTP requests | manifest GETs | list pages | HEAD / PUT / DELETE | connections | KiB down | check |'
      : '| N | operation | seconds | CPU s | manifest opens | opendirs | logged SFTP requests | connections | client writes | KiB down | check |',
    s3 ? '|---|---|---|---|---|---|---|---|---|---|---|' : '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows.filter((x) => x.store === store)) {
    const secs = r.timedOut ? `> ${OP_TIMEOUT} (killed)` : fmt(r.seconds);
    const check = r.check.ok
      ? r.op.startsWith('list')
        ? `✓ ${r.check.backups} backups (${r.check.pinned} pinned)`
        : r.op.startsWith('prune')
          ? `✓ plan: keep ${r.check.keep}, prune ${r.check.prune}`
          : `✓ retention step **${fmt(r.retention.seconds)} s**${r.retentionPhase ? ` (phases: ${JSON.stringify(r.retentionPhase)})` : ''}`
      : `✗ ${r.check.error}`;
    const sv = r.server;
    const s3Cols = () => `${sv.requests} | ${sv.manifestGets} | ${sv.lists} | ${sv.heads} / ${sv.puts} / ${sv.deletes}`;
    const sftpCols = () => `${sv.manifestGets} | ${sv.opendirs} | ${sv.loggedRequests}`;
    lines.push(`| ${r.n} | ${r.op} | ${secs} | ${fmt(r.cpu)} | ${s3 ? s3Cols() : sftpCols()} | ${r.link.connections}${s3 ? '' : ` | ${r.link.upChunks}`} | ${fmt(r.link.downBytes / 1024, 0)} | ${check} |`);
    if (r.op === 'backup run' && r.retention?.step) {
      const st = r.retention.step;
      lines.push(
        s3
          ? `| ${r.n} | ↳ retention step only | **${fmt(r.retention.seconds)}** | | ${st.requests} | ${st.manifestGets} | ${st.lists} | ${st.heads} / ${st.puts} / ${st.deletes} | | | pruneStore's own time |`
          : `| ${r.n} | ↳ retention step only | **${fmt(r.retention.seconds)}** | | | | | | ${st.upChunks} | ${fmt(st.downBytes / 1024, 0)} | pruneStore's own time |`,
      );
    }
  }
  return lines.join('\n');
}

// ------------------------------------------------------------------ main

async function main() {
  const started = Date.now();
  if (!opt['no-build']) await buildDist(log);
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run npm run build');
  const load0 = loadavg();
  const rtt = await calibrate();
  log(`delay proxy: ${DELAY} ms each way; measured round trip ${fmt(rtt, 1)} ms`);
  const stand = await setupStand();
  const rows = [];
  const seeds = [];
  try {
    for (const n of SIZES) {
      const one = async (store) => {
        const s = await seed(stand, store, n);
        seeds.push({ store, n, seconds: s.seconds, objects: s.objects, manifestBytes: s.manifestBytes, newest: s.newest, oldest: s.oldest, series: s.series });
        log(`${store} N=${n}: seeded ${s.objects} objects in ${fmt(s.seconds, 1)} s (${s.oldest} … ${s.newest})`);
        rows.push(...(await runOps(stand, store, n, s)));
        await rm(stand.backing[store], { recursive: true, force: true });
        await rm(join(DIR, 'work', `${store}-${n}`), { recursive: true, force: true });
      };
      if (opt.concurrent) await Promise.all(STORES.map(one));
      else for (const store of STORES) await one(store);
    }
  } finally {
    await stand.stop();
    await rm(DIR, { recursive: true, force: true }).catch(() => undefined);
  }
  const day = new Date().toISOString().slice(0, 10);
  const head = (await import('node:child_process')).execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim();
  const dirty = (await import('node:child_process')).execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT }).toString().trim() ? ' (src/ modified)' : '';
  const load1 = loadavg();
  const goals = goalLines(rows);
  const md = [
    `# etcd-backupd catalog benchmark, ${day}`,
    '',
    `Command: \`node bench/catalog.mjs ${process.argv.slice(2).join(' ')}\`; code at ${head}${dirty}. ` +
      `Stores reached through a delay proxy on 127.0.0.1 adding ${DELAY} ms each way to every chunk (measured round trip ${fmt(rtt, 1)} ms; a new connection pays one more round trip). ` +
      `Servers: one s3rver 3.7.1, one OpenSSH sshd serving SFTP with sftp-server (logging its requests).`,
    '',
    `Seed: N committed backups of cluster \`${CLUSTER}\` by 3 nodes (master-0..2), one per node every 15 minutes back from now, each \`<id>/backup.tar.zst\` (512 random bytes) + \`manifest.json\` (${seeds.length ? `${seeds[0].manifestBytes} bytes` : '?'}, checked with dist's parseManifest)${PIN_EVERY ? `, every ${PIN_EVERY}th pinned` : ''}; written straight into the server's directory. ` +
      `The CLI runs as node ${process.version} with the launcher's flags, \`ETCD_BACKUPD_NO_DAEMON=1\`, node ${NODE}, retention \`keepWithin\` covering the whole seed (a steady state: the plan prunes nothing, every op sees the same N).`,
    '',
    `Operations run: ${RUN_OPS.join(', ')}. In this order on one workDir per (store, N): **list cold** (empty workDir), **list warm** (again), **prune --dry-run warm**, **backup run**: a real \`backup --json\` (etcdctl snapshot of a small local etcd, bundle, upload, verify) whose retention step — \`pruneStore\` as \`runCycle\` calls it after the run — is timed by a module hook (\`bench/lib/prune-timing-hook.mjs\`) wrapping dist's \`pruneStore\`; the run's own backup is removed afterwards. Seconds: the whole CLI process (Node start-up included) except for the retention step.` +
      (opt.concurrent ? ' **The stores were measured at the same time (`--concurrent`)**: each has its own server and proxy, but they share the CPUs.' : ''),
    '',
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${fmt(totalmem() / GiB, 0)} GiB RAM; load ${load0.map((x) => fmt(x, 1)).join('/')} at start, ${load1.map((x) => fmt(x, 1)).join('/')} at end. Run took ${fmt((Date.now() - started) / 60000, 1)} min.`,
    '',
    '## Goals (N = 2001)',
    '',
    '| store | goal | measured | |',
    '|---|---|---|---|',
    ...(goals.length ? goals : ['| – | no N = 2001 in this run | | |']),
    '',
    ...STORES.flatMap((store) => [
      `## ${store === 's3' ? 'S3 (s3rver)' : 'SFTP (OpenSSH)'}`,
      '',
      store === 's3'
        ? 'HTTP requests are counted by parsing the request lines the client sends through the proxy. Manifest GETs: `GET …/manifest.json`; list pages: `ListObjectsV2` calls; KiB down: bytes the server sent.'
        : "Counted from sftp-server's INFO log: manifest opens (`open …/manifest.json flags READ`), opendirs; logged SFTP requests = every logged request but close (stat/fstat/read/readdir are not logged, so the real count is higher). Client writes: TCP chunks the client sent (≈ bursts of requests). Connections: TCP connections through the proxy.",
      '',
      storeTable(rows, store),
      '',
    ]),
    '## Seeding',
    '',
    '| store | N | objects | seconds |',
    '|---|---|---|---|',
    ...seeds.map((s) => `| ${s.store} | ${s.n} | ${s.objects} | ${fmt(s.seconds, 1)} |`),
    '',
  ].join('\n');
  const outFile = opt.out ?? join(BENCH, 'results', `${day}-catalog.md`);
  await mkdir(dirname(outFile), { recursive: true });
  await writeFile(outFile, md);
  await writeFile(
    outFile.replace(/\.md$/, '.json'),
    JSON.stringify({ day, code: head + dirty, delayMs: DELAY, rttMs: rtt, sizes: SIZES, stores: STORES, ops: RUN_OPS, opTimeoutS: OP_TIMEOUT, pinEvery: PIN_EVERY, load: { start: load0, end: load1 }, seeds, rows }, null, 2) + '\n',
  );
  console.log(md);
  log(`wrote ${outFile}`);
}

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130)); // lib/servers.mjs kills the servers on exit

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
