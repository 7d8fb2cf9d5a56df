// Summaries and Markdown tables of one dataset's cases (bench/run.mjs).
import { MiB, fmt, median } from './util.mjs';

const mib = (b) => b / MiB;
export const esc = (s) => String(s).replace(/\|/g, '\\|');

export function summarize(c, samples) {
  const ok = samples.filter((s) => !s.error);
  if (ok.length === 0) return { na: samples[0]?.error ?? 'no samples' };
  const walls = ok.map((s) => s.wall);
  const bytes = ok[0].bytes ?? c.bytes;
  const phases = {};
  for (const s of ok) for (const [k, v] of Object.entries(s.phases ?? {})) (phases[k] ??= []).push(v);
  const phaseCpu = {};
  for (const s of ok) for (const [k, v] of Object.entries(s.doc?.phaseCpu ?? {})) (phaseCpu[k] ??= []).push(v);
  const rssAfter = {};
  for (const s of ok) for (const [k, v] of Object.entries(s.doc?.rssAfter ?? {})) (rssAfter[k] ??= []).push(v);
  return {
    n: ok.length,
    wall: median(walls),
    min: Math.min(...walls),
    max: Math.max(...walls),
    bytes,
    stored: ok[0].storedBytes ?? c.stored,
    mibs: mib(bytes) / median(walls),
    cpu: median(ok.map((s) => s.cpu)),
    rssMiB: median(ok.map((s) => s.rssKiB)) / 1024,
    phases: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, { med: median(v), min: Math.min(...v), max: Math.max(...v) }])),
    phaseCpu: Object.fromEntries(Object.entries(phaseCpu).map(([k, v]) => [k, median(v)])),
    rssAfterMiB: Object.fromEntries(Object.entries(rssAfter).map(([k, v]) => [k, median(v) / 1024])),
    serverCpu: median(ok.map((s) => s.serverCpu).filter((x) => x !== undefined)),
    startup: median(ok.map((s) => s.doc?.loadSeconds).filter((x) => x !== undefined)),
    codec: ok[0].doc?.codec,
    level: ok[0].doc?.level,
    load: median(ok.map((s) => s.load)),
  };
}

export const GROUP_TITLE = {
  node: 'On the node: verify the snapshot, hash, bundle (no destination)',
  local: 'Local directory store on the same filesystem as workDir',
  'local-otherfs': 'Local directory store on another filesystem (tmpfs; NFS in real life)',
  s3: 'S3 store (s3rver on loopback)',
  sftp: 'SFTP store (OpenSSH sshd on loopback)',
  readback: 'Read-back peers (compare with the verify phase below)',
};

export const DELIVERY_CASES = ['bd-local', 'bd-local-otherfs', 'bd-s3', 'bd-sftp'];

/** The fastest peer (whole process wall, median) of a destination group. */
export function fastestPeer(cases, sums, group) {
  const peers = cases.filter((x) => x.group === group && !x.backupd && sums[x.id] && !sums[x.id].na);
  if (!peers.length) return undefined;
  const best = peers.reduce((a, b) => (sums[b.id].wall < sums[a.id].wall ? b : a));
  return { case: best, sum: sums[best.id] };
}

export function renderTable(cases, sums) {
  const lines = [];
  lines.push('| Destination | Tool | Work done | Wall s, median (min–max) | MiB/s | Stored MiB | CPU s (user+sys) | Server CPU s | Peak RSS MiB | × fastest peer |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|');
  for (const g of Object.keys(GROUP_TITLE)) {
    const gc = cases.filter((c) => c.group === g);
    if (!gc.length) continue;
    const fastest = fastestPeer(cases, sums, g)?.sum.wall ?? NaN;
    for (const c of gc) {
      const s = sums[c.id];
      if (s.na) {
        lines.push(`| ${g} | ${esc(c.tool)} | ${esc(c.what)} | n/a: ${String(s.na).replace(/\|/g, '/').slice(0, 120)} | | | | | | |`);
        continue;
      }
      let ratio = '';
      if (c.backupd && g !== 'node') ratio = `**${fmt(s.wall / fastest, 2)}×**`;
      if (c.id === 'bd-bundle') ratio = `${fmt(s.wall / sums['tar-zstd']?.wall, 2)}× tar\\|zstd, ${fmt(s.wall / sums.tar?.wall, 2)}× tar`;
      if (c.id === 'bd-bundle-none') ratio = `${fmt(s.wall / sums.tar?.wall, 2)}× tar`;
      if (c.id === 'bd-inspect') ratio = `${fmt(s.wall / sums['etcdctl-status']?.wall, 2)}× etcdctl`;
      if (!c.backupd && Number.isFinite(fastest) && g !== 'node' && g !== 'readback') ratio = s.wall === fastest ? 'fastest' : `${fmt(s.wall / fastest, 2)}×`;
      const tool = c.backupd ? `**${esc(c.tool)}**` : esc(c.tool);
      const startup = c.backupd && s.startup ? ` (start-up ${fmt(s.startup)})` : '';
      const stored = s.stored ? `${fmt(mib(s.stored), 0)}${c.backupd ? '' : ' ≈'}` : '';
      lines.push(
        `| ${g} | ${tool} | ${esc(c.what)} | ${fmt(s.wall)} (${fmt(s.min)}–${fmt(s.max)})${startup} | ${fmt(s.mibs, 0)} | ${stored} | ${fmt(s.cpu)} | ${Number.isFinite(s.serverCpu) ? fmt(s.serverCpu) : ''} | ${fmt(s.rssMiB, 0)} | ${ratio} |`,
      );
    }
  }
  return lines.join('\n');
}

