#!/usr/bin/env -S node --initial-old-space-size=64 --max-semi-space-size=1
// --initial-old-space-size: without it V8 shrinks its old-generation limit to the small heap it sees
// while a bundle is written, and the upload that follows (ssh2 allocates a buffer per 32 KiB
// packet) then runs a full GC every ~100 ms: +50 % CPU for an SFTP upload (measured, see
// bench/results/2026-11-25-experiments-heap.md). It costs ~30 MiB of peak RSS, a constant.
// --max-semi-space-size=1: the streams allocate a fresh buffer per chunk, and their dead
// ArrayBuffers are freed only when a young-generation GC runs; with the default 16 MiB young
// generation 60-80 MiB of them piled up. A 1 MiB one frees them every MiB of small objects:
// peak RSS -40 to -60 MiB and 5-20 % less CPU per phase (bench/results/2026-11-26-memory.md).
// Flags V8 only reads at start-up, hence the shebang (env -S: GNU coreutils 8.30+), the same in
// the packaged bundle and the single executable's execArgv.
import { writeSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, redactConfig, type Config } from './config/load.js';
import { BackupError, messageOf, reasonOf } from './errors.js';
import { inspectSnapshot } from './etcd/snapshot.js';
import { createLogger, type Logger } from './log.js';
import type { RunResult } from './run/backup.js';
import { runCycle } from './run/cycle.js';
import { backupJson } from './run/report.js';
import { callDaemon } from './control/client.js';
import type { ControlEvent, ControlRequest } from './control/protocol.js';
import { setPinned } from './catalog/pin.js';
import { pruneStore } from './catalog/prune.js';
import { formatPlanTable, parseSimulationInput, planRetention, planToJson } from './retention/plan.js';
import { readFileSync } from 'node:fs';
import { findBackup, loadCatalog, untrustedBackups } from './catalog/catalog.js';
import { loadTrust } from './catalog/trust.js';
import { isOpenToOthers } from './fsutil.js';
import { configWarnings } from './config/warnings.js';
import { fetchBackup, needIdentity, verifyBackup } from './catalog/fetch.js';
import type { Manifest } from './bundle/manifest.js';
import { parseDurationSeconds } from './units/duration.js';
import { loadIdentities } from './bundle/encrypt.js';
import { createSource } from './source/index.js';
import { createStores, type Store } from './storage/index.js';
import { fmtBytes } from './etcd/health.js';
import { stringify as yamlStringify } from 'yaml';
import { TOOL_NAME, VERSION } from './version.js';
import { drillScratchDir, verifyScratchDir } from './layout.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

const USAGE = `etcd-backupd ${VERSION} - verified etcd backups for control-plane nodes

Usage:
  etcd-backupd backup    --config F [--label L] [--reason T] [--pin] [--force] [--json]
  etcd-backupd list      --config F [--store S] [--json]
  etcd-backupd verify    --config F [--store S] ID|latest [--restore] [--identity FILE] [--allow-untrusted] [--json]
  etcd-backupd fetch     --config F [--store S] ID|latest --to DIR [--identity FILE] [--allow-untrusted] [--json]
  etcd-backupd prune     --config F [--store S] [--dry-run] [--json]
  etcd-backupd retention --config F --simulate FILE [--now ISO] [--json]
  etcd-backupd pin|unpin --config F ID [--reason T]
  etcd-backupd run       --config F                  # the daemon
  etcd-backupd inspect   SNAPSHOT.db|BUNDLE [--identity FILE] [--json]
  etcd-backupd keygen    --out PREFIX [--json]      # signing key pair: PREFIX (private) and PREFIX.pub
  etcd-backupd check-config --config F
  etcd-backupd --version [--json]                  # names the Node version too

Exit codes: 0 success, 1 the operation failed, 2 bad usage or config.
`;

/**
 * Writes all of `text`, however long and however slow the reader: writeSync
 * to a pipe writes what fits (a partial write) or fails with EAGAIN when the
 * pipe is non-blocking and full. Without the loop a long message lost its
 * tail, `reason:` line included.
 */
function writeAllSync(fd: number, text: string): void {
  const buf = Buffer.from(text.endsWith('\n') ? text : text + '\n');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 2); // the reader has not caught up: wait a moment, synchronously
    }
  }
}
function out(text: string): void {
  writeAllSync(1, text);
}
function err(text: string): void {
  writeAllSync(2, text);
}
function printJson(v: unknown): void {
  out(JSON.stringify(v, null, 2));
}

