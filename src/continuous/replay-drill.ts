/**
 * The replay drill (DESIGN.md "Continuous backups"): proves that the chain
 * of continuous-backup segments under one full backup B1, replayed onto it,
 * gives exactly the next full backup B2, so that a restore to any TIME
 * between them would give what the cluster held.
 *
 *   choose   the pair (replay-pair.ts: the newest pair of consecutive usable
 *            full backups whose chain under B1 reaches rev(B2); a gap below
 *            rev(B2) fails the drill with `segment-gap`).
 *   replay   B1 restored into a throwaway etcd and the chain replayed onto
 *            it up to rev(B2) exactly, one txn per revision, then
 *            snapshotted: continuous/replay.ts, as `fetch --at` does (its
 *            own 0700 dir under the replay scratch dir, free loopback
 *            ports, low priority, every sha256 and signature checked).
 *   fetch    B2 fetched and checked as `fetch` does (every sha256, then the
 *            snapshot against its manifest).
 *   compare  both snapshots read natively (etcd/live-keys.ts), no second
 *            etcd: every live key at rev(B2), its value (by digest),
 *            create_revision, mod_revision and version, and the revision
 *            itself (the replayed snapshot must end at rev(B2)). Leases are
 *            not compared (post-base leases are replayed without them).
 *   stop     the drill dir (both snapshots: every Secret) removed, on
 *            success and failure; the replay removes its own.
 *
 * A difference fails with `drill-replay-mismatch`, naming the counts and
 * the first differing keys (keys only: values are Secrets).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { loadCatalog } from '../catalog/catalog.js';
import { checkSnapshot, fetchBackup } from '../catalog/fetch.js';
import { counts, loadTrust, type Trust } from '../catalog/trust.js';
import { loadIdentities } from '../bundle/encrypt.js';
import type { Config } from '../config/load.js';
import { replayDrillSettings } from '../drill/settings.js';
import { catalogCacheDir } from '../layout.js';
import type { BaseRef, ReplayPlan } from './plan.js';
import { replayToTime, type ReplayResult } from './replay.js';
import type { SegmentManifest } from './segment.js';
import { listSegments, type BaseSegments } from './segments.js';
import { BackupError, messageOf } from '../errors.js';
import { compareLiveKeys, readLiveKeys, type KeyspaceComparison } from '../etcd/live-keys.js';
import type { Logger } from '../log.js';
import type { Store } from '../storage/store.js';
import { createDrillDir } from '../drill/workdir.js';
import { type ReplayDrillResult, type ReplayDrillStep } from '../drill/replay-result.js';
import { candidatePairs, chooseReplayPair } from './replay-pair.js';

export interface ReplayDrillOptions {
  store: Store;
  cluster: string;
  trust: Trust;
  /** The catalog cache of this store. */
  cacheDir: string;
  /** Count backups and segments no trusted key signed (only with signing.trustedKeys). */
  allowUntrusted?: boolean;
  /** Only the pair whose later backup (B2) is this id. */
  endingAt?: string;
  /** B2 and both snapshots go into a fresh 0700 dir below this one (the drill scratch dir). */
  scratchDir: string;
  /** The throwaway etcd of the replay works below this one. */
  replayScratchDir: string;
  etcdBinary?: string;
  etcdctlBinary?: string;
  lowPriority?: boolean;
  identities?: string[];
  log: Logger;
  /** The whole drill; default 3600. */
  timeoutSeconds?: number;
  signal?: AbortSignal;
}

interface Choice {
  b1: Manifest;
  b2: Manifest;
  plan: ReplayPlan;
  manifests: ReadonlyMap<string, SegmentManifest>;
}

const DEFAULT_TIMEOUT_SECONDS = 3600;
const MISMATCH_HINT =
  'a restore to a time between these two backups would not give what the cluster held: do not rely on restores to a time from this chain; check the writer (etcd-backupd status, its log) and take a new full backup';

