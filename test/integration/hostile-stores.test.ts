import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../support/cli.js';
import { metricValue } from '../support/daemon.js';
import type { EtcdCluster } from '../support/etcd.js';
import { makeEnv, s3StoreConfig, sftpStoreConfig, startFilledEtcd, tempDir, type Env } from '../support/fault-env.js';
import { startFakeS3, startThrottleProxy, type FakeS3, type ThrottleProxy } from '../support/fake-s3.js';
import { faketimeEnv, listFiles, mountSmallFs, sleep, spawnDaemon, type DaemonProc, type SmallFs } from '../support/faults.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';

/**
 * Hostile stores: a store that misbehaves in ways a real server does on a
 * bad day (a re-delivery that fails after a crash, HEAD errors while an id
 * is chosen, listings that never end, a proxy answering 200 to every HEAD,
 * a download that trickles). Real CLI and daemon processes, a real etcd, the
 * fake S3 server of test/support/fake-s3.ts (faults on command) and a real
 * sshd behind a throttling TCP proxy. Times are asserted loosely: the point is
 * "ends" versus "hangs for hours", on a loaded 2-core machine.
 */
let etcd: EtcdCluster;
let s3: FakeS3;
let sshd: Sshd;
let root: string;
const daemons: DaemonProc[] = [];
const proxies: ThrottleProxy[] = [];
const mounts: SmallFs[] = [];

beforeAll(async () => {
  root = tempDir('hostile-stores');
  // 1 MiB of values: the bundle is well past the 64 KiB the SFTP proxy lets through at full speed.
  [etcd, s3, sshd] = await Promise.all([startFilledEtcd({ mib: 1 }), startFakeS3(), startSshd()]);
}, 240_000);

afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  for (const p of proxies) await p.close();
  for (const m of mounts) m.unmount();
  await s3?.close();
  await etcd?.stop();
  if (sshd) {
    await sshd.stop();
    await removeSshdDir(sshd);
  }
});

beforeEach(() => s3.faults.clear());

/** A stall detector strict enough for a test: below 1 KiB/s for 2 s is a stalled transfer. */
const STALL_LIMITS = { minRate: '1KiB', stallWindow: '2s' };
const keep = { keepLast: 50, hourly: 0, daily: 0, weekly: 0, monthly: 0 };

function fakeStore(name: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return s3StoreConfig(s3, join(root, `${name}-creds`), { prefix: `h-${name}`, ...over });
}

function s3Env(name: string, store: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Env {
  return makeEnv(root, name, etcd, { stores: [fakeStore(name, store)], retention: keep, ...extra });
}

/** The fake's full keys of backup `id` under env's store prefix. */
function keysOf(env: Env, id: string): { manifest: string; object: string } {
  const prefix = String((env.cfg.stores as Record<string, unknown>[])[0]!.prefix);
  return { manifest: `${prefix}/c1/${id}/manifest.json`, object: `${prefix}/c1/${id}/backup.tar.zst` };
}

/** Copies of what the fake holds for `id` (undefined where a key is missing). */
function held(env: Env, id: string): { manifest?: Buffer; object?: Buffer } {
  const k = keysOf(env, id);
  const copy = (key: string) => {
    const o = s3.objects.get(key);
    return o ? Buffer.from(o.body) : undefined;
  };
  return { manifest: copy(k.manifest), object: copy(k.object) };
}

/** `held` is `id` committed: its manifest names it and describes the object byte for byte. */
function expectCommitted(h: { manifest?: Buffer; object?: Buffer }, id: string, what: string): void {
  expect(h.manifest, what).toBeInstanceOf(Buffer);
  expect(h.object, what).toBeInstanceOf(Buffer);
  const m = JSON.parse(h.manifest!.toString('utf8')) as { id: string; object: { size: number; sha256: string } };
  expect(m.id, what).toBe(id);
  expect(m.object, what).toMatchObject({ size: h.object!.length, sha256: createHash('sha256').update(h.object!).digest('hex') });
}

type BackupDoc = { id: string; result: string; reason?: string; error?: string };

async function timed(args: string[], opts: { env?: NodeJS.ProcessEnv; killAfterMs?: number } = {}): Promise<CliResult & { seconds: number }> {
  const t0 = Date.now();
  const r = await runCli(args, { env: { ETCD_BACKUPD_NO_DAEMON: '1', ...opts.env }, timeoutMs: opts.killAfterMs ?? 120_000 });
  const seconds = (Date.now() - t0) / 1000;
  // HOSTILE_VERBOSE=1: what each command did (exit, time, reason), to see which path a passing test took.
  if (process.env.HOSTILE_VERBOSE) {
    const reason = reasonIn(r.stderr) ?? /"reason":\s*"([^"]+)"/.exec(r.stdout)?.[1] ?? '-';
    console.log(`${args[0]} ${args.at(-1)}: exit ${r.code} in ${seconds.toFixed(1)} s, reason ${reason}; ${r.stderr.split('\n').filter((l) => /"level":(40|50)/.test(l)).map((l) => JSON.parse(l).msg + ': ' + String(JSON.parse(l).err ?? '').slice(0, 160)).join(' | ')}`);
  }
  return { ...r, seconds };
}