class UsageError extends BackupError {
  constructor(msg: string) {
    super('usage', msg, { hint: 'run `etcd-backupd --help` for usage' });
  }
}

type Opts = NonNullable<ParseArgsConfig['options']>;
const common: Opts = { config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, store: { type: 'string' } };

function parse(argv: string[], options: Opts, positionals: number) {
  let r;
  try {
    r = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(messageOf(e));
  }
  if (r.positionals.length !== positionals) {
    throw new UsageError(positionals === 0 ? `unexpected argument ${r.positionals[0]}` : `expected ${positionals} argument(s), got ${r.positionals.length}`);
  }
  return { values: r.values as Record<string, string | boolean | undefined>, positionals: r.positionals };
}

function configFrom(values: Record<string, unknown>): Config {
  const file = values.config ?? process.env.ETCD_BACKUPD_CONFIG;
  if (typeof file !== 'string' || !file) throw new UsageError('--config FILE is required (or set ETCD_BACKUPD_CONFIG)');
  return loadConfig(file);
}

function pickStore(cfg: Config, stores: Store[], name: unknown): Store {
  if (name === undefined) return stores[0]!;
  const s = stores.find((x) => x.name === name);
  if (!s) throw new UsageError(`no store named ${String(name)}; configured: ${cfg.stores.map((x) => x.name).join(', ')}`);
  return s;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(rows[0]!), sep, ...rows.slice(1).map(line), sep].join('\n');
}

async function withStores<T>(cfg: Config, fn: (stores: Store[]) => Promise<T>): Promise<T> {
  const stores = await createStores(cfg.stores);
  try {
    return await fn(stores);
  } finally {
    await Promise.all(stores.map((s) => s.close?.()));
  }
}

async function cmdBackup(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, { ...common, label: { type: 'string' }, reason: { type: 'string' }, pin: { type: 'boolean' }, force: { type: 'boolean' } }, 0);
  const cfg = configFrom(values);
  if (values.label !== undefined && !/^[A-Za-z0-9._-]{1,63}$/.test(String(values.label))) {
    throw new UsageError('--label: expected 1-63 characters of letters, digits, ".", "_" or "-"');
  }
  const req = {
    label: values.label as string | undefined,
    reason: values.reason as string | undefined,
    pin: values.pin === true,
    force: values.force === true,
  };
  // A running daemon does the work itself: same lock, state and metrics.
  const viaDaemon = await daemonCall(cfg, { op: 'backup', ...req }, values.json === true);
  if (viaDaemon) {
    if (viaDaemon.type === 'error') throw new BackupError(viaDaemon.reason as never, viaDaemon.message, { hint: viaDaemon.hint });
    if (viaDaemon.type !== 'result') return EXIT_FAILED;
    const doc = viaDaemon.data as BackupDoc;
    if (values.json) printJson(doc);
    else printBackupHuman(doc);
    return viaDaemon.exitCode;
  }
  const result = await withStores(cfg, async (stores) => (await runCycle(cfg, { source: createSource(cfg), stores, log }, { trigger: 'manual', ...req })).run);
  const doc = backupJson(result) as BackupDoc;
  if (values.json) printJson(doc);
  else printBackupHuman(doc);
  return result.result === 'success' ? EXIT_OK : EXIT_FAILED;
}

/** Sends a request to the daemon when one listens; its log lines are echoed to stderr as they come. */
async function daemonCall(cfg: Config, req: ControlRequest, quiet: boolean): Promise<ControlEvent | undefined> {
  if (process.env.ETCD_BACKUPD_NO_DAEMON === '1') return undefined;
  return callDaemon(cfg.control.socket, req, (e) => {
    if (e.type === 'log' && !quiet) err(`[daemon] ${String(e.msg)}${e.reason ? ` (${String(e.reason)})` : ''}`);
    else if (e.type === 'log') err(JSON.stringify(e));
  });
}

type BackupDoc = Pick<RunResult, 'id' | 'result' | 'reason' | 'error' | 'hint' | 'stores' | 'preflight'> & { size?: number; revision?: number; totalKey?: number };

function printBackupHuman(r: BackupDoc): void {
  if (r.result === 'success') {
    out(`backup ${r.id} succeeded: ${fmtBytes(r.size ?? 0)}, etcd revision ${r.revision}, ${r.totalKey} keys`);
  } else {
    err(`backup ${r.id} FAILED (${r.reason}): ${r.error}`);
    if (r.hint) err(`  what to do: ${r.hint}`);
  }
  for (const [name, o] of Object.entries(r.stores ?? {})) {
    if (o.result === 'success') out(`  store ${name}: verified ${o.key}`);
    else err(`  store ${name}: failed (${o.reason}): ${o.error}`);
  }
  for (const c of r.preflight?.checks ?? []) if (!c.ok) err(`  preflight ${c.name}: ${c.detail}${r.preflight?.forced ? ' (forced)' : ''}`);
}

