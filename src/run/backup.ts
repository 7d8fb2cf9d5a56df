import { access, rm, stat } from 'node:fs/promises';
import { MANIFEST_FORMAT, serializeManifest, type Manifest } from '../bundle/manifest.js';
import { writeBundle } from '../bundle/write.js';
import { loadSigningKey, signManifest } from '../bundle/sign.js';
import type { Config } from '../config/load.js';
import { BackupError, messageOf, reasonOf, type Reason } from '../errors.js';
import { inspectSnapshot } from '../etcd/snapshot.js';
import { mkdirPrivate, writeFileAtomic } from '../fsutil.js';
import { backupId, manifestKey, objectKeys, outboxBundlePath, outboxEntryDir, outboxManifestPath, runScratchDir, runsDir } from '../layout.js';
import type { Logger } from '../log.js';
import { metered, type ProgressSink } from '../progress/model.js';
import { pollSnapshotGrowth } from '../progress/poll.js';
import type { Source } from '../source/source.js';
import type { Store } from '../storage/store.js';
import { TOOL_NAME, VERSION } from '../version.js';
import { deliverToStore, type StoreOutcome } from './deliver.js';
import { manifestMembers, readClusterMetadata, type ClusterMetadata } from './cluster-metadata.js';
import { acquireRunLock } from './lock.js';
import { firstAttemptStatus, writeStatus } from './outbox.js';
import { preflightError, runPreflight, type PreflightOutcome } from './preflight.js';

export type Trigger = 'schedule' | 'manual' | 'catch-up';

export interface BackupRequest {
  trigger: Trigger;
  label?: string;
  reason?: string;
  /** The schedule tick this run is for, when a slot claim decided it (coordination): recorded in the manifest. */
  slot?: Date;
  pin?: boolean;
  force?: boolean;
  /** Retry transient source failures (a rollout, the API server away) until then: the slot's deadline (src/run/retry.ts). */
  retryUntil?: Date;
}

export interface RunResult {
  id: string;
  result: 'success' | 'failed';
  reason?: Reason;
  error?: string;
  hint?: string;
  trigger: Trigger;
  /** Attempts within the slot, when there was more than one (src/run/retry.ts). */
  attempts?: number;
  startedAt: string;
  finishedAt: string;
  /** Seconds per phase: preflight, source, verify-local, bundle, upload, verify-remote. */
  phases: Record<string, number>;
  stores: Record<string, StoreOutcome>;
  preflight?: { checks: PreflightOutcome['checks']; forced: boolean };
  /** The etcd members the preflight saw (name, peer URLs): the recovery kit's restore commands name them. */
  members?: { name: string; peerURLs: string[] }[];
  manifest?: Manifest;
}

export interface RunDeps {
  source: Source;
  stores: Store[];
  log: Logger;
  now?: () => Date;
  signal?: AbortSignal;
  /** Live progress of the byte-moving phases (an interactive CLI's terminal); none by default. */
  progress?: ProgressSink;
}

/** Seconds the id search may move forward before the stores' answers count as impossible. */
const MAX_ID_CANDIDATES = 120;
/** Candidates a store may fail to answer for before it counts as unreachable for the id choice. */
const ID_ERRORS_PER_STORE = 2;

/**
 * Ids must stay unique even if two runs fall in one second or the clock went
 * back onto the second of an older backup: an id is taken if the outbox or
 * any store already has it. An error is never "absent": a store that cannot
 * answer moves the search on to the next second; one that fails twice is
 * unreachable now (its delivery checks again before writing and never
 * overwrites a committed backup). A store that says every id is taken (a
 * proxy answering 200 to every HEAD) ends the search with store-misbehaving.
 */
