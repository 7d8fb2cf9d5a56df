import { resolve } from 'node:path';
import { type Config } from '../config/load.js';
import { BackupError, messageOf, reasonOf } from '../errors.js';
import { type Logger } from '../log.js';
import type { ControlRequest } from '../control/protocol.js';
import { setPinned } from '../catalog/pin.js';
import { pruneStore } from '../catalog/prune.js';
import type { ChainOutcome } from '../catalog/prune-chains.js';
import { formatPlanTable, parseSimulationInput, planRetention, planToJson } from '../retention/plan.js';
import { readFileSync } from 'node:fs';
import { findBackup, loadCatalog, loadCatalogFor, untrustedBackups } from '../catalog/catalog.js';
import { loadTrust } from '../catalog/trust.js';
import { isOpenToOthers } from '../fsutil.js';
import { fetchBackup, needIdentity, verifyBackup } from '../catalog/fetch.js';
import type { Manifest } from '../bundle/manifest.js';
import { loadIdentities } from '../bundle/encrypt.js';
import { type Store } from '../storage/index.js';
import { fmtBytes } from '../etcd/health.js';
import { formatClusterVersion } from '../etcd/cluster-version.js';
import { catalogCacheDir, verifyScratchDir } from '../layout.js';
import { common, configFrom, daemonCall, err, EXIT_FAILED, EXIT_OK, interruptSignal, out, parse, pickStore, printJson, table, UsageError, withProgress, withStores } from './io.js';
import { drillSettings, replaySettings } from '../drill/settings.js';
import { parseAt } from '../catalog/at.js';
import { verifyByReplay } from './replay-drill-cmd.js';
export async function cmdList(argv: string[]): Promise<number> {
  const { values } = parse(argv, common, 0);
  const cfg = configFrom(values);
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const cat = await loadCatalog(store, cfg.cluster, await loadTrust(cfg), { cacheDir: catalogCacheDir(cfg.workDir, store.name) });
    for (const p of cat.problems) err(`warning: skipping unreadable manifest ${p.key}: ${p.error}`);
    if (values.json) {
      printJson({
        store: store.name,
        backups: cat.backups.map((m) => ({
          id: m.id,
          createdAt: m.createdAt,
          node: m.node,
          size: m.object?.size ?? 0,
          revision: m.etcd.revision,
          totalKey: m.etcd.totalKey,
          label: m.label ?? null,
          // Absent when the manifest has none (older backups, clusters whose etcd holds no version): never a guess.
          ...(m.clusterVersion ? { clusterVersion: m.clusterVersion } : {}),
          ...(m.clusterVersionFrom ? { clusterVersionFrom: m.clusterVersionFrom } : {}),
          ...(m.desiredVersion ? { desiredVersion: m.desiredVersion } : {}),
          ...(m.members ? { members: m.members } : {}),
          ...(m.staticPodRevisions ? { staticPodRevisions: m.staticPodRevisions } : {}),
          pinned: m.pinned,
          ...(m.pinReason ? { pinReason: m.pinReason } : {}),
          signed: cat.signed.get(m.id) ?? 'none',
          trigger: m.trigger,
          ...(m.slot ? { slot: m.slot } : {}),
          encrypted: m.object?.encrypted ?? false,
          recipients: m.object?.recipients ?? [],
          forced: m.preflight.forced,
          // cluster-backup.sh --force: taken without the operator check, maybe mid-rollout.
          possiblyDirty: m.source.possiblyDirty,
        })),
        incomplete: cat.incomplete.map((i) => i.id),
        problems: cat.problems,
      });
      return EXIT_OK;
    }
    const rows = [['ID', 'Time', 'Node', 'Size', 'Revision', 'Version', 'Label', 'Pinned', 'Signed', 'Dirty']];
    for (const m of cat.backups) {
      const signed = cat.signed.get(m.id) ?? 'none';
      const mark = m.source.possiblyDirty ? 'POSSIBLY' : '';
      const pin = m.pinned ? (m.pinReason ? `yes: ${m.pinReason.length > 40 ? `${m.pinReason.slice(0, 39)}…` : m.pinReason}` : 'yes') : '';
      rows.push([m.id, m.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), m.node, fmtBytes(m.object?.size ?? 0), String(m.etcd.revision), formatClusterVersion(m.clusterVersion, m.desiredVersion), m.label ?? '', pin, signed === 'untrusted' ? 'UNTRUSTED' : signed, mark]);
    }
    out(table(rows));
    const dirty = cat.backups.filter((m) => m.source.possiblyDirty).length;
    if (dirty) out(`${dirty} backup(s) were taken with --force (files __POSSIBLY_DIRTY__): the operator check was skipped, a rollout may have been in progress; prefer a clean one to restore`);
    const untrusted = untrustedBackups(cat).length;
    if (untrusted) err(`warning: ${untrusted} backup(s) carry no signature by a trusted key: someone who can write the store may have planted them; latest, verify, fetch and retention ignore them`);
    out(`${cat.backups.length} backup${cat.backups.length === 1 ? '' : 's'} in store ${store.name}${cat.incomplete.length ? `, ${cat.incomplete.length} incomplete (no manifest)` : ''}`);
    return EXIT_OK;
  });
}

