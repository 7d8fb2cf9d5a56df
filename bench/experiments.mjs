#!/usr/bin/env node
// Knob experiments: where does etcd-backupd's time go, and what would a
// change buy? Every variant runs the real code in its own process
// (bench/one-backup.mjs) on the same cached snapshot and the same loopback
// servers as `npm run bench`. Variants that need a code change run a COPY of
// dist/ patched in bench/tmp/experiments/dists/<id>/ (src/ is never touched);
// a patch that no longer applies shows as "n/a: patch did not apply".
//
//   node bench/experiments.mjs [--size 1GiB] [--repeats 3] [--only bundle,local,s3,sftp,inspect,startup]
//   (npm run bench -- --experiments runs this after the main table)
//
// Writes bench/results/<YYYY-MM-DD>-experiments.md and prints it.
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ensureDataset } from './lib/dataset.mjs';
import { backupd, setup } from './lib/stand.mjs';
import { BENCH, MiB, ROOT, TMP, fmt, median, parseSize, run, sizeLabel, timed } from './lib/util.mjs';

const isMain = Boolean(process.argv[1]) && import.meta.url === pathToFileURL(process.argv[1]).href;
const { values: opt } = parseArgs({
  args: isMain ? process.argv.slice(2) : [],
  options: {
    size: { type: 'string', default: '1GiB' },
    repeats: { type: 'string', default: '3' },
    only: { type: 'string' },
    out: { type: 'string' },
    render: { type: 'string' },
  },
});
const SIZE = parseSize(opt.size);
const REPEATS = Math.max(1, Number(opt.repeats));
const EXP = join(TMP, 'experiments');
const log = (...a) => console.error(`[exp ${new Date().toISOString().slice(11, 19)}]`, ...a);

/** A patch: [file under dist/, RegExp or string to find, replacement]. */
const WW = (n) => [['storage/sftp/io.js', /const WRITE_WINDOW = [^;\n]+;/, `const WRITE_WINDOW = ${n};`]];
const RW = (n) => [['storage/sftp/io.js', /const READ_WINDOW = [^;\n]+;/, `const READ_WINDOW = ${n};`]];
const CIPHER = (c) => [['storage/sftp/session.js', /readyTimeout: this\.timeoutMs,/, `readyTimeout: this.timeoutMs, algorithms: { cipher: [${JSON.stringify(c)}] },`]];

/**
 * metric: which phase the variant is about. verify: 'size' skips the
 * read-back where only the upload matters (halves the run time).
 */
