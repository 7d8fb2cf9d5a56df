/**
 * Restore drills: prove that a committed backup really restores.
 *
 * `verify` proves a backup is the bytes that were stored and that the
 * snapshot's content hash is the one recorded when it was taken. A drill goes
 * further and does what the worst day of the year does: it restores the
 * snapshot into a throwaway, single-member etcd and checks what that etcd
 * serves.
 *
 *   fetch    fetchBackup() into a fresh 0700 dir under scratchDir (every sha256
 *            of the manifest: object and artifacts), then the native
 *            inspection of the snapshot (sha256 trailer, bbolt structure,
 *            `snapshot status` hash/revision/totalKey/totalSize) compared with
 *            what the manifest recorded at backup time.
 *   restore  `etcdutl snapshot restore` (etcd >= 3.5) or
 *            `ETCDCTL_API=3 etcdctl snapshot restore` (3.4) into a new data
 *            dir, member name `drill`, on a free loopback peer port. The
 *            restore re-checks the sha256 trailer, decodes every key of the
 *            MVCC store and rebuilds its index: damage that every hash missed
 *            because it was already there when the hashes were computed (a
 *            bit flip in the member's bbolt file, which has no checksums of
 *            its own) surfaces here.
 *   start    `etcd` on free 127.0.0.1 ports (never 2379/2380 or another port
 *            etcd and its companions use on a master, never a port in use),
 *            waits until it is healthy over gRPC (no alarm, a leader, a
 *            quorum read: what etcd's /health checks).
 *   check    what the restored etcd serves, against what the snapshot holds
 *            (see "What the check proves" below; the expectations are read
 *            from the snapshot file while restore and start run).
 *   stop     SIGTERM to its process group, SIGKILL after a grace period, and
 *            removal of everything the drill wrote, on success and failure.
 *
 * What the check proves. The manifest's etcd.hash is the CRC-32C that
 * `etcdctl snapshot status` computes over every bucket of the bbolt file;
 * the fetch step shows the fetched file still has it. etcd itself offers a
 * second, independent hash of its MVCC data: HashKV (`etcdctl endpoint
 * hashkv --rev R`), a CRC-32C over the "key" bucket entries that survive at
 * revision R. The drill computes what HashKV must answer from the snapshot's
 * key bucket (natively, streaming) and compares it with what the restored
 * etcd answers: equal means the store etcd rebuilt and serves is, entry for
 * entry, the key bucket of the snapshot, which (through the content hash)
 * is the one taken at backup time. Also compared:
 *   - revision: the restored etcd's revision equals manifest.etcd.revision
 *     (the main revision of the last entry of the key bucket) — or the
 *     finished compaction revision when that is higher, as etcd's own restore
 *     does when the newest revisions were compacted away;
 *   - keys: `totalKey` counts the entries of ALL buckets (key: every revision
 *     and tombstone since the last compaction; meta, members, lease, auth,
 *     cluster, alarm...), so it is NOT the number of keys a client sees. The
 *     drill splits it per bucket (the sum must equal manifest.etcd.totalKey),
 *     derives from the key bucket the number of live keys at the revision,
 *     and requires the restored etcd's `count_only` range over the whole
 *     keyspace to return exactly that (and it can never exceed the key
 *     bucket's entry count);
 *   - values: a sample of keys (a range with a limit, then a get of each) is
 *     read back: the serving path (index -> bucket -> decode) works.
 *
 * What a drill cannot prove: that the bytes equal the cluster's data when a
 * wrong value was already in etcd's database before the backup was taken
 * and still decodes (etcd's own corruption check compares members for that),
 * nor anything about a backup whose manifest was forged together with its
 * data (manifests are not signed).
 *
 * Low priority, bounded. The drill runs on a control-plane node next to the
 * real etcd, so etcd, etcdctl and etcdutl run under `nice -n 19 ionice -c 3`
 * (idle I/O class) when those tools exist (`lowPriority`, default true), with
 * GOMAXPROCS=2 and GOMEMLIMIT (a soft heap limit, Go >= 1.19) sized to the
 * snapshot, and `--quota-backend-bytes` above the snapshot size (below it
 * etcd raises a NOSPACE alarm and the health check fails). Every ETCD_* / ETCDCTL_*
 * variable of this process is dropped from the children's environment: on a
 * master they may describe the real member (ETCD_LISTEN_*, ETCD_DATA_DIR...)
 * and etcd reads them as flags.
 *
 * Security: the restored etcd holds every Secret of the cluster and serves
 * plain HTTP without auth on 127.0.0.1 while the drill runs (seconds to
 * minutes): anything that can connect to loopback on the node can read it.
 * Its files are in a 0700 dir and removed at the end; a drill interrupted by
 * a crash is cleaned up (process killed, files removed) by the next drill in
 * the same scratchDir.
 *
 * This file is the orchestrator: the sequence, the result, timing, the
 * timeout and the cleanup. The steps are in steps/ (fetch, restore, start,
 * check); tools.ts finds and runs the etcd tools, ports.ts picks the ports,
 * workdir.ts owns the drill dir. What the snapshot says etcd must serve is
 * read by etcd/keyspace.ts; processes run through source/exec.ts and HTTP
 * calls to the drill etcd through etcd/client.ts (gRPC).
 */
