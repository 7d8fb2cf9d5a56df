// Builds (once, cached under bench/tmp/data/<size>/) a real etcd database of
// about the requested size and a snapshot of it taken by etcd-backupd's own
// etcdctl source (`etcdctl snapshot save` + the static pod archive).
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startEtcd } from './servers.mjs';
import { MiB, ROOT, TMP, sizeLabel } from './util.mjs';

const b64 = (b) => Buffer.from(b).toString('base64');

export function dataDirs(bytes) {
  const base = join(TMP, 'data', sizeLabel(bytes));
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
 * Fills etcd until its backend reaches `target` bytes: 10k small objects
 * (1-4 KiB, the shape of Kubernetes objects, so the bbolt tree has real
 * depth) and then 512 KiB-1 MiB random values in txns of 6 (~4.5 MiB per
 * request, etcd started with --max-request-bytes 10 MiB), 4 requests in flight.
 */
async function fill(etcd, target, log) {
  const t0 = performance.now();
  let n = 0;
  const small = async (i0, count) => {
    const success = [];
    for (let i = i0; i < i0 + count; i++) {
      const len = 1024 + Math.floor(Math.random() * 3072);
      success.push({ request_put: { key: b64(`/registry/configmaps/bench/cm-${String(i).padStart(6, '0')}`), value: b64(randomBytes(len)) } });
    }
    await etcd.post('/v3/kv/txn', { success });
  };
  for (let i = 0; i < 10_000; i += 250) await small(i, 250);
  let dbSize = Number((await etcd.status()).dbSize);
  let stop = false;
  // Values are windows into one 16 MiB random pool, already base64 (3-byte aligned offsets):
  // distinct, incompressible, and cheap to make, so etcd - not this loop - sets the pace.
  const pool = randomBytes(16 * MiB).toString('base64');
  const value = (len) => {
    const chars = Math.ceil(len / 3) * 4;
    const at = 4 * Math.floor(Math.random() * ((pool.length - chars) / 4));
    return pool.slice(at, at + chars);
  };
  const worker = async () => {
    while (!stop) {
      const success = [];
      for (let j = 0; j < 6; j++) {
        const len = 512 * 1024 + Math.floor(Math.random() * 512 * 1024);
        success.push({ request_put: { key: b64(`/registry/bench/big/${String(n++).padStart(8, '0')}`), value: value(len) } });
      }
      await etcd.post('/v3/kv/txn', { success });
    }
  };
  const checker = async () => {
    while (!stop) {
      await new Promise((r) => setTimeout(r, 500));
      dbSize = Number((await etcd.status()).dbSize);
      log(`  filling etcd: ${(dbSize / MiB).toFixed(0)} / ${(target / MiB).toFixed(0)} MiB`);
      if (dbSize >= target) stop = true;
    }
  };
  await Promise.all([checker(), worker(), worker(), worker(), worker()]);
  const s = await etcd.status();
  return { seconds: (performance.now() - t0) / 1000, dbSize: Number(s.dbSize), keys: 10_000 + n };
}

/**
 * Returns { snapshot, staticResources, snapshotBytes, etcdDir, ... } for a
 * database of `bytes`, building and snapshotting it on first use.
 */
export async function ensureDataset(bytes, log = console.error) {
  const d = dataDirs(bytes);
  if (existsSync(d.meta)) {
    const meta = JSON.parse(await readFile(d.meta, 'utf8'));
    const ok = await stat(meta.snapshot).then((s) => s.size === meta.snapshotBytes, () => false);
    if (ok && existsSync(d.etcd)) return { ...meta, cached: true };
  }
  log(`building a ${sizeLabel(bytes)} etcd database under ${d.base} (cached for later runs)`);
  await rm(d.base, { recursive: true, force: true });
  await mkdir(d.base, { recursive: true });
  const etcd = await startEtcd(d.etcd);
  try {
    const filled = await fill(etcd, bytes, log);
    log(`  filled ${filled.keys} keys, db ${(filled.dbSize / MiB).toFixed(0)} MiB in ${filled.seconds.toFixed(1)} s`);
    const { EtcdctlSource } = await import(pathToFileURL(join(ROOT, 'dist/source/etcdctl.js')).href);
    const { silentLogger } = await import(pathToFileURL(join(ROOT, 'dist/log.js')).href);
    const src = new EtcdctlSource({ etcdctl: 'etcdctl', staticPodDir: await staticPodDir(), timeoutSeconds: 1800, endpoint: etcd.endpoint });
    const t0 = performance.now();
    const art = await src.produce({ runDir: d.snap, log: silentLogger, force: false });
    const snapSeconds = (performance.now() - t0) / 1000;
    const meta = {
      size: sizeLabel(bytes),
      snapshot: art.snapshot,
      staticResources: art.staticResources,
      snapshotBytes: (await stat(art.snapshot)).size,
      staticBytes: (await stat(art.staticResources)).size,
      keys: filled.keys,
      fillSeconds: filled.seconds,
      snapshotSaveSeconds: snapSeconds,
      etcdDir: d.etcd,
      builtAt: new Date().toISOString(),
    };
    await writeFile(d.meta, JSON.stringify(meta, null, 2));
    log(`  snapshot ${(meta.snapshotBytes / MiB).toFixed(0)} MiB saved in ${snapSeconds.toFixed(1)} s`);
    return { ...meta, cached: false };
  } finally {
    await etcd.stop();
  }
}