async function backup(env: Env, opts: { env?: NodeJS.ProcessEnv; killAfterMs?: number; extra?: string[] } = {}) {
  const r = await timed(['backup', '--config', env.file, '--json', ...(opts.extra ?? [])], opts);
  let doc: BackupDoc = { id: '', result: `no JSON (exit ${r.code} after ${r.seconds.toFixed(0)} s)` };
  try {
    doc = JSON.parse(r.stdout) as BackupDoc;
  } catch {
    /* killed, or crashed before printing */
  }
  return { ...r, doc };
}

async function committed(env: Env): Promise<(BackupDoc & { pinned: boolean })[]> {
  const r = await timed(['list', '--config', env.file, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { backups: (BackupDoc & { pinned: boolean })[] }).backups;
}

/** The `reason: X` line the CLI prints on stderr for a failed command. */
const reasonIn = (stderr: string) => /^\s*reason: (\S+)/m.exec(stderr)?.[1];
const tail = (s: string) => s.split('\n').slice(-12).join('\n');
/** What touched `id`'s keys since request number `from`: writes and deletes, as `METHOD op key`. */
function writesTo(id: string, from: number): string[] {
  return s3.requests
    .slice(from)
    .filter((r) => ['PUT', 'POST', 'DELETE'].includes(r.method) && (r.key.includes(`/${id}/`) || (r.keys ?? []).some((k) => k.includes(`/${id}/`))))
    .map((r) => `${r.method} ${r.op} ${r.key || (r.keys ?? []).join(',')} -> ${r.status}`);
}

/** `20261125T120000Z-m0` -> `2026-11-25 12:00:00` (what FAKETIME takes). */
const fakeTimeOf = (id: string) => id.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z.*$/, '$1-$2-$3 $4:$5:$6');

