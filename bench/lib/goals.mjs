// The goals of the compression issue, as ratios measured in one run, per
// dataset, each with ✓/✗ and, for a ✗, the figures that show what limits it.
import { pooledP99 } from './latency-test.mjs';
import { DELIVERY_CASES, esc, fastestPeer, proofOf, rssBreakdown } from './report.mjs';
import { MiB, fmt, parseSize, sizeLabel } from './util.mjs';

export const RSS_GOAL_SIZES = ['256MiB', '1GiB', '4GiB'].map(parseSize);
const RSS_LIMIT_MIB = 150;
const mib = (b) => b / MiB;
const secs = (x) => `${fmt(x)} s`;

function cell(value, target, text, evidence, { unit = '×', info = false } = {}) {
  if (!Number.isFinite(value)) return { value, text: `– (${text})`, na: true };
  const ok = value <= target;
  const v = unit === '×' ? `${fmt(value, 2)}×` : `${fmt(value, 0)} ${unit}`;
  return { value, ok: info ? undefined : ok, text: `**${v}**${info ? '' : ok ? ' ✓' : ' ✗'} (${text})`, evidence: !info && !ok ? evidence : undefined };
}

/** Figures of one etcd-backupd delivery case and its fastest peer, for the evidence of a ✗. */
function deliveryEvidence(d, id) {
  const s = d.sums[id];
  const best = fastestPeer(d.cases, d.sums, d.cases.find((c) => c.id === id).group);
  const ph = s.phases;
  const pc = s.phaseCpu ?? {};
  const bundleNone = d.sums['bd-bundle-none'];
  const bundleZ = d.sums['bd-bundle'];
  const zstdCpu = bundleZ && bundleNone && !bundleZ.na && !bundleNone.na ? bundleZ.phaseCpu.bundle - bundleNone.phaseCpu.bundle : NaN;
  return (
    `etcd-backupd: upload ${secs(ph.upload?.med)} [process CPU ${fmt(pc.upload)} s], verify ${secs(ph.verify?.med)} [CPU ${fmt(pc.verify)} s] (proof: ${proofOf(d.samples[id])}), ` +
    `${Number.isFinite(s.serverCpu) ? `server CPU over the whole case ${fmt(s.serverCpu)} s, ` : ''}${fmt(mib(s.stored), 0)} MiB stored; its bundle ${secs(ph.bundle?.med)} [CPU ${fmt(pc.bundle)} s, of which the zstd stage ≈ ${fmt(zstdCpu)} s = bundle CPU − the codec-none bundle's] is not in the ratio. ` +
    `Peer ${esc(best.case.tool)}: ${secs(best.sum.wall)} wall, CPU ${fmt(best.sum.cpu)} s${Number.isFinite(best.sum.serverCpu) ? `, server CPU ${fmt(best.sum.serverCpu)} s` : ''}, ≈ ${fmt(mib(best.sum.stored ?? best.sum.bytes), 0)} MiB stored.`
  );
}

/**
 * @param results [{ kind, ds, cases, sums, samples, rss, lat }] one per dataset
 * @returns { kinds, rows: [{ goal, target, cells: { kind: cell } }] }
 */
