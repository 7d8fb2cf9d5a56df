// Builds (once, cached under bench/tmp/data/<size>[-realistic]/) a real etcd
// database of about the requested size and a snapshot of it taken by
// etcd-backupd's own etcdctl source (`etcdctl snapshot save` + the static pod
// archive). Two datasets:
//   incompressible: 10k Kubernetes-sized random objects, then 512 KiB-1 MiB random values
//   realistic:      Kubernetes-shaped objects from test/support/k8s-data.ts (pods with
//                   managedFields, configmaps, secrets, events, leases; JSON and binary)
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { registerHooks } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startEtcd } from './servers.mjs';
import { MiB, ROOT, TMP, run, sizeLabel } from './util.mjs';

export const DATASETS = ['incompressible', 'realistic'];

export function dataDirs(bytes, kind = 'incompressible') {
  // The incompressible set keeps its old cache directory (bench/tmp/data/<size>/).
  const base = join(TMP, 'data', kind === 'incompressible' ? sizeLabel(bytes) : `${sizeLabel(bytes)}-${kind}`);
  return { base, etcd: join(base, 'etcd'), snap: join(base, 'snapshot'), meta: join(base, 'meta.json') };
}

/** A static pod dir like a kubeadm master's: a few manifests plus certificate-sized files. */
export async function staticPodDir() {
  const dir = join(TMP, 'static-pods', 'manifests');
  if (existsSync(join(dir, 'kube-apiserver.yaml'))) return dir;
  await mkdir(join(dir, 'pki'), { recursive: true });
  for (const n of ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
    await writeFile(join(dir, `${n}.yaml`), `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${n}\n  namespace: kube-system\n# ${'x'.repeat(4000)}\n`);
  }
  for (let i = 0; i < 20; i++) await writeFile(join(dir, 'pki', `cert-${i}.pem`), randomBytes(3000).toString('base64'));
  return dir;
}

/**
 * The fill loop both datasets share: `workers` txns in flight over gRPC
 * (KV.Txn, lib/etcd-grpc.mjs), each made by `nextTxn()` (an array of
 * {key, value: Buffer} or undefined when the source ran dry), until the
 * backend reaches `target` (Maintenance.Status dbSize of `etcd`).
 */
async function fillUntil(etcd, target, log, nextTxn, workers = 4) {
  let dbSize = Number((await etcd.status()).dbSize);
  let stop = dbSize >= target;
  let txns = 0;
  const worker = async () => {
    while (!stop) {
      const puts = nextTxn();
      if (!puts?.length) break;
      txns++;
      await etcd.txnPuts(puts, 120_000);
    }
  };
  const checker = async () => {
    while (!stop) {
      await new Promise((r) => setTimeout(r, 500));
      if (stop) break;
      dbSize = Number((await etcd.status()).dbSize);
      log(`  filling etcd: ${(dbSize / MiB).toFixed(0)} / ${(target / MiB).toFixed(0)} MiB`);
      if (dbSize >= target) stop = true;
    }
  };
  const ws = Array.from({ length: workers }, worker);
  await Promise.race([Promise.all(ws), checker()]);
  stop = true;
  await Promise.all(ws);
  return { dbSize: Number((await etcd.status()).dbSize), txns };
}

/**
 * Incompressible: 10k small objects (1-4 KiB, the shape of Kubernetes
 * objects, so the bbolt tree has real depth) and then 512 KiB-1 MiB random
 * values in txns of 6 (~4.5 MiB per request, etcd started with
 * --max-request-bytes 10 MiB), 4 requests in flight.
 */
async function fill(etcd, target, log) {
  const t0 = performance.now();
  let n = 0;
  const small = async (i0, count) => {
    const puts = [];
    for (let i = i0; i < i0 + count; i++) {
      const len = 1024 + Math.floor(Math.random() * 3072);
      puts.push({ key: `/registry/configmaps/bench/cm-${String(i).padStart(6, '0')}`, value: randomBytes(len) });
    }
    await etcd.txnPuts(puts, 120_000);
  };
  for (let i = 0; i < 10_000; i += 250) await small(i, 250);
  // Values are windows into one 16 MiB random pool: distinct, incompressible, and cheap
  // to make, so etcd - not this loop - sets the pace.
  const pool = randomBytes(16 * MiB);
  const value = (len) => {
    const at = Math.floor(Math.random() * (pool.length - len));
    return pool.subarray(at, at + len);
  };
  const filled = await fillUntil(etcd, target, log, () =>
    Array.from({ length: 6 }, () => ({ key: `/registry/bench/big/${String(n++).padStart(8, '0')}`, value: value(512 * 1024 + Math.floor(Math.random() * 512 * 1024)) })),
  );
  return { seconds: (performance.now() - t0) / 1000, dbSize: filled.dbSize, keys: 10_000 + n };
}

/**
 * The generator of the realistic dataset (TypeScript, run by Node 24's type
 * stripping). The test support files import each other as `./x.js`, as tsc
 * wants, and type stripping does not map that to `./x.ts`: a resolve hook
 * does, for imports from test/support/ only and only when the `.js` is absent.
 */
let tsHook = false;
export async function k8sData() {
  if (!tsHook) {
    tsHook = true;
    const support = pathToFileURL(join(ROOT, 'test/support/')).href;
    registerHooks({
      resolve(specifier, context, next) {
        try {
          return next(specifier, context);
        } catch (e) {
          if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !specifier.startsWith('./') || !specifier.endsWith('.js') || !context.parentURL?.startsWith(support)) throw e;
          return next(specifier.replace(/\.js$/, '.ts'), context);
        }
      },
    });
  }
  return import(pathToFileURL(join(ROOT, 'test/support/k8s-data.ts')).href);
}