async function uniqueId(cfg: Config, at: Date, stores: Store[], log: Logger, signal?: AbortSignal): Promise<{ id: string; at: Date }> {
  let t = new Date(Math.floor(at.getTime() / 1000) * 1000);
  const failures = new Map<string, number>();
  const takenBy = new Map<string, number>();
  for (let i = 0; i < MAX_ID_CANDIDATES; i++, t = new Date(t.getTime() + 1000)) {
    if (signal?.aborted) throw new BackupError('upload-failed', 'stopped while choosing a backup id: the daemon is shutting down');
    const id = backupId(t, cfg.node);
    const inOutbox = await access(outboxEntryDir(cfg.workDir, id)).then(
      () => true,
      () => false,
    );
    if (inOutbox) continue;
    const asked = stores.filter((s) => (failures.get(s.name) ?? 0) < ID_ERRORS_PER_STORE);
    const key = manifestKey(cfg.cluster, id);
    const answers = await Promise.all(
      asked.map((s) =>
        s.head(key, { signal }).then(
          (info) => ({ store: s.name, taken: info !== undefined }),
          (e: unknown) => ({ store: s.name, error: messageOf(e) }),
        ),
      ),
    );
    let free = true;
    for (const a of answers) {
      if ('error' in a) {
        failures.set(a.store, (failures.get(a.store) ?? 0) + 1);
        log.warn({ store: a.store, id, err: a.error }, 'cannot tell whether the backup id is free in this store; trying the next second');
        free = false;
      } else if (a.taken) {
        takenBy.set(a.store, (takenBy.get(a.store) ?? 0) + 1);
        free = false;
      }
    }
    if (free) {
      if (i > 0) log.info({ id, skipped: i }, 'backup id chosen after skipping ids that are taken or unknown');
      return { id, at: t };
    }
  }
  const claimers = [...takenBy.entries()].filter(([, n]) => n > MAX_ID_CANDIDATES / 2).map(([s]) => s);
  throw new BackupError(
    'store-misbehaving',
    `no free backup id in ${MAX_ID_CANDIDATES} consecutive seconds from ${backupId(at, cfg.node)}` +
      (claimers.length ? `: store ${claimers.join(', ')} says every one of them exists` : ': the stores could not answer'),
    { hint: 'a store (or a proxy in front of it) answers HEAD with 200 for keys that do not exist; check it with `etcd-backupd list`' },
  );
}

/** Times one phase into `phases` and logs it. */
type PhaseTimer = <T>(name: string, fn: () => Promise<T>) => Promise<T>;

function phaseTimer(phases: Record<string, number>, log: Logger): PhaseTimer {
  return async (name, fn) => {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      phases[name] = (performance.now() - t0) / 1000;
      log.info({ phase: name, seconds: phases[name] }, `phase ${name} done`);
    }
  };
}

/**
 * One backup run, start to end. It never throws for a failed backup: the
 * result says what failed and why, so the CLI, the daemon and the metrics
 * report the same reason. Nothing unproven is ever committed to a store.
 */