export function evaluateGoals(results) {
  const rows = [];
  const row = (goal, target, f) => rows.push({ goal, target, cells: Object.fromEntries(results.map((d) => [d.kind, f(d)])) });
  const na = (why) => ({ value: NaN, text: `– (${why})`, na: true });

  for (const id of DELIVERY_CASES) {
    const dest = id.slice(3);
    const part = (withVerify) => (d) => {
      const s = d.sums[id];
      if (!s || s.na) return na(s?.na ? `failed: ${String(s.na).slice(0, 60)}` : 'not run');
      const best = fastestPeer(d.cases, d.sums, d.cases.find((c) => c.id === id).group);
      if (!best) return na('no peer ran');
      const up = (s.phases.upload?.med ?? NaN) + (withVerify ? (s.phases.verify?.med ?? 0) : 0);
      return cell(up / best.sum.wall, withVerify ? 1.5 : 1.0, `${secs(up)} ÷ ${esc(best.case.tool)} ${secs(best.sum.wall)}`, deliveryEvidence(d, id));
    };
    row(`${dest}: upload ÷ fastest peer`, '≤ 1.00×', part(false));
    row(`${dest}: (upload + verify) ÷ fastest peer`, '≤ 1.50×', part(true));
  }

  row('S3 upload ÷ plain `aws s3 cp` of the raw snapshot (target on the realistic dataset)', '≤ 0.50× (realistic)', (d) => {
    const s = d.sums['bd-s3'];
    const aws = d.sums['aws-s3-cp'];
    if (!s || s.na || !aws || aws.na) return na('not run');
    const up = s.phases.upload?.med;
    const ev = `etcd-backupd uploads ${fmt(mib(s.stored), 0)} MiB (the snapshot compresses ${fmt(s.bytes / s.stored, 2)}×) in ${secs(up)} [process CPU ${fmt(s.phaseCpu.upload)} s, s3rver CPU over the whole case ${fmt(s.serverCpu)} s]; aws s3 cp uploads ${fmt(mib(aws.bytes), 0)} MiB in ${secs(aws.wall)} [CPU ${fmt(aws.cpu)} s, s3rver ${fmt(aws.serverCpu)} s].`;
    return cell(up / aws.wall, 0.5, `${secs(up)} ÷ ${secs(aws.wall)}`, ev, { info: d.kind !== 'realistic' });
  });

  for (const size of RSS_GOAL_SIZES) {
    row(`peak RSS at ${sizeLabel(size)} (one process: verify-local, bundle, local + S3 + SFTP)`, `≤ ${RSS_LIMIT_MIB} MiB`, (d) => {
      const r = d.rss.find((x) => x.size === sizeLabel(size));
      if (!r) return na('not measured in this run: add it to --rss-sizes');
      if (r.error) return na(`failed: ${r.error.slice(0, 60)}`);
      const single = ['bd-inspect', 'bd-bundle', 'bd-bundle-none', 'bd-local', 'bd-s3', 'bd-sftp']
        .filter((id) => d.sums[id] && !d.sums[id].na)
        .map((id) => `${id.slice(3)} ${fmt(d.sums[id].rssMiB, 0)}`)
        .join(', ');
      const ev = `peak RSS MiB after each step (RSS at that moment): ${rssBreakdown(r.rssAfter, r.rssNow)}; at the end, V8 heap ${fmt(r.memoryAtEnd?.heapTotal / 1024, 0)} MiB, external (array buffers included) ${fmt((r.memoryAtEnd?.external ?? NaN) / 1024, 0)} MiB. Single-path processes of the ${d.ds.size} cases (peak RSS MiB): ${single}.`;
      return cell(r.rssKiB / 1024, RSS_LIMIT_MIB, `${fmt(mib(r.snapshotBytes), 0)} MiB snapshot`, ev, { unit: 'MiB' });
    });
  }

  const p99 = (d, kind) => (d.lat && !d.lat.error ? pooledP99(d.lat, kind) : undefined);
  const latEvidence = (d, kind) => {
    const subs = (k) =>
      d.lat.windows
        .filter((w) => w.kind === k && w.sub)
        .map((w) => `${w.name.replace('↳ during ', '')} ${fmt(w.p99, 0)} ms`)
        .join(', ');
    const cpu = (k) => d.lat.windows.filter((w) => w.kind === k && w.backup).map((w) => `${fmt(w.backup.wall, 1)} s wall / ${fmt(w.backup.cpu, 1)} s CPU`).join('; ');
    const idle = d.lat.windows.find((w) => w.kind === 'idle');
    return `p99 by step: etcd-backupd ${subs(kind) || '–'}; seed ${subs('seed') || '–'}. Runs: etcd-backupd ${cpu(kind)}; seed ${cpu('seed')}. Idle p99 ${fmt(idle?.p99, 1)} ms.`;
  };
  const latRow = (goal, kind, info) =>
    row(goal, info ? '(shown, no target)' : '≤ 1.00×', (d) => {
      if (!d.lat) return na('--no-latency');
      if (d.lat.error) return na(`failed: ${d.lat.error.slice(0, 60)}`);
      const a = p99(d, kind);
      const b = p99(d, 'seed');
      return cell(a.p99 / b.p99, 1.0, `${fmt(a.p99, 1)} ms ÷ ${fmt(b.p99, 1)} ms, ${d.lat.rate} puts/s`, latEvidence(d, kind), { info });
    });
  latRow("etcd write p99 during an etcd-backupd backup to S3 ÷ during the seed's path (etcdctl snapshot save + aws s3 cp)", 'backupd-s3', false);
  latRow('same, etcd-backupd backing up to local + S3 + SFTP', 'backupd-all', true);
  return { kinds: results.map((d) => d.kind), rows };
}

export function renderGoals(goals) {
  const { kinds, rows } = goals;
  const lines = [`| Goal | Target | ${kinds.join(' | ')} |`, `|---|---|${kinds.map(() => '---|').join('')}`];
  for (const r of rows) lines.push(`| ${r.goal} | ${r.target} | ${kinds.map((k) => r.cells[k].text).join(' | ')} |`);
  const failed = rows.flatMap((r) => kinds.filter((k) => r.cells[k].evidence).map((k) => `- **${r.goal}**, ${k}: ${r.cells[k].evidence}`));
  const met = rows.reduce((n, r) => n + kinds.filter((k) => r.cells[k].ok === true).length, 0);
  const missed = rows.reduce((n, r) => n + kinds.filter((k) => r.cells[k].ok === false).length, 0);
  lines.push('', `${met} met, ${missed} missed, the rest not measured or shown without a target.`);
  if (failed.length) lines.push('', '### Figures behind each ✗', '', ...failed);
  return lines.join('\n');
}

/** One line per goal and dataset, for the console. */
export function goalLines(goals) {
  return goals.rows.flatMap((r) =>
    goals.kinds.map((k) => {
      const c = r.cells[k];
      const mark = c.ok === true ? '✓' : c.ok === false ? '✗' : '·';
      return `${mark} [${k}] ${r.goal}: ${c.text.replace(/\*\*/g, '').replace(/\\\|/g, '|')}`;
    }),
  );
}