export async function cmdVerify(argv: string[], log: Logger): Promise<number> {
  const { values, positionals } = parse(argv, { ...common, restore: { type: 'boolean' }, replay: { type: 'boolean' }, identity: { type: 'string' }, 'allow-untrusted': { type: 'boolean' } }, 1);
  if (values.restore && values.replay) throw new UsageError('--restore and --replay are two drills: run one at a time');
  const cfg = configFrom(values);
  const identities = typeof values.identity === 'string' ? await loadIdentities(values.identity) : undefined;
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    if (values.replay) return verifyByReplay(cfg, store, positionals[0]!, { identities, allowUntrusted: values['allow-untrusted'] === true, json: values.json === true, log });
    const m = findBackup(await loadCatalogFor(store, cfg.cluster, positionals[0]!, await loadTrust(cfg), { cacheDir: catalogCacheDir(cfg.workDir, store.name) }), positionals[0]!, store.name, { allowUntrusted: values['allow-untrusted'] === true });
    if (values.restore) return verifyByRestore(cfg, store, m, identities, values.json === true, log);
    try {
      const r = await withProgress(values.json === true, (progress) => verifyBackup(store, m, verifyScratchDir(cfg.workDir), identities, progress));
      if (values.json) printJson({ ...r, result: 'ok', store: store.name });
      else if (r.snapshot) {
        out(`backup ${m.id} in store ${store.name} is good: object sha256, ${m.artifacts.length} artifact sha256s, snapshot trailer and structure (revision ${r.snapshot.revision}, ${r.snapshot.totalKey} keys) all match`);
      } else {
        out(`backup ${m.id} in store ${store.name}: the encrypted object's size and sha256 match; pass --identity FILE to check the contents and the snapshot too`);
      }
      return EXIT_OK;
    } catch (e) {
      if (values.json) printJson({ id: m.id, result: 'failed', store: store.name, reason: reasonOf(e), error: messageOf(e) });
      throw e;
    }
  });
}

/** A restore drill on demand: the backup restored into a throwaway etcd and checked against its manifest. */
export async function verifyByRestore(cfg: Config, store: Store, m: Manifest, identities: string[] | undefined, json: boolean, log: Logger): Promise<number> {
  if (m.object?.encrypted && !identities?.length) throw needIdentity(m);
  const { runRestoreDrill } = await import('../drill/drill.js');
  const signal = interruptSignal();
  const r = await withProgress(json, (progress) => runRestoreDrill({ store, manifest: m, ...drillSettings(cfg), identities, log, signal, progress }));
  if (json) printJson({ ...r, store: store.name });
  else {
    const steps = r.steps.map((s) => `${s.name} ${s.seconds.toFixed(1)}s`).join(', ');
    if (r.result === 'success') {
      out(`backup ${m.id} restores: a throwaway etcd served revision ${r.revision} with ${r.liveKeys} keys, ${r.sampled} sampled keys read, KV hash matches (${steps})`);
    } else {
      err(`backup ${m.id} does NOT restore (${r.reason}): ${r.error}`);
      if (r.hint) err(`  what to do: ${r.hint}`);
      err(`  steps: ${steps}`);
    }
  }
  return r.result === 'success' ? EXIT_OK : EXIT_FAILED;
}

