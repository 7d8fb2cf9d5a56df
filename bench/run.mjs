#!/usr/bin/env node
// etcd-backupd benchmark: `npm run bench -- [--size 1GiB] [--repeats 3] ...`
// See bench/README.md for what is measured and how to read the table.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureDataset, staticPodDir } from './lib/dataset.mjs';
import { startEtcd } from './lib/servers.mjs';
import { RUN, backupd, setup, timedWithServer } from './lib/stand.mjs';
import { BENCH, GiB, MiB, ROOT, TMP, fmt, median, parseSize, percentile, run, sizeLabel, sleep, timed } from './lib/util.mjs';

const USAGE = `usage: npm run bench -- [options]
  --size SIZE          etcd database / snapshot size (default 1GiB; e.g. 256MiB, 4GiB)
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

const { values: opt } = parseArgs({
  options: {
    size: { type: 'string', default: '1GiB' },
    repeats: { type: 'string', default: '3' },
    'rss-sizes': { type: 'string' },
    'no-latency': { type: 'boolean', default: false },
    'latency-rate': { type: 'string', default: '100' },
    'latency-nice': { type: 'boolean', default: false },
    experiments: { type: 'boolean', default: false },
    only: { type: 'string' },
    's3-part-size': { type: 'string' },
    's3-queue-size': { type: 'string' },
    'no-build': { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opt.help) {
  console.log(USAGE);
  process.exit(0);
}

const log = (...a) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...a);
const SIZE = parseSize(opt.size);
const REPEATS = Math.max(1, Number(opt.repeats));
const RSS_SIZES = opt['rss-sizes'] === 'none' ? [] : (opt['rss-sizes'] ?? `256MiB,${opt.size}`).split(',').map(parseSize);
if (SIZE > 7 * GiB) throw new Error('--size: etcd allows at most 8 GiB (--quota-backend-bytes); use 7GiB or less');
const ONLY = opt.only ? new Set(opt.only.split(',')) : undefined;
const CLI = join(ROOT, 'dist', 'cli.js');

// ------------------------------------------------------------------ build

async function build() {
  log('npm run build');
  const code = await new Promise((r) => spawn('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: ['ignore', 2, 2] }).on('close', r));
  if (code !== 0) throw new Error('npm run build failed: the benchmark measures dist/, which must match src/');
}

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
    openssh: sshV.split(',')[0],
    coreutils: await v('sha256sum', ['--version'], /sha256sum .*$/m),
    s3rver: JSON.parse(readFileSync(join(ROOT, 'node_modules/s3rver/package.json'), 'utf8')).version,
    ssh2: JSON.parse(readFileSync(join(ROOT, 'node_modules/ssh2/package.json'), 'utf8')).version,
    awsSdk: JSON.parse(readFileSync(join(ROOT, 'node_modules/@aws-sdk/lib-storage/package.json'), 'utf8')).version,
  };
}

function defineCases(ds, srv) {
  const snap = ds.snapshot;
  const snapBytes = ds.snapshotBytes;
  const work = join(RUN, 'work');
  const common = { snapshot: snap, staticResources: ds.staticResources, workDir: work };
  const env = srv.env;
  const peerLocal = join(RUN, 'peer-local');
  const cases = [];
  const add = (c) => cases.push(c);

  // -- hashing / bundling on the node (no destination)
  add({ id: 'bd-inspect', group: 'node', tool: 'etcd-backupd', what: 'verify-local: inspect (trailer sha256 + bbolt walk)', backupd: true, run: () => backupd({ ...common, mode: 'inspect' }, env).then((r) => ({ ...r, bytes: snapBytes })) });
  add({ id: 'etcdctl-status', group: 'node', tool: 'etcdctl snapshot status', what: 'bbolt walk + hash (no trailer check)', bytes: snapBytes, run: () => timed(['etcdctl', 'snapshot', 'status', snap, '-w', 'json'], { env: { ...env, ETCDCTL_API: '3' } }) });
  add({ id: 'bd-bundle', group: 'node', tool: 'etcd-backupd', what: 'bundle: tar + sha256 per file and whole, fsync', backupd: true, run: () => backupd({ ...common, mode: 'bundle' }, env), clean: srv.clean.work });
  add({ id: 'sha256sum', group: 'node', tool: 'sha256sum', what: 'hash the snapshot', bytes: snapBytes, run: () => timed(['sha256sum', snap]) });
  add({
    id: 'tar',
    group: 'node',
    tool: 'tar -cf',
    what: 'tar snapshot + static archive (no hash, no fsync)',
    bytes: snapBytes + ds.staticBytes,
    run: () => timed(['tar', '-cf', join(peerLocal, 'b.tar'), '-C', dirname(snap), basename(snap), basename(ds.staticResources)]),
    clean: srv.clean.peerLocal,
  });

  // -- local store
  add({ id: 'bd-local', group: 'local', tool: 'etcd-backupd', what: 'bundle (fsync) + upload: hard link into the store (same filesystem) + proof: same file + manifest', backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.local }, env), clean: srv.clean.local });
  add({ id: 'cp', group: 'local', tool: 'cp', what: 'copy only (page cache, no fsync)', bytes: snapBytes, run: () => timed(['cp', snap, join(peerLocal, 's.db')]), clean: srv.clean.peerLocal });
  add({ id: 'cp-sync', group: 'local', tool: 'cp + sync FILE', what: 'copy + fsync', bytes: snapBytes, run: () => timed(['sh', '-c', 'cp "$0" "$1" && sync "$1"', snap, join(peerLocal, 's.db')]), clean: srv.clean.peerLocal });

  // -- local store on another filesystem (tmpfs here; an NFS mount in real life): a copy
  add({ id: 'bd-local-otherfs', group: 'local-otherfs', tool: 'etcd-backupd', what: 'bundle (fsync) + upload: kernel copy + fsync + read-back sha256 + manifest', backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.localOtherFs }, env), clean: srv.clean.localOtherFs });
  add({ id: 'cp-otherfs', group: 'local-otherfs', tool: 'cp', what: 'copy only (no fsync)', bytes: snapBytes, run: () => timed(['cp', snap, join(srv.shmDir, 'peer', 's.db')]), clean: srv.clean.peerOtherFs });
  add({ id: 'cp-sync-otherfs', group: 'local-otherfs', tool: 'cp + sync FILE', what: 'copy + fsync', bytes: snapBytes, run: () => timed(['sh', '-c', 'cp "$0" "$1" && sync "$1"', snap, join(srv.shmDir, 'peer', 's.db')]), clean: srv.clean.peerOtherFs });

  // -- S3
  add({ id: 'bd-s3', group: 's3', tool: 'etcd-backupd', what: 'bundle + multipart upload + GET read-back sha256 + manifest', backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.s3 }, env, { server: srv.s3 }), clean: srv.clean.s3 });
  add({
    id: 'aws-s3-cp',
    group: 's3',
    tool: 'aws s3 cp',
    what: 'upload only (8 MiB parts, 10 in flight)',
    bytes: snapBytes,
    run: () => timedWithServer(srv.s3, ['aws', 's3', 'cp', snap, 's3://bench/peer-aws/s.db', '--endpoint-url', srv.s3.endpoint, '--only-show-errors', '--no-progress'], { env }),
    // no clean: readback-s3 reads this object next
  });
  // -- read-back peers (compare with the verify phase): they read what the upload peer just stored
  add({ id: 'readback-s3', group: 'readback', tool: 'rclone cat (s3) | sha256sum', what: 'GET + hash (the object aws s3 cp stored)', bytes: snapBytes, run: () => timedWithServer(srv.s3, ['sh', '-c', 'rclone cat s3b:bench/peer-aws/s.db | sha256sum'], { env }), clean: srv.clean.s3 });
  add({ id: 'rclone-s3', group: 's3', tool: 'rclone copyto (s3)', what: 'upload (5 MiB chunks, 4 in flight) + MD5 metadata', bytes: snapBytes, run: () => timedWithServer(srv.s3, ['rclone', 'copyto', snap, 's3b:bench/peer-rclone/s.db'], { env }), clean: srv.clean.s3 });

  // -- SFTP
  add({ id: 'bd-sftp', group: 'sftp', tool: 'etcd-backupd', what: 'bundle + SFTP write + fsync@openssh + proof: the server\'s sha256 over exec (read-back if impossible) + manifest', backupd: true, run: () => backupd({ ...common, mode: 'deliver', storeConfig: srv.stores.sftp }, env, { server: srv.sshd }), clean: srv.clean.sftp });
  const batch = join(RUN, 'sftp-batch');
  add({
    id: 'sftp-b',
    group: 'sftp',
    tool: 'sftp -b (OpenSSH)',
    what: 'upload only',
    bytes: snapBytes,
    run: async () => {
      await writeFile(batch, `-mkdir ${srv.sshd.root}/peer-sftp\nput ${snap} ${srv.sshd.root}/peer-sftp/s.db\n`);
      return timedWithServer(srv.sshd, ['sftp', '-q', ...srv.ssh, '-b', batch, `${srv.sshd.username}@127.0.0.1`]);
    },
    clean: srv.clean.sftp,
  });
  add({ id: 'rclone-sftp', group: 'sftp', tool: 'rclone copyto (sftp)', what: 'upload + remote md5sum over ssh', bytes: snapBytes, run: () => timedWithServer(srv.sshd, ['rclone', 'copyto', snap, `sftpb:${srv.sshd.root}/peer-rclone/s.db`], { env }), clean: srv.clean.sftp });

  add({
    id: 'scp',
    group: 'sftp',
    tool: 'scp (OpenSSH, SFTP protocol)',
    what: 'upload only',
    bytes: snapBytes,
    run: () => timedWithServer(srv.sshd, ['scp', '-q', ...srv.ssh, snap, `${srv.sshd.username}@127.0.0.1:${srv.sshd.root}/s.db`]),
    // no clean: the read-back peers read this file next
  });
  add({ id: 'readback-sftp', group: 'readback', tool: 'rclone cat (sftp) | sha256sum', what: 'SFTP read + hash (the file scp stored)', bytes: snapBytes, run: () => timedWithServer(srv.sshd, ['sh', '-c', `rclone cat sftpb:${srv.sshd.root}/s.db | sha256sum`], { env }) });
  add({
    id: 'readback-sftp-ssh',
    group: 'readback',
    tool: 'sftp get + sha256sum',
    what: 'OpenSSH SFTP read to a file, then hash it',
    bytes: snapBytes,
    // sftp writes with pwrite at offsets: it needs a seekable target, not a pipe.
    run: async () => {
      const b = join(RUN, 'sftp-get');
      const to = join(peerLocal, 'get.db');
      await writeFile(b, `get ${srv.sshd.root}/s.db ${to}\n`);
      return timedWithServer(srv.sshd, ['sh', '-c', `sftp -q ${srv.ssh.map((a) => `'${a}'`).join(' ')} -b '${b}' ${srv.sshd.username}@127.0.0.1 && sha256sum '${to}'`]);
    },
    clean: async () => {
      await srv.clean.peerLocal();
      await srv.clean.sftp();
    },
  });
  return ONLY ? cases.filter((c) => ONLY.has(c.id)) : cases;
}

// ------------------------------------------------------------------ latency

function windowStats(samples, from, to) {
  const w = samples.filter(([due]) => due >= from && due <= to);
  const lat = w.filter(([, , ok]) => ok).map(([, l]) => l);
  return { n: w.length, errors: w.length - lat.length, p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat.length ? Math.max(...lat) : NaN };
}

async function latencyTest(ds, srv) {
  log(`write-latency test: etcd on the ${ds.size} data dir, ${opt['latency-rate']} puts/s in the background`);
  const etcd = await startEtcd(ds.etcdDir);
  const out = { rate: Number(opt['latency-rate']), windows: [] };
  const gen = spawn(process.execPath, [join(BENCH, 'latency.mjs'), '--endpoint', etcd.endpoint, '--rate', opt['latency-rate']], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  gen.stdout.on('data', (d) => (text += d));
  const genDone = new Promise((r) => gen.on('close', r));
  try {
    const cliDir = join(RUN, 'cli');
    await rm(cliDir, { recursive: true, force: true });
    await mkdir(cliDir, { recursive: true });
    const config = join(cliDir, 'config.json');
    const stores = [
      { ...srv.stores.local, path: join(cliDir, 'store') },
      { ...srv.stores.s3, prefix: 'cli' },
      { ...srv.stores.sftp, path: join(srv.sshd.root, 'cli') },
    ];
    await writeFile(
      config,
      JSON.stringify({
        cluster: 'bench',
        node: 'bench-node',
        workDir: join(cliDir, 'work'),
        source: { type: 'etcdctl', staticPodDir: await staticPodDir(), timeout: '30m' },
        etcd: { endpoints: [etcd.endpoint] },
        stores,
        retention: { keepLast: 1 },
        local: { keep: 0 },
        control: { socket: join(cliDir, 'control.sock') },
      }),
    );
    const idle = Date.now();
    await sleep(15_000);
    out.windows.push({ name: 'no backup running', from: idle + 1000, to: Date.now() });
    const variants = [{ name: 'etcd-backupd backup (CLI, etcdctl source, local+S3+SFTP)', argv: [process.execPath, CLI, 'backup', '--config', config, '--json'] }];
    if (opt['latency-nice']) variants.push({ name: 'same, under nice -n 19 ionice -c 3', argv: ['nice', '-n', '19', 'ionice', '-c', '3', process.execPath, CLI, 'backup', '--config', config, '--json'] });
    for (const v of variants) {
      await srv.clean.s3();
      await rm(join(srv.sshd.root, 'cli'), { recursive: true, force: true });
      const from = Date.now();
      const r = await timed(v.argv, { env: { ...srv.env, ETCD_BACKUPD_LOG_LEVEL: 'warn' }, allowFail: true });
      const to = Date.now();
      let doc = {};
      try {
        doc = JSON.parse(r.stdout);
      } catch {
        /* reported below */
      }
      if (doc.result !== 'success') throw new Error(`CLI backup failed (exit ${r.code}): ${r.stdout.slice(0, 500)} ${r.stderr.slice(-1500)}`);
      out.windows.push({ name: v.name, from, to, backup: { wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, phases: doc.phases, startedAt: doc.startedAt } });
      // The same window split by the run's phases (they follow each other from startedAt).
      let at = Date.parse(doc.startedAt);
      for (const [phase, secs] of Object.entries(doc.phases ?? {})) {
        if (secs >= 1) out.windows.push({ name: `↳ during ${phase}${phase === 'source' ? ' (etcdctl snapshot save)' : ''}`, from: at, to: at + secs * 1000, sub: true });
        at += secs * 1000;
      }
      await sleep(5_000);
    }
    const tail = Date.now();
    await sleep(10_000);
    out.windows.push({ name: 'no backup running (after)', from: tail + 2000, to: Date.now() });
  } finally {
    gen.kill('SIGTERM');
    await genDone;
    await etcd.stop();
  }
  const samples = JSON.parse(text.trim().split('\n').pop() || '[]');
  out.windows = out.windows.map((w) => ({ ...w, ...windowStats(samples, w.from, w.to) }));
  out.samples = samples;
  return out;
}

// ------------------------------------------------------------------ report

const mib = (b) => b / MiB;
function summarize(c, samples) {
  const ok = samples.filter((s) => !s.error);
  if (ok.length === 0) return { na: samples[0]?.error ?? 'no samples' };
  const walls = ok.map((s) => s.wall);
  const bytes = ok[0].bytes ?? c.bytes;
  const phases = {};
  for (const s of ok) for (const [k, v] of Object.entries(s.phases ?? {})) (phases[k] ??= []).push(v);
  const phaseCpu = {};
  for (const s of ok) for (const [k, v] of Object.entries(s.doc?.phaseCpu ?? {})) (phaseCpu[k] ??= []).push(v);
  return {
    n: ok.length,
    wall: median(walls),
    min: Math.min(...walls),
    max: Math.max(...walls),
    bytes,
    mibs: mib(bytes) / median(walls),
    cpu: median(ok.map((s) => s.cpu)),
    rssMiB: median(ok.map((s) => s.rssKiB)) / 1024,
    phases: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, { med: median(v), min: Math.min(...v), max: Math.max(...v) }])),
    phaseCpu: Object.fromEntries(Object.entries(phaseCpu).map(([k, v]) => [k, median(v)])),
    serverCpu: median(ok.map((s) => s.serverCpu).filter((x) => x !== undefined)),
    startup: median(ok.map((s) => s.doc?.loadSeconds).filter((x) => x !== undefined)),
    load: median(ok.map((s) => s.load)),
  };
}

const GROUP_TITLE = {
  node: 'On the node: verify the snapshot, hash, bundle (no destination)',
  local: 'Local directory store on the same filesystem as workDir',
  'local-otherfs': 'Local directory store on another filesystem (tmpfs; NFS in real life)',
  s3: 'S3 store (s3rver on loopback)',
  sftp: 'SFTP store (OpenSSH sshd on loopback)',
  readback: 'Read-back peers (compare with the verify phase below)',
};

function renderTable(cases, sums) {
  const lines = [];
  lines.push('| Destination | Tool | Work done | Wall s, median (min–max) | MiB/s | CPU s (user+sys) | Server CPU s | Peak RSS MiB | × fastest peer |');
  lines.push('|---|---|---|---|---|---|---|---|---|');
  for (const g of Object.keys(GROUP_TITLE)) {
    const gc = cases.filter((c) => c.group === g);
    if (!gc.length) continue;
    const peers = gc.filter((c) => !c.backupd && !sums[c.id].na);
    const fastest = peers.length ? Math.min(...peers.map((c) => sums[c.id].wall)) : NaN;
    for (const c of gc) {
      const s = sums[c.id];
      if (s.na) {
        lines.push(`| ${g} | ${c.tool} | ${c.what} | n/a: ${String(s.na).replace(/\|/g, '/').slice(0, 120)} | | | | | |`);
        continue;
      }
      let ratio = '';
      if (c.backupd && g !== 'node') ratio = `**${fmt(s.wall / fastest, 2)}×**`;
      if (c.id === 'bd-bundle') ratio = `${fmt(s.wall / sums.tar?.wall, 2)}× tar`;
      if (c.id === 'bd-inspect') ratio = `${fmt(s.wall / sums['etcdctl-status']?.wall, 2)}× etcdctl`;
      if (!c.backupd && Number.isFinite(fastest) && g !== 'node' && g !== 'readback') ratio = s.wall === fastest ? 'fastest' : `${fmt(s.wall / fastest, 2)}×`;
      const tool = (c.backupd ? `**${c.tool}**` : c.tool).replace(/\|/g, '\\|');
      const startup = c.backupd && s.startup ? ` (start-up ${fmt(s.startup)})` : '';
      lines.push(`| ${g} | ${tool} | ${c.what.replace(/\|/g, '\\|')} | ${fmt(s.wall)} (${fmt(s.min)}–${fmt(s.max)})${startup} | ${fmt(s.mibs, 0)} | ${fmt(s.cpu)} | ${Number.isFinite(s.serverCpu) ? fmt(s.serverCpu) : ''} | ${fmt(s.rssMiB, 0)} | ${ratio} |`);
    }
  }
  return lines.join('\n');
}

const DELIVERY_CASES = ['bd-local', 'bd-local-otherfs', 'bd-s3', 'bd-sftp'];

/** How the remote copy was proven in the samples of a case (one-backup reports it per store). */
function proofOf(samples) {
  const proofs = new Set(samples.filter((x) => !x.error).flatMap((x) => Object.values(x.doc?.stores ?? {}).map((st) => st.proof)).filter(Boolean));
  return [...proofs].join(', ') || '?';
}

/**
 * Issue #6's targets, per destination: the upload phase no slower than the
 * fastest peer's whole copy, upload + remote verification at most 1.5x it.
 */
function renderTargets(cases, sums, samples) {
  const lines = [
    '| Destination | Fastest peer (whole process) | etcd-backupd upload s | **upload ÷ peer** (target ≤ 1.00) | upload + verify s | **(upload + verify) ÷ peer** (target ≤ 1.50) | proof of the remote copy | whole etcd-backupd process ÷ peer (bundle and start-up included) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const id of DELIVERY_CASES) {
    const c = cases.find((x) => x.id === id);
    const s = sums[id];
    if (!c || !s || s.na) continue;
    const peers = cases.filter((x) => x.group === c.group && !x.backupd && sums[x.id] && !sums[x.id].na);
    if (!peers.length) continue;
    const best = peers.reduce((a, b) => (sums[b.id].wall < sums[a.id].wall ? b : a));
    const peer = sums[best.id].wall;
    const up = s.phases.upload?.med;
    const upv = (s.phases.upload?.med ?? 0) + (s.phases.verify?.med ?? 0);
    const mark = (r, t) => `${fmt(r, 2)}× ${r <= t ? '✓' : '✗'}`;
    lines.push(`| ${c.group} | ${best.tool.replace(/\|/g, '\\|')} ${fmt(peer)} s | ${fmt(up)} | **${mark(up / peer, 1)}** | ${fmt(upv)} | **${mark(upv / peer, 1.5)}** | ${proofOf(samples[id])} | ${fmt(s.wall / peer, 2)}× |`);
  }
  return lines.join('\n');
}

function renderPhases(cases, sums, samples) {
  const lines = ['| Store | bundle s | upload s | verify s | commit s | sum of phases s | process wall s | upload MiB/s | verify MiB/s | proof |', '|---|---|---|---|---|---|---|---|---|---|'];
  const p = (x, cpu) => (x ? `${fmt(x.med)} (${fmt(x.min)}–${fmt(x.max)})${cpu !== undefined ? ` [cpu ${fmt(cpu)}]` : ''}` : '–');
  for (const id of DELIVERY_CASES) {
    const s = sums[id];
    if (!s || s.na) continue;
    const ph = s.phases;
    const sum = (ph.bundle?.med ?? 0) + (ph.upload?.med ?? 0) + (ph.verify?.med ?? 0) + (ph.commit?.med ?? 0);
    const pc = s.phaseCpu ?? {};
    lines.push(`| ${id.slice(3)} | ${p(ph.bundle, pc.bundle)} | ${p(ph.upload, pc.upload)} | ${p(ph.verify, pc.verify)} | ${p(ph.commit, pc.commit)} | ${fmt(sum)} | ${fmt(s.wall)} | ${fmt(mib(s.bytes) / ph.upload?.med, 0)} | ${fmt(mib(s.bytes) / ph.verify?.med, 0)} | ${proofOf(samples[id])} |`);
  }
  return lines.join('\n');
}

function renderRss(rss) {
  const lines = ['| Snapshot | Bundle MiB | Wall s | verify-local s | bundle s | upload s (3 stores) | verify s (3 stores) | CPU s | **Peak RSS MiB** |', '|---|---|---|---|---|---|---|---|---|'];
  for (const r of rss) {
    if (r.error) {
      lines.push(`| ${r.size} | n/a: ${r.error.slice(0, 100)} | | | | | | | |`);
      continue;
    }
    const ph = r.phases;
    lines.push(`| ${r.size} (${fmt(mib(r.snapshotBytes), 0)} MiB) | ${fmt(mib(r.bytes), 0)} | ${fmt(r.wall)} | ${fmt(ph['verify-local'])} | ${fmt(ph.bundle)} | ${fmt(ph.upload)} | ${fmt(ph.verify)} | ${fmt(r.cpu)} | **${fmt(r.rssKiB / 1024, 0)}** |`);
  }
  return lines.join('\n');
}

function renderLatency(lat) {
  const lines = [
    `Background load: ${lat.rate} puts/s (256-byte values), open loop, latency measured from each request's due time.`,
    '',
    '| Window | Duration s | Writes | Errors | p50 ms | **p99 ms** | max ms | Backup wall s | Backup CPU s | Backup peak RSS MiB |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const w of lat.windows) {
    const b = w.backup;
    lines.push(
      `| ${w.name} | ${fmt((w.to - w.from) / 1000, 1)} | ${w.n} | ${w.errors} | ${fmt(w.p50)} | **${fmt(w.p99)}** | ${fmt(w.max)} | ${b ? fmt(b.wall) : ''} | ${b ? fmt(b.cpu) : ''} | ${b ? fmt(b.rssKiB / 1024, 0) : ''} |`,
    );
  }
  lines.push('', 'Rows marked ↳ split the backup window by the run\'s phases (phases under 1 s are left out).');
  const withPhases = lat.windows.filter((w) => w.backup?.phases);
  if (withPhases.length) {
    lines.push('', 'Phases of those CLI runs (seconds): ' + withPhases.map((w) => `${w.name.startsWith('same') ? 'niced' : 'plain'}: ` + Object.entries(w.backup.phases).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')).join('; '));
  }
  return lines.join('\n');
}

// ------------------------------------------------------------------ main

async function main() {
  const started = Date.now();
  if (!opt['no-build']) await build();
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run npm run build');
  await mkdir(TMP, { recursive: true });
  const vers = await versions();
  const load0 = loadavg();
  const ds = await ensureDataset(SIZE, log);
  log(`snapshot ${fmt(mib(ds.snapshotBytes), 0)} MiB (${ds.keys} keys)${ds.cached ? ' from cache' : ''}: ${ds.snapshot}`);
  const srv = await setup(ds, { s3PartSize: opt['s3-part-size'] && Number(opt['s3-part-size']) * MiB, s3QueueSize: opt['s3-queue-size'] && Number(opt['s3-queue-size']) });
  const cases = defineCases(ds, srv);
  const samples = Object.fromEntries(cases.map((c) => [c.id, []]));
  let rss = [];
  let lat;
  try {
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
          log(`rep ${rep}/${REPEATS} ${c.id.padEnd(18)} ${fmt(s.wall).padStart(7)} s  ${fmt(mib(s.bytes) / s.wall, 0).padStart(5)} MiB/s  cpu ${fmt(s.cpu)} s  rss ${fmt(s.rssKiB / 1024, 0)} MiB  (load ${fmt(load, 1)})`);
        } catch (e) {
          s = { error: String(e.message ?? e).split('\n')[0] };
          log(`rep ${rep}/${REPEATS} ${c.id}: FAILED ${s.error}`);
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
        const d = size === SIZE ? ds : await ensureDataset(size, log);
        await srv.clean.s3();
        await srv.clean.sftp();
        await srv.clean.local();
        const r = await backupd({ snapshot: d.snapshot, staticResources: d.staticResources, workDir: join(RUN, 'work'), mode: 'all', stores: [srv.stores.local, srv.stores.s3, srv.stores.sftp] }, srv.env);
        rss.push({ size: sizeLabel(size), snapshotBytes: d.snapshotBytes, bytes: r.bytes, wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, phases: r.phases });
        log(`rss sweep ${sizeLabel(size)}: peak RSS ${fmt(r.rssKiB / 1024, 0)} MiB, wall ${fmt(r.wall)} s`);
      } catch (e) {
        rss.push({ size: sizeLabel(size), error: String(e.message ?? e).split('\n')[0] });
        log(`rss sweep ${sizeLabel(size)} failed: ${e.message}`);
      }
      await srv.clean.s3();
      await srv.clean.sftp();
      await srv.clean.local();
      await srv.clean.work();
    }
    if (!opt['no-latency']) {
      try {
        lat = await latencyTest(ds, srv);
      } catch (e) {
        lat = { error: String(e.message ?? e).split('\n')[0] };
        log(`latency test failed: ${e.message}`);
      }
    }
  } finally {
    await srv.stop();
    // Stores, outbox and server data: gigabytes; the dataset cache under bench/tmp/data stays.
    await rm(RUN, { recursive: true, force: true }).catch(() => undefined);
  }

  const sums = Object.fromEntries(cases.map((c) => [c.id, summarize(c, samples[c.id])]));
  const day = new Date().toISOString().slice(0, 10);
  const minutes = (Date.now() - started) / 60000;
  const load1 = loadavg();
  const md = [
    `# etcd-backupd benchmark, ${day}`,
    '',
    `Snapshot: **${fmt(mib(ds.snapshotBytes), 0)} MiB** (\`--size ${sizeLabel(SIZE)}\`, ${ds.keys} keys, taken by etcd-backupd's etcdctl source; static archive ${fmt(ds.staticBytes / 1024, 0)} KiB). ` +
      `${REPEATS} repetitions, interleaved (every case once per round), page cache warm. All servers on 127.0.0.1: one s3rver ${vers.s3rver}, one OpenSSH sshd (internal-sftp).`,
    '',
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${fmt(totalmem() / GiB, 0)} GiB RAM; load average ${load0.map((x) => fmt(x, 1)).join('/')} at start, ${load1.map((x) => fmt(x, 1)).join('/')} at end (other work on the machine skews wall times: compare CPU seconds too). ` +
      `Tools: node ${vers.node}, ${vers.etcd}, ${vers.rclone}, ${vers.aws}, ${vers.openssh}, ${vers.coreutils}; ssh2 ${vers.ssh2}, @aws-sdk/lib-storage ${vers.awsSdk}.`,
    '',
    `S3 store settings: partSize ${srv.stores.s3.partSize ? srv.stores.s3.partSize / MiB + ' MiB' : 'default'}, queueSize ${srv.stores.s3.queueSize ?? 'default'}. Run took ${fmt(minutes, 1)} min.`,
    '',
    '## Targets (issue #6)',
    '',
    'For each destination: etcd-backupd\'s upload phase and its upload + remote-verification phases (seconds inside the process, median) against the fastest peer\'s whole copy (process wall, median). The bundle is made once per backup whatever the number of stores, and is shown in the phases table below; the last column is the whole etcd-backupd process (start-up, bundle, upload, verify, manifest) against the same peer.',
    '',
    renderTargets(cases, sums, samples),
    '',
    '## Full path and peers',
    '',
    'Wall time is the whole process (start-up included, for etcd-backupd as for every peer). "× fastest peer" = etcd-backupd median wall / the fastest peer of the same destination, which does less work (no bundle, no read-back, usually no fsync).',
    '',
    renderTable(cases, sums),
    '',
    '## etcd-backupd phases per store',
    '',
    'Seconds inside the process, median (min–max) [median CPU seconds of the process in that phase]; the rest of the process wall is Node start-up and module loading.',
    '',
    renderPhases(cases, sums, samples),
    '',
    '## Peak RSS by snapshot size (one process: verify-local, bundle, then local + S3 + SFTP delivery)',
    '',
    rss.length ? renderRss(rss) : '_skipped (--rss-sizes none)_',
    '',
    '## etcd write latency with and without a backup',
    '',
    lat ? (lat.error ? `n/a: ${lat.error}` : renderLatency(lat)) : '_skipped (--no-latency)_',
    '',
  ].join('\n');
  const outFile = opt.out ?? join(BENCH, 'results', `${day}.md`);
  await mkdir(dirname(outFile), { recursive: true });
  await writeFile(outFile, md);
  const { samples: latSamples, ...latSummary } = lat ?? {};
  await writeFile(outFile.replace(/\.md$/, '.json'), JSON.stringify({ size: sizeLabel(SIZE), dataset: ds, versions: vers, samples, sums, rss, latency: lat && latSummary }, null, 2));
  // Every background write [dueEpochMs, latencyMs, ok], one line: for plotting.
  if (latSamples) await writeFile(outFile.replace(/\.md$/, '-latency.json'), JSON.stringify(latSamples) + '\n');
  console.log(md);
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
