// etcd write latency while a backup runs: bench/latency.mjs puts small values
// at a fixed rate from its own process (open loop) while, in turn, nothing,
// the seed's path (`etcdctl snapshot save` + `aws s3 cp` of the file), and
// etcd-backupd's CLI backup (to S3 alone, as the seed, and to local + S3 +
// SFTP) run against the same etcd. Each window ends with a `sync`: the
// writeback of what a path left dirty in the page cache (the snapshot file,
// s3rver's and sshd's copies) lands in its own window, not in the next one.
import { spawn } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { staticPodDir } from './dataset.mjs';
import { startEtcd } from './servers.mjs';
import { RUN, timedWithServer } from './stand.mjs';
import { BENCH, ROOT, fmt, percentile, run, sleep, timed } from './util.mjs';

const CLI = join(ROOT, 'dist', 'cli.js');

function windowStats(samples, from, to) {
  const w = samples.filter(([due]) => due >= from && due <= to);
  const lat = w.filter(([, , ok]) => ok).map(([, l]) => l);
  return { n: w.length, errors: w.length - lat.length, p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat.length ? Math.max(...lat) : NaN };
}

/** p99 over every write of every window of a kind (the repetitions pooled). */
export function pooledP99(lat, kind) {
  const ws = (lat.windows ?? []).filter((w) => w.kind === kind && !w.sub);
  if (!ws.length || !lat.samples) return { p99: NaN, n: 0, windows: 0 };
  const lats = lat.samples.filter(([due, , ok]) => ok && ws.some((w) => due >= w.from && due <= w.to)).map(([, l]) => l);
  return { p99: percentile(lats, 99), n: lats.length, windows: ws.length };
}

/**
 * @param ds  dataset (its etcd data dir is started for the test)
 * @param srv the stand
 * @param o   { rate, nice, repeats, compression, log }
 */