export async function runBackup(cfg: Config, deps: RunDeps, req: BackupRequest): Promise<RunResult> {
  const now = deps.now ?? (() => new Date());
  const startedAt = now();
  const phases: Record<string, number> = {};
  const stores: Record<string, StoreOutcome> = {};
  // The lock comes first: choosing an id and creating its outbox entry belong to the lock holder,
  // or a refused run could pick the same id as the running one and clean up its bundle.
  // Before an id is chosen, a failure is reported under the id of the start time.
  const failEarly = (e: unknown): RunResult => {
    const id = backupId(startedAt, cfg.node);
    return fail({ id, result: 'failed', trigger: req.trigger, startedAt: startedAt.toISOString(), finishedAt: '', phases, stores }, e, deps.log.child({ runId: id, trigger: req.trigger }), now);
  };
  let lock;
  try {
    lock = await acquireRunLock(cfg.workDir, `${req.trigger} backup started ${startedAt.toISOString()}`);
  } catch (e) {
    return failEarly(e);
  }
  // Whatever sits in runs/ now was left by a run that died (we hold the lock): snapshots and
  // private keys must not linger on the node.
  await rm(runsDir(cfg.workDir), { recursive: true, force: true }).catch(() => undefined);
  let chosen: { id: string; at: Date };
  try {
    chosen = await uniqueId(cfg, startedAt, deps.stores, deps.log.child({ trigger: req.trigger }), deps.signal);
  } catch (e) {
    await lock.release();
    return failEarly(e);
  }
  const { id, at } = chosen;
  const log = deps.log.child({ runId: id, trigger: req.trigger });
  const result: RunResult = { id, result: 'failed', trigger: req.trigger, startedAt: startedAt.toISOString(), finishedAt: '', phases, stores };
  const phase = phaseTimer(phases, log);
  const runDir = runScratchDir(cfg.workDir, id);
  const boxDir = outboxEntryDir(cfg.workDir, id);
  try {
    log.info({ label: req.label, pin: req.pin ?? false, force: req.force ?? false }, 'backup run started');
    // Before anything is taken: a snapshot that cannot be signed would not count where trusted keys are set.
    const signer = cfg.signing.keyFile ? await loadSigningKey(cfg.signing.keyFile) : undefined;
    const checked = await preflight(cfg, req, log, phase);
    // Recorded before a refusal: the metrics and --json report which checks failed.
    result.preflight = { checks: checked.pre.checks, forced: checked.forced };
    const seen = checked.pre.etcd.members?.filter((m) => m.name !== '' && (m.peerURLs?.length ?? 0) > 0);
    if (seen?.length) result.members = seen.map((m) => ({ name: m.name, peerURLs: m.peerURLs! }));
    refuseUnlessForced(checked.pre, req, log);
    const snapshot = await takeVerifiedSnapshot(deps, req, runDir, log, phase, checked.pre.etcd.dbSize);
    const metadata = await readClusterMetadata(cfg, { revision: snapshot.snap.revision, staticArchive: snapshot.artifacts.staticResources, log, signal: deps.signal });
    const taken: TakenSnapshot = { ...checked, ...snapshot, metadata, signer };
    const base = manifestBase(cfg, req, deps.source.type, { id, at, startedAt }, taken);
    const files = [taken.artifacts.snapshot, taken.artifacts.staticResources];
    const { manifest, bundlePath } = await sealInOutbox(cfg, base, files, boxDir, taken.signer, now, phase, deps.progress);
    result.manifest = manifest;
    await rm(runDir, { recursive: true, force: true });
    log.info({ size: manifest.object!.size, rawSize: manifest.object!.rawSize, codec: manifest.object!.codec, sha256: manifest.object!.sha256 }, 'bundle sealed in the outbox');

    // Stores are independent (each succeeds or fails on its own): deliver to all at once, so a
    // backup is off the node in the time of the slowest store, not the sum of all.
    const outcomes = await phase('deliver', () =>
      Promise.all(deps.stores.map((store) => deliverToStore(store, store.settings.verify, bundlePath, manifest, log, deps.signal, { sealedNow: true, progress: deps.progress }))),
    );
    deps.stores.forEach((store, i) => (stores[store.name] = outcomes[i]!));
    try {
      await writeStatus(boxDir, firstAttemptStatus(cfg, stores, now()));
    } catch (e) {
      // The stores hold what they committed whatever this file says: the run's result stands. Without
      // the file the outbox delivers again, and each store that holds the backup counts as delivered.
      log.error({ err: messageOf(e), dir: boxDir }, 'cannot record the deliveries in the outbox (status.json); the next outbox pass checks the stores again');
    }

    const failed = Object.entries(stores).filter(([, o]) => o.result === 'failed');
    if (failed.length > 0) {
      const [name, o] = failed[0]!;
      throw new BackupError(o.reason ?? 'upload-failed', `${failed.length} of ${deps.stores.length} stores failed; ${name}: ${o.error}`, {
        hint: 'the verified bundle stays in the outbox under workDir; fix the store and run the backup again',
      });
    }
    result.result = 'success';
    result.finishedAt = now().toISOString();
    log.info({ result: 'success', seconds: (Date.parse(result.finishedAt) - startedAt.getTime()) / 1000, size: manifest.object!.size }, 'backup run finished');
    return result;
  } catch (e) {
    await rm(runDir, { recursive: true, force: true }).catch(() => undefined);
    // A bundle that never got sealed with its manifest is not a backup: leave no trace of it.
    if (!result.manifest) await rm(boxDir, { recursive: true, force: true }).catch(() => undefined);
    return fail(result, e, log, now);
  } finally {
    await lock.release();
  }
}