import type { ProgressSink } from '../progress/model.js';
import { access, constants as fsConstants, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { BackupError, messageOf, type Reason } from '../errors.js';
import { EtcdClients } from '../etcd/client.js';
import { readKeyspace, type KeyspaceSummary } from '../etcd/keyspace.js';
import type { Logger } from '../log.js';
import type { ServiceProcess } from '../source/exec.js';
import type { Store } from '../storage/store.js';
import { pickClientAndPeerPorts } from './ports.js';
import { checkRestored } from './steps/check.js';
import type { StepContext } from './steps/context.js';
import { fetchVerifiedSnapshot } from './steps/fetch.js';
import { restoreSnapshot, restoreTool } from './steps/restore.js';
import { startDrillEtcd, stopDrillEtcd } from './steps/start.js';
import { findDrillTools } from './tools.js';
import { createDrillDir, writeOwner } from './workdir.js';

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

export type DrillStep = 'fetch' | 'restore' | 'start' | 'check' | 'stop';

export interface DrillOptions {
  store: Store;
  /** The committed manifest of the backup to drill (from loadCatalog/findBackup). */
  manifest: Manifest;
  /** The drill works in a fresh 0700 dir below this one (created 0700 if missing). Needs ~ object size + 1.2 x snapshot + 128 MiB free. */
  scratchDir: string;
  /** etcd server binary, name (looked up on PATH) or path; default 'etcd'. Use the cluster's etcd version. */
  etcdBinary?: string;
  /** etcdctl, for the 3.4 restore and for HashKV; default 'etcdctl'. */
  etcdctlBinary?: string;
  /** etcdutl (etcd >= 3.5); default: 'etcdutl' when it is on PATH, else restore with etcdctl. */
  etcdutlBinary?: string;
  log: Logger;
  /** The whole drill, fetch to cleanup; default 3600. */
  timeoutSeconds?: number;
  /** Keys read back one by one; default 100, 0 to skip. */
  sampleKeys?: number;
  /** nice -n 19 / ionice -c 3 for etcd, etcdctl, etcdutl; default true. */
  lowPriority?: boolean;
  /** Aborting ends the drill with reason 'drill-aborted' (after the same cleanup). */
  signal?: AbortSignal;
  /** age identities for an encrypted backup (passed to fetchBackup); without them an encrypted backup fails with 'usage'. */
  identities?: string[];
  /** Live progress of the download (`verify --restore` on a terminal). */
  progress?: ProgressSink;
}

export interface DrillStepTiming {
  name: DrillStep;
  seconds: number;
}

export interface DrillResult {
  /** The backup id (manifest.id). */
  id: string;
  result: 'success' | 'failed';
  reason?: Reason;
  error?: string;
  /** What to do about a failure. */
  hint?: string;
  /** In the order they ran; the failing step is included, `stop` (cleanup) always comes last. */
  steps: DrillStepTiming[];
  startedAt: string;
  finishedAt: string;
  /** The revision the restored etcd served (= manifest.etcd.revision, see the header comment). */
  revision?: number;
  /** The snapshot's totalKey (entries of all bbolt buckets), re-verified against the manifest. */
  totalKey?: number;
  /** Keys the restored etcd served at `revision` (count_only over the whole keyspace). */
  liveKeys?: number;
  /** Keys read back one by one. */
  sampled?: number;
  /** etcd's HashKV at `revision`, equal to the one computed from the snapshot. */
  hashKV?: number;
  /** Which tool restored the snapshot. */
  restoreTool?: 'etcdutl' | 'etcdctl';
}

/**
 * Every reason a drill can fail with; `etcd_backup_drill_failures_total{reason}`
 * starts at 0 for each (src/drill/metrics.ts). The fetch step passes on the
 * reasons of fetchBackup (checksum-mismatch for any sha256 or tar problem,
 * usage for an encrypted backup without identities).
 */
export const DRILL_FAILURE_REASONS = [
  'usage',
  'checksum-mismatch',
  'unsafe-archive',
  'manifest-invalid',
  'not-found',
  'store-unavailable',
  'snapshot-corrupt',
  'preflight-disk-space',
  'drill-restore-failed',
  'drill-start-failed',
  'drill-mismatch',
  'drill-timeout',
  'drill-aborted',
  'internal',
] as const satisfies readonly Reason[];

export const DRILL_STEPS: readonly DrillStep[] = ['fetch', 'restore', 'start', 'check', 'stop'];

const DEFAULT_TIMEOUT_SECONDS = 3600;
const DEFAULT_SAMPLE_KEYS = 100;
const MAX_SAMPLE_KEYS = 10_000;

/** The deadline of one gRPC call to the drill etcd. */
const ETCD_CALL_TIMEOUT_MS = 60_000;

const hintFor: Partial<Record<Reason, string>> = {
  'checksum-mismatch': 'the stored copy is damaged: run `etcd-backupd verify` on the other stores and take a new backup',
  'snapshot-corrupt': 'the stored snapshot is not the one recorded at backup time: do not restore from it; take a new backup and check the store',
  'drill-restore-failed': 'this backup cannot be restored: do not rely on it; take a new backup now and drill it',
  'drill-mismatch': 'the restored etcd does not serve what the backup holds: do not rely on this backup; take a new one and drill it',
  'drill-timeout': 'raise the drill timeout or run the drill when the node is less busy',
};

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** One drill in progress: what it must stop and remove, the step it is in, what it found. */
interface DrillRun {
  opts: DrillOptions;
  log: Logger;
  /** Aborted by the timeout or by opts.signal. */
  signal: AbortSignal;
  result: DrillResult;
  current: DrillStep;
  dir?: string;
  etcd?: ServiceProcess;
  /** What the restored etcd must serve, computed from the snapshot while restore and start run. */
  expectation?: Promise<Settled<KeyspaceSummary>>;
}

/** The drill's own abort: the caller's signal or the timeout, whichever comes first. */
function drillAbort(outer: AbortSignal | undefined, timeoutSeconds: number) {
  const ctl = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, Math.min(2 ** 31 - 1, Math.max(0, timeoutSeconds * 1000)));
  const onOuterAbort = () => ctl.abort();
  if (outer?.aborted) ctl.abort();
  else outer?.addEventListener('abort', onOuterAbort, { once: true });
  return {
    ctl,
    timedOut: () => timedOut,
    dispose: () => {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuterAbort);
    },
  };
}

