#!/usr/bin/env node
// What the live progress lines cost (issue 19): `npm run bench -- progress [options]`, opt-in.
//
// One etcd member on a cached dataset (bench/lib/dataset.mjs) and one s3rver, on
// 127.0.0.1. The real CLI backs up to S3 (etcdctl source, read-back verify), --repeats
// times per variant, the variants interleaved (order rotating per round):
//   pipe      stderr is a pipe: JSON log lines, no progress   (script -qfec "... 2>&1 | cat")
//   tty       stderr is a terminal: pretty log lines + live progress (script -qfec "...")
//   tty-json  a terminal with --json: pretty log lines, no progress
// All three run under script(1), so each pays the same pseudo-terminal copy; whole-process
// wall time, CPU (the process tree, /usr/bin/time) and peak RSS, plus what reached the
// terminal (bytes, progress frames). See bench/README.md ("Progress on a terminal").
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { benchArgs, benchLog, buildDist } from './lib/cli.mjs';
import { DATASETS, ensureDataset, staticPodDir } from './lib/dataset.mjs';
import { startEtcd, startS3rver } from './lib/servers.mjs';
import { BENCH, GiB, MiB, ROOT, TMP, fmt, median, parseSize, run, sizeLabel } from './lib/util.mjs';
import { timed } from './lib/util.mjs';

const USAGE = `usage: npm run bench -- progress [options]
       node bench/progress.mjs [options]
  --size SIZE       etcd database size (default 256MiB)
  --dataset KIND    incompressible | realistic (default incompressible)
  --repeats N       backups per variant, interleaved (default 3)
  --no-build        do not run \`npm run build\` first
  --out FILE        Markdown here (default bench/results/<YYYY-MM-DD>-progress.md; .json beside it)`;

const opt = benchArgs(
  USAGE,
  {
    size: { type: 'string', default: '256MiB' },
    dataset: { type: 'string', default: 'incompressible' },
    repeats: { type: 'string', default: '3' },
  },
  { subcommand: 'progress' },
);
const log = benchLog('progress');
const SIZE = parseSize(opt.size);
if (SIZE > 7 * GiB) throw new Error('--size: at most 7GiB');
if (!DATASETS.includes(opt.dataset)) throw new Error(`--dataset: ${opt.dataset}? use ${DATASETS.join(' or ')}`);
const REPEATS = Math.max(1, Number(opt.repeats));
const CLI = join(ROOT, 'dist', 'cli.js');
const DIR = join(TMP, `progress-${process.pid}`);
const VARIANTS = ['pipe', 'tty', 'tty-json'];

