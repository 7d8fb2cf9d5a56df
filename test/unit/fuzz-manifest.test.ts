import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { pruneStore } from '../../src/catalog/prune.js';
import { findBackup, loadCatalog } from '../../src/catalog/catalog.js';
import { LocalStore } from '../../src/storage/local/store.js';
import { allPaths, deleteAt, hostileValue, Rng, setAt } from '../support/fuzz.js';

/**
 * Manifests are what `list`, retention and `fetch` believe. A store can hold
 * damaged ones (a torn NFS write, a hand edit, a bug of another version, an
 * attacker with write access to the bucket). Each must be reported and
 * skipped, never fatal, and never make retention delete the wrong thing.
 */
// On tmpfs when there is one: a thousand little stores on a slow disk would take minutes.
const root = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'ebd-fuzz-manifest-'));
writeFileSync(join(root, 's.sh'), '#!/bin/sh\n');
const cfg = parseConfig(
  {
    cluster: 'c1',
    node: 'm0',
    workDir: join(root, 'work'),
    source: { type: 'cluster-backup', script: join(root, 's.sh') },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: [{ name: 'nfs', type: 'local', path: join(root, 'store'), incompleteGrace: '24h' }],
    retention: { keepLast: 2, hourly: 0, daily: 0, weekly: 0, monthly: 0 },
  },
  join(root, 'config.yaml'),
);
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const NOW = new Date('2026-03-01T00:00:00Z');

function idAt(day: number, node = 'm0'): string {
  return `202601${String(day).padStart(2, '0')}T000000Z-${node}`;
}

function manifest(id: string, day: number, over: Record<string, unknown> = {}): Record<string, unknown> {
  const body = `object of ${id}`;
  return {
    format: 1,
    id,
    cluster: 'c1',
    node: 'm0',
    trigger: 'schedule',
    pinned: false,
    createdAt: `2026-01-${String(day).padStart(2, '0')}T00:00:00.000Z`,
    startedAt: `2026-01-${String(day).padStart(2, '0')}T00:00:00.000Z`,
    finishedAt: `2026-01-${String(day).padStart(2, '0')}T00:00:01.000Z`,
    tool: { name: 'etcd-backupd', version: '0.1.0' },
    source: { type: 'etcdctl', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] },
    etcd: { revision: day * 10, totalKey: 5, hash: 1, totalSize: 4096 },
    artifacts: [{ name: `snapshot_${day}.db`, size: 1, sha256: sha('x') }],
    object: { key: `c1/${id}/backup.tar`, size: Buffer.byteLength(body), sha256: sha(body), encrypted: false, recipients: [] },
    ...over,
  };
}

function plant(storeDir: string, id: string, m: unknown): void {
  mkdirSync(join(storeDir, 'c1', id), { recursive: true });
  writeFileSync(join(storeDir, 'c1', id, 'backup.tar'), `object of ${id}`);
  writeFileSync(join(storeDir, 'c1', id, 'manifest.json'), typeof m === 'string' || Buffer.isBuffer(m) ? m : JSON.stringify(m));
}

/** A damaged manifest: bytes, JSON, types, sizes, and plausible-but-wrong content. */
function damaged(r: Rng, id: string, day: number): { body: string | Buffer; kind: string } {
  const good = manifest(id, day);
  const text = JSON.stringify(good, null, 2);
  switch (r.int(12)) {
    case 0:
      return { kind: 'random bytes', body: r.bytes(r.int(4096)) };
    case 1:
      return { kind: 'truncated', body: text.slice(0, r.int(text.length)) };
    case 2: {
      const b = Buffer.from(text);
      for (let i = 1 + r.int(4); i > 0; i--) b[r.int(b.length)] = r.int(256);
      return { kind: 'bit flips', body: b };
    }
    case 3:
      return { kind: 'empty', body: '' };
    case 4:
      return { kind: 'not an object', body: JSON.stringify(r.pick([null, 1, 'x', [], [good], true])) };
    case 5:
      return { kind: 'larger than 1 MiB', body: JSON.stringify({ ...good, label: 'x'.repeat((1 << 20) + r.int(1000)) }) };
    case 6:
    {
      const n = r.pick([100, 5000, 50_000]);
      const [open, close] = r.bool() ? ['[', ']'] : ['{"a":', '}'];
      return { kind: 'deeply nested', body: text.replace('"etcd": {', `"deep": ${open.repeat(n)}1${close.repeat(n)}, "etcd": {`) };
    }
    case 7: {
      // plausible JSON with a hostile value somewhere
      const m = structuredClone(good);
      for (let i = 1 + r.int(3); i > 0; i--) {
        const p = r.pick(allPaths(m));
        if (r.bool(0.3)) deleteAt(m, p);
        else setAt(m, p, hostileValue(r));
      }
      return { kind: 'hostile values', body: JSON.stringify(m) };
    }
    case 8:
      // a well-formed manifest whose times are not times
      return { kind: 'createdAt not a date', body: JSON.stringify({ ...good, createdAt: r.pick(['garbage', '', '2026-13-45T99:99:99Z', 'yesterday', '0']) }) };
    case 9: {
      // a manifest whose object lives in another backup's directory
      const other = idAt(28);
      return { kind: 'object key of another backup', body: JSON.stringify({ ...good, object: { ...(good.object as object), key: `c1/${other}/backup.tar` } }) };
    }
    case 10:
      return { kind: 'describes another backup', body: JSON.stringify(manifest(idAt(27), 27)) };
    default:
      return { kind: 'a far-future createdAt', body: JSON.stringify({ ...good, createdAt: '9999-12-31T23:59:59.999Z' }) };
  }
}