/** Runs one step, timed into result.steps; an abort before or during it fails it. */
async function step<T>(run: DrillRun, name: DrillStep, fn: () => Promise<T>): Promise<T> {
  run.current = name;
  const t0 = performance.now();
  try {
    if (run.signal.aborted) throw new Error('aborted');
    const v = await fn();
    if (run.signal.aborted) throw new Error('aborted');
    return v;
  } finally {
    run.result.steps.push({ name, seconds: (performance.now() - t0) / 1000 });
  }
}

async function expectedKeyspace(run: DrillRun, snapshot: string): Promise<KeyspaceSummary> {
  const expected = await run.expectation!;
  if (!expected.ok) {
    if (run.signal.aborted) throw expected.error;
    throw new BackupError('internal', `cannot compute what the restored etcd must serve from ${snapshot}: ${messageOf(expected.error)}`);
  }
  return expected.value;
}

/** fetch, restore, start, check; the first failure throws. */
async function runSteps(run: DrillRun, limits: { sampleKeys: number; deadline: number }): Promise<void> {
  const { opts, log, signal, result } = run;
  const m = opts.manifest;
  log.info({ store: opts.store.name, revision: m.etcd.revision, totalKey: m.etcd.totalKey, totalSize: m.etcd.totalSize }, 'restore drill started');
  const tools = await findDrillTools(opts, m);

  // ---- fetch: every sha256, then the snapshot's content against the manifest
  const snapshot = await step(run, 'fetch', async () => {
    const dir = await createDrillDir(opts.scratchDir, m, result.startedAt, log, (d) => {
      run.dir = d;
    });
    const fetched = await fetchVerifiedSnapshot(opts.store, m, dir, opts.identities, signal, log, opts.progress);
    result.totalKey = fetched.totalKey;
    return fetched.snapshot;
  });
  run.expectation = readKeyspace(snapshot, signal).then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  const dir = run.dir!;
  const ctx: StepContext = { manifest: m, dir, dataDir: join(dir, 'data'), log, signal, tools, etcd: new EtcdClients({}, ETCD_CALL_TIMEOUT_MS) };
  try {
    await startAndCheck(run, ctx, snapshot, limits);
  } finally {
    ctx.etcd.close();
  }
}