async function cmdList(argv: string[]): Promise<number> {
  const { values } = parse(argv, common, 0);
  const cfg = configFrom(values);
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const cat = await loadCatalog(store, cfg.cluster, await loadTrust(cfg));
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
          pinned: m.pinned,
          ...(m.pinReason ? { pinReason: m.pinReason } : {}),
          signed: cat.signed.get(m.id) ?? 'none',
          trigger: m.trigger,
          encrypted: m.object?.encrypted ?? false,
          recipients: m.object?.recipients ?? [],
          forced: m.preflight.forced,
        })),
        incomplete: cat.incomplete.map((i) => i.id),
        problems: cat.problems,
      });
      return EXIT_OK;
    }
    const rows = [['ID', 'Time', 'Node', 'Size', 'Revision', 'Label', 'Pinned', 'Signed']];
    for (const m of cat.backups) {
      const signed = cat.signed.get(m.id) ?? 'none';
      rows.push([m.id, m.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), m.node, fmtBytes(m.object?.size ?? 0), String(m.etcd.revision), m.label ?? '', m.pinned ? 'yes' : '', signed === 'untrusted' ? 'UNTRUSTED' : signed]);
    }
    out(table(rows));
    const untrusted = untrustedBackups(cat).length;
    if (untrusted) err(`warning: ${untrusted} backup(s) carry no signature by a trusted key: someone who can write the store may have planted them; latest, verify, fetch and retention ignore them`);
    out(`${cat.backups.length} backups in store ${store.name}${cat.incomplete.length ? `, ${cat.incomplete.length} incomplete (no manifest)` : ''}`);
    return EXIT_OK;
  });
}

async function cmdVerify(argv: string[], log: Logger): Promise<number> {
  const { values, positionals } = parse(argv, { ...common, restore: { type: 'boolean' }, identity: { type: 'string' }, 'allow-untrusted': { type: 'boolean' } }, 1);
  const cfg = configFrom(values);
  const identities = typeof values.identity === 'string' ? await loadIdentities(values.identity) : undefined;
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const m = findBackup(await loadCatalog(store, cfg.cluster, await loadTrust(cfg)), positionals[0]!, store.name, { allowUntrusted: values['allow-untrusted'] === true });
    if (values.restore) return verifyByRestore(cfg, store, m, identities, values.json === true, log);
    try {
      const r = await verifyBackup(store, m, verifyScratchDir(cfg.workDir), identities);
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

/** Ctrl-C / SIGTERM abort the operation; it cleans up after itself (a drill stops its etcd and removes its files). */
function interruptSignal(): AbortSignal {
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  process.once('SIGTERM', () => ac.abort());
  return ac.signal;
}

/** A restore drill on demand: the backup restored into a throwaway etcd and checked against its manifest. */
async function verifyByRestore(cfg: Config, store: Store, m: Manifest, identities: string[] | undefined, json: boolean, log: Logger): Promise<number> {
  if (m.object?.encrypted && !identities?.length) throw needIdentity(m);
  const { runRestoreDrill } = await import('./drill/drill.js');
  const r = await runRestoreDrill({
    store,
    manifest: m,
    scratchDir: drillScratchDir(cfg.workDir),
    etcdBinary: cfg.drill.etcd,
    etcdctlBinary: cfg.drill.etcdctl,
    timeoutSeconds: parseDurationSeconds(cfg.drill.timeout),
    sampleKeys: cfg.drill.sampleKeys,
    identities,
    log,
    signal: interruptSignal(),
  });
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

async function cmdFetch(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...common, to: { type: 'string' }, identity: { type: 'string' }, 'allow-untrusted': { type: 'boolean' } }, 1);
  if (typeof values.to !== 'string' || !values.to) throw new UsageError('--to DIR is required');
  const cfg = configFrom(values);
  const identities = typeof values.identity === 'string' ? await loadIdentities(values.identity) : undefined;
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const m = findBackup(await loadCatalog(store, cfg.cluster, await loadTrust(cfg)), positionals[0]!, store.name, { allowUntrusted: values['allow-untrusted'] === true });
    const to = resolve(String(values.to));
    // An existing directory is never changed; the files are 0600 whatever it allows.
    if (await isOpenToOthers(to)) err(`warning: ${to} is open to other users; the fetched files are 0600, but a private directory (0700) is safer for a snapshot holding every Secret`);
    const r = await fetchBackup(store, m, to, identities, interruptSignal());
    if (values.json) printJson({ id: r.id, result: 'success', dir: r.dir, files: r.files, snapshot: r.snapshot, revision: m.etcd.revision });
    else {
      out(`fetched backup ${m.id} (${m.createdAt}, revision ${m.etcd.revision}) into ${r.dir}; every sha256 matches the manifest:`);
      for (const f of r.files) out(`  ${f}`);
      out(`restore: on OpenShift run /usr/local/bin/cluster-restore.sh ${r.dir} on the recovery host; elsewhere: etcdctl snapshot restore ${r.snapshot} ...`);
    }
    return EXIT_OK;
  });
}