/** The pair and its segments; undefined when there is none to drill. */
async function choose(o: ReplayDrillOptions, signal: AbortSignal): Promise<Choice | undefined> {
  const cat = await loadCatalog(o.store, o.cluster, o.trust, { cacheDir: o.cacheDir, signal });
  const usable = cat.backups.filter((m) => o.allowUntrusted || counts(m, o.trust));
  const byId = new Map(usable.map((m) => [m.id, m]));
  const bases: BaseRef[] = usable.map((m) => ({ id: m.id, revision: m.etcd.revision, createdAt: new Date(m.createdAt) }));
  const pairs = candidatePairs(bases, o.endingAt);
  const segs = new Map<string, BaseSegments>();
  for (const p of pairs) if (!segs.has(p.b1.id)) segs.set(p.b1.id, await listSegments(o.store, o.cluster, p.b1.id, o.trust, o.allowUntrusted === true, signal));
  const c = chooseReplayPair(pairs, (id) => segs.get(id)?.refs ?? []);
  if (!c.ok && c.reason === 'no-pair') {
    o.log.info({ store: o.store.name, why: c.message }, 'replay drill: no pair of full backups to drill');
    return undefined;
  }
  if (!c.ok) {
    throw new BackupError('segment-gap', c.message, { hint: `restores to a time after revision ${c.missingFrom - 1} from base ${c.b1.id} are impossible; the writer's log says why it missed revisions ${c.missingFrom}-${c.missingTo}` });
  }
  return { b1: byId.get(c.b1.id)!, b2: byId.get(c.b2.id)!, plan: c.plan, manifests: segs.get(c.b1.id)!.manifests };
}

/** The comparison's failure: counts and the first keys, never a value. */
function mismatchError(c: Choice, cmp: KeyspaceComparison): BackupError {
  const keys = cmp.first.map((d) => `${d.key} (${d.what.join(', ')})`).join(', ');
  return new BackupError(
    'drill-replay-mismatch',
    `base ${c.b1.id} + its segments replayed to revision ${c.b2.etcd.revision} differ from the full backup ${c.b2.id}: ${cmp.missing} key(s) missing from the replay, ${cmp.extra} extra, ${cmp.changed} changed (of ${cmp.expectedKeys} in the backup, ${cmp.actualKeys} replayed); first: ${keys}`,
    { hint: MISMATCH_HINT },
  );
}

/** replay, fetch, compare; throws at the first failure. */
async function replayAndCompare(o: ReplayDrillOptions, c: Choice, dir: string, signal: AbortSignal, r: ReplayDrillResult, step: <T>(n: ReplayDrillStep, f: () => Promise<T>) => Promise<T>): Promise<void> {
  const rev = c.b2.etcd.revision;
  const replayed: ReplayResult = await step('replay', () =>
    replayToTime({ ...o, scratchDir: o.replayScratchDir, base: c.b1, plan: c.plan, manifests: c.manifests, to: join(dir, 'replayed'), signal }),
  );
  r.revisionsReplayed = replayed.revisionsReplayed;
  r.segmentsUsed = replayed.segmentsUsed;
  if (replayed.revisionReached !== rev) {
    throw new BackupError('drill-replay-mismatch', `base ${c.b1.id}: the chain replayed to revision ${replayed.revisionReached}, the full backup ${c.b2.id} is at ${rev}`, { hint: MISMATCH_HINT });
  }
  const next = await step('fetch', async () => {
    const f = await fetchBackup(o.store, c.b2, join(dir, 'next'), o.identities, signal);
    await checkSnapshot(c.b2, f.snapshot);
    return f.snapshot;
  });
  await step('compare', async () => {
    const [want, got] = await Promise.all([readLiveKeys(next, rev, signal), readLiveKeys(replayed.snapshot, rev, signal)]);
    r.keys = want.keys.size;
    if (got.lastRevision !== rev) {
      throw new BackupError('drill-replay-mismatch', `the snapshot of the replayed etcd ends at revision ${got.lastRevision}, the full backup ${c.b2.id} at ${rev}`, { hint: MISMATCH_HINT });
    }
    const cmp = compareLiveKeys(want.keys, got.keys);
    if (cmp.missing || cmp.extra || cmp.changed) {
      r.mismatch = cmp;
      throw mismatchError(c, cmp);
    }
    r.revision = rev;
  });
}

/** The failure a drill reports: the timeout or the caller's abort first (whatever the step made of it). */
function failureOf(e: unknown, signal: AbortSignal, timedOut: boolean, timeoutSeconds: number): BackupError {
  if (signal.aborted) {
    return timedOut
      ? new BackupError('drill-timeout', `the replay drill did not finish within ${timeoutSeconds}s`, { hint: 'raise drill.timeout or run the drill when the node is less busy' })
      : new BackupError('drill-aborted', 'the replay drill was stopped');
  }
  return e instanceof BackupError ? e : new BackupError('internal', `replay drill: ${messageOf(e)}`, { cause: e });
}

