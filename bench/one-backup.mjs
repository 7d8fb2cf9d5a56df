#!/usr/bin/env node
// Runs ONE etcd-backupd path in this (separate) process and prints one JSON
// line on stdout: phase times, bytes and this process's own CPU/peak RSS.
// The bench runs it under /usr/bin/time so CPU and RSS belong to etcd-backupd
// alone, not to the bench driver or the servers.
//
//   node bench/one-backup.mjs '<json>'
//   json: { mode: 'deliver' | 'all' | 'inspect' | 'bundle',
//           snapshot, staticResources, workDir, storeConfig: {...} | stores: [...],
//           dist?: directory of the built code (default dist/, experiments pass a patched copy),
//           prefix?: object key prefix (cluster name),
//           compression?: { codec?: 'zstd' | 'none', level?: 1-19 }: the config key, validated and
//             defaulted by the product's own config schema (zstd, level 3 when absent) }
//
//  deliver: writeBundle, then deliverToStore to one store (upload, remote verify, manifest)
//  all:     inspectSnapshot (verify-local), writeBundle, deliverToStore to every store in turn
//  inspect: inspectSnapshot only;  bundle: writeBundle only
//  keepBundle: leave the bundle in the outbox (its path is printed); bundle: {path, size, sha256, artifacts}
//  of such a kept bundle makes deliver skip bundling (experiments on upload/verify knobs)
//
//  Prints bytes (the bundle as stored: compressed), rawBytes (the tar before compression),
//  codec/level, and rssAfter: this process's peak RSS (KiB) after each step, for the
//  memory breakdown.
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { rm } from 'node:fs/promises';

const ROOT = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const args = JSON.parse(process.argv[2]);
const dist = resolve(args.dist ?? join(ROOT, 'dist'));
const load = (p) => import(pathToFileURL(join(dist, p)).href);

const t0 = performance.now();
const { writeBundle } = await load('bundle/write.js');
const manifestMod = await load('bundle/manifest.js');
const { MANIFEST_FORMAT, serializeManifest } = manifestMod;
// Names and keys live in layout.js; older builds (experiments on a patched copy of an older dist/) kept them in bundle/manifest.js.
const layoutMod = await load('layout.js').catch(() => manifestMod);
const { BUNDLE_NAME, backupId, objectKeys } = layoutMod;
// Older builds still have no codec in the name.
const bundleName = layoutMod.bundleName ?? ((o) => `${BUNDLE_NAME}${o.codec === 'zstd' ? '.zst' : ''}${o.encrypted ? '.age' : ''}`);
const { deliverToStore } = await load('run/deliver.js');
const { createStore } = await load('storage/index.js');
const { parseConfig } = await load('config/load.js');
const { inspectSnapshot } = await load('etcd/snapshot.js');
const { silentLogger } = await load('log.js');
const tLoaded = performance.now();
/** Peak RSS (KiB) of this process after each step: where the memory goes. */
const rssAfter = { loaded: process.resourceUsage().maxRSS };
/** RSS (KiB) right after each step: what the step kept (the peak above is what it needed meanwhile). */
const rssNow = { loaded: Math.round(process.memoryUsage.rss() / 1024) };
const markRss = (name) => {
  rssAfter[name] = process.resourceUsage().maxRSS;
  rssNow[name] = Math.round(process.memoryUsage.rss() / 1024);
};

const phases = {};
/** CPU seconds (user+sys) of this process per phase: robust when other work shares the machine. */
const phaseCpu = {};
const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const addCpu = (name, c0) => (phaseCpu[name] = (phaseCpu[name] ?? 0) + cpuNow() - c0);
const time = async (name, fn) => {
  const t = performance.now();
  const c0 = cpuNow();
  try {
    return await fn();
  } finally {
    phases[name] = (phases[name] ?? 0) + (performance.now() - t) / 1000;
    addCpu(name, c0);
  }
};

/**
 * Wraps a store to split this process's CPU between deliverToStore's steps:
 * upload = first put (the bundle), verify = from head() to the next put,
 * commit = the manifest put. deliverToStore itself reports the wall times.
 */
function cpuSplitting(store) {
  let puts = 0;
  let mark = cpuNow();
  let current;
  const switchTo = (name) => {
    if (current) addCpu(current, mark);
    mark = cpuNow();
    current = name;
  };
  return new Proxy(store, {
    get(target, prop) {
      const v = Reflect.get(target, prop);
      if (typeof v !== 'function') return v;
      // The bundle goes through putFile (every store has it), the manifest through put.
      if (prop === 'put' || prop === 'putFile') {
        return async (...a) => {
          switchTo(puts++ === 0 ? 'upload' : 'commit');
          try {
            return await v.apply(target, a);
          } finally {
            switchTo(undefined);
          }
        };
      }
      if (prop === 'head') return (...a) => (switchTo('verify'), v.apply(target, a));
      if (prop === 'serverSha256' || prop === 'readBackSha256') return v.bind(target);
      return v.bind(target);
    },
  });
}

