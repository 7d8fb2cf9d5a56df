/**
 * Restore to a time, the replay (DESIGN.md "Continuous backups"): the base
 * backup is fetched and verified exactly as `fetch` does, restored into a
 * throwaway etcd as a restore drill does (its own 0700 dir under workDir,
 * free 127.0.0.1 ports, never the node's etcd ports, low priority), then
 * each segment of the plan's chain is fetched, checked and replayed one
 * txn per revision, so the throwaway etcd's revisions are the original
 * ones. Then it is snapshotted into the caller's directory, stopped, and
 * its directory removed, whatever happens.
 *
 * Leases: the throwaway etcd holds the base's leases and would expire them
 * on its own while the replay runs (Kubernetes' master leases live 15 s):
 * each expiry is a revision the original never had at that point (its own
 * expiries are in the segments as deletes). So every lease is kept alive
 * while the replay runs. Keys put with a lease after the base are put
 * without one (replay-step.ts txnOf) and counted.
 */
import { constants as fsConstants } from 'node:fs';
import { chmod, copyFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { checkSnapshot, fetchBackup } from '../catalog/fetch.js';
import { pickClientAndPeerPorts } from '../drill/ports.js';
import type { StepContext } from '../drill/steps/context.js';
import { restoreSnapshot } from '../drill/steps/restore.js';
import { startDrillEtcd, stopDrillEtcd } from '../drill/steps/start.js';
import { childEnv, findDrillTools, toolError } from '../drill/tools.js';
import { createDrillDir, writeOwner } from '../drill/workdir.js';
import { BackupError, messageOf } from '../errors.js';
import { EtcdClients, type EtcdEndpoint } from '../etcd/client.js';
import { inspectSnapshot } from '../etcd/snapshot.js';
import { mkdirPrivate } from '../fsutil.js';
import type { Logger } from '../log.js';
import { captureCommand, type ServiceProcess } from '../source/exec.js';
import type { Store } from '../storage/store.js';
import type { ReplayPlan } from './plan.js';
import { advance, checkSegmentEnd, opsDigest, rangeText, stepRecord, txnOf, type StepState } from './replay-step.js';
import type { SegmentManifest } from './segment.js';
import { readSegmentRecords } from './segments.js';

/** The deadline of one gRPC call to the throwaway etcd. */
const ETCD_CALL_TIMEOUT_MS = 60_000;
/**
 * One original revision is one txn, however many events it had: a lease
 * revocation deletes every key of the lease in ONE revision (Kubernetes
 * attaches thousands of events to one lease), far past etcd's default 128
 * operations and 1.5 MiB per request. The throwaway etcd takes any txn the
 * original made.
 */
const REPLAY_ETCD_FLAGS = ['--max-txn-ops', '10000000', '--max-request-bytes', String(64 * 1024 * 1024)];
const MIB = 1024 * 1024;

/**
 * The throwaway etcd's --quota-backend-bytes: the base, plus room for every
 * revision replayed (nothing is compacted while replaying; twice the raw
 * records covers bbolt's overhead), so no NOSPACE alarm stops the replay.
 * Only a limit: the disk holds what is written.
 */
function replayQuota(o: Pick<ReplayOptions, 'base' | 'plan' | 'manifests'>): number {
  const records = o.plan.segments.reduce((n, s) => n + (o.manifests.get(s.key)?.object.rawSize ?? 0), 0);
  return Math.max(2048 * MIB, Math.ceil(o.base.etcd.totalSize * 1.25) + 2 * records + 256 * MIB);
}

/** Well inside etcd's minimum lease TTL: no lease of the base expires while the replay runs. */
const KEEPALIVE_EVERY_MS = 1000;

export interface ReplayOptions {
  store: Store;
  base: Manifest;
  plan: ReplayPlan;
  /** The manifests of the plan's segments, by manifest key. */
  manifests: ReadonlyMap<string, SegmentManifest>;
  identities?: string[];
  /** Where the snapshot (and the base's static_kuberesources_*.tar.gz) go. */
  to: string;
  /** The replay works in a fresh 0700 dir below this one. */
  scratchDir: string;
  etcdBinary?: string;
  etcdctlBinary?: string;
  lowPriority?: boolean;
  log: Logger;
  signal: AbortSignal;
}

export interface ReplayResult {
  snapshot: string;
  files: string[];
  revisionReached: number;
  /** Wall time the last replayed revision was seen (the base's time when none was). */
  reachedTime: Date;
  segmentsUsed: number;
  revisionsReplayed: number;
  leaselessKeys: number;
}

/** `snapshot_2026-11-26_213000.db`, as cluster-backup.sh names them (UTC here). */
export function snapshotNameAt(t: Date): string {
  const iso = t.toISOString();
  return `snapshot_${iso.slice(0, 10)}_${iso.slice(11, 19).replace(/:/g, '')}.db`;
}

interface Progress {
  state: StepState;
  /** opsDigest of every revision applied (16 bytes each: 1.6 MB for 100 000), to check overlapping segments agree. */
  applied: Map<number, string>;
  reachedTime: Date;
  revisionsReplayed: number;
  leaselessKeys: number;
  segmentsUsed: number;
}

/** Replays one segment; returns false when a record seen after TIME stopped the replay. */
async function replaySegment(o: ReplayOptions, etcd: EtcdEndpoint, m: SegmentManifest, p: Progress): Promise<boolean> {
  const records = await readSegmentRecords(o.store, m, o.identities, o.signal);
  p.state = { ...p.state, prevInSegment: m.fromRev - 1 };
  let used = false;
  for (const r of records) {
    const d = stepRecord(p.state, m, r, o.plan.until, o.plan.untilRev);
    if (d.action === 'error') throw new BackupError(d.reason, `base ${o.base.id}: ${d.message}`);
    if (d.action === 'stop') {
      if (used) p.segmentsUsed++;
      return false;
    }
    if (d.action === 'skip') {
      const before = p.applied.get(r.rev);
      if (before !== undefined && before !== opsDigest(r.ops)) {
        throw new BackupError('segment-corrupt', `base ${o.base.id}: segment ${rangeText(m)} holds another revision ${r.rev} than the segment that was replayed for it: two writers disagree`, {
          hint: 'the segments under this base do not all come from the same cluster; check the writers (etcd-backupd status, their logs)',
        });
      }
    }
    if (d.action === 'apply') {
      const txn = txnOf(r.ops);
      const rev = await etcd.txn(txn.ops, { signal: o.signal }).catch((e: unknown) => {
        if (o.signal.aborted) throw e;
        throw new BackupError('replay-mismatch', `segment ${rangeText(m)}: the throwaway etcd refused the txn of revision ${r.rev} (${r.ops.length} operations): ${messageOf(e)}`, { cause: e });
      });
      if (rev !== r.rev) {
        throw new BackupError('replay-mismatch', `segment ${rangeText(m)}: after replaying revision ${r.rev} the throwaway etcd is at revision ${rev}`, {
          hint: 'the segment does not continue the base (another cluster, or a base restored with a bumped revision); pick another TIME or base',
        });
      }
      used = true;
      p.applied.set(r.rev, opsDigest(r.ops));
      p.revisionsReplayed++;
      p.leaselessKeys += txn.leaseless;
      p.reachedTime = new Date(r.time);
    }
    p.state = advance(p.state, r, d);
  }
  const short = checkSegmentEnd(p.state, m);
  if (short) throw new BackupError('segment-corrupt', `base ${o.base.id}: ${short}`);
  if (used) p.segmentsUsed++;
  return true;
}

/** Keeps every lease of the throwaway etcd alive until stopped (see the file comment). */
async function keepLeasesAlive(etcd: EtcdEndpoint, log: Logger, signal: AbortSignal): Promise<() => Promise<void>> {
  const ids = await etcd.leaseIds({ signal });
  if (ids.length === 0) return async () => undefined;
  let running: Promise<void> = etcd.keepAliveOnce(ids, { signal });
  await running;
  const timer = setInterval(() => {
    running = running.then(() => etcd.keepAliveOnce(ids, { signal, timeoutMs: 10_000 })).catch((e) => log.warn({ err: messageOf(e) }, 'replay: a lease keep-alive failed'));
  }, KEEPALIVE_EVERY_MS);
  log.info({ leases: ids.length }, 'replay: keeping the base leases alive');
  return async () => {
    clearInterval(timer);
    await running.catch(() => undefined);
  };
}

/** `etcdctl snapshot save` of the throwaway etcd into `path` (0600). */
async function saveSnapshot(ctx: StepContext, endpoint: string, path: string): Promise<void> {
  const c = await captureCommand([...ctx.tools.prio, ctx.tools.etcdctl, `--endpoints=${endpoint}`, '--command-timeout=600s', 'snapshot', 'save', path], {
    env: childEnv({ ETCDCTL_API: '3', ...ctx.tools.goEnv }),
    cwd: ctx.dir,
    signal: ctx.signal,
    log: ctx.log,
    what: 'replay-etcdctl',
  });
  if (ctx.signal.aborted) throw new BackupError('restore-failed', 'the replay was interrupted');
  if (c.code !== 0) throw new BackupError('restore-failed', `\`etcdctl snapshot save\` of the replayed etcd failed (${c.code !== null ? `exit ${c.code}` : `signal ${c.signal}`}): ${toolError(c.tail)}`);
  await chmod(path, 0o600);
}

/** The snapshot (0600) and the base's static pod resources into `to`; `written` learns each file before it is created. */
async function writeOutput(o: ReplayOptions, ctx: StepContext, endpoint: string, snapshot: string, statics: string[], written: string[]): Promise<void> {
  written.push(snapshot);
  await saveSnapshot(ctx, endpoint, snapshot);
  for (const s of statics) {
    // OpenShift's cluster-restore.sh takes the snapshot and the static pod resources from one flat directory.
    // Never over a file someone put there meanwhile (EXCL): only what this call created is listed for removal.
    await copyFile(join(ctx.dir, 'fetch', s), join(o.to, s), fsConstants.COPYFILE_EXCL);
    written.push(join(o.to, s));
    await chmod(join(o.to, s), 0o600);
  }
}

/** Replays the plan; see the file comment. Cleans up after itself on success and failure. */
export async function replayToTime(o: ReplayOptions): Promise<ReplayResult> {
  const { base, log } = o;
  const tools = await findDrillTools(o, base);
  await mkdirPrivate(o.to);
  const statics = base.artifacts.map((a) => a.name).filter((n) => /^static_kuberesources_.*\.tar\.gz$/.test(n));
  // Refused before any work: cluster-restore.sh takes the newest snapshot*.db of the directory, so another one there could be restored instead.
  const clash = (await readdir(o.to)).filter((n) => /^snapshot_.*\.db$/.test(n) || statics.includes(n));
  if (clash.length) throw new BackupError('usage', `${o.to} already holds ${clash.join(', ')}; fetch into an empty directory`);
  const startedAt = new Date();
  let dir: string | undefined;
  let etcdProc: ServiceProcess | undefined;
  let stopKeepAlive: (() => Promise<void>) | undefined;
  const clients = new EtcdClients({}, ETCD_CALL_TIMEOUT_MS);
  const written: string[] = [];
  try {
    dir = await createDrillDir(o.scratchDir, base, startedAt.toISOString(), log, (d) => {
      dir = d;
    });
    const fetched = await fetchBackup(o.store, base, join(dir, 'fetch'), o.identities, o.signal);
    await checkSnapshot(base, fetched.snapshot);
    const ctx: StepContext = { manifest: base, dir, dataDir: join(dir, 'data'), log, signal: o.signal, tools, etcd: clients, etcdFlags: REPLAY_ETCD_FLAGS, quotaBytes: replayQuota(o) };
    const ports = await pickClientAndPeerPorts();
    await restoreSnapshot(ctx, fetched.snapshot, ports);
    const endpoint = await startDrillEtcd(ctx, ports, async (e) => {
      etcdProc = e;
      if (e) await writeOwner(dir!, startedAt.toISOString(), e.pid);
    });
    const etcd = clients.endpoint(endpoint);
    stopKeepAlive = await keepLeasesAlive(etcd, log, o.signal);
    const at = (await etcd.status({ signal: o.signal })).revision;
    // An empty keyspace's snapshot says 0; etcd is then at revision 1 (plan.ts chainFor).
    if (at !== Math.max(base.etcd.revision, 1)) throw new BackupError('replay-mismatch', `the base ${base.id} restored at revision ${at}, its manifest says ${base.etcd.revision}`);
    const p: Progress = { state: { nextRev: at + 1, prevInSegment: at }, applied: new Map(), reachedTime: new Date(base.createdAt), revisionsReplayed: 0, leaselessKeys: 0, segmentsUsed: 0 };
    for (const ref of o.plan.segments) {
      if (!(await replaySegment(o, etcd, o.manifests.get(ref.key)!, p))) break;
    }
    const revisionReached = p.state.nextRev - 1;
    const snapshot = join(o.to, snapshotNameAt(p.reachedTime));
    // The leases stay alive until the snapshot is taken: an expiry before it would be a revision the original never had.
    await writeOutput(o, ctx, endpoint, snapshot, statics, written);
    const saved = await inspectSnapshot(snapshot);
    if (saved.trailer !== 'ok' || saved.revision !== revisionReached) {
      throw new BackupError('replay-mismatch', `the snapshot of the replayed etcd is at revision ${saved.revision} (trailer ${saved.trailer}), the replay reached ${revisionReached}`);
    }
    const files = [...written];
    log.info({ base: base.id, revisionReached, revisionsReplayed: p.revisionsReplayed, segments: p.segmentsUsed, leaselessKeys: p.leaselessKeys }, 'replay: done');
    return { snapshot, files, revisionReached, reachedTime: p.reachedTime, segmentsUsed: p.segmentsUsed, revisionsReplayed: p.revisionsReplayed, leaselessKeys: p.leaselessKeys };
  } catch (e) {
    // Nothing half-made is left where cluster-restore.sh or an operator would take it.
    for (const f of written) await rm(f, { force: true });
    if (o.signal.aborted) throw new BackupError('restore-failed', `the restore to ${o.plan.until.toISOString()} was interrupted: its throwaway etcd is stopped and its files removed; nothing was written to ${o.to}`, { cause: e });
    throw e;
  } finally {
    await stopKeepAlive?.().catch(() => undefined);
    clients.close();
    if (etcdProc) await stopDrillEtcd(etcdProc).catch((e) => log.error({ err: messageOf(e) }, 'replay: could not stop the throwaway etcd'));
    if (dir) await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch((e) => log.error({ err: messageOf(e), dir }, 'replay: remove this directory by hand (it holds a copy of every Secret)'));
  }
}