export const VARIANTS = [
  // -- bundle: writeBundle (tar-stream + 2 sha256 + fsync) into the outbox
  { group: 'bundle', id: 'bundle-base', desc: 'as built (READ_CHUNK 1 MiB)', mode: 'bundle', metric: 'bundle' },
  { group: 'bundle', id: 'bundle-chunk-64k', desc: 'bundle/write.ts READ_CHUNK = 64 KiB', mode: 'bundle', metric: 'bundle', patches: [['bundle/write.js', /const READ_CHUNK = [^;]+;/, 'const READ_CHUNK = 1 << 16;']] },
  { group: 'bundle', id: 'bundle-chunk-4m', desc: 'bundle/write.ts READ_CHUNK = 4 MiB', mode: 'bundle', metric: 'bundle', patches: [['bundle/write.js', /const READ_CHUNK = [^;]+;/, 'const READ_CHUNK = 1 << 22;']] },
  { group: 'bundle', id: 'bundle-wbuf-4m', desc: 'fsutil.ts writeFileAtomic write stream highWaterMark 4 MiB', mode: 'bundle', metric: 'bundle', patches: [['fsutil.js', /highWaterMark: 1 << 20 \}\)/, 'highWaterMark: 1 << 22 })']] },
  { group: 'bundle', id: 'bundle-no-fsync', desc: '(cost probe, not a proposal) no fsync of the bundle', mode: 'bundle', metric: 'bundle', patches: [['fsutil.js', /await fsyncPath\(tmp\);/, '']] },
  {
    group: 'bundle',
    id: 'bundle-one-hash',
    desc: '(cost probe) per-artifact sha256 off: only the whole-tar hash',
    mode: 'bundle',
    metric: 'bundle',
    patches: [['bundle/write.js', /await pipeline\(createReadStream\(file, \{ highWaterMark: READ_CHUNK \}\), h, entry\);/, 'await pipeline(createReadStream(file, { highWaterMark: READ_CHUNK }), new (await import("node:stream")).PassThrough({ transform(c, e, cb) { h.bytes += c.length; cb(null, c); } }), entry);']],
  },

  // -- local store: copy + fsync + read-back
  { group: 'local', id: 'local-base', desc: 'as built (verify: readback)', store: 'local', metric: 'upload+verify' },
  { group: 'local', id: 'local-verify-size', desc: 'store verify: size (config key; no read-back)', store: 'local', metric: 'upload+verify', storeOverride: { verify: 'size' } },
  {
    group: 'local',
    id: 'local-read-4m',
    desc: 'deliver.ts + local.ts read streams highWaterMark 4 MiB',
    store: 'local',
    metric: 'upload+verify',
    patches: [
      ['run/deliver.js', /highWaterMark: 1 << 20/, 'highWaterMark: 1 << 22'],
      ['storage/local/store.js', /highWaterMark: 1 << 20/, 'highWaterMark: 1 << 22'],
    ],
  },

  {
    group: 'local',
    id: 'local-copyfile',
    desc: 'prototype: LocalStore.put copies a file body with fs.copyFile (kernel copy) (bench/lib/patches/local-copyfile.js)',
    store: 'local',
    metric: 'upload+verify',
    patches: [
      ['storage/local/store.js', 'const size = await writeFileAtomic(path, body);', 'const size = await __putMaybeCopy(path, body);'],
      ['storage/local/store.js', null, join(BENCH, 'lib', 'patches', 'local-copyfile.js')],
    ],
  },

  // -- S3: partSize / queueSize are config keys (no patch)
  ...[
    [16, 4, 'as built (partSize 16 MiB, queueSize 4)'],
    [8, 4],
    [32, 4],
    [64, 4],
    [16, 1],
    [16, 2],
    [16, 8],
    [32, 8],
    [64, 8],
  ].map(([p, q, d]) => ({
    group: 's3',
    id: `s3-part${p}-q${q}`,
    desc: d ?? `partSize ${p} MiB, queueSize ${q}`,
    store: 's3',
    metric: 'upload',
    storeOverride: { partSize: p * MiB, queueSize: q, verify: 'size' },
  })),
  ...[
    [16, 4],
    [32, 4],
    [64, 4],
    [32, 8],
  ].map(([p, q]) => ({
    group: 's3',
    id: `s3-pooled-part${p}-q${q}`,
    desc: `prototype: S3Store multipart without lib-storage, reused part buffers (bench/lib/patches/s3-pooled-upload.js); partSize ${p} MiB, queueSize ${q}`,
    store: 's3',
    metric: 'upload',
    storeOverride: { partSize: p * MiB, queueSize: q, verify: 'size' },
    patches: [
      ['storage/s3/store.js', 'new Upload(', 'new PooledUpload('],
      ['storage/s3/store.js', null, join(BENCH, 'lib', 'patches', 's3-pooled-upload.js')],
    ],
  })),
  { group: 's3-read', id: 's3-readback', desc: 'read-back (GET + sha256) as built', store: 's3', metric: 'verify' },

  // -- SFTP: request windows (code constants; OpenSSH's sftp-server takes 255 KiB per request, and
  //    ssh2's channel window is 2 MiB, so 8 requests fill it) and the cipher.
  ...[16, 4, 8, 32, 64].map((n) => ({
    group: 'sftp-write',
    id: `sftp-ww${n}`,
    desc: n === 16 ? 'as built (WRITE_WINDOW 16)' : `WRITE_WINDOW ${n}`,
    store: 'sftp',
    metric: 'upload',
    storeOverride: { verify: 'size' },
    patches: [...WW(n), ...RW(16)],
  })),
  ...[16, 4, 8, 32, 64].map((n) => ({
    group: 'sftp-read',
    id: `sftp-rw${n}`,
    desc: n === 16 ? 'as built (READ_WINDOW 16)' : `READ_WINDOW ${n}`,
    store: 'sftp',
    metric: 'verify',
    patches: [...WW(16), ...RW(n)],
  })),
  { group: 'sftp-cipher', id: 'sftp-gcm', desc: 'as built (ssh2 default: aes128-gcm@openssh.com)', store: 'sftp', metric: 'upload+verify', patches: [...WW(16), ...RW(16)] },
  { group: 'sftp-cipher', id: 'sftp-chacha', desc: 'cipher chacha20-poly1305@openssh.com (OpenSSH client default)', store: 'sftp', metric: 'upload+verify', patches: [...WW(16), ...RW(16), ...CIPHER('chacha20-poly1305@openssh.com')] },
  { group: 'sftp-cipher', id: 'sftp-aes128ctr', desc: 'cipher aes128-ctr (+ hmac-sha2-256-etm)', store: 'sftp', metric: 'upload+verify', patches: [...WW(16), ...RW(16), ...CIPHER('aes128-ctr')] },
  { group: 'sftp-cipher', id: 'sftp-gcm-w8', desc: 'aes128-gcm, WRITE_WINDOW 8 + READ_WINDOW 8', store: 'sftp', metric: 'upload+verify', patches: [...WW(8), ...RW(8)] },

  // -- The node flag of the launcher (src/cli.ts shebang): delivery right after bundling in the same process,
  //    as a real run does (the other delivery variants reuse one bundle made by another process).
  ...['sftp', 's3'].flatMap((store) => [
    { group: 'heap', id: `heap-${store}-as-built`, desc: `${store}: bundle then upload in one process, launcher flags (--initial-old-space-size=64)`, store, metric: 'upload', storeOverride: { verify: 'size' }, freshBundle: true },
    { group: 'heap', id: `heap-${store}-no-flag`, desc: `${store}: bundle then upload in one process, plain \`node\` (no launcher flags)`, store, metric: 'upload', storeOverride: { verify: 'size' }, freshBundle: true, launcherFlags: false },
  ]),

  // -- SFTP: the server's flush (fsync@openssh.com) is inside the upload phase; `sftp -b` does not flush.
  { group: 'sftp-fsync', id: 'sftp-fsync-base', desc: 'as built', store: 'sftp', metric: 'upload', storeOverride: { verify: 'size' } },
  {
    group: 'sftp-fsync',
    id: 'sftp-no-fsync',
    desc: '(cost probe) no fsync@openssh.com after the writes',
    store: 'sftp',
    metric: 'upload',
    storeOverride: { verify: 'size' },
    patches: [['storage/sftp/store.js', /if \(hasExtension\(s, 'fsync@openssh\.com'\)\) \{/, "if (false) {"]],
  },

  // -- verify-local: inspectSnapshot
  { group: 'inspect', id: 'inspect-base', desc: 'as built (crc-32 JS CRC-32C)', mode: 'inspect', metric: 'verify-local' },
  {
    group: 'inspect',
    id: 'inspect-node-rs-crc32c',
    desc: 'etcd/bbolt.ts crc32c() via @node-rs/crc32 (SSE4.2), installed only under bench/tmp',
    mode: 'inspect',
    metric: 'verify-local',
    needs: '@node-rs/crc32',
    patches: [
      ['etcd/bbolt.js', "import CRC32C from 'crc-32/crc32c.js';", "import { createRequire as __cr } from 'node:module'; const { crc32c: __hw } = __cr(import.meta.url)('@node-rs/crc32');"],
      ['etcd/bbolt.js', /return CRC32C\.buf\(data, seed \| 0\) >>> 0;/, 'return __hw(Buffer.from(data.buffer, data.byteOffset, data.byteLength), seed >>> 0) >>> 0;'],
    ],
  },
];