async function cmdPrune(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, { ...common, 'dry-run': { type: 'boolean' } }, 0);
  const cfg = configFrom(values);
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const r = await pruneStore(cfg, store, log, { dryRun: values['dry-run'] === true, trust: await loadTrust(cfg) });
    if (values.json) {
      printJson({ store: store.name, dryRun: values['dry-run'] === true, ...planToJson(r.plan), incomplete: r.incomplete, errors: r.errors });
    } else {
      out(`${values['dry-run'] ? 'plan (dry run, nothing deleted)' : 'pruned'} for node ${cfg.node} in store ${store.name}:`);
      out(formatPlanTable(r.plan));
      if (r.incomplete.length) out(`incomplete backups (no manifest, older than the grace period) ${values['dry-run'] ? 'to remove' : 'removed'}: ${r.incomplete.join(', ')}`);
      for (const e of r.errors) err(`error: ${e}`);
    }
    return r.errors.length ? EXIT_FAILED : EXIT_OK;
  });
}

async function cmdRetention(argv: string[]): Promise<number> {
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

async function cmdPin(argv: string[], pinned: boolean): Promise<number> {
  const { values, positionals } = parse(argv, { ...common, reason: { type: 'string' } }, 1);
  const cfg = configFrom(values);
  const id = positionals[0]!;
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

/**
 * The daemon. SIGHUP reloads the config file: the services stop (a run in
 * progress is waited for, as at shutdown) and start again with the new
 * config; a config that does not validate is logged and the running one
 * stays. SIGTERM/SIGINT stop it.
 */
async function cmdRun(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, { config: { type: 'string', short: 'c' } }, 0);
  let cfg = configFrom(values);
  const { startDaemon } = await import('./daemon/index.js');
  let d: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let stopping = false;
  let reloading: Promise<void> | undefined;
  let hupPending = false;
  const reload = async () => {
    let next: Config;
    try {
      next = loadConfig(cfg.configPath!);
    } catch (e) {
      log.error({ reason: reasonOf(e), err: messageOf(e) }, 'SIGHUP: the config file does not validate; the daemon keeps running with the configuration it has');
      return;
    }
    log.info({ config: cfg.configPath }, 'SIGHUP: reloading the configuration');
    await d!.stop();
    if (stopping) return;
    try {
      d = await startDaemon(next, log);
      cfg = next;
    } catch (e) {
      log.error({ reason: reasonOf(e), err: messageOf(e) }, 'SIGHUP: cannot start with the new configuration; starting again with the previous one');
      d = await startDaemon(cfg, log);
    }
  };
  // A SIGHUP while starting or reloading is not lost: it triggers one more reload afterwards
  // (and is never left to its default action, which kills the process).
  const onHup = () => {
    if (stopping) return;
    hupPending = true;
    if (!d || reloading) return;
    reloading = (async () => {
      while (hupPending && !stopping) {
        hupPending = false;
        await reload();
      }
    })().finally(() => (reloading = undefined));
  };
  process.on('SIGHUP', onHup);
  d = await startDaemon(cfg, log);
  if (hupPending) onHup();
  const onSignal = (sig: string) => {
    log.info({ signal: sig }, 'shutting down');
    stopping = true;
    void (reloading ?? Promise.resolve()).then(() => d!.stop());
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  for (;;) {
    await d.done;
    const r = reloading;
    if (!r) break;
    await r;
    if (stopping) {
      await d.stop();
      break;
    }
  }
  return EXIT_OK;
}

/**
 * A snapshot file, or a bundle as stored (`backup.tar`, `.tar.zst`,
 * `.tar.zst.age` with --identity): for a bundle, the snapshot inside it is
 * extracted to a private temp directory and inspected.
 */
async function cmdInspect(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' }, identity: { type: 'string' } }, 1);
  const path = positionals[0]!;
  const { openBundle, sniffFile } = await import('./bundle/open-bundle.js');
  const kind = await sniffFile(path);
  const bundle = kind === 'snapshot' || kind === 'unknown' ? undefined : await openBundle(path, kind, typeof values.identity === 'string' ? await loadIdentities(values.identity) : undefined);
  try {
    // An unknown file may be a snapshot whose first meta page is damaged: the snapshot check says what is wrong with it.
    const r = await inspectSnapshot(bundle?.snapshot ?? path).catch((e: unknown) => {
      if (kind !== 'unknown') throw e;
      throw new BackupError(reasonOf(e) === 'internal' ? 'snapshot-corrupt' : reasonOf(e), `${messageOf(e)} (and it is not a bundle of this tool: tar, zstd or age)`, {
        hint: 'inspect takes snapshot_*.db as etcdctl/cluster-backup.sh write it, or backup.tar[.zst][.age] as the stores hold it',
      });
    });
    const inside = bundle ? { bundle: { codec: bundle.codec, encrypted: bundle.encrypted, snapshot: basename(bundle.snapshot), entries: bundle.entries } } : {};
    if (values.json) printJson({ hash: r.hash, revision: r.revision, totalKey: r.totalKey, totalSize: r.totalSize, trailer: r.trailer, ...inside });
    else {
      if (bundle) out(`${path} is a bundle (${[bundle.encrypted ? 'age' : '', bundle.codec === 'zstd' ? 'zstd' : '', 'tar'].filter(Boolean).join(' over ')}) of ${bundle.entries.join(', ')}; its snapshot ${basename(bundle.snapshot)}:`);
      out(table([['HASH', 'REVISION', 'TOTAL KEYS', 'TOTAL SIZE', 'TRAILER'], [r.hash.toString(16), String(r.revision), String(r.totalKey), fmtBytes(r.totalSize), r.trailer]]));
    }
    return r.trailer === 'mismatch' ? EXIT_FAILED : EXIT_OK;
  } finally {
    await bundle?.cleanup();
  }
}

async function cmdCheckConfig(argv: string[]): Promise<number> {
  const { values } = parse(argv, { config: { type: 'string', short: 'c' }, json: { type: 'boolean' } }, 0);
  const cfg = configFrom(values);
  for (const w of configWarnings(cfg)) err(`warning: ${w}`);
  if (values.json) printJson(redactConfig(cfg));
  else out(`# ${cfg.configPath} is valid; effective configuration:\n${yamlStringify(redactConfig(cfg))}`);
  return EXIT_OK;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const log = createLogger();
  try {
    switch (cmd) {
      case '--version':
      case 'version':
        // The runtime ships inside the single executable: which Node it is matters for security updates.
        if (rest.includes('--json')) printJson({ name: TOOL_NAME, version: VERSION, node: process.version, execArgv: process.execArgv });
        else out(`${TOOL_NAME} ${VERSION} (node ${process.version})`);
        return EXIT_OK;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        (cmd === undefined ? err : out)(USAGE);
        return cmd === undefined ? EXIT_USAGE : EXIT_OK;
      case 'backup':
        return await cmdBackup(rest, log);
      case 'list':
        return await cmdList(rest);
      case 'verify':
        return await cmdVerify(rest, log);
      case 'fetch':
        return await cmdFetch(rest);
      case 'inspect':
        return await cmdInspect(rest);
      case 'check-config':
        return await cmdCheckConfig(rest);
      case 'prune':
        return await cmdPrune(rest, log);
      case 'retention':
        return await cmdRetention(rest);
      case 'pin':
        return await cmdPin(rest, true);
      case 'unpin':
        return await cmdPin(rest, false);
      case 'run':
        return await cmdRun(rest, log);
      case 'keygen': {
        const { keygenCommand } = await import('./bundle/keygen-cmd.js');
        return await keygenCommand(rest, out);
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    const reason = reasonOf(e);
    err(`error: ${messageOf(e)}`);
    if (e instanceof BackupError && e.hint) err(`  what to do: ${e.hint}`);
    if (reason === 'internal') log.error({ err: e }, 'unexpected error');
    else err(`  reason: ${reason}`);
    return reason === 'usage' || reason === 'config-invalid' ? EXIT_USAGE : EXIT_FAILED;
  }
}

// Exit explicitly: output is written synchronously, and a lingering handle
// (a half-closed connection, a timer) must never keep a finished CLI alive.
main(process.argv.slice(2)).then((code) => process.exit(code));