async function startAndCheck(run: DrillRun, ctx: StepContext, snapshot: string, limits: { sampleKeys: number; deadline: number }): Promise<void> {
  const { result } = run;
  const { dir } = ctx;
  const ports = await step(run, 'restore', async () => {
    const picked = await pickClientAndPeerPorts();
    result.restoreTool = restoreTool(ctx);
    await restoreSnapshot(ctx, snapshot, picked);
    return picked;
  });
  const base = await step(run, 'start', () =>
    startDrillEtcd(ctx, ports, async (etcd) => {
      run.etcd = etcd;
      if (etcd) await writeOwner(dir, result.startedAt, etcd.pid);
    }),
  );
  await step(run, 'check', async () => checkRestored(ctx, base, await expectedKeyspace(run, snapshot), limits, result));
  result.result = 'success';
}

/** The BackupError a failed drill reports. */
function failureOf(run: DrillRun, e: unknown, timedOut: boolean, timeoutSeconds: number): BackupError {
  const id = run.opts.manifest.id;
  if (run.signal.aborted) {
    return timedOut
      ? new BackupError('drill-timeout', `restore drill of ${id} did not finish within ${timeoutSeconds}s (it was in the ${run.current} step)`, { hint: hintFor['drill-timeout'] })
      : new BackupError('drill-aborted', `restore drill of ${id} was stopped during the ${run.current} step`);
  }
  return e instanceof BackupError ? e : new BackupError('internal', `restore drill of ${id}, ${run.current} step: ${messageOf(e)}`, { cause: e });
}

/** The stop step, on success and failure: the drill etcd stopped, the snapshot reading ended, the drill dir removed. */
async function cleanUp(run: DrillRun, ctl: AbortController): Promise<void> {
  const { result, log, dir } = run;
  const t0 = performance.now();
  try {
    if (run.etcd) await stopDrillEtcd(run.etcd);
    ctl.abort(); // ends a computation still reading the snapshot
    await run.expectation;
    if (dir) {
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      if (await access(dir, fsConstants.F_OK).then(() => true, () => false)) throw new Error(`${dir} is still there`);
    }
  } catch (e) {
    log.error({ err: messageOf(e), dir }, 'restore drill: cleanup failed; remove the directory by hand (it holds a copy of every Secret)');
    if (result.result === 'success') {
      result.result = 'failed';
      result.reason = 'internal';
      result.error = `restore drill of ${run.opts.manifest.id}: cleanup failed: ${messageOf(e)}`;
    }
  }
  result.steps.push({ name: 'stop', seconds: (performance.now() - t0) / 1000 });
  result.finishedAt = new Date().toISOString();
}

/**
 * Restores one committed backup into a throwaway etcd and checks it; see the
 * file comment. Never throws: the result carries the reason of a failure.
 * Everything it starts is stopped and everything it writes is removed
 * before it returns.
 */
export async function runRestoreDrill(opts: DrillOptions): Promise<DrillResult> {
  const m = opts.manifest;
  const started = new Date();
  const log = opts.log.child({ drill: m.id });
  const steps: DrillStepTiming[] = [];
  const result: DrillResult = { id: m.id, result: 'failed', steps, startedAt: started.toISOString(), finishedAt: '' };
  const timeoutSeconds = opts.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  const sampleKeys = Math.max(0, Math.min(MAX_SAMPLE_KEYS, Math.floor(opts.sampleKeys ?? DEFAULT_SAMPLE_KEYS)));
  const abort = drillAbort(opts.signal, timeoutSeconds);
  const run: DrillRun = { opts, log, signal: abort.ctl.signal, result, current: 'fetch' };
  try {
    await runSteps(run, { sampleKeys, deadline: started.getTime() + timeoutSeconds * 1000 });
  } catch (e) {
    const err = failureOf(run, e, abort.timedOut(), timeoutSeconds);
    result.result = 'failed';
    result.reason = err.reason;
    result.error = err.message;
    result.hint = err.hint ?? hintFor[err.reason];
  } finally {
    abort.dispose();
    await cleanUp(run, abort.ctl);
  }
  const summary = { result: result.result, reason: result.reason, steps: Object.fromEntries(steps.map((s) => [s.name, Number(s.seconds.toFixed(3))])) };
  if (result.result === 'success') {
    log.info({ ...summary, revision: result.revision, liveKeys: result.liveKeys, sampled: result.sampled }, 'restore drill passed');
  } else {
    log.error({ ...summary, err: result.error }, 'restore drill failed');
  }
  return result;
}