/**
 * Realistic: Kubernetes-shaped objects (test/support/k8s-data.ts, seed 42,
 * under /kubernetes.io as OpenShift stores them). Txns carry at most
 * 1 MiB of values and 500 puts: under etcd's *default* --max-request-bytes
 * (1.5 MiB) and well under the bench's --max-txn-ops 1024 (etcd's default
 * is 128; the bench raises it, as it raises the request size, for filling
 * speed only). Same loop and 4 requests in flight as the incompressible fill.
 */
async function fillRealistic(etcd, target, log) {
  const t0 = performance.now();
  const { kubernetesShaped } = await k8sData();
  const gen = kubernetesShaped(Number.MAX_SAFE_INTEGER, { prefix: '/kubernetes.io', seed: 42 });
  const kinds = {};
  let keys = 0;
  let valueBytes = 0;
  const filled = await fillUntil(etcd, target, log, () => {
    const puts = [];
    let bytes = 0;
    while (bytes < MiB && puts.length < 500) {
      const { value: e, done } = gen.next();
      if (done) break;
      const kind = e.key.split('/')[2];
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      bytes += e.value.length;
      puts.push({ key: e.key, value: e.value });
    }
    keys += puts.length;
    valueBytes += bytes;
    return puts;
  });
  return { seconds: (performance.now() - t0) / 1000, dbSize: filled.dbSize, keys, valueBytes, kinds };
}

/** Fills `etcd` (a handle from lib/servers.mjs: txnPuts, status) with `kind` data until its backend reaches `target` bytes. */
export function fillEtcd(etcd, target, log, kind = 'incompressible') {
  if (!DATASETS.includes(kind)) throw new Error(`unknown dataset ${kind} (${DATASETS.join(', ')})`);
  return kind === 'realistic' ? fillRealistic(etcd, target, log) : fill(etcd, target, log);
}

/** Bytes of `zstd -3` (one thread) of a file: how compressible a snapshot is, for the report. */
async function zstdSize(file) {
  const out = await run('sh', ['-c', 'zstd -q -3 -T1 -c "$0" | wc -c', file]);
  return Number(out.trim());
}

/**
 * Returns { snapshot, staticResources, snapshotBytes, etcdDir, ... } for a
 * database of `bytes`, building and snapshotting it on first use.
 */
export async function ensureDataset(bytes, log = console.error, { kind = 'incompressible' } = {}) {
  if (!DATASETS.includes(kind)) throw new Error(`unknown dataset ${kind} (${DATASETS.join(', ')})`);
  const d = dataDirs(bytes, kind);
  if (existsSync(d.meta)) {
    const meta = JSON.parse(await readFile(d.meta, 'utf8'));
    const ok = await stat(meta.snapshot).then((s) => s.size === meta.snapshotBytes, () => false);
    if (ok && existsSync(d.etcd)) {
      // Caches from before the realistic dataset: add what the report now shows.
      if (meta.zstdBytes === undefined) {
        meta.kind ??= kind;
        meta.zstdBytes = await zstdSize(meta.snapshot).catch(() => undefined);
        await writeFile(d.meta, JSON.stringify(meta, null, 2));
      }
      return { kind, ...meta, cached: true };
    }
  }
  log(`building a ${sizeLabel(bytes)} ${kind} etcd database under ${d.base} (cached for later runs)`);
  await rm(d.base, { recursive: true, force: true });
  await mkdir(d.base, { recursive: true });
  const etcd = await startEtcd(d.etcd);
  try {
    const filled = await fillEtcd(etcd, bytes, log, kind);
    log(`  filled ${filled.keys} keys, db ${(filled.dbSize / MiB).toFixed(0)} MiB in ${filled.seconds.toFixed(1)} s`);
    const { EtcdctlSource } = await import(pathToFileURL(join(ROOT, 'dist/source/etcdctl.js')).href);
    const { silentLogger } = await import(pathToFileURL(join(ROOT, 'dist/log.js')).href);
    const src = new EtcdctlSource({ etcdctl: 'etcdctl', staticPodDir: await staticPodDir(), timeoutSeconds: 1800, endpoint: etcd.endpoint });
    const t0 = performance.now();
    const art = await src.produce({ runDir: d.snap, log: silentLogger, force: false });
    const snapSeconds = (performance.now() - t0) / 1000;
    const meta = {
      kind,
      size: sizeLabel(bytes),
      snapshot: art.snapshot,
      staticResources: art.staticResources,
      snapshotBytes: (await stat(art.snapshot)).size,
      staticBytes: (await stat(art.staticResources)).size,
      keys: filled.keys,
      ...(filled.kinds ? { kinds: filled.kinds, valueBytes: filled.valueBytes, generator: 'test/support/k8s-data.ts kubernetesShaped(seed 42, prefix /kubernetes.io)' } : {}),
      zstdBytes: await zstdSize(art.snapshot),
      fillSeconds: filled.seconds,
      snapshotSaveSeconds: snapSeconds,
      etcdDir: d.etcd,
      builtAt: new Date().toISOString(),
    };
    await writeFile(d.meta, JSON.stringify(meta, null, 2));
    log(`  snapshot ${(meta.snapshotBytes / MiB).toFixed(0)} MiB saved in ${snapSeconds.toFixed(1)} s; zstd -3 makes ${(meta.zstdBytes / MiB).toFixed(0)} MiB of it`);
    return { ...meta, cached: false };
  } finally {
    await etcd.stop();
  }
}
