import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { parseManifest, type Manifest } from '../bundle/manifest.js';
import type { Config } from '../config/load.js';
import { parseDurationSeconds } from '../units/duration.js';
import { messageOf } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { outboxBundlePath, outboxDir, outboxEntryDir, outboxManifestPath, outboxStatusPath } from '../layout.js';
import type { Logger } from '../log.js';
import type { Store } from '../storage/store.js';
import { deliverToStore, type StoreOutcome } from './deliver.js';
import { isLockHeld } from './lock.js';

/** The sealed object in an outbox entry, named as in the stores (`backup.tar[.zst][.age]`). */
function bundleFile(dir: string, m: Manifest): string {
  return outboxBundlePath(dir, { codec: m.object?.codec, encrypted: m.object?.encrypted === true });
}

export interface DeliveryStatus extends StoreOutcome {
  attempts?: number;
  lastAttemptAt?: string;
  nextAttemptAt?: string;
}

export interface OutboxEntry {
  id: string;
  dir: string;
  manifest: Manifest;
  size: number;
  stores: Record<string, DeliveryStatus>;
  /** False while the sealing run has not recorded its deliveries (or it crashed before it could). */
  hasStatus: boolean;
}

export interface OutboxSummary {
  count: number; // bundles some store does not hold yet
  bytes: number;
  oldest?: Date;
}

async function readStatus(dir: string): Promise<Record<string, DeliveryStatus> | undefined> {
  try {
    return (JSON.parse(await readFile(outboxStatusPath(dir), 'utf8')) as { stores: Record<string, DeliveryStatus> }).stores ?? {};
  } catch {
    return undefined;
  }
}

export async function writeStatus(dir: string, stores: Record<string, DeliveryStatus>): Promise<void> {
  await writeFileAtomic(outboxStatusPath(dir), JSON.stringify({ stores }, null, 2) + '\n');
}

/** Every entry of the outbox, oldest first: the sealed ones, and those that are not (yet) usable. */
async function scanOutbox(workDir: string): Promise<{ entries: OutboxEntry[]; unusable: { id: string; dir: string; error: unknown }[] }> {
  const ids = (await readdir(outboxDir(workDir)).catch(() => [] as string[])).filter((n) => !n.startsWith('.')).sort();
  const entries: OutboxEntry[] = [];
  const unusable: { id: string; dir: string; error: unknown }[] = [];
  for (const id of ids) {
    const dir = outboxEntryDir(workDir, id);
    try {
      const manifest = parseManifest(await readFile(outboxManifestPath(dir)), `outbox ${id}`);
      const st = await stat(bundleFile(dir, manifest));
      if (st.size !== manifest.object?.size) throw new Error(`bundle is ${st.size} bytes, manifest says ${manifest.object?.size}`);
      const status = await readStatus(dir);
      entries.push({ id, dir, manifest, size: st.size, stores: status ?? {}, hasStatus: status !== undefined });
    } catch (error) {
      unusable.push({ id, dir, error });
    }
  }
  return { entries, unusable };
}

/**
 * Sealed bundles on this node, oldest first. Read-only: a directory without
 * a sealed manifest is skipped here (it is being sealed, or debris of a
 * crash that removeOutboxDebris clears), so a status query changes nothing.
 */
export async function listOutbox(cfg: Config): Promise<OutboxEntry[]> {
  return (await scanOutbox(cfg.workDir)).entries;
}

/**
 * Removes the outbox entries a crash left unusable (no sealed manifest, a
 * bundle that does not match it). Called before a delivery pass, under the
 * outbox lock; never while a run is alive.
 */
export async function removeOutboxDebris(cfg: Config, log: Logger): Promise<void> {
  for (const { id, dir, error } of (await scanOutbox(cfg.workDir)).unusable) {
    // While a run is alive this may be the entry it is sealing right now: leave it alone.
    if (await isLockHeld(cfg.workDir, 'run.lock')) continue;
    log.warn({ id, err: messageOf(error) }, 'removing unusable outbox entry (crash debris)');
    await rm(dir, { recursive: true, force: true });
  }
}

/** What the outbox still owes the stores: the backlog that metrics and status report. */
export async function outboxStatus(cfg: Config, storeNames: string[]): Promise<OutboxSummary> {
  return summarizeOutbox(await listOutbox(cfg), storeNames);
}

export function pendingStores(e: OutboxEntry, storeNames: string[]): string[] {
  return storeNames.filter((n) => e.stores[n]?.result !== 'success');
}

export function summarizeOutbox(entries: OutboxEntry[], storeNames: string[]): OutboxSummary {
  const pending = entries.filter((e) => pendingStores(e, storeNames).length > 0);
  return {
    count: pending.length,
    bytes: pending.reduce((a, e) => a + e.size, 0),
    oldest: pending[0] ? new Date(pending[0].manifest.createdAt) : undefined,
  };
}

function backoffSeconds(cfg: Config, attempts: number): number {
  const min = parseDurationSeconds(cfg.local.retryMin);
  const max = parseDurationSeconds(cfg.local.retryMax);
  return Math.min(max, min * 2 ** Math.max(0, attempts - 1));
}