export async function latencyTest(ds, srv, { rate = 100, nice = false, repeats = 1, compression, log = console.error }) {
  log(`write-latency test: etcd on the ${ds.size} ${ds.kind ?? ''} data dir, ${rate} puts/s in the background`);
  const etcd = await startEtcd(ds.etcdDir);
  const out = { rate, windows: [] };
  const gen = spawn(process.execPath, [join(BENCH, 'latency.mjs'), '--endpoint', etcd.endpoint, '--rate', String(rate)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  gen.stdout.on('data', (d) => (text += d));
  const genDone = new Promise((r) => gen.on('close', r));
  try {
    const cliDir = join(RUN, 'cli');
    await rm(cliDir, { recursive: true, force: true });
    await mkdir(cliDir, { recursive: true });
    const config = async (name, stores) => {
      const file = join(cliDir, `${name}.json`);
      await writeFile(
        file,
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
          ...(compression ? { compression } : {}),
        }),
      );
      return file;
    };
    const s3Only = await config('s3', [{ ...srv.stores.s3, prefix: 'cli' }]);
    const all = await config('all', [{ ...srv.stores.local, path: join(cliDir, 'store') }, { ...srv.stores.s3, prefix: 'cli' }, { ...srv.stores.sftp, path: join(srv.sshd.root, 'cli') }]);
    await run('sync', []); // the cases before this test leave dirty pages: not the idle window's
    const idle = Date.now();
    await sleep(15_000);
    out.windows.push({ name: 'no backup running', kind: 'idle', from: idle + 1000, to: Date.now() });

    const cliBackup = async (name, kind, argv) => {
      const from = Date.now();
      const r = await timed(argv, { env: { ...srv.env, ETCD_BACKUPD_LOG_LEVEL: 'warn' }, allowFail: true });
      const to = Date.now();
      let doc = {};
      try {
        doc = JSON.parse(r.stdout);
      } catch {
        /* reported below */
      }
      if (doc.result !== 'success') throw new Error(`CLI backup failed (exit ${r.code}): ${r.stdout.slice(0, 500)} ${r.stderr.slice(-1500)}`);
      const w = { name, kind, from, to, backup: { wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, phases: doc.phases, startedAt: doc.startedAt } };
      out.windows.push(w);
      // The same window split by the run's phases (they follow each other from startedAt).
      let at = Date.parse(doc.startedAt);
      for (const [phase, secs] of Object.entries(doc.phases ?? {})) {
        if (secs >= 0.3) out.windows.push({ name: `↳ during ${phase}${phase === 'source' ? ' (etcdctl snapshot save)' : ''}`, kind, from: at, to: at + secs * 1000, sub: true });
        at += secs * 1000;
      }
      return w;
    };
    // The seed's path: what a cron job does today. Same etcd, same load, same S3 server.
    const seed = async () => {
      const dir = join(RUN, 'seed');
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      const file = join(dir, 'snapshot.db');
      const from = Date.now();
      const a = await timed(['etcdctl', 'snapshot', 'save', file, `--endpoints=${etcd.endpoint}`], { env: { ...srv.env, ETCDCTL_API: '3' } });
      const mid = Date.now();
      const b = await timedWithServer(srv.s3, ['aws', 's3', 'cp', file, 's3://bench/seed/snapshot.db', '--endpoint-url', srv.s3.endpoint, '--only-show-errors', '--no-progress'], { env: srv.env });
      const to = Date.now();
      const w = { name: "seed's path: etcdctl snapshot save + aws s3 cp", kind: 'seed', from, to, backup: { wall: a.wall + b.wall, cpu: a.cpu + b.cpu, rssKiB: Math.max(a.rssKiB, b.rssKiB), phases: { 'snapshot save': a.wall, 'aws s3 cp': b.wall } } };
      out.windows.push(w);
      out.windows.push({ name: '↳ during etcdctl snapshot save', kind: 'seed', from, to: mid, sub: true });
      out.windows.push({ name: '↳ during aws s3 cp', kind: 'seed', from: mid, to, sub: true });
      return w;
    };
    // The window goes on until what the path wrote is on disk.
    const settle = async (w) => {
      const t = Date.now();
      await run('sync', []);
      w.to = Date.now();
      w.syncSeconds = (w.to - t) / 1000;
      out.windows.push({ name: '↳ during sync (writeback of what it left dirty)', kind: w.kind, from: t, to: w.to, sub: true });
    };
    const variants = [
      { name: "seed's path", run: seed },
      { name: 'etcd-backupd backup (CLI, etcdctl source, S3 only: as the seed)', kind: 'backupd-s3', argv: [process.execPath, CLI, 'backup', '--config', s3Only, '--json'] },
      { name: 'etcd-backupd backup (CLI, etcdctl source, local+S3+SFTP)', kind: 'backupd-all', argv: [process.execPath, CLI, 'backup', '--config', all, '--json'] },
    ];
    if (nice) variants.push({ name: 'same, under nice -n 19 ionice -c 3', kind: 'backupd-all-niced', argv: ['nice', '-n', '19', 'ionice', '-c', '3', process.execPath, CLI, 'backup', '--config', all, '--json'] });
    // Interleaved, as the cases: a slow period of the machine hits every kind.
    for (let rep = 1; rep <= repeats; rep++) {
      for (const v of variants) {
        await srv.clean.s3();
        await rm(join(srv.sshd.root, 'cli'), { recursive: true, force: true });
        log(`  latency rep ${rep}/${repeats}: ${v.name}`);
        const w = v.run ? await v.run() : await cliBackup(repeats > 1 ? `${v.name} #${rep}` : v.name, v.kind, v.argv);
        await settle(w);
        await rm(join(RUN, 'seed'), { recursive: true, force: true });
        await sleep(5_000);
      }
    }
    const tail = Date.now();
    await sleep(10_000);
    out.windows.push({ name: 'no backup running (after)', kind: 'idle-after', from: tail + 2000, to: Date.now() });
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

export function renderLatency(lat) {
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
  lines.push(
    '',
    "Each backup window runs from the start of the path to the end of a `sync` after it (its writeback belongs to it). Rows marked ↳ split a window by its steps (the CLI run's phases under 0.3 s are left out; a p99 of a few dozen writes is about their max). Backup wall s is the process's, without the sync; Backup CPU s is the CLI process's (etcdctl included, its child); for the seed's path, etcdctl's + aws's.",
  );
  const withPhases = lat.windows.filter((w) => w.backup?.phases);
  if (withPhases.length) {
    lines.push('', 'Steps of those runs (seconds): ' + withPhases.map((w) => `${w.name}: ` + Object.entries(w.backup.phases).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')).join('; '));
  }
  return lines.join('\n');
}
