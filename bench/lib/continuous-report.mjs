// The continuous-backup bench's goals (issue 17's performance targets) and its Markdown report.
import { MiB, fmt } from './util.mjs';

/** RSS counts as flat when a linear fit over the run's second half rises by at most this much per 10 minutes. */
export const RSS_SLOPE_MAX = 5;

/** The goals with ✓/✗: p99 lag ≤ 30 s, write p99 ≤ 1.1× the baseline's, RSS ≤ 150 MiB and flat. */
export function continuousGoals(o) {
  const ratio = o.windows.writer.p99 / o.windows.baselinePooled.p99;
  return [
    { goal: 'p99 lag (a write acked → its segment committed in the store) ≤ 30 s', value: `${fmt(o.lag.p99, 1)} s`, ok: o.lag.p99 <= 30 && o.lag.uncommitted === 0, note: o.lag.uncommitted ? `${o.lag.uncommitted} writes in no committed segment` : '' },
    { goal: 'etcd write p99 with the writer ≤ 1.1× without', value: `${fmt(ratio, 2)}× (${fmt(o.windows.writer.p99, 1)} ms vs ${fmt(o.windows.baselinePooled.p99, 1)} ms)`, ok: ratio <= 1.1 },
    { goal: "the writer's RSS ≤ 150 MiB", value: `max ${fmt(o.rss.max, 0)} MiB`, ok: o.rss.max <= 150 },
    { goal: `the writer's RSS flat (second-half slope ≤ ${RSS_SLOPE_MAX} MiB / 10 min)`, value: `${fmt(o.rss.slopePer10Min, 1)} MiB / 10 min; medians first ${fmt(o.rss.edgeMinutes, 1)} min ${fmt(o.rss.firstMedian, 0)} MiB, last ${fmt(o.rss.lastMedian, 0)} MiB`, ok: o.rss.slopePer10Min <= RSS_SLOPE_MAX },
  ];
}

