#!/usr/bin/env node
// etcd write latency during a backup taken from a follower vs from the leader
// (issue 15): `npm run bench -- leader-follower [options]`, opt-in.
//
// A 3-member etcd cluster (plain http, 127.0.0.1, its own data dirs under
// bench/tmp/leader-follower-<pid>/), filled with --size of a dataset through
// the leader; bench/latency.mjs puts 256-byte values into it at --rate per
// second, open loop, over gRPC to the leader (every write goes through the
// leader). Then, --repeats times, in alternating order (follower first in odd
// rounds, leader first in even ones): an idle window (--idle-seconds), a
// backup from the follower, an idle window, a backup from the leader. A
// backup is the real CLI (`etcd-backupd backup`, etcdctl source, one local
// store) with etcd.endpoints naming that one member, or with --method
// etcdctl just `etcdctl snapshot save` against it; its window runs until a
// `sync` after it returns. Reports p50/p99/max of the writes per window and
// the medians over the rounds. See bench/README.md ("Leader vs follower").
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { benchArgs, benchLog, buildDist } from './lib/cli.mjs';
import { DATASETS, fillEtcd, staticPodDir } from './lib/dataset.mjs';
import { startEtcdCluster } from './lib/servers.mjs';
import { processCpu } from './lib/stand.mjs';
import { BENCH, GiB, MiB, ROOT, TMP, fmt, median, parseSize, percentile, run, sizeLabel, sleep, timed } from './lib/util.mjs';

const USAGE = `usage: npm run bench -- leader-follower [options]
       node bench/leader-follower.mjs [options]
  --size SIZE           etcd database size to fill (default 256MiB; e.g. 1GiB)
  --dataset KIND        realistic | incompressible (default realistic; see bench/README.md)
  --repeats N           rounds, each one backup from a follower and one from the leader, order alternating (default 3)
  --rate N              background puts per second (default 100)
  --idle-seconds N      idle (baseline) window before every backup (default 10)
  --method M            cli: etcd-backupd backup through the CLI, one local store (default);
                        etcdctl: etcdctl snapshot save only (what the etcdctl source runs)
  --work-dir DIR        where the backup writes (the CLI's workDir and store, or etcdctl's file), in a
                        fresh subdirectory removed at the end (default bench/tmp/leader-follower-<pid>/;
                        e.g. /dev/shm: no disk writes by the backup, only the member's reads)
  --no-build            do not run \`npm run build\` first
  --out FILE            Markdown here (default bench/results/<YYYY-MM-DD>-leader-follower.md; .json beside it)`;

const opt = benchArgs(
  USAGE,
  {
    size: { type: 'string', default: '256MiB' },
    dataset: { type: 'string', default: 'realistic' },
    repeats: { type: 'string', default: '3' },
    rate: { type: 'string', default: '100' },
    'idle-seconds': { type: 'string', default: '10' },
    method: { type: 'string', default: 'cli' },
    'work-dir': { type: 'string' },
  },
  { subcommand: 'leader-follower' },
);
const log = benchLog('leader-follower');
const SIZE = parseSize(opt.size);
if (SIZE > 7 * GiB) throw new Error('--size: etcd allows at most 8 GiB (--quota-backend-bytes); use 7GiB or less');
if (!DATASETS.includes(opt.dataset)) throw new Error(`--dataset: ${opt.dataset}? use ${DATASETS.join(' or ')}`);
if (!['cli', 'etcdctl'].includes(opt.method)) throw new Error(`--method: ${opt.method}? use cli or etcdctl`);
const REPEATS = Math.max(1, Number(opt.repeats));
const RATE = Number(opt.rate);
const IDLE_MS = Number(opt['idle-seconds']) * 1000;
const CLI = join(ROOT, 'dist', 'cli.js');
const DIR = join(TMP, `leader-follower-${process.pid}`);
// Where the backup writes: under DIR, or a fresh directory under --work-dir.
const OUT_DIR = opt['work-dir'] ? join(opt['work-dir'], `ebd-leader-follower-${process.pid}`) : join(DIR, 'backup');