async function makeDist(v) {
  if (!v.patches?.length) return undefined;
  const dir = join(EXP, 'dists', v.id);
  await rm(dir, { recursive: true, force: true });
  await cp(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  await writeFile(join(dir, 'package.json'), '{"private":true,"type":"module"}\n');
  for (const [file, find, repl] of v.patches) {
    const p = join(dir, 'dist', file);
    const text = await readFile(p, 'utf8');
    if (find === null) {
      await writeFile(p, text + (await readFile(repl, 'utf8'))); // append a file
      continue;
    }
    const hit = typeof find === 'string' ? text.includes(find) : find.test(text);
    if (!hit) throw new Error(`patch did not apply: ${file} has no ${find}`);
    await writeFile(p, text.replace(find, repl));
  }
  return join(dir, 'dist');
}

/** Optional helper packages live in bench/tmp/experiments/node_modules, never in the project's. */
async function ensurePackage(name) {
  if (existsSync(join(EXP, 'node_modules', name, 'package.json'))) return;
  log(`installing ${name} under ${EXP} (experiment only)`);
  await mkdir(EXP, { recursive: true });
  if (!existsSync(join(EXP, 'package.json'))) await writeFile(join(EXP, 'package.json'), '{"private":true,"type":"module"}\n');
  await run('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', EXP, name]);
}