export function renderContinuous(o, day) {
  const w = o.windows;
  const s = o.segments;
  const r = o.restore;
  const mins = (x) => fmt(x / 60, x % 60 ? 1 : 0);
  const lines = [
    `# Continuous backups under load, ${day}`,
    '',
    `Command: \`npm run bench -- continuous ${o.argv.filter((a) => a !== 'continuous').join(' ')}\`. ${o.members}-member etcd (${o.versions.etcd}, plain http on 127.0.0.1, data dirs under ${o.dir}), s3rver as the one store, one daemon (\`dist/cli.js run\` with the launcher's node flags${Object.keys(o.daemonEnv ?? {}).length ? ` and ${Object.entries(o.daemonEnv).map(([k, v]) => `${k}=${v}`).join(' ')}${Object.keys(o.daemonEnv).some((k) => k.startsWith('MALLOC_')) && !o.argv.includes('--no-unit-env') ? ' (the systemd unit\'s)' : ''}` : ''}, coordination etcd, continuous on, interval ${o.interval}) after a base backup of ${fmt(o.poolBytes / MiB, 0)} MiB of objects. ` +
      `Load: ${o.rate} writes/s, open loop, over gRPC to the leader: updates of ${o.keys} Kubernetes-shaped objects round robin (test/support/k8s-data.ts, resourceVersion rewritten each write; bench/latency.mjs --values k8s). ` +
      `Windows: ${mins(o.baselineSeconds)} min without the daemon, the base backup, the daemon for ${mins(o.durationSeconds)} min, the daemon stopped, ${mins(o.baselineSeconds)} min without it. etcd compacted every ${o.compactEverySeconds} s to the revision of the previous tick (as the API server does).`,
    '',
    `Machine: ${o.machine.cpus} × ${o.machine.model}, ${fmt(o.machine.memGiB, 0)} GiB RAM, shared with other work. \`uptime\` before: \`${o.uptimeStart}\`; after: \`${o.uptimeEnd}\`. node ${o.versions.node}. Run took ${fmt(o.minutes, 1)} min. ${o.writes.total} writes, ${o.writes.failed} failed.`,
    '',
    '## Goals',
    '',
    '| Goal | Measured | |',
    '|---|---|---|',
    ...o.goals.map((g) => `| ${g.goal} | ${g.value}${g.note ? ` (${g.note})` : ''} | ${g.ok ? '✓' : '✗'} |`),
    '',
    '## Lag',
    '',
    '| Measure | p50 | p99 | max | samples |',
    '|---|---|---|---|---|',
    `| end to end: a write's ack → the manifest of a segment holding it exists in the store (s) | ${fmt(o.lag.p50, 1)} | **${fmt(o.lag.p99, 1)}** | ${fmt(o.lag.max, 1)} | ${o.lag.writes} writes (${o.lag.uncommitted} in no segment) |`,
    `| catch-up: writes acked after the base's revision, before the writer followed etcd (base backup, daemon start) (s) | | | ${fmt(o.catchUp.max, 1)} | ${o.catchUp.writes} writes (${o.catchUp.uncommitted} in no segment) |`,
    `| \`etcd_backup_continuous_lag_seconds\`, sampled every second (s) | ${fmt(o.lagGauge.secondsP50, 1)} | ${fmt(o.lagGauge.secondsP99, 1)} | ${fmt(o.lagGauge.secondsMax, 1)} | ${o.lagGauge.samples} |`,
    `| \`etcd_backup_continuous_lag_revisions\` | ${fmt(o.lagGauge.revisionsP50, 0)} | ${fmt(o.lagGauge.revisionsP99, 0)} | | ${o.lagGauge.samples} |`,
    '',
    '## etcd write latency (ms, from each write\'s due time)',
    '',
    '| Window | Writes | Errors | p50 | **p99** | max | etcd CPU s per member |',
    '|---|---|---|---|---|---|---|',
  ];
  const row = (label, x) => `| ${label} | ${x.n} | ${x.errors} | ${fmt(x.p50)} | **${fmt(x.p99)}** | ${fmt(x.max)} | ${x.etcdCpu ? x.etcdCpu.map((c) => fmt(c, 1)).join(' / ') : ''} |`;
  lines.push(row('without the daemon, before', w.before), row('**with the writer**', w.writer), row('without the daemon, after', w.after), row('without, both windows pooled', w.baselinePooled), '');
  const minuteOf = (t) => fmt((t - o.p99PerMinute.from) / 60_000, 1);
  const m = o.p99PerMinute;
  lines.push(
    `p99 per minute of the run (ms; from the first write: without the daemon in minutes 0-${minuteOf(w.before.to)} and ${minuteOf(w.after.from)}-${minuteOf(w.after.to)}, the writer in ${minuteOf(w.writer.from)}-${minuteOf(w.writer.to)}): ${m.p99.map((x) => fmt(x, 0)).join(', ')}. ` +
      `Median of the whole minutes' p99: with the writer ${fmt(m.writerMedian, 1)} ms, without ${fmt(m.baselineMedian, 1)} ms (${fmt(m.writerMedian / m.baselineMedian, 2)}×): less sensitive to one bad minute of the shared machine than the pooled p99.`,
    '',
    `With ÷ without (pooled): p50 ${fmt(w.writer.p50 / w.baselinePooled.p50, 2)}×, p99 **${fmt(w.writer.p99 / w.baselinePooled.p99, 2)}×**. The daemon used ${fmt(o.daemonCpuSeconds, 0)} CPU s over the writer window (${fmt((100 * o.daemonCpuSeconds) / ((w.writer.to - w.writer.from) / 1000), 0)} % of one core).`,
    '',
    "## The writer's memory (RSS every 5 s)",
    '',
    `Max ${fmt(o.rss.max, 0)} MiB over ${o.rss.samples.length} samples; second-half slope ${fmt(o.rss.slopePer10Min, 2)} MiB / 10 min; median of the first ${fmt(o.rss.edgeMinutes, 1)} min ${fmt(o.rss.firstMedian, 0)} MiB, of the last ${fmt(o.rss.lastMedian, 0)} MiB.`,
    '',
    `Per minute (median): ${perMinute(o.rss.samples)}.`,
    ...(o.daemonMemory?.atMaxRss ? ['', `What it is made of (\`--daemon-mem-log\`, process.memoryUsage() at the highest RSS, MiB): ${Object.entries(o.daemonMemory.atMaxRss).filter(([k]) => k !== 't').map(([k, v]) => `${k} ${v}`).join(', ')}; heapUsed per minute (median): ${perMinute(o.daemonMemory.samples.map((r) => [r.t, r.heapUsed]))}; external: ${perMinute(o.daemonMemory.samples.map((r) => [r.t, r.external]))}.${o.daemonMemory.nodeArgs ? ` Extra node flags: \`${o.daemonMemory.nodeArgs}\`.` : ''}`] : []),
    '',
    '## Segments (costs)',
    '',
    `${s.count} segments committed (bases: ${s.bases.join(', ') || 'none'}), revisions ${s.list[0]?.[0] ?? '–'}-${s.list.at(-1)?.[1] ?? '–'}; median ${fmt(s.revisionsPerSegmentP50, 0)} revisions per segment, one every ${fmt(s.secondsBetweenP50, 1)} s (median). ` +
      `Stored: ${fmt(s.bytes / MiB, 1)} MiB of segment objects (${fmt(s.rawBytes / MiB, 1)} MiB of records before zstd, ${fmt(s.rawBytes / s.bytes, 1)}×) + ${fmt(s.manifestBytes / MiB, 2)} MiB of manifests: **${fmt(s.bytesPerWrite, 0)} bytes per write** (${fmt(s.bytesPerRevision, 0)} per revision; the values written average ${fmt(o.poolBytes / o.keys, 0)} bytes). ` +
      `At this rate: ${fmt((s.bytesPerWrite * o.rate * 3600) / MiB / 1024, 2)} GiB of segments per hour per store.`,
    '',
    '## Restore to a time',
    '',
  );
  if (r) {
    const j = r.json;
    lines.push(
      `\`fetch latest --at ${r.at} --to DIR --json\` (CLI, after the write phase, etcd stopped): exit ${r.code}, **${fmt(r.wall, 1)} s** wall, ${fmt(r.cpu, 1)} CPU s (the CLI and its children, etcd's throwaway member included), peak RSS ${fmt(r.rssKiB / 1024, 0)} MiB. ` +
        `Base ${j.base ?? '–'}, ${j.revisionsReplayed ?? '–'} revisions replayed from ${j.segmentsUsed ?? '–'} segments, revision reached ${j.revisionReached ?? '–'} (seen ${j.reachedTime ?? '–'}); every write acked 5 s before TIME is in it (revision ≥ ${r.expectRevisionAtLeast}): ${r.holdsExpected ? '✓' : '✗'}. ` +
        `**${fmt(r.secondsPer100k, 0)} s per 100k revisions replayed** (the whole fetch: base download and restore, the throwaway etcd's start, the replay, the snapshot).`,
    );
    if (r.error) lines.push('', '```', r.error, '```');
  }
  lines.push('', `Daemon log (warnings and continuous lines, last ${o.daemonLog.length}): ${o.daemonLog.map((l) => `${l.msg}${l.reason ? ` [${l.reason}]` : ''}${l.err ? `: ${String(l.err).slice(0, 120)}` : ''}`).join('; ') || 'none'}. Compactions: ${o.compactions.length} (${o.compactions.filter((c) => c.error).length} failed). Daemon exit code ${o.daemonExit}.`);
  lines.push('', 'Caveats: one machine, shared; etcd members, s3rver, the daemon and the load share its CPUs. With etcd on tmpfs (the default `--dir /dev/shm`) a write costs no fsync: the write latency is CPU-bound, so it shows what the watch and the writer take from etcd in CPU, not disk contention. Lag is measured with the s3rver file\'s mtime and the load\'s clock, one host clock.');
  return lines.join('\n') + '\n';
}

function perMinute(samples) {
  if (!samples.length) return '–';
  const t0 = samples[0][0];
  const by = new Map();
  for (const [t, m] of samples) {
    const k = Math.floor((t - t0) / 60_000);
    by.set(k, [...(by.get(k) ?? []), m]);
  }
  return [...by.values()].map((ms) => fmt([...ms].sort((a, b) => a - b)[ms.length >> 1], 0)).join(', ');
}