describe('a failed re-delivery never deletes a committed copy', () => {
  /** A backup committed to the fake, then the crash window: its outbox entry without status.json. */
  async function committedThenCrash(name: string) {
    const env = s3Env(name);
    const first = await backup(env);
    expect(first.code, first.stderr).toBe(0);
    const id = first.doc.id;
    const before = held(env, id);
    expectCommitted(before, id, `the first backup is not in the fake: ${[...s3.objects.keys()].join(', ')}`);
    const status = join(env.dir, 'work', 'outbox', id, 'status.json');
    expect(existsSync(status), 'the outbox keeps the delivered bundle (local.keep: 1)').toBe(true);
    rmSync(status);
    return { env, id, before };
  }

  it('CLI: the second backup fails (every PUT answers 500); the first backup stays whole and is not re-sent', async () => {
    const { env, id, before } = await committedThenCrash('redeliver-cli');
    const mark = s3.requests.length;
    s3.faults.error({ op: ['PutObject', 'UploadPart', 'CreateMultipartUpload'] }, 500, 'InternalError');
    const second = await backup(env);
    s3.faults.clear();
    expect(second.code, second.stderr).toBe(1);
    expect(second.doc.id).not.toBe(id);
    const after = held(env, id);
    expect(after.manifest?.equals(before.manifest!), `the committed manifest of ${id} is gone or changed`).toBe(true);
    expect(after.object?.equals(before.object!), `the committed object of ${id} is gone or changed`).toBe(true);
    // The store holds a committed manifest with the same sha256: that counts as delivered, nothing to send.
    expect(writesTo(id, mark), `requests that wrote or deleted ${id} during the second run`).toEqual([]);
    const looked = s3.requests.slice(mark).some((x) => x.key === keysOf(env, id).manifest && ['HeadObject', 'GetObject'].includes(x.op));
    expect(looked, `the second run never asked the store about ${id}: the crash window was not re-delivered at all`).toBe(true);
    expect((await committed(env)).map((b) => b.id)).toContain(id);
  }, 180_000);

  it('daemon: at start it finds the crash window, counts the committed copy as delivered (backlog 0) and sends nothing', async () => {
    const { env, id, before } = await committedThenCrash('redeliver-daemon');
    // A recent success: no catch-up run at start; the start-up outbox delivery is what runs.
    writeFileSync(join(env.dir, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date().toISOString(), consecutiveFailures: 0, stores: {} }));
    const mark = s3.requests.length;
    s3.faults.error({ op: ['PutObject', 'UploadPart', 'CreateMultipartUpload'] }, 500, 'InternalError');
    const d = await spawnDaemon(env.file);
    daemons.push(d);
    const status = join(env.dir, 'work', 'outbox', id, 'status.json');
    const recorded = () => {
      try {
        return (JSON.parse(readFileSync(status, 'utf8')) as { stores: Record<string, { result: string }> }).stores.s3?.result;
      } catch {
        return undefined;
      }
    };
    // Until the start-up delivery has decided: recorded as delivered, or a failed delivery (the old way).
    const end = Date.now() + 45_000;
    while (Date.now() < end && recorded() !== 'success' && !d.lines.some((l) => l.msg === 'delivery to store failed')) await sleep(200);
    await sleep(1500); // what the retry loop (every retryMin = 1s) does next counts too
    s3.faults.clear();
    const after = held(env, id);
    expect(after.manifest?.equals(before.manifest!), `the committed manifest of ${id} is gone or changed`).toBe(true);
    expect(after.object?.equals(before.object!), `the committed object of ${id} is gone or changed`).toBe(true);
    expect(writesTo(id, mark)).toEqual([]);
    expect(s3.requests.slice(mark).some((x) => x.key === keysOf(env, id).manifest && ['HeadObject', 'GetObject'].includes(x.op)), 'the daemon never asked the store about the crash window').toBe(true);
    expect(recorded(), `the outbox entry of ${id} is not recorded as delivered; daemon log:\n${d.lines.slice(-8).map((l) => JSON.stringify(l)).join('\n')}`).toBe('success');
    expect(metricValue(await d.metrics(), 'etcd_backup_outbox_backlog')).toBe(0);
    expect(await d.stop()).toBe(0);
  }, 180_000);
});

describe('a failed re-delivery to a full local store (ENOSPC)', () => {
  it('the committed backup stays whole: the store already holds it, nothing is written or deleted', async () => {
    // The store on its own small filesystem: the bundle is copied there (not linked), so a full disk fails the write.
    const small = mountSmallFs(join(root, 'enospc-mount'), 16 * 1024 * 1024);
    mounts.push(small);
    const storeDir = join(small.dir, 'store');
    const env = makeEnv(root, 'enospc', etcd, { stores: [{ name: 'nfs', type: 'local', path: storeDir }], retention: keep });
    const first = await backup(env);
    expect(first.code, first.stderr).toBe(0);
    const id = first.doc.id;
    const files = () => listFiles(join(storeDir, 'c1', id));
    const read = (f: string) => readFileSync(join(storeDir, 'c1', id, f));
    const before = { manifest: read('manifest.json'), object: read('backup.tar.zst') };
    rmSync(join(env.dir, 'work', 'outbox', id, 'status.json')); // the crash window
    // Fill the filesystem: every new write there fails with ENOSPC.
    try {
      for (let i = 0; ; i++) writeFileSync(join(small.dir, `filler-${i}`), Buffer.alloc(1024 * 1024));
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    const second = await backup(env);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/ENOSPC/);
    expect(files()).toEqual(['backup.tar.zst', 'manifest.json']);
    expect(read('manifest.json').equals(before.manifest)).toBe(true);
    expect(read('backup.tar.zst').equals(before.object)).toBe(true);
    expect((await committed(env)).map((b) => b.id)).toContain(id);
  }, 180_000);
});