export async function cmdFetch(argv: string[], log: Logger): Promise<number> {
  const { values, positionals } = parse(argv, { ...common, to: { type: 'string' }, at: { type: 'string' }, identity: { type: 'string' }, 'allow-untrusted': { type: 'boolean' } }, 1);
  if (typeof values.to !== 'string' || !values.to) throw new UsageError('--to DIR is required');
  if (typeof values.at === 'string' && positionals[0] !== 'latest') throw new UsageError('--at picks the backup by time: give `latest` as the backup, not an id');
  const cfg = configFrom(values);
  const identities = typeof values.identity === 'string' ? await loadIdentities(values.identity) : undefined;
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const to = resolve(String(values.to));
    // An existing directory is never changed; the files are 0600 whatever it allows.
    if (await isOpenToOthers(to)) err(`warning: ${to} is open to other users; the fetched files are 0600, but a private directory (0700) is safer for a snapshot holding every Secret`);
    if (typeof values.at === 'string') return fetchAt(cfg, store, parseAt(values.at, new Date()), to, identities, values, log);
    const m = findBackup(await loadCatalogFor(store, cfg.cluster, positionals[0]!, await loadTrust(cfg), { cacheDir: catalogCacheDir(cfg.workDir, store.name) }), positionals[0]!, store.name, { allowUntrusted: values['allow-untrusted'] === true });
    const signal = interruptSignal();
    const r = await withProgress(values.json === true, (progress) => fetchBackup(store, m, to, identities, signal, progress));
    if (values.json) printJson({ id: r.id, result: 'success', dir: r.dir, files: r.files, snapshot: r.snapshot, revision: m.etcd.revision });
    else {
      const version = formatClusterVersion(m.clusterVersion, m.desiredVersion);
      out(`fetched backup ${m.id} (${m.createdAt}, revision ${m.etcd.revision}${version ? `, cluster version ${version}` : ''}${m.label ? `, label ${m.label}` : ''}) into ${r.dir}; every sha256 matches the manifest:`);
      for (const f of r.files) out(`  ${f}`);
      out(`restore: on OpenShift run /usr/local/bin/cluster-restore.sh ${r.dir} on the recovery host; elsewhere: etcdctl snapshot restore ${r.snapshot} ...`);
    }
    return EXIT_OK;
  });
}

/** `fetch latest --at TIME`: the base, and the segments replayed onto it up to TIME (src/continuous/at-time.ts). */
async function fetchAt(cfg: Config, store: Store, at: Date, to: string, identities: string[] | undefined, values: Record<string, unknown>, log: Logger): Promise<number> {
  // Loaded on demand: the replay talks gRPC to its throwaway etcd, and other commands need not load it.
  const { atTimeJson, atTimeSummary, chooseAtTime, materializeAt } = await import('../continuous/at-time.js');
  const choice = await chooseAtTime({ store, cluster: cfg.cluster, trust: await loadTrust(cfg), cacheDir: catalogCacheDir(cfg.workDir, store.name), at, allowUntrusted: values['allow-untrusted'] === true });
  if (choice.base.object?.encrypted && !identities?.length) throw needIdentity(choice.base);
  const r = await materializeAt(choice, { store, to, identities, ...replaySettings(cfg), log, signal: interruptSignal() });
  if (values.json) {
    printJson({ id: r.base.id, result: 'success', dir: to, files: r.files, snapshot: r.snapshot, revision: r.revisionReached, ...atTimeJson(r, at) });
    return EXIT_OK;
  }
  out(atTimeSummary(r, at));
  for (const f of r.files) out(`  ${f}`);
  out(`restore: on OpenShift run /usr/local/bin/cluster-restore.sh ${to} on the recovery host; elsewhere: etcdctl snapshot restore ${r.snapshot} ...`);
  return EXIT_OK;
}