const storeDocs = args.stores ?? (args.storeConfig ? [args.storeConfig] : []);
await (await import('node:fs/promises')).mkdir(args.workDir, { recursive: true });
const cfg = parseConfig(
  {
    cluster: args.prefix ?? 'bench',
    node: 'bench-node',
    workDir: args.workDir,
    source: { type: 'etcdctl', staticPodDir: args.workDir },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: storeDocs.length ? storeDocs : [{ name: 'none', type: 'local', path: join(args.workDir, 'none') }],
    ...(args.compression ? { compression: args.compression } : {}),
  },
  '<bench>',
);
// As runBackup: no compression key in a build that predates it means a plain tar.
const codec = cfg.compression?.codec ?? 'none';
const level = cfg.compression?.level;
const result = { mode: args.mode, codec, level: codec === 'zstd' ? level : undefined, phases, phaseCpu, rssAfter, rssNow, ok: true, stores: {} };

let snap;
if (args.mode === 'all' || args.mode === 'inspect') {
  snap = await time('verify-local', () => inspectSnapshot(args.snapshot));
  if (snap.trailer !== 'ok') throw new Error(`trailer ${snap.trailer}`);
  result.inspect = snap;
  markRss('verify-local');
}

if (args.mode !== 'inspect') {
  const now = new Date();
  const id = backupId(now, cfg.node);
  const keys = objectKeys(cfg.cluster, id, { codec, encrypted: false });
  const boxDir = join(cfg.workDir, 'outbox', id);
  const base = {
    format: MANIFEST_FORMAT,
    id,
    cluster: cfg.cluster,
    node: cfg.node,
    trigger: 'manual',
    pinned: false,
    createdAt: now.toISOString(),
    startedAt: now.toISOString(),
    tool: { name: 'etcd-backupd', version: 'bench' },
    source: { type: 'etcdctl', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] },
    etcd: { revision: snap?.revision ?? 1, totalKey: snap?.totalKey ?? 1, hash: snap?.hash ?? 0, totalSize: snap?.totalSize ?? 0 },
  };
  // As runBackup: the stores are opened and asked whether the id is free (a HEAD of its manifest key)
  // at the start of the run, so an SSH connection or a TLS session is up before the upload begins.
  const opened = [];
  if (args.mode !== 'bundle') {
    for (const sc of cfg.stores) {
      const real = await createStore(sc); // await: sync in some versions of the code, async in others
      await time('id', () => real.head(keys.manifest ?? `${keys.dir}/manifest.json`));
      opened.push({ sc, real });
    }
    markRss('stores');
  }
  let finishedAt = new Date().toISOString();
  // args.bundle: a bundle made earlier ({path, size, sha256, artifacts}): deliver it without bundling again.
  const bundlePath = args.bundle?.path ?? join(boxDir, bundleName({ codec, encrypted: false }));
  const bundle =
    args.bundle ??
    (await time('bundle', () =>
      writeBundle(
        bundlePath,
        [args.snapshot, args.staticResources],
        (list) => {
          finishedAt = new Date().toISOString();
          return serializeManifest({ ...base, finishedAt, artifacts: list });
        },
        { codec, level },
      ),
    ));
  if (!args.bundle) markRss('bundle');
  result.bytes = bundle.size;
  result.rawBytes = bundle.rawSize ?? bundle.size;
  result.sha256 = bundle.sha256;
  const object = { key: keys.object, size: bundle.size, sha256: bundle.sha256, encrypted: false, recipients: [], ...(cfg.compression ? { codec, rawSize: result.rawBytes } : {}) };
  const manifest = { ...base, finishedAt, artifacts: bundle.artifacts, object };
  if (args.mode !== 'bundle') {
    for (const { sc, real } of opened) {
      const store = cpuSplitting(real);
      const t = performance.now();
      // As runBackup: a bundle sealed by this process is delivered with sealedNow (a kept one from an earlier process is not).
      const o = await deliverToStore(store, sc.verify ?? 'readback', bundlePath, manifest, silentLogger, undefined, { sealedNow: !args.bundle });
      const total = (performance.now() - t) / 1000;
      await real.close?.();
      if (o.result !== 'success') {
        result.ok = false;
        result.error = `${sc.name}: ${o.reason}: ${o.error}`;
      }
      const commit = total - (o.uploadSeconds ?? 0) - (o.verifySeconds ?? 0);
      result.stores[sc.name] = { upload: o.uploadSeconds, verify: o.verifySeconds, commit, total, proof: o.proof };
      phases.upload = (phases.upload ?? 0) + (o.uploadSeconds ?? 0);
      phases.verify = (phases.verify ?? 0) + (o.verifySeconds ?? 0);
      phases.commit = (phases.commit ?? 0) + commit;
      markRss(`store:${sc.name}`);
    }
  }
  result.key = keys.object;
  result.artifacts = bundle.artifacts;
  if (args.keepBundle) result.bundlePath = bundlePath;
  else if (!args.bundle) await rm(boxDir, { recursive: true, force: true });
}

const ru = process.resourceUsage();
result.loadSeconds = (tLoaded - t0) / 1000;
result.inProcessSeconds = (performance.now() - t0) / 1000;
result.cpu = { user: ru.userCPUTime / 1e6, sys: ru.systemCPUTime / 1e6 };
result.maxRssKiB = ru.maxRSS;
const mem = process.memoryUsage();
result.memoryAtEnd = Object.fromEntries(Object.entries(mem).map(([k, v]) => [k, Math.round(v / 1024)])); // KiB
process.stdout.write(JSON.stringify(result) + '\n');
process.exitCode = result.ok ? 0 : 1;