describe('id reuse never destroys a pinned backup', () => {
  /** A pinned backup, gone from the outbox (local.keep: 0), and etcd moved on since. */
  async function pinned(name: string) {
    const env = s3Env(name, {}, { local: { keep: 0, retryMin: '1s', retryMax: '2s' } });
    const first = await backup(env, { extra: ['--pin', '--label', 'pre-upgrade'] });
    expect(first.code, first.stderr).toBe(0);
    const id = first.doc.id;
    expect(existsSync(join(env.dir, 'work', 'outbox', id)), 'local.keep: 0 leaves no delivered bundle in the outbox').toBe(false);
    await etcd.put(`/registry/hostile/${name}`, String(Date.now()));
    const before = held(env, id);
    expectCommitted(before, id, 'the pinned backup is not in the fake');
    return { env, id, before };
  }

  async function clockBackAndCheck(env: Env, id: string, before: { manifest?: Buffer; object?: Buffer }) {
    const mark = s3.requests.length;
    const r = await backup(env, { env: faketimeEnv(fakeTimeOf(id)) });
    const faultedHeads = s3.requests.slice(mark).filter((x) => x.op === 'HeadObject' && x.status === 503).length;
    s3.faults.clear();
    expect(r.code, `killed? ${tail(r.stderr)}`).toBeGreaterThanOrEqual(0);
    expect(faultedHeads, 'the run never asked the store about the id (the fault did not act)').toBeGreaterThan(0);
    const after = held(env, id);
    expect(after.manifest?.equals(before.manifest!), `the pinned backup's manifest was overwritten or deleted (new run: ${JSON.stringify(r.doc)})`).toBe(true);
    expect(after.object?.equals(before.object!), `the pinned backup's object was overwritten or deleted (new run: ${JSON.stringify(r.doc)})`).toBe(true);
    if (r.doc.result === 'success') expect(r.doc.id, 'a successful run reused the id of the pinned backup').not.toBe(id);
    const listed = await committed(env);
    expect(listed.find((b) => b.id === id)?.pinned).toBe(true);
  }

  it("the clock reads the pinned backup's second while HEAD of its manifest answers 503", async () => {
    const { env, id, before } = await pinned('id-head503-manifest');
    s3.faults.error({ op: 'HeadObject', key: new RegExp(`/${id}/manifest\\.json$`) }, 503, 'SlowDown');
    await clockBackAndCheck(env, id, before);
  }, 180_000);

  it('the same, with HEAD answering 503 for every key during the run', async () => {
    const { env, id, before } = await pinned('id-head503-all');
    s3.faults.error({ op: 'HeadObject' }, 503, 'SlowDown');
    await clockBackAndCheck(env, id, before);
  }, 180_000);
});

describe('a listing that never ends', () => {
  let env: Env;
  beforeAll(async () => {
    env = s3Env('list-loop');
    const r = await backup(env);
    expect(r.code, r.stderr).toBe(0);
  }, 120_000);

  for (const variant of ['same-token', 'no-token'] as const) {
    it(`list fails with store-misbehaving within ~20 s (IsTruncated forever, ${variant === 'same-token' ? 'the same NextContinuationToken every time' : 'no NextContinuationToken'})`, async () => {
      const f = s3.faults.listLoop(variant);
      const r = await timed(['list', '--config', env.file], { killAfterMs: 45_000 });
      expect(f.hits).toBeGreaterThan(0);
      expect(r.code, `exit ${r.code} after ${r.seconds.toFixed(1)} s (-1: killed, still listing):\n${tail(r.stderr)}`).toBe(1);
      expect(reasonIn(r.stderr), r.stderr).toBe('store-misbehaving');
      expect(r.seconds).toBeLessThan(20);
    }, 90_000);
  }

  it('a backup while the listing loops ends: the backup commits, retention reports the failure', async () => {
    s3.faults.listLoop('same-token');
    const r = await backup(env, { killAfterMs: 90_000 });
    s3.faults.clear();
    expect(r.code, `exit ${r.code} after ${r.seconds.toFixed(1)} s (-1: killed, the process never ended):\n${tail(r.stderr)}`).toBeGreaterThanOrEqual(0);
    expect(r.seconds).toBeLessThan(60);
    expect(r.doc).toMatchObject({ result: 'success' });
    expectCommitted(held(env, r.doc.id), r.doc.id, 'the backup was not committed');
    const lines = r.stderr.split('\n').flatMap((l) => {
      try {
        return [JSON.parse(l) as { level?: number; msg?: string }];
      } catch {
        return [];
      }
    });
    expect(lines.some((l) => /retention/i.test(String(l.msg)) && (l.level ?? 0) >= 50), `no error about retention in:\n${tail(r.stderr)}`).toBe(true);
  }, 150_000);
});