function windowStats(samples, from, to) {
  const w = samples.filter(([due]) => due >= from && due <= to);
  const lat = w.filter(([, , ok]) => ok).map(([, l]) => l);
  return { n: w.length, errors: w.length - lat.length, p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat.length ? Math.max(...lat) : NaN };
}

/** CPU seconds of each member over fn(). */
async function memberCpu(cluster, fn) {
  const before = cluster.members.map((m) => processCpu(m.pid));
  const r = await fn();
  return { r, cpu: Object.fromEntries(cluster.members.map((m, i) => [m.name, processCpu(m.pid) - before[i]])) };
}

async function main() {
  const started = Date.now();
  if (opt.method === 'cli') {
    if (!opt['no-build']) await buildDist(log);
    if (!existsSync(CLI)) throw new Error('dist/ is missing: run npm run build');
  }
  await mkdir(TMP, { recursive: true });
  const etcdVersion = (await run('etcd', ['--version'])).split('\n')[0].replace('etcd Version: ', 'etcd ').trim();
  const load0 = loadavg();
  log(`starting a 3-member etcd cluster under ${DIR}`);
  const cluster = await startEtcdCluster(join(DIR, 'etcd'), { members: 3 });
  const out = { workDir: opt['work-dir'] ?? 'bench/tmp (same disk as the members)', size: sizeLabel(SIZE), dataset: opt.dataset, method: opt.method, rate: RATE, idleSeconds: IDLE_MS / 1000, repeats: REPEATS, windows: [], rounds: [] };
  let gen;
  let genDone;
  let text = '';
  try {
    const first = await cluster.leader();
    log(`leader ${first.node.name}; filling ${sizeLabel(SIZE)} of ${opt.dataset} data through it`);
    const filled = await fillEtcd(first.node, SIZE, log, opt.dataset);
    log(`  filled ${filled.keys} keys, db ${fmt(filled.dbSize / MiB, 0)} MiB in ${fmt(filled.seconds, 1)} s`);
    out.fill = { keys: filled.keys, dbSize: filled.dbSize, seconds: filled.seconds, kinds: filled.kinds };
    // Followers apply what the leader committed before anything is measured.
    for (let t = Date.now(); ; ) {
      const st = await Promise.all(cluster.members.map((m) => m.status(10_000)));
      if (new Set(st.map((s) => s.raftIndex)).size === 1) {
        out.dbSizes = Object.fromEntries(cluster.members.map((m, i) => [m.name, st[i].dbSize]));
        break;
      }
      if (Date.now() - t > 120_000) throw new Error('the followers did not catch up with the leader within 120 s');
      await sleep(500);
    }

    const cliDir = join(OUT_DIR, 'cli');
    const config = async (endpoint) => {
      const file = join(cliDir, 'config.json');
      await mkdir(cliDir, { recursive: true });
      await writeFile(
        file,
        JSON.stringify({
          cluster: 'bench',
          node: 'bench-node',
          workDir: join(cliDir, 'work'),
          source: { type: 'etcdctl', staticPodDir: await staticPodDir(), timeout: '30m' },
          etcd: { endpoints: [endpoint] },
          stores: [{ name: 'local', type: 'local', path: join(cliDir, 'store') }],
          retention: { keepLast: 1 },
          local: { keep: 0 },
          control: { socket: join(cliDir, 'control.sock') },
        }),
      );
      return file;
    };
    const backup = async (member) => {
      await rm(join(cliDir, 'store'), { recursive: true, force: true });
      await rm(join(cliDir, 'work'), { recursive: true, force: true });
      await rm(join(OUT_DIR, 'snap'), { recursive: true, force: true });
      if (opt.method === 'etcdctl') {
        await mkdir(join(OUT_DIR, 'snap'), { recursive: true });
        const t = Date.now();
        const r = await timed(['etcdctl', 'snapshot', 'save', join(OUT_DIR, 'snap', 'snapshot.db'), `--endpoints=${member.endpoint}`, '--command-timeout=1800s'], { env: { ...process.env, ETCDCTL_API: '3' } });
        return { wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, phases: { source: r.wall }, startedAt: new Date(t).toISOString() };
      }
      const file = await config(member.endpoint);
      const r = await timed([process.execPath, CLI, 'backup', '--config', file, '--json'], { env: { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1', ETCD_BACKUPD_LOG_LEVEL: 'warn' }, allowFail: true });
      let doc = {};
      try {
        doc = JSON.parse(r.stdout);
      } catch {
        /* reported below */
      }
      if (doc.result !== 'success') throw new Error(`CLI backup from ${member.endpoint} failed (exit ${r.code}): ${r.stdout.slice(0, 500)} ${r.stderr.slice(-1500)}`);
      return { wall: r.wall, cpu: r.cpu, rssKiB: r.rssKiB, phases: doc.phases, startedAt: doc.startedAt, snapshotBytes: doc.snapshotBytes ?? doc.sizes?.snapshot };
    };

    log(`background load: ${RATE} puts/s to the leader ${first.node.name} (${first.node.endpoint})`);
    gen = spawn(process.execPath, [join(BENCH, 'latency.mjs'), '--endpoint', first.node.endpoint, '--rate', String(RATE)], { stdio: ['ignore', 'pipe', 'inherit'] });
    gen.stdout.on('data', (d) => (text += d));
    genDone = new Promise((r) => gen.on('close', r));
    await run('sync', []);
    await sleep(5_000); // warm-up: the channel, the leader's caches

    for (let rep = 1; rep <= REPEATS; rep++) {
      const order = rep % 2 ? ['follower', 'leader'] : ['leader', 'follower'];
      const round = { rep, order, windows: [] };
      for (const role of order) {
        const lead = await cluster.leader();
        // The follower: the first member by name that is not the leader (the same one every round while the leader stays).
        const member = role === 'leader' ? lead.node : cluster.members.find((m) => m !== lead.node);
        await run('sync', []);
        const idleFrom = Date.now();
        await sleep(IDLE_MS);
        const idle = { rep, kind: 'idle', name: `idle before the ${role} backup`, from: idleFrom + 500, to: Date.now() };
        log(`round ${rep}/${REPEATS}: backup from the ${role} ${member.name} (leader ${lead.node.name})`);
        const from = Date.now();
        const { r: b, cpu } = await memberCpu(cluster, async () => {
          const b = await backup(member);
          const t = Date.now();
          await run('sync', []);
          b.syncSeconds = (Date.now() - t) / 1000;
          return b;
        });
        const to = Date.now();
        const leadAfter = await cluster.leader();
        const w = { rep, kind: role, name: `backup from the ${role}`, member: member.name, leader: lead.node.name, leaderAfter: leadAfter.node.name, from, to, backup: b, memberCpu: cpu };
        // The snapshot itself (the source phase: etcdctl snapshot save from that member).
        // Phases follow each other from startedAt (preflight, source, ...).
        let srcFrom = Date.parse(b.startedAt);
        for (const [k, v] of Object.entries(b.phases ?? {})) {
          if (k === 'source') break;
          srcFrom += v * 1000;
        }
        const sub = { rep, kind: `${role}-source`, name: `↳ during the snapshot (source phase)`, from: srcFrom, to: srcFrom + 1000 * (b.phases?.source ?? 0), sub: true };
        round.windows.push(idle, w, sub);
        out.windows.push(idle, w, sub);
        if (leadAfter.node !== lead.node) log(`  the leader changed during the backup: ${lead.node.name} → ${leadAfter.node.name}`);
        await sleep(3_000);
      }
      out.rounds.push(round);
    }
  } finally {
    if (gen) {
      gen.kill('SIGTERM');
      await genDone;
    }
    await cluster.stop();
    await rm(DIR, { recursive: true, force: true }).catch(() => undefined);
    await rm(OUT_DIR, { recursive: true, force: true }).catch(() => undefined);
  }
  const samples = JSON.parse(text.trim().split('\n').pop() || '[]');
  out.windows = out.windows.map((w) => Object.assign(w, windowStats(samples, w.from, w.to)));
  out.totalWrites = samples.length;
  out.totalErrors = samples.filter(([, , ok]) => !ok).length;
  // Medians over the rounds, per kind; and the p99 of every write of a kind's windows pooled.
  out.summary = {};
  for (const kind of ['idle', 'follower', 'leader', 'follower-source', 'leader-source']) {
    const ws = out.windows.filter((w) => w.kind === kind);
    const pooled = samples.filter(([due, , ok]) => ok && ws.some((w) => due >= w.from && due <= w.to)).map(([, l]) => l);
    out.summary[kind] = {
      windows: ws.length,
      writes: ws.reduce((s, w) => s + w.n, 0),
      errors: ws.reduce((s, w) => s + w.errors, 0),
      p50: median(ws.map((w) => w.p50)),
      p99: median(ws.map((w) => w.p99)),
      max: median(ws.map((w) => w.max)),
      pooledP99: percentile(pooled, 99),
      seconds: median(ws.map((w) => (w.to - w.from) / 1000)),
      backupWall: ws[0]?.backup ? median(ws.map((w) => w.backup.wall)) : undefined,
      sourceSeconds: ws[0]?.backup ? median(ws.map((w) => w.backup.phases?.source ?? NaN)) : undefined,
    };
  }
  out.leaderChanges = out.windows.filter((w) => w.leaderAfter && w.leaderAfter !== w.leader).length;
  out.machine = { cpus: cpus().length, model: cpus()[0]?.model, memGiB: totalmem() / GiB, load: { start: load0, end: loadavg() } };
  out.versions = { node: process.version, etcd: etcdVersion };
  out.minutes = (Date.now() - started) / 60000;

  const day = new Date().toISOString().slice(0, 10);
  const outFile = opt.out ?? join(BENCH, 'results', `${day}-leader-follower.md`);
  const md = render(out, day);
  await mkdir(dirname(outFile), { recursive: true });
  await writeFile(outFile, md);
  await writeFile(outFile.replace(/\.md$/, '.json'), JSON.stringify({ ...out, samples: undefined }, null, 2) + '\n');
  console.log(md);
  log(`wrote ${outFile}`);
}

function render(o, day) {
  const s = o.summary;
  const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${fmt(a / b, 2)}×` : '–');
  const where = o.workDir.startsWith('bench/tmp') ? 'on the same disk as the members' : `under ${o.workDir}`;
  const how = o.method === 'cli' ? `\`etcd-backupd backup --json\` (the CLI from dist/, etcdctl source, workDir and one local store ${where}: snapshot, verify, bundle with zstd, store, manifest) with \`etcd.endpoints\` naming that one member` : `\`etcdctl snapshot save\` against that one member (what the etcdctl source runs), the file ${where}`;
  const lines = [
    `# etcd write latency during a backup: from a follower vs from the leader, ${day}`,
    '',
    `Command: \`node bench/leader-follower.mjs ${process.argv.slice(2).filter((a) => a !== 'leader-follower').join(' ')}\`. A 3-member etcd cluster (${o.versions.etcd}, plain http on 127.0.0.1, all three members on this one machine and disk; heartbeat 100 ms, election 1000 ms), filled through the leader with ${fmt(o.fill.dbSize / MiB, 0)} MiB of the **${o.dataset}** dataset (${o.fill.keys} keys; see bench/README.md). ` +
      `Background load: ${o.rate} puts/s (256-byte values) over gRPC to the leader, open loop, latency measured from each put's due time (bench/latency.mjs). ` +
      `A backup is ${how}; its window runs from its start to the end of a \`sync\` after it. ${o.repeats} round${o.repeats > 1 ? 's' : ''}, each a ${o.idleSeconds} s idle window then a backup, once from a follower and once from the leader, the order alternating (odd rounds follower first). Medians over the rounds.`,
    '',
    `Machine: ${o.machine.cpus} × ${o.machine.model}, ${fmt(o.machine.memGiB, 0)} GiB RAM; load average ${o.machine.load.start.map((x) => fmt(x, 1)).join('/')} at start, ${o.machine.load.end.map((x) => fmt(x, 1)).join('/')} at end. node ${o.versions.node}. Run took ${fmt(o.minutes, 1)} min (other work on the machine adds to every window alike: compare the idle rows). ${o.totalWrites} writes, ${o.totalErrors} failed. Leader changes during a backup: ${o.leaderChanges}.`,
    '',
    '## Summary (medians over the rounds)',
    '',
    '| Window | Windows | Writes | Errors | p50 ms | **p99 ms** | max ms | p99 of the pooled writes ms | p99 ÷ idle | Window s | Backup wall s | Snapshot (source phase) s |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const row = (label, k) => {
    const x = s[k];
    lines.push(`| ${label} | ${x.windows} | ${x.writes} | ${x.errors} | ${fmt(x.p50)} | **${fmt(x.p99)}** | ${fmt(x.max)} | ${fmt(x.pooledP99)} | ${k === 'idle' ? '' : ratio(x.p99, s.idle.p99)} | ${fmt(x.seconds, 1)} | ${x.backupWall !== undefined ? fmt(x.backupWall) : ''} | ${x.sourceSeconds !== undefined ? fmt(x.sourceSeconds) : ''} |`);
  };
  row('idle (no backup)', 'idle');
  row('backup from a **follower**', 'follower');
  row('↳ during its snapshot (source phase)', 'follower-source');
  row('backup from the **leader**', 'leader');
  row('↳ during its snapshot (source phase)', 'leader-source');
  lines.push(
    '',
    `Leader ÷ follower: p99 ${ratio(s.leader.p99, s.follower.p99)} over the whole backup window, ${ratio(s['leader-source'].p99, s['follower-source'].p99)} during the snapshot; max ${ratio(s.leader.max, s.follower.max)}.`,
    '',
    '## Every window',
    '',
    '| Round | Window | Member (leader) | Duration s | Writes | Errors | p50 ms | **p99 ms** | max ms | Backup wall s | sync s | etcd CPU s per member during the window |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const w of o.windows) {
    const b = w.backup;
    const who = w.member ? `${w.member} (${w.leader}${w.leaderAfter !== w.leader ? ` → ${w.leaderAfter}` : ''})` : '';
    const cpu = w.memberCpu ? Object.entries(w.memberCpu).map(([k, v]) => `${k} ${fmt(v, 1)}`).join(', ') : '';
    lines.push(`| ${w.rep} | ${w.name} | ${who} | ${fmt((w.to - w.from) / 1000, 1)} | ${w.n} | ${w.errors} | ${fmt(w.p50)} | **${fmt(w.p99)}** | ${fmt(w.max)} | ${b ? fmt(b.wall) : ''} | ${b ? fmt(b.syncSeconds) : ''} | ${cpu} |`);
  }
  const withPhases = o.windows.filter((w) => w.backup?.phases);
  lines.push(
    '',
    'Steps of the backups (seconds): ' + withPhases.map((w) => `round ${w.rep} ${w.kind}: ` + Object.entries(w.backup.phases).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')).join('; ') + '.',
    '',
    'Caveats: the three members share this machine\'s CPUs and disk, so a backup from a follower still competes with the leader for both (on real control-plane nodes each member has its own); what differs here is which etcd process serves the snapshot (reads its bbolt file and streams it over gRPC) and whose page cache and CPU time that takes. A p99 of a window of a few hundred writes is close to its few slowest writes: read it with the max and the per-round rows.',
  );
  return lines.join('\n') + '\n';
}

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130)); // the exit hook in lib/servers.mjs kills the etcds

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