/** What the run knows once the snapshot is taken and proven whole. */
interface TakenSnapshot {
  pre: PreflightOutcome;
  forced: boolean;
  artifacts: Awaited<ReturnType<Source['produce']>>;
  snap: Awaited<ReturnType<typeof inspectSnapshot>>;
  /** What etcd and the archive say about the cluster (best effort: src/run/cluster-metadata.ts). */
  metadata?: ClusterMetadata;
  signer?: Awaited<ReturnType<typeof loadSigningKey>>;
}

/** The preflight checks, each failed one logged. */
async function preflight(cfg: Config, req: BackupRequest, log: Logger, phase: PhaseTimer): Promise<{ pre: PreflightOutcome; forced: boolean }> {
  const pre = await phase('preflight', () => runPreflight(cfg));
  const forced = req.force === true && pre.blocking.length > 0;
  for (const c of pre.checks) if (!c.ok) log.warn({ check: c.name, detail: c.detail }, 'preflight check failed');
  return { pre, forced };
}

/** A blocking preflight failure ends the run, unless it is forced. */
function refuseUnlessForced(pre: PreflightOutcome, req: BackupRequest, log: Logger): void {
  if (pre.blocking.length === 0) return;
  if (!req.force) throw preflightError(pre.blocking);
  log.warn({ failed: pre.blocking.map((c) => c.name) }, 'preflight failed; going ahead because of --force');
}

/** The source, and the local proof of the snapshot (trailer and bbolt walk). */
async function takeVerifiedSnapshot(
  deps: RunDeps,
  req: BackupRequest,
  runDir: string,
  log: Logger,
  phase: PhaseTimer,
  /** etcd's db size from the preflight: about what the snapshot will weigh, the source's progress total. */
  estimate?: number,
): Promise<Pick<TakenSnapshot, 'artifacts' | 'snap'>> {
  await rm(runDir, { recursive: true, force: true });
  await mkdirPrivate(runDir);
  const progress = deps.progress;
  const artifacts = await phase('source', () =>
    metered(progress, 'source', { total: estimate }, async (m) => {
      const stop = progress ? pollSnapshotGrowth(runDir, m) : () => undefined;
      try {
        const a = await deps.source.produce({ runDir, log, force: req.force === true, signal: deps.signal });
        if (progress) await stat(a.snapshot).then((s) => m.set(s.size, s.size), () => undefined);
        return a;
      } finally {
        stop();
      }
    }),
  );

  const size = progress ? (await stat(artifacts.snapshot)).size : undefined;
  const snap = await phase('verify-local', () => metered(progress, 'verify-local', { total: size }, (m) => inspectSnapshot(artifacts.snapshot, { onProgress: m.add })));
  if (snap.trailer !== 'ok') {
    throw new BackupError('snapshot-corrupt', `snapshot ${artifacts.snapshot}: sha256 trailer ${snap.trailer}`, {
      hint: 'the snapshot file is damaged; check the disk under workDir and etcd logs, then run the backup again',
    });
  }
  log.info({ revision: snap.revision, totalKey: snap.totalKey, totalSize: snap.totalSize, hash: snap.hash }, 'snapshot verified');
  return { artifacts, snap };
}

type ManifestBase = Omit<Manifest, 'artifacts' | 'finishedAt' | 'object'>;