export async function cmdPrune(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, { ...common, 'dry-run': { type: 'boolean' } }, 0);
  const cfg = configFrom(values);
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const r = await pruneStore(cfg, store, log, { dryRun: values['dry-run'] === true, trust: await loadTrust(cfg) });
    if (values.json) {
      const waitingForLock = r.waitingForLock.map((w) => ({ id: w.id, until: w.until.toISOString(), ...(w.incomplete ? { incomplete: true } : {}), ...(w.estimated ? { estimated: true } : {}) }));
      const continuous = r.chains.map((c) => ({ base: c.base, objects: c.objects, ...(c.newestAt ? { newestAt: c.newestAt.toISOString() } : {}), ...(c.keep ? { keep: c.keep } : { deleted: c.deleted === true }) }));
      printJson({ store: store.name, dryRun: values['dry-run'] === true, ...planToJson(r.plan), incomplete: r.incomplete, continuous, waitingForLock, errors: r.errors });
    } else {
      out(`${values['dry-run'] ? 'plan (dry run, nothing deleted)' : 'pruned'} for node ${cfg.node} in store ${store.name}:`);
      out(formatPlanTable(r.plan));
      if (r.incomplete.length) out(`incomplete backups (no manifest, older than the grace period) ${values['dry-run'] ? 'to remove' : 'removed'}: ${r.incomplete.join(', ')}`);
      for (const line of chainLines(r.chains, values['dry-run'] === true)) out(line);
      // Not an error: the lock is the store's policy; a prune after the date removes them.
      for (const w of r.waitingForLock) out(`waiting for its object lock: ${w.id}${w.incomplete ? ' (incomplete)' : ''} is locked until ${w.estimated ? 'at least ' : ''}${w.until.toISOString()}; not deleted`);
      for (const e of r.errors) err(`error: ${e}`);
    }
    return r.errors.length ? EXIT_FAILED : EXIT_OK;
  });
}

/** What continuous.keepWithin decided, one line per chain of segments (none when it is unset). */
function chainLines(chains: ChainOutcome[], dryRun: boolean): string[] {
  return chains.map((c) => {
    const what = `continuous-backup segments of ${c.base} (${c.objects}${c.newestAt ? ` objects, newest stored ${c.newestAt.toISOString()}` : '+ objects'})`;
    if (c.keep) return `${what}: kept (${c.keep})`;
    return `${what}: ${dryRun ? 'to delete (older than continuous.keepWithin)' : c.deleted ? 'deleted (older than continuous.keepWithin)' : 'not deleted'}`;
  });
}

export async function cmdRetention(argv: string[]): Promise<number> {
  const { values } = parse(argv, { config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, simulate: { type: 'string' }, now: { type: 'string' } }, 0);
  const cfg = configFrom(values);
  if (typeof values.simulate !== 'string') throw new UsageError('--simulate FILE is required (one ISO-8601 time per line)');
  let text: string;
  try {
    text = readFileSync(values.simulate, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${values.simulate}: ${(e as NodeJS.ErrnoException).code ?? messageOf(e)}`);
  }
  let items;
  try {
    items = parseSimulationInput(text);
  } catch (e) {
    throw new UsageError(`${values.simulate}: ${messageOf(e)}`);
  }
  const now = values.now === undefined ? new Date() : new Date(String(values.now));
  if (Number.isNaN(now.getTime())) throw new UsageError(`--now: "${values.now}" is not an ISO-8601 time`);
  const plan = planRetention(items, cfg.retention, now, cfg.timezone);
  if (values.json) printJson(planToJson(plan));
  else out(formatPlanTable(plan));
  return EXIT_OK;
}

async function latestId(cfg: Config, store: Store): Promise<string> {
  const cat = await loadCatalogFor(store, cfg.cluster, 'latest', await loadTrust(cfg), { cacheDir: catalogCacheDir(cfg.workDir, store.name) });
  return findBackup(cat, 'latest', store.name).id;
}

export async function cmdPin(argv: string[], pinned: boolean): Promise<number> {
  const { values, positionals } = parse(argv, { ...common, reason: { type: 'string' } }, 1);
  const cfg = configFrom(values);
  // `latest` as verify and fetch take it: the newest (trusted) backup of the chosen store.
  const id = positionals[0] === 'latest' ? await withStores(cfg, async (stores) => latestId(cfg, pickStore(cfg, stores, values.store))) : positionals[0]!;
  const req: ControlRequest = pinned ? { op: 'pin', id, reason: values.reason as string | undefined } : { op: 'unpin', id };
  const viaDaemon = await daemonCall(cfg, req, true);
  let data: unknown;
  if (viaDaemon) {
    if (viaDaemon.type === 'error') throw new BackupError(viaDaemon.reason as never, viaDaemon.message, { hint: viaDaemon.hint });
    data = viaDaemon.type === 'result' ? viaDaemon.data : undefined;
  } else {
    data = await withStores(cfg, (stores) => setPinned(cfg, stores, id, pinned, values.reason as string | undefined));
  }
  if (values.json) printJson(data);
  else out(`${pinned ? 'pinned' : 'unpinned'} ${id}${pinned ? ': retention keeps it until you unpin it' : ': retention may now prune it'}`);
  return EXIT_OK;
}