const quote = (a) => `'${String(a).replace(/'/g, `'\\''`)}'`;

/** The command line script(1) runs for a variant: the same CLI, stderr a pipe or the terminal. */
function commandOf(variant, config) {
  const cli = [process.execPath, CLI, 'backup', '--config', config].map(quote).join(' ');
  if (variant === 'pipe') return `${cli} 2>&1 | cat`;
  if (variant === 'tty-json') return `${cli} --json`;
  return cli;
}

async function main() {
  if (!opt['no-build']) await buildDist(log);
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run npm run build');
  await rm(DIR, { recursive: true, force: true });
  await mkdir(DIR, { recursive: true });
  const ds = await ensureDataset(SIZE, log, { kind: opt.dataset });
  log(`dataset ${ds.size} ${ds.kind}: snapshot ${fmt(ds.snapshotBytes / MiB, 0)} MiB`);
  const etcd = await startEtcd(ds.etcdDir);
  const s3 = await startS3rver(join(DIR, 's3rver'));
  const samples = [];
  let ttyScreen = '';
  try {
    await writeFile(join(DIR, 'ak'), 'S3RVER\n', { mode: 0o600 });
    await writeFile(join(DIR, 'sk'), 'S3RVER\n', { mode: 0o600 });
    const config = join(DIR, 'config.json');
    await writeFile(
      config,
      JSON.stringify({
        cluster: 'bench',
        node: 'bench-node',
        workDir: join(DIR, 'work'),
        source: { type: 'etcdctl', staticPodDir: await staticPodDir(), timeout: '30m' },
        etcd: { endpoints: [etcd.endpoint] },
        stores: [{ name: 's3', type: 's3', bucket: s3.bucket, endpoint: s3.endpoint, forcePathStyle: true, accessKeyIdFile: join(DIR, 'ak'), secretAccessKeyFile: join(DIR, 'sk') }],
        // One backup kept: the disk holds one copy in the store, none on the node.
        retention: { keepLast: 1 },
        local: { keep: 0 },
        coordination: { mode: 'none' },
        recovery: { dir: '' },
        control: { socket: join(DIR, 'control.sock') },
      }),
      { mode: 0o600 },
    );
    const env = { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1', ETCD_BACKUPD_LOG_LEVEL: 'info', TERM: 'xterm' };
    for (let rep = 1; rep <= REPEATS; rep++) {
      // Rotate the order: a slow moment of a shared machine does not always hit the same variant.
      const order = VARIANTS.map((_, i) => VARIANTS[(i + rep - 1) % VARIANTS.length]);
      for (const variant of order) {
        await run('sync', []);
        const r = await timed(['script', '-qfec', commandOf(variant, config), '/dev/null'], { env, allowFail: true });
        const term = r.stdout;
        const ok = r.code === 0 && (variant === 'tty-json' ? /"result": "success"/.test(term) : /succeeded|"result":"success"/.test(term));
        if (!ok) throw new Error(`${variant}: backup failed (exit ${r.code}): ${term.slice(-2000)} ${r.stderr.slice(-1000)}`);
        const s = { rep, variant, wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, termBytes: Buffer.byteLength(term), frames: term.split('\u001b[?2026h').length - 1 };
        samples.push(s);
        if (variant === 'tty') ttyScreen = term;
        log(`round ${rep}/${REPEATS} ${variant}: ${fmt(s.wall)} s wall, ${fmt(s.cpu)} s CPU, ${fmt(s.rssKiB / 1024, 0)} MiB RSS, ${s.termBytes} bytes to the terminal, ${s.frames} frames`);
      }
    }
  } finally {
    await Promise.allSettled([etcd.stop(), s3.stop()]);
    await rm(DIR, { recursive: true, force: true });
  }
  const rows = VARIANTS.map((v) => {
    const xs = samples.filter((s) => s.variant === v);
    const m = (k) => median(xs.map((s) => s[k]));
    const range = (k) => `${fmt(Math.min(...xs.map((s) => s[k])))}–${fmt(Math.max(...xs.map((s) => s[k])))}`;
    return { variant: v, wall: m('wall'), wallRange: range('wall'), cpu: m('cpu'), cpuRange: range('cpu'), rssMiB: m('rssKiB') / 1024, termBytes: m('termBytes'), frames: m('frames') };
  });
  const by = Object.fromEntries(rows.map((r) => [r.variant, r]));
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${fmt(totalmem() / GiB, 0)} GiB RAM, load ${loadavg().map((x) => fmt(x, 1)).join(' ')} at the end; Node ${process.version}`;
  const md = [
    `# Live progress on a terminal: what it costs (${sizeLabel(SIZE)} ${opt.dataset}, ${REPEATS} repeats)`,
    '',
    `\`node bench/progress.mjs --size ${sizeLabel(SIZE)} --dataset ${opt.dataset} --repeats ${REPEATS}\` on ${new Date().toISOString().slice(0, 10)}. ${machine}.`,
    `Snapshot ${fmt(ds.snapshotBytes / MiB, 0)} MiB; \`etcd-backupd backup\` to S3 (s3rver on loopback, read-back verify), each variant under \`script -qfec\`.`,
    '',
    '| variant | stderr | wall s (median) | wall range | CPU s (median) | CPU range | peak RSS MiB | bytes to the terminal | progress frames |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.variant} | ${r.variant === 'pipe' ? 'a pipe (JSON logs)' : r.variant === 'tty' ? 'the terminal (pretty logs + progress)' : 'the terminal, --json (pretty logs)'} | ${fmt(r.wall)} | ${r.wallRange} | ${fmt(r.cpu)} | ${r.cpuRange} | ${fmt(r.rssMiB, 0)} | ${r.termBytes} | ${r.frames} |`),
    '',
    `tty ÷ pipe: wall ${fmt(by.tty.wall / by.pipe.wall, 3)}×, CPU ${fmt(by.tty.cpu / by.pipe.cpu, 3)}×; tty ÷ tty-json (the progress alone): wall ${fmt(by.tty.wall / by['tty-json'].wall, 3)}×, CPU ${fmt(by.tty.cpu / by['tty-json'].cpu, 3)}×.`,
  ].join('\n');
  const out = opt.out ?? join(BENCH, 'results', `${new Date().toISOString().slice(0, 10)}-progress.md`);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, md + '\n');
  await writeFile(out.replace(/\.md$/, '.json'), JSON.stringify({ size: sizeLabel(SIZE), dataset: opt.dataset, repeats: REPEATS, machine, rows, samples }, null, 2) + '\n');
  // What a person saw: a few of the tty variant's frames (the last round), escape codes removed.
  await writeFile(out.replace(/\.md$/, '-screen.txt'), screenSample(ttyScreen));
  console.log(md);
  log(`wrote ${out}`);
}

/** Frames drawn between log-update's synchronized-output brackets: four spread over the run, as plain text. */
function screenSample(term) {
  const frames = term.split('\u001b[?2026h').slice(1).map((f) => stripVTControlCharacters(f.split('\u001b[?2026l')[0] ?? '').replace(/\r/g, '').trim()).filter(Boolean);
  const pick = [0.1, 0.35, 0.6, 0.85].map((q) => frames[Math.floor(q * (frames.length - 1))]).filter(Boolean);
  const plain = stripVTControlCharacters(term).replace(/\r/g, '');
  const finals = plain.split('\n').filter((l) => /done|FAILED|succeeded/.test(l)).slice(-12);
  return [`${frames.length} frames; four of them:`, ...pick.map((f, i) => `--- frame ${i + 1}\n${f}`), '--- the lines left at the end', ...finals].join('\n') + '\n';
}

await main();
