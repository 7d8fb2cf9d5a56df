// Seeds a store with N committed backups of one cluster, written straight into
// the server's backing directory (no network): for SFTP the sshd's files, for
// S3 s3rver 3.7.1's on-disk layout (per object `<key>._S3rver_object`,
// `._S3rver_object.md5`, `._S3rver_metadata.json`; s3rver reads its directory
// on every request, so nothing needs restarting).
//
// The backups: 3 nodes (master-0..2) each taking one every 15 minutes, going
// back in time from the newest slot (node k k×7 s after the slot), so id i is
// slot floor(i/3), node i%3: `<YYYYMMDDTHHMMSSZ>-master-<k>` as src/layout.ts
// names them. Each is `<cluster>/<id>/backup.tar.zst` (a small random object,
// not a real snapshot: list and prune never open it) and a manifest.json that
// parses with dist's own parseManifest and names that object.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './util.mjs';

export const SLOT_MS = 15 * 60 * 1000;
export const NODES = 3;
const BUNDLE_BYTES = 512;

/** Ids (newest first) of n backups ending at the slot of `now`. */
export function seedIds(n, now = new Date()) {
  const newest = Math.floor(now.getTime() / SLOT_MS) * SLOT_MS - SLOT_MS; // the last full slot before now
  const out = [];
  for (let i = 0; i < n; i++) {
    const k = i % NODES;
    const at = new Date(newest - Math.floor(i / NODES) * SLOT_MS + k * 7000);
    const iso = at.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
    out.push({ id: `${iso}-master-${k}`, node: `master-${k}`, at, index: i });
  }
  return out;
}

/**
 * Pins. The pin format is changing; this is the one place that knows it.
 * Today a pin lives in the manifest (`pinned`, `pinReason`); a format that
 * keeps pins in objects of their own would return them here as
 * `[{ key, body }]` (keys relative to the store's prefix), and the writers
 * below put them in place beside the backups.
 */
export function applyPin(manifest, { pinned, reason }) {
  // Pins are marker objects beside the manifest (src/layout.ts pinMarkerKey); the manifest is never rewritten.
  const at = new Date(Date.parse(manifest.createdAt) + 60_000);
  const stamp = at.toISOString().replace(/[-:]/g, '');
  const op = pinned ? 'pin' : 'unpin';
  const body = Buffer.from(JSON.stringify({ format: 1, id: manifest.id, op, at: at.toISOString(), by: manifest.node, ...(reason ? { reason } : {}) }));
  return [{ key: `${manifest.cluster}/${manifest.id}/pins/${stamp}-${op}-00000000.json`, body }];
}

/** Which backups the seed pins: every `every`-th (0: none). */
export const isPinned = (index, every) => every > 0 && index % every === every - 1;

function manifestFor(cluster, b, body) {
  const sha = createHash('sha256').update(body).digest('hex');
  const t = b.at.getTime();
  const rev = 5_000_000 + 1000 * Math.floor(b.index / NODES);
  return {
    format: 1,
    id: b.id,
    cluster,
    node: b.node,
    trigger: 'schedule',
    pinned: false,
    createdAt: b.at.toISOString(),
    startedAt: new Date(t - 40_000).toISOString(),
    finishedAt: new Date(t + 20_000).toISOString(),
    tool: { name: 'etcd-backupd', version: '0.2.0' },
    source: { type: 'cluster-backup', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] },
    etcd: {
      version: '3.5.21',
      clusterId: 'cdf818194e3a8c32',
      memberId: `8e9e05c52164694${b.index % NODES}`,
      leader: '8e9e05c521646940',
      revision: rev,
      totalKey: 48_211,
      hash: (b.index * 2654435761) % 2 ** 32,
      totalSize: 1_073_741_824,
    },
    clusterVersion: '4.19.7',
    artifacts: [
      { name: `snapshot_${b.at.toISOString().slice(0, 10)}_${b.id.slice(9, 15)}.db`, size: 1_073_741_856, sha256: createHash('sha256').update(`s${b.id}`).digest('hex') },
      { name: `static_kuberesources_${b.at.toISOString().slice(0, 10)}_${b.id.slice(9, 15)}.tar.gz`, size: 81_920, sha256: createHash('sha256').update(`k${b.id}`).digest('hex') },
    ],
    object: { key: `${cluster}/${b.id}/backup.tar.zst`, size: body.length, sha256: sha, encrypted: false, recipients: [], codec: 'zstd', rawSize: 1_073_836_544 },
  };
}