/** How the remote copy was proven in the samples of a case (one-backup reports it per store). */
export function proofOf(samples) {
  const proofs = new Set(samples.filter((x) => !x.error).flatMap((x) => Object.values(x.doc?.stores ?? {}).map((st) => st.proof)).filter(Boolean));
  return [...proofs].join(', ') || '?';
}

/**
 * Issue #6's targets, per destination: the upload phase no slower than the
 * fastest peer's whole copy, upload + remote verification at most 1.5x it.
 */
export function renderTargets(cases, sums, samples) {
  const lines = [
    '| Destination | Fastest peer (whole process) | etcd-backupd upload s | **upload ÷ peer** (target ≤ 1.00) | upload + verify s | **(upload + verify) ÷ peer** (target ≤ 1.50) | proof of the remote copy | whole etcd-backupd process ÷ peer (bundle and start-up included) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const id of DELIVERY_CASES) {
    const c = cases.find((x) => x.id === id);
    const s = sums[id];
    if (!c || !s || s.na) continue;
    const best = fastestPeer(cases, sums, c.group);
    if (!best) continue;
    const peer = best.sum.wall;
    const up = s.phases.upload?.med;
    const upv = (s.phases.upload?.med ?? 0) + (s.phases.verify?.med ?? 0);
    const mark = (r, t) => `${fmt(r, 2)}× ${r <= t ? '✓' : '✗'}`;
    lines.push(`| ${c.group} | ${esc(best.case.tool)} ${fmt(peer)} s | ${fmt(up)} | **${mark(up / peer, 1)}** | ${fmt(upv)} | **${mark(upv / peer, 1.5)}** | ${proofOf(samples[id])} | ${fmt(s.wall / peer, 2)}× |`);
  }
  return lines.join('\n');
}

export function renderPhases(sums, samples) {
  const lines = [
    '| Store | bundle s | upload s | verify s | commit s | sum of phases s | process wall s | stored MiB (raw ÷ stored) | upload MiB/s (stored) | verify MiB/s (stored) | proof |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const p = (x, cpu) => (x ? `${fmt(x.med)} (${fmt(x.min)}–${fmt(x.max)})${cpu !== undefined ? ` [cpu ${fmt(cpu)}]` : ''}` : '–');
  for (const id of DELIVERY_CASES) {
    const s = sums[id];
    if (!s || s.na) continue;
    const ph = s.phases;
    const sum = (ph.bundle?.med ?? 0) + (ph.upload?.med ?? 0) + (ph.verify?.med ?? 0) + (ph.commit?.med ?? 0);
    const pc = s.phaseCpu ?? {};
    const st = s.stored ?? s.bytes;
    lines.push(
      `| ${id.slice(3)} | ${p(ph.bundle, pc.bundle)} | ${p(ph.upload, pc.upload)} | ${p(ph.verify, pc.verify)} | ${p(ph.commit, pc.commit)} | ${fmt(sum)} | ${fmt(s.wall)} | ${fmt(mib(st), 0)} (${fmt(s.bytes / st, 2)}) | ${fmt(mib(st) / ph.upload?.med, 0)} | ${fmt(mib(st) / ph.verify?.med, 0)} | ${proofOf(samples[id])} |`,
    );
  }
  return lines.join('\n');
}

/** Peak RSS after each step of the one-process sweep: where the memory goes. */
export function rssBreakdown(rssAfter, rssNow = {}) {
  const order = Object.entries(rssAfter ?? {});
  return order.map(([k, v]) => `${k.replace(/^store:/, '')} ${fmt(v / 1024, 0)}${rssNow[k] ? ` (${fmt(rssNow[k] / 1024, 0)})` : ''}`).join(' → ');
}

export function renderRss(rss) {
  const lines = [
    '| Snapshot | Bundle MiB stored (raw) | Wall s | verify-local s | bundle s [cpu] | upload s (3 stores) | verify s (3 stores) | CPU s | **Peak RSS MiB** | peak RSS MiB after each step |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rss) {
    if (r.error) {
      lines.push(`| ${r.size} | n/a: ${r.error.slice(0, 100)} | | | | | | | | |`);
      continue;
    }
    const ph = r.phases;
    lines.push(
      `| ${r.size} (${fmt(mib(r.snapshotBytes), 0)} MiB) | ${fmt(mib(r.stored ?? r.bytes), 0)} (${fmt(mib(r.bytes), 0)}) | ${fmt(r.wall)} | ${fmt(ph['verify-local'])} | ${fmt(ph.bundle)} [${fmt(r.phaseCpu?.bundle)}] | ${fmt(ph.upload)} | ${fmt(ph.verify)} | ${fmt(r.cpu)} | **${fmt(r.rssKiB / 1024, 0)}** | ${rssBreakdown(r.rssAfter, r.rssNow)} |`,
    );
  }
  lines.push('', "The last column is the process's peak RSS (`getrusage` maxRSS) right after each step, and in brackets its RSS at that moment: start-up (Node + modules), verify-local, bundle, then each store's delivery in turn. The step where the peak jumps is the one that needed the memory; the bracket is what it left behind (heap not yet returned, buffers kept).");
  return lines.join('\n');
}