describe('a proxy that answers 200 to every HEAD', () => {
  it('backup ends within 60 s with exit 1 and store-misbehaving instead of searching for a free id forever', async () => {
    const env = s3Env('head-200');
    const f = s3.faults.head200();
    const r = await backup(env, { killAfterMs: 90_000 });
    s3.faults.clear();
    expect(f.hits).toBeGreaterThan(0);
    expect(r.code, `exit ${r.code} after ${r.seconds.toFixed(1)} s (-1: killed, still running; ${f.hits} HEADs answered):\n${tail(r.stderr)}`).toBe(1);
    expect(r.doc.reason).toBe('store-misbehaving');
    expect(r.seconds).toBeLessThan(60);
  }, 150_000);
});

describe('a download that trickles (minRate 1KiB over stallWindow 2s)', () => {
  let env: Env;
  beforeAll(async () => {
    env = s3Env('trickle', STALL_LIMITS);
    const good = await backup(env);
    expect(good.code, `a backup at full speed must pass the stall limits:\n${tail(good.stderr)}`).toBe(0);
  }, 120_000);

  it('S3 GET at 1 byte/s: backup (read-back verification) fails with store-timeout within 30 s', async () => {
    const f = s3.faults.trickle(1, { key: /\/backup\.tar\.zst$/ });
    const r = await backup(env, { killAfterMs: 60_000 });
    s3.faults.clear();
    expect(f.hits, 'the backup never read its object back').toBeGreaterThan(0);
    expect(r.code, `exit ${r.code} after ${r.seconds.toFixed(1)} s (-1: killed, still reading):\n${tail(r.stderr)}`).toBe(1);
    expect(r.doc.reason).toBe('store-timeout');
    expect(r.seconds).toBeLessThan(30);
  }, 120_000);

  it('S3 GET at 1 byte/s: fetch latest fails with store-timeout within 30 s and leaves nothing in the target', async () => {
    const f = s3.faults.trickle(1, { key: /\/backup\.tar\.zst$/ });
    const to = join(env.dir, 'restore');
    const fe = await timed(['fetch', '--config', env.file, 'latest', '--to', to], { killAfterMs: 60_000 });
    s3.faults.clear();
    expect(f.hits, 'fetch never read the object').toBeGreaterThan(0);
    expect(fe.code, `exit ${fe.code} after ${fe.seconds.toFixed(1)} s (-1: killed, still reading):\n${tail(fe.stderr)}`).toBe(1);
    expect(reasonIn(fe.stderr), fe.stderr).toBe('store-timeout');
    expect(fe.seconds).toBeLessThan(30);
    expect(listFiles(to)).toEqual([]);
  }, 120_000);

  it('SFTP through a proxy at 1 byte/s (after the first 64 KiB): fetch fails with store-timeout within 30 s', async () => {
    // timeout 30s: ssh keepalives (every timeout/3) must not be what ends the transfer.
    const store = sftpStoreConfig(sshd, join(sshd.root, 'trickle'), { timeout: '30s' });
    const sftpEnv = makeEnv(root, 'sftp-trickle', etcd, { stores: [store], retention: keep });
    const good = await backup(sftpEnv);
    expect(good.code, tail(good.stderr)).toBe(0);

    const proxy = await startThrottleProxy({ targetPort: sshd.port });
    proxies.push(proxy);
    sftpEnv.rewrite({ stores: [{ ...store, host: '127.0.0.1', port: proxy.port, ...STALL_LIMITS }] });
    // The handshake, the listing and the manifest pass at full speed; the object trickles.
    proxy.setDownstreamRate(1, { afterBytes: 64 * 1024 });
    const to = join(sftpEnv.dir, 'restore');
    const fe = await timed(['fetch', '--config', sftpEnv.file, 'latest', '--to', to], { killAfterMs: 60_000 });
    expect(proxy.connections(), 'fetch did not go through the proxy').toBeGreaterThan(0);
    expect(proxy.downstreamBytes(), 'fetch failed before the object was being read').toBeGreaterThanOrEqual(64 * 1024);
    expect(fe.code, `exit ${fe.code} after ${fe.seconds.toFixed(1)} s (-1: killed, still reading):\n${tail(fe.stderr)}`).toBe(1);
    expect(reasonIn(fe.stderr), fe.stderr).toBe('store-timeout');
    expect(fe.seconds).toBeLessThan(30);
    expect(listFiles(to)).toEqual([]);
  }, 240_000);
});