describe('corrupt manifests in a local store', () => {
  it('100 stores with 1-3 damaged manifests each: list reports and skips them; retention never throws and never deletes a kept backup', async () => {
    const failures: string[] = [];
    const kinds = new Map<string, number>();
    for (let seed = 1; seed <= Number(process.env.FUZZ_N ?? 100); seed++) {
      const r = new Rng(seed);
      const storeDir = join(root, `s${seed}`);
      // Good backups on days 20..28 (28 = the newest), damaged ones on days 1..(1..3).
      const good = [20, 22, 24, 26, 28].map((d) => idAt(d));
      for (const d of [20, 22, 24, 26, 28]) plant(storeDir, idAt(d), manifest(idAt(d), d));
      const bad: { id: string; kind: string }[] = [];
      for (let i = 1 + r.int(3); i > 0; i--) {
        const day = 1 + r.int(18);
        const id = idAt(day);
        if (bad.some((b) => b.id === id)) continue;
        const d = damaged(r, id, day);
        plant(storeDir, id, d.body);
        bad.push({ id, kind: d.kind });
        kinds.set(d.kind, (kinds.get(d.kind) ?? 0) + 1);
      }
      const what = `seed ${seed} (${bad.map((b) => `${b.id}: ${b.kind}`).join(', ')})`;
      const store = new LocalStore('nfs', storeDir);
      try {
        const cat = await loadCatalog(store, 'c1');
        const listed = cat.backups.map((m) => m.id);
        for (const id of good) if (!listed.includes(id)) failures.push(`${what}: good backup ${id} not listed`);
        for (const m of cat.backups) if (Number.isNaN(Date.parse(m.createdAt))) failures.push(`${what}: listed ${m.id} with createdAt ${JSON.stringify(m.createdAt)}`);
        for (const m of cat.backups) {
          if (m.object && !m.object.key.startsWith(`c1/${m.id}/`)) failures.push(`${what}: listed ${m.id} whose object is ${m.object.key}`);
        }
        // `latest` is the newest real backup, not whatever sorts first as a string.
        const latest = findBackup(cat, 'latest', 'nfs');
        if (latest.createdAt !== '9999-12-31T23:59:59.999Z' && latest.id !== idAt(28)) failures.push(`${what}: latest is ${latest.id} (createdAt ${latest.createdAt})`);

        const dry = await pruneStore(cfg, store, silentLogger, { dryRun: true, now: NOW });
        if (dry.errors.length) failures.push(`${what}: dry run errors ${dry.errors.join('; ')}`);
        const real = await pruneStore(cfg, store, silentLogger, { dryRun: false, now: NOW });
        for (const k of real.plan.keep) {
          const dirK = join(storeDir, 'c1', k.id);
          const obj = join(dirK, 'backup.tar');
          if (!existsSync(join(dirK, 'manifest.json')) || !existsSync(obj) || readFileSync(obj, 'utf8') !== `object of ${k.id}`) {
            failures.push(`${what}: kept backup ${k.id} lost its manifest or object`);
          }
        }
        // (Future-dated manifests outrank it by restic's rules; the clock test covers that case.)
        const future = bad.some((b) => b.kind === 'a far-future createdAt');
        if (!future && !real.plan.keep.some((k) => k.id === idAt(28))) failures.push(`${what}: the newest verified backup ${idAt(28)} was not kept`);
      } catch (e) {
        failures.push(`${what}: ${(e as Error).constructor.name}: ${(e as Error).message.slice(0, 200)}`);
      } finally {
        rmSync(storeDir, { recursive: true, force: true });
      }
    }
    // Every kind of damage was tried.
    expect([...kinds.keys()].length).toBe(12);
    const byKind = new Map<string, string>();
    for (const f of failures) {
      const k = f
        .slice(f.indexOf('): ') + 3)
        .replace(/\d{8}T\d{6}Z-m0/g, 'ID')
        .replace(/"[^"]*"|\/tmp\/\S+|createdAt [^)]*/g, 'X');
      if (!byKind.has(k)) byKind.set(k, f);
    }
    expect([...byKind.values()].join('\n')).toBe('');
  }, 300_000);

  it('a manifest whose createdAt is not a date is reported as a problem (not listed, not fatal to prune)', async () => {
    const storeDir = join(root, 'bad-date');
    for (const d of [20, 22, 24]) plant(storeDir, idAt(d), manifest(idAt(d), d));
    plant(storeDir, idAt(25), manifest(idAt(25), 25, { createdAt: 'garbage' }));
    const store = new LocalStore('nfs', storeDir);
    const cat = await loadCatalog(store, 'c1');
    expect(cat.problems.map((p) => p.key)).toEqual([`c1/${idAt(25)}/manifest.json`]);
    await expect(pruneStore(cfg, store, silentLogger, { dryRun: true, now: NOW })).resolves.toMatchObject({ errors: [] });
  });

  it("pruning a backup whose manifest names another backup's object never deletes that other object", async () => {
    const storeDir = join(root, 'foreign-key');
    for (const d of [20, 22, 24]) plant(storeDir, idAt(d), manifest(idAt(d), d));
    // The oldest backup's manifest points at the newest one's object.
    const m = manifest(idAt(10), 10);
    plant(storeDir, idAt(10), { ...m, object: { ...(m.object as object), key: `c1/${idAt(24)}/backup.tar` } });
    const store = new LocalStore('nfs', storeDir);
    await pruneStore(cfg, store, silentLogger, { dryRun: false, now: NOW });
    expect(existsSync(join(storeDir, 'c1', idAt(24), 'backup.tar')), 'the newest backup lost its object').toBe(true);
    expect(existsSync(join(storeDir, 'c1', idAt(24), 'manifest.json'))).toBe(true);
  });
});