/**
 * Runs the replay drill; see the file comment. Never throws: the result
 * carries the reason of a failure, or `skipped` when there is no pair.
 * Everything it starts is stopped and everything it writes is removed.
 */
export async function runReplayDrill(o: ReplayDrillOptions): Promise<ReplayDrillResult> {
  const startedAt = new Date().toISOString();
  const log = o.log.child({ replayDrill: true });
  const r: ReplayDrillResult = { kind: 'replay', result: 'failed', steps: [], startedAt, finishedAt: '' };
  const timeoutSeconds = o.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  let timedOut = false;
  const ctl = new AbortController();
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, Math.min(2 ** 31 - 1, timeoutSeconds * 1000));
  const onAbort = () => ctl.abort();
  if (o.signal?.aborted) ctl.abort();
  else o.signal?.addEventListener('abort', onAbort, { once: true });
  const signal = ctl.signal;
  const step = async <T>(name: ReplayDrillStep, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      if (signal.aborted) throw new Error('aborted');
      return await f();
    } finally {
      r.steps.push({ name, seconds: (performance.now() - t0) / 1000 });
    }
  };
  let dir: string | undefined;
  try {
    const c = await step('choose', () => choose({ ...o, log }, signal));
    if (!c) {
      r.result = 'skipped';
      r.reason = 'not-found';
      r.error = `store ${o.store.name}: no pair of consecutive full backups whose continuous-backup chain reaches the later one's revision${o.endingAt ? ` (ending at ${o.endingAt})` : ''}`;
      return r;
    }
    r.base = c.b1.id;
    r.id = c.b2.id;
    log.info({ base: c.b1.id, next: c.b2.id, from: c.b1.etcd.revision, to: c.b2.etcd.revision, segments: c.plan.segments.length }, 'replay drill started');
    dir = await createDrillDir(o.scratchDir, c.b2, startedAt, log, (d) => (dir = d));
    await replayAndCompare({ ...o, log }, c, dir, signal, r, step);
    r.result = 'success';
  } catch (e) {
    const err = failureOf(e, signal, timedOut, timeoutSeconds);
    r.result = 'failed';
    r.reason = err.reason;
    r.error = err.message;
    if (err.hint) r.hint = err.hint;
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener('abort', onAbort);
    if (dir) {
      // Not through step(): the cleanup runs after an abort too.
      const t0 = performance.now();
      await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch((e) => log.error({ err: messageOf(e), dir }, 'replay drill: remove this directory by hand (it holds a copy of every Secret)'));
      r.steps.push({ name: 'stop', seconds: (performance.now() - t0) / 1000 });
    }
    r.finishedAt = new Date().toISOString();
  }
  const summary = { result: r.result, reason: r.reason, base: r.base, id: r.id, steps: Object.fromEntries(r.steps.map((s) => [s.name, Number(s.seconds.toFixed(3))])) };
  if (r.result === 'success') log.info({ ...summary, revision: r.revision, revisionsReplayed: r.revisionsReplayed, keys: r.keys }, 'replay drill passed');
  else if (r.result === 'failed') log.error({ ...summary, err: r.error, mismatch: r.mismatch }, 'replay drill failed');
  return r;
}

/** The scheduled replay drill of one store, with the options the config gives (the daemon hands it to the drill schedule). */
export async function scheduledReplayDrill(cfg: Config, log: Logger, store: Store, signal: AbortSignal): Promise<ReplayDrillResult> {
  const identities = cfg.drill.identityFile ? await loadIdentities(cfg.drill.identityFile) : undefined;
  return runReplayDrill({ ...(await replayDrillFrom(cfg, store)), ...(identities ? { identities } : {}), log, signal });
}

/** What every replay drill of this config against `store` starts from: the drill settings, the trust, the catalog cache (the schedule's and `verify --replay`'s). */
export async function replayDrillFrom(cfg: Config, store: Store) {
  return { ...replayDrillSettings(cfg), store, trust: await loadTrust(cfg), cacheDir: catalogCacheDir(cfg.workDir, store.name) };
}