/** Everything the manifest says that is known before the bundle is written. Pure. */
export function manifestBase(cfg: Config, req: BackupRequest, sourceType: Source['type'], run: { id: string; at: Date; startedAt: Date }, taken: TakenSnapshot): ManifestBase {
  const { pre, forced, artifacts, snap, metadata } = taken;
  const members = manifestMembers(pre.etcd);
  const version = metadata?.version;
  const base: ManifestBase = {
    format: MANIFEST_FORMAT,
    id: run.id,
    cluster: cfg.cluster,
    node: cfg.node,
    trigger: req.trigger,
    ...(req.label ? { label: req.label } : {}),
    ...(req.reason ? { reason: req.reason } : {}),
    ...(req.slot ? { slot: req.slot.toISOString() } : {}),
    pinned: req.pin === true,
    createdAt: run.at.toISOString(),
    startedAt: run.startedAt.toISOString(),
    tool: { name: TOOL_NAME, version: VERSION },
    source: { type: sourceType, possiblyDirty: artifacts.possiblyDirty },
    preflight: { forced, failedChecks: pre.checks.filter((c) => !c.ok).map((c) => ({ name: c.name, detail: c.detail })) },
    etcd: {
      version: pre.etcd.version,
      clusterId: pre.etcd.clusterId,
      memberId: pre.etcd.memberId,
      leader: pre.etcd.leader,
      revision: snap.revision,
      totalKey: snap.totalKey,
      hash: snap.hash,
      totalSize: snap.totalSize,
    },
    ...(version?.version ? { clusterVersion: version.version } : {}),
    ...(version ? { clusterVersionFrom: version.from } : {}),
    ...(version?.desired ? { desiredVersion: version.desired } : {}),
    ...(members ? { members } : {}),
    ...(metadata?.staticPodRevisions ? { staticPodRevisions: metadata.staticPodRevisions } : {}),
  };
  stripUndefined(base.etcd);
  return base;
}

/**
 * Writes the bundle into the outbox entry, with the manifest inside it (its
 * artifacts and finish time: it is made while the tar is written), then the
 * sealed manifest next to it: the same plus the stored object, signed when a
 * key is set. From here on the backup exists on the node.
 */
async function sealInOutbox(
  cfg: Config,
  base: ManifestBase,
  files: string[],
  boxDir: string,
  signer: TakenSnapshot['signer'],
  now: () => Date,
  phase: PhaseTimer,
  progress?: ProgressSink,
): Promise<{ manifest: Manifest; bundlePath: string }> {
  const recipients = cfg.encryption.recipients;
  const encrypted = recipients.length > 0;
  const codec = cfg.compression.codec;
  await mkdirPrivate(boxDir);
  const bundlePath = outboxBundlePath(boxDir, { codec, encrypted });
  // The manifest inside the tar gets its artifacts and finish time while the tar is written.
  let embedded: Manifest | undefined;
  const inputBytes = progress ? (await Promise.all(files.map((f) => stat(f)))).reduce((n, s) => n + s.size, 0) : undefined;
  const bundle = await phase('bundle', () =>
    metered(progress, 'bundle', { total: inputBytes }, (m) =>
      writeBundle(bundlePath, files, (list) => {
        embedded = { ...base, finishedAt: now().toISOString(), artifacts: list } as Manifest;
        return serializeManifest(embedded);
      }, { recipients, codec, level: cfg.compression.level, onProgress: progress && m.add }),
    ).catch((e: NodeJS.ErrnoException) => {
      throw new BackupError('bundle-failed', `cannot write the bundle ${bundlePath}: ${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' '), {
        cause: e,
        hint: e.code === 'ENOSPC' ? 'workDir is full: free space there or raise preflight.freeSpaceFactor so preflight catches it' : undefined,
      });
    }),
  );
  const keys = objectKeys(cfg.cluster, base.id, { codec, encrypted });
  const unsigned: Manifest = {
    ...embedded!,
    artifacts: bundle.artifacts,
    object: { key: keys.object, size: bundle.size, sha256: bundle.sha256, encrypted, recipients: [...recipients], codec, rawSize: bundle.rawSize },
  };
  const manifest = signer ? signManifest(unsigned, signer) : unsigned;
  await writeFileAtomic(outboxManifestPath(boxDir), serializeManifest(manifest));
  return { manifest, bundlePath };
}

function fail(result: RunResult, e: unknown, log: Logger, now: () => Date): RunResult {
  result.result = 'failed';
  result.reason = reasonOf(e);
  result.error = messageOf(e);
  if (e instanceof BackupError && e.hint) result.hint = e.hint;
  result.finishedAt = now().toISOString();
  log.error({ result: 'failed', reason: result.reason, err: result.error }, 'backup run failed');
  return result;
}

function stripUndefined(o: Record<string, unknown>): void {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
}