async function main() {
  const only = opt.only ? new Set(opt.only.split(',')) : undefined;
  const variants = VARIANTS.filter((v) => !only || only.has(v.group) || only.has(v.id));
  const ds = await ensureDataset(SIZE, log);
  const srv = await setup(ds, { dir: join(EXP, 'run') });
  const results = Object.fromEntries(variants.map((v) => [v.id, []]));
  const dists = {};
  const extra = [];
  try {
    for (const v of variants) {
      try {
        if (v.needs) await ensurePackage(v.needs);
        dists[v.id] = await makeDist(v);
      } catch (e) {
        dists[v.id] = { error: String(e.message).split('\n')[0] };
      }
    }
    const needsBundle = variants.some((v) => v.store);
    let bundle;
    if (needsBundle) {
      log('making one bundle for the delivery experiments');
      const r = await backupd({ mode: 'bundle', keepBundle: true, snapshot: ds.snapshot, staticResources: ds.staticResources, workDir: join(EXP, 'bundle') }, srv.env);
      bundle = { path: r.doc.bundlePath, size: r.doc.bytes, rawSize: r.doc.rawBytes, sha256: r.doc.sha256, artifacts: r.doc.artifacts };
    }
    for (let rep = 1; rep <= REPEATS; rep++) {
      for (const v of variants) {
        const dist = dists[v.id];
        if (dist?.error) continue;
        const storeConfig = v.store ? { ...srv.stores[v.store], ...(v.storeOverride ?? {}) } : undefined;
        const args = {
          mode: v.mode ?? 'deliver',
          snapshot: ds.snapshot,
          staticResources: ds.staticResources,
          workDir: join(EXP, 'run', 'work'),
          ...(dist ? { dist } : {}),
          ...(storeConfig ? { storeConfig, ...(v.freshBundle ? {} : { bundle }) } : {}),
        };
        const load = loadavg()[0];
        try {
          const r = await backupd(args, srv.env, { server: v.store === 's3' ? srv.s3 : v.store === 'sftp' ? srv.sshd : undefined, launcherFlags: v.launcherFlags !== false });
          const ph = r.doc.phases;
          const pc = r.doc.phaseCpu;
          const parts = v.metric.split('+');
          const sample = {
            wall: parts.reduce((a, k) => a + (ph[k] ?? 0), 0),
            cpu: parts.reduce((a, k) => a + (pc[k] ?? 0), 0),
            phases: ph,
            phaseCpu: pc,
            procCpu: r.cpu,
            serverCpu: r.serverCpu,
            rssKiB: r.rssKiB,
            minorFaults: r.minorFaults,
            load,
          };
          results[v.id].push(sample);
          log(`rep ${rep}/${REPEATS} ${v.id.padEnd(24)} ${v.metric} ${fmt(sample.wall)} s (cpu ${fmt(sample.cpu)} s${r.serverCpu !== undefined ? `, server ${fmt(r.serverCpu)} s` : ''}), rss ${fmt(r.rssKiB / 1024, 0)} MiB, load ${fmt(load, 1)}`);
        } catch (e) {
          results[v.id].push({ error: String(e.message).split('\n')[0] });
          log(`rep ${rep}/${REPEATS} ${v.id} FAILED: ${e.message}`);
        }
        await srv.clean.s3();
        await srv.clean.sftp();
        await srv.clean.local();
        await srv.clean.work();
      }
    }
    if (!only || only.has('startup')) extra.push(...(await startup()));
  } finally {
    await srv.stop();
    await rm(join(EXP, 'run'), { recursive: true, force: true }).catch(() => undefined);
    await rm(join(EXP, 'bundle'), { recursive: true, force: true }).catch(() => undefined);
  }

  const day = new Date().toISOString().slice(0, 10);
  const outFile = opt.out ?? join(BENCH, 'results', `${day}-experiments.md`);
  const doc = {
    day,
    size: sizeLabel(SIZE),
    snapshotBytes: ds.snapshotBytes,
    repeats: REPEATS,
    load: loadavg(),
    variants: variants.map(({ patches, ...v }) => ({ ...v, patched: Boolean(patches?.length), distError: dists[v.id]?.error })),
    results,
    startup: extra,
  };
  await mkdir(join(BENCH, 'results'), { recursive: true });
  await writeFile(outFile.replace(/\.md$/, '.json'), JSON.stringify(doc, null, 2));
  const md = render(doc);
  await writeFile(outFile, md);
  console.log(md);
  log(`wrote ${outFile}`);
}