/** Checks one seeded manifest with the code under test (dist/bundle/manifest.js): the seed must parse. */
async function checker(dist = join(ROOT, 'dist')) {
  const m = await import(pathToFileURL(join(dist, 'bundle', 'manifest.js')).href);
  return (text, where) => m.parseManifest(text, where);
}

/**
 * Every object of the seed as { key, body } (keys relative to the store's
 * prefix), produced lazily. `pinEvery`: see isPinned.
 */
export async function* seedObjects(cluster, n, { now = new Date(), pinEvery = 0 } = {}) {
  const parse = await checker();
  for (const b of seedIds(n, now)) {
    const body = randomBytes(BUNDLE_BYTES);
    const m = manifestFor(cluster, b, body);
    const extra = isPinned(b.index, pinEvery) ? applyPin(m, { pinned: true, reason: 'bench: kept on purpose' }) : [];
    const text = Buffer.from(JSON.stringify(m, null, 2) + '\n');
    if (b.index === 0 || b.index === n - 1 || isPinned(b.index, pinEvery)) parse(text, `seed ${b.id}`);
    yield { key: `${cluster}/${b.id}/backup.tar.zst`, body };
    yield* extra;
    yield { key: `${cluster}/${b.id}/manifest.json`, body: text };
  }
}

/** Runs fn over items, `width` at a time. */
async function pool(items, width, fn) {
  const running = new Set();
  for await (const it of items) {
    const p = fn(it).finally(() => running.delete(p));
    running.add(p);
    if (running.size >= width) await Promise.race(running);
  }
  await Promise.all(running);
}

/** One mkdir per directory, awaited by every object in it. */
function mkdirOnce(made, dir) {
  if (!made.has(dir)) made.set(dir, mkdir(dir, { recursive: true, mode: 0o700 }));
  return made.get(dir);
}

/** Plain files under `root` (an SFTP store's path on the sshd's disk): dirs 0700, files 0600. */
export async function seedDirectory(root, cluster, n, opts) {
  const made = new Map();
  let count = 0;
  await pool(seedObjects(cluster, n, opts), 32, async ({ key, body }) => {
    const dir = join(root, key.slice(0, key.lastIndexOf('/')));
    await mkdirOnce(made, dir);
    await writeFile(join(root, key), body, { mode: 0o600 });
    count++;
  });
  return count;
}

/** s3rver 3.7.1's on-disk form of each object under `<s3rverDir>/<bucket>/<prefix>/`. */
export async function seedS3rverDir(s3rverDir, bucket, prefix, cluster, n, opts) {
  const base = join(s3rverDir, bucket, prefix);
  const made = new Map();
  let count = 0;
  await pool(seedObjects(cluster, n, opts), 32, async ({ key, body }) => {
    const file = join(base, key);
    await mkdirOnce(made, file.slice(0, file.lastIndexOf('/')));
    const md5 = createHash('md5').update(body).digest('hex');
    const type = key.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    await Promise.all([
      writeFile(`${file}._S3rver_object`, body, { mode: 0o600 }),
      writeFile(`${file}._S3rver_object.md5`, md5, { mode: 0o600 }),
      writeFile(`${file}._S3rver_metadata.json`, JSON.stringify({ 'content-type': type }, null, 2), { mode: 0o600 }),
    ]);
    count++;
  });
  return count;
}