/** The record of one attempt at one store: a failure waits out its backoff before the next. */
function attemptStatus(cfg: Config, outcome: StoreOutcome, attempts: number, at: Date): DeliveryStatus {
  return outcome.result === 'success'
    ? { ...outcome, attempts, lastAttemptAt: at.toISOString() }
    : { ...outcome, attempts, lastAttemptAt: at.toISOString(), nextAttemptAt: new Date(at.getTime() + backoffSeconds(cfg, attempts) * 1000).toISOString() };
}

/** What the run that sealed a bundle records of its own deliveries (attempt 1 at each store). */
export function firstAttemptStatus(cfg: Config, stores: Record<string, StoreOutcome>, at: Date): Record<string, DeliveryStatus> {
  const out: Record<string, DeliveryStatus> = {};
  for (const [name, o] of Object.entries(stores)) {
    out[name] = o.result === 'success' ? { ...o, attempts: 1 } : attemptStatus(cfg, o, 1, at);
  }
  return out;
}

export interface RetryDelivery {
  id: string;
  store: string;
  outcome: StoreOutcome;
}

/**
 * Delivers what the outbox still owes, oldest first, each (bundle, store)
 * pair on its own backoff. Must run under the outbox lock (deliverOutbox takes it), not the run lock. When a store comes
 * back, its backlog drains in order.
 */
export async function retryOutbox(cfg: Config, stores: Store[], log: Logger, opts: { now?: Date; force?: boolean; signal?: AbortSignal } = {}): Promise<RetryDelivery[]> {
  const now = opts.now ?? new Date();
  // An entry without status.json is being delivered by the run that sealed it, if a run is alive;
  // otherwise it is what a crash left behind, and ours to deliver.
  const runActive = await isLockHeld(cfg.workDir, 'run.lock');
  const names = stores.map((s) => s.name);
  const done: RetryDelivery[] = [];
  // Per store, bundles go in id order: once an older one is not delivered (backoff, failure),
  // younger ones wait for it, so a store that comes back gets its backlog oldest first.
  const blocked = new Set<string>();
  await removeOutboxDebris(cfg, log);
  for (const e of await listOutbox(cfg)) {
    if (opts.signal?.aborted) break;
    if (runActive && !e.hasStatus) continue;
    let changed = false;
    for (const name of pendingStores(e, names)) {
      const prev = e.stores[name];
      if (blocked.has(name)) continue;
      if (!opts.force && prev?.nextAttemptAt && Date.parse(prev.nextAttemptAt) > now.getTime()) {
        blocked.add(name);
        continue;
      }
      const store = stores.find((s) => s.name === name)!;
      log.info({ id: e.id, store: name, attempt: (prev?.attempts ?? 1) + 1 }, 'retrying delivery from the outbox');
      const outcome = await deliverToStore(store, store.settings.verify, bundleFile(e.dir, e.manifest), e.manifest, log, opts.signal);
      e.stores[name] = attemptStatus(cfg, outcome, (prev?.attempts ?? 1) + 1, now);
      changed = true;
      done.push({ id: e.id, store: name, outcome });
      // A store that fails now will fail for the younger bundles too: keep order, try again later.
      if (outcome.result === 'failed') blocked.add(name);
    }
    if (changed) {
      // The stores hold what they committed whatever this file says; without it the next pass asks them again.
      await writeStatus(e.dir, e.stores).catch((err: unknown) => log.error({ id: e.id, err: messageOf(err) }, 'cannot record the deliveries in the outbox (status.json)'));
    }
  }
  return done;
}

/**
 * Keeps `local.keep` delivered bundles for a fast restore and every bundle a
 * store still lacks, up to `local.maxPending`. Past that bound the oldest
 * undelivered bundle is dropped: loudly (error log, metric via the return
 * value), because a node whose disk fills up takes etcd down with it.
 */
export async function trimOutbox(cfg: Config, storeNames: string[], log: Logger): Promise<{ removed: string[]; dropped: string[] }> {
  const entries = (await listOutbox(cfg)).reverse(); // newest first
  const removed: string[] = [];
  const dropped: string[] = [];
  let keptDelivered = 0;
  let keptPending = 0;
  for (const e of entries) {
    const pending = pendingStores(e, storeNames);
    if (pending.length === 0) {
      if (keptDelivered++ < cfg.local.keep) continue;
      await rm(e.dir, { recursive: true, force: true });
      removed.push(e.id);
      log.info({ id: e.id }, 'removed delivered bundle from the outbox');
    } else {
      if (keptPending++ < cfg.local.maxPending) continue;
      await rm(e.dir, { recursive: true, force: true });
      dropped.push(e.id);
      log.error(
        { id: e.id, stores: pending, maxPending: cfg.local.maxPending },
        'DROPPED an undelivered backup from the outbox: stores have been failing for too long; fix them (see earlier errors) or raise local.maxPending',
      );
    }
  }
  return { removed, dropped };
}