/** The Markdown report from the saved JSON (also: node bench/experiments.mjs --render FILE.json). */
function render(doc) {
  const bytes = doc.snapshotBytes;
  const md = [
    `# etcd-backupd knob experiments, ${doc.day}`,
    '',
    `Snapshot ${fmt(bytes / MiB, 0)} MiB (\`--size ${doc.size}\`), ${doc.repeats} repetitions interleaved; load average at the end ${doc.load.map((x) => fmt(x, 1)).join('/')}. ` +
      'Each row: the phase(s) named in "metric", seconds inside the etcd-backupd process, median (min–max); CPU = that process\'s CPU seconds in those phases (median, the steadier number when the machine is shared); ' +
      'server CPU = s3rver / sshd for the whole run; faults = minor page faults of the whole process (thousands). ' +
      'Variants marked "(cost probe)" remove something the design needs; they only show what it costs.',
    '',
  ];
  for (const g of [...new Set(doc.variants.map((v) => v.group))]) {
    md.push(`## ${g}`, '', '| Variant | Change | metric | s, median (min–max) | CPU s, median (min–max) | Δ CPU vs first row | server CPU s | faults k | peak RSS MiB |', '|---|---|---|---|---|---|---|---|---|');
    let base;
    for (const v of doc.variants.filter((x) => x.group === g)) {
      const ok = (doc.results[v.id] ?? []).filter((x) => !x.error);
      if (v.distError || ok.length === 0) {
        md.push(`| ${v.id} | ${v.desc} | ${v.metric} | n/a: ${(v.distError ?? doc.results[v.id]?.[0]?.error ?? 'not run').replace(/\|/g, '/').slice(0, 140)} | | | | | |`);
        continue;
      }
      const w = ok.map((x) => x.wall);
      const c = ok.map((x) => x.cpu);
      const cm = median(c);
      base ??= cm;
      const server = ok.map((x) => x.serverCpu).filter((x) => x !== undefined);
      const faults = ok.map((x) => x.minorFaults).filter((x) => x !== undefined);
      md.push(
        `| ${v.id} | ${v.desc} | ${v.metric} | ${fmt(median(w))} (${fmt(Math.min(...w))}–${fmt(Math.max(...w))}) | ${fmt(cm)} (${fmt(Math.min(...c))}–${fmt(Math.max(...c))}) | ${cm === base ? '' : `${cm < base ? '−' : '+'}${fmt((Math.abs(cm - base) / base) * 100, 0)} %`} | ${server.length ? fmt(median(server)) : ''} | ${faults.length ? fmt(median(faults) / 1000, 0) : ''} | ${fmt(median(ok.map((x) => x.rssKiB)) / 1024, 0)} |`,
      );
    }
    md.push('');
  }
  if (doc.startup?.length) {
    md.push('## start-up (module loading) — paid by every CLI invocation, once per daemon', '', '| Command | wall s, median (min–max) | CPU s | peak RSS MiB |', '|---|---|---|---|');
    for (const e of doc.startup) md.push(`| ${e.name} | ${fmt(e.wall)} (${fmt(e.min)}–${fmt(e.max)}) | ${fmt(e.cpu)} | ${fmt(e.rss, 0)} |`);
    md.push('');
  }
  return md.join('\n');
}

/** What loading the code costs: plain node, the CLI, and each store module on its own. */
async function startup() {
  const imp = (p) => [process.execPath, '--input-type=module', '-e', `await import(${JSON.stringify(join(ROOT, 'dist', p))})`];
  const cmds = [
    ['node -e 0 (Node itself)', [process.execPath, '-e', '0']],
    ['etcd-backupd --version', [process.execPath, join(ROOT, 'dist/cli.js'), '--version']],
    ['import dist/storage/local/store.js', imp('storage/local/store.js')],
    ['import dist/storage/s3/store.js (@aws-sdk)', imp('storage/s3/store.js')],
    ['import dist/storage/sftp/store.js (ssh2)', imp('storage/sftp/store.js')],
    ['import dist/storage/index.js (all stores)', imp('storage/index.js')],
    ['import dist/run/backup.js', imp('run/backup.js')],
  ];
  const out = [];
  for (const [name, argv] of cmds) {
    const rs = [];
    for (let i = 0; i < Math.max(3, REPEATS); i++) rs.push(await timed(argv));
    const w = rs.map((r) => r.wall);
    out.push({ name, wall: median(w), min: Math.min(...w), max: Math.max(...w), cpu: median(rs.map((r) => r.cpu)), rss: median(rs.map((r) => r.rssKiB)) / 1024 });
    log(`startup ${name}: ${fmt(median(w))} s`);
  }
  return out;
}


const entry = opt.render
  ? async () => {
      const doc = JSON.parse(await readFile(opt.render, 'utf8'));
      const md = render(doc);
      await writeFile(opt.render.replace(/\.json$/, '.md'), md);
      console.log(md);
    }
  : main;
if (isMain) {
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130)); // the exit hook in lib/servers.mjs kills the servers
  entry().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
export { render };
