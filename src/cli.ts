#!/usr/bin/env -S node --initial-old-space-size=64 --max-semi-space-size=1 --expose-gc
// --initial-old-space-size: without it V8 shrinks its old-generation limit to the small heap it sees
// while a bundle is written, and the upload that follows (ssh2 allocates a buffer per 32 KiB
// packet) then runs a full GC every ~100 ms: +50 % CPU for an SFTP upload (measured, see
// bench/results/2026-11-25-experiments-heap.md). It costs ~30 MiB of peak RSS, a constant.
// --max-semi-space-size=1: the streams allocate a fresh buffer per chunk, and their dead
// ArrayBuffers are freed only when a young-generation GC runs; with the default 16 MiB young
// generation 60-80 MiB of them piled up. A 1 MiB one frees them every MiB of small objects:
// peak RSS -40 to -60 MiB and 5-20 % less CPU per phase (bench/results/2026-11-26-memory.md).
// --expose-gc: the daemon gives memory back after work with a memory-reducing full GC
// (src/daemon/reclaim.ts): under the continuous writer -60 MiB of RSS. Nothing else calls gc().
// Flags V8 only reads at start-up, hence the shebang (env -S: GNU coreutils 8.30+), the same in
// the packaged bundle and the single executable's execArgv.
import { basename } from 'node:path';
import { configDocument, redactConfig } from './config/load.js';
import { BackupError, messageOf, reasonOf } from './errors.js';
import { inspectSnapshot } from './etcd/snapshot.js';
import { createLogger, type Logger } from './log.js';
import type { RunResult } from './run/backup.js';
import { runCycle } from './run/cycle.js';
import { backupJson } from './run/report.js';
import { configWarnings } from './config/warnings.js';
import { loadIdentities } from './bundle/encrypt.js';
import { createSource } from './source/index.js';
import { fmtBytes } from './etcd/health.js';
import { formatClusterVersion } from './etcd/cluster-version.js';
import { stringify as yamlStringify } from 'yaml';
import { TOOL_NAME, VERSION } from './version.js';
import { common, configFrom, daemonCall, err, printedJson, EXIT_FAILED, EXIT_OK, EXIT_USAGE, exitWhenWritten, out, parse, printJson, table, UsageError, withStores } from './cli/io.js';
import { cmdFetch, cmdList, cmdPin, cmdPrune, cmdRetention, cmdVerify } from './cli/catalog-cmds.js';
import { cmdRun } from './cli/run-cmd.js';
import { helpFor, wantsHelp } from './cli/help.js';
import { lowerOwnPriority } from './run/priority.js';
import type { Config } from './config/load.js';
import { cliProgress } from './progress/forward.js';
import type { ProgressSink } from './progress/model.js';
import { recordManualRun } from './run/manual-record.js';

export { EXIT_FAILED, EXIT_OK, EXIT_USAGE };
const USAGE = `etcd-backupd ${VERSION} - verified etcd backups for control-plane nodes

Usage:
  etcd-backupd backup    --config F [--label L] [--reason T] [--pin] [--force] [--json]
  etcd-backupd list      --config F [--store S] [--json]
  etcd-backupd verify    --config F [--store S] ID|latest [--restore|--replay] [--identity FILE] [--allow-untrusted] [--json]
  etcd-backupd fetch     --config F [--store S] ID|latest [--at TIME|now] --to DIR [--identity FILE] [--allow-untrusted] [--json]
  etcd-backupd restore   --config F [--store S] ID|latest [--at TIME|now] --data-dir DIR --name N
                         --initial-cluster S --initial-advertise-peer-urls U [--initial-cluster-token T]
                         [--bump-revision N] [--etcdutl PATH] [--etcdctl PATH] [--identity FILE]
                         [--allow-untrusted] [--json]   # one member; not on OpenShift (docs/restore.md)
  etcd-backupd prune     --config F [--store S] [--dry-run] [--json]
  etcd-backupd retention --config F --simulate FILE [--now ISO] [--json]
  etcd-backupd pin|unpin --config F ID [--reason T]
  etcd-backupd run       --config F                  # the daemon
  etcd-backupd inspect   SNAPSHOT.db|BUNDLE [--identity FILE] [--json]
  etcd-backupd keygen    --out PREFIX [--json]      # signing key pair: PREFIX (private) and PREFIX.pub
  etcd-backupd check-config --config F
  etcd-backupd --version [--json]                  # names the Node version too

Every command answers --help (or: etcd-backupd help COMMAND).
Exit codes: 0 success, 1 the operation failed, 2 bad usage or config, 141 stdout closed early.
`;

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
  // Live progress lines on a terminal; none with --json or when stderr is not a terminal.
  const live = await cliProgress({ json: values.json === true });
  try {
    return await backupWith(cfg, req, values.json === true, log, live?.sink, () => live?.close());
  } finally {
    live?.close();
  }
}

async function backupWith(cfg: Config, req: BackupReq, json: boolean, log: Logger, progress: ProgressSink | undefined, endProgress: () => void): Promise<number> {
  // A running daemon does the work itself: same lock, state and metrics.
  const viaDaemon = await daemonCall(cfg, { op: 'backup', ...req, ...(progress ? { progress: true } : {}) }, json, progress);
  if (viaDaemon) {
    endProgress();
    if (viaDaemon.type === 'error') throw new BackupError(viaDaemon.reason as never, viaDaemon.message, { hint: viaDaemon.hint });
    if (viaDaemon.type !== 'result') return EXIT_FAILED;
    const doc = viaDaemon.data as BackupDoc;
    if (json) printJson(doc);
    else printBackupHuman(doc);
    return viaDaemon.exitCode;
  }
  // This process takes the snapshot itself: at the priority the daemon would have.
  await lowerOwnPriority(cfg.priority, log);
  const result = await withStores(cfg, async (stores) => (await runCycle(cfg, { source: createSource(cfg), stores, log, progress }, { trigger: 'manual', ...req }, { onRunDone: endProgress })).run);
  // Not claimed (the operator chose this node); recorded for the cluster view, best effort.
  await recordManualRun(cfg, result, log);
  const doc = backupJson(result) as BackupDoc;
  if (json) printJson(doc);
  else printBackupHuman(doc);
  return result.result === 'success' ? EXIT_OK : EXIT_FAILED;
}

type BackupReq = { label?: string; reason?: string; pin: boolean; force: boolean };

type BackupDoc = Pick<RunResult, 'id' | 'result' | 'reason' | 'error' | 'hint' | 'stores' | 'preflight'> & { size?: number; revision?: number; totalKey?: number; clusterVersion?: string; desiredVersion?: string };

function printBackupHuman(r: BackupDoc): void {
  if (r.result === 'success') {
    const version = formatClusterVersion(r.clusterVersion, r.desiredVersion);
    out(`backup ${r.id} succeeded: ${fmtBytes(r.size ?? 0)}, etcd revision ${r.revision}, ${r.totalKey} keys${version ? `, cluster version ${version}` : ''}`);
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
      // Hex as `etcdctl snapshot status -w table` prints it (JSON has the number, as etcdctl's -w json).
      out(table([['HASH (hex)', 'REVISION', 'TOTAL KEYS', 'TOTAL SIZE', 'TRAILER'], [r.hash.toString(16), String(r.revision), String(r.totalKey), fmtBytes(r.totalSize), r.trailer]]));
      if (r.trailer === 'mismatch') err('the sha256 etcd appended to this snapshot does not match its content: the file was changed or damaged after it was saved; do not restore it (take or fetch another)');
      if (r.trailer === 'missing') out('no sha256 trailer: a database file copied from a data dir rather than saved with `snapshot save`; restore it with --skip-hash-check only if you know where it came from');
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
  // A config again (every default filled in): loading it gives the same effective configuration.
  const doc = redactConfig(configDocument(cfg));
  if (values.json) printJson(doc);
  else out(`# ${cfg.configPath} is valid; the effective configuration (a config itself; secret values, if any, redacted):\n${yamlStringify(doc)}`);
  return EXIT_OK;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const log = createLogger();
  try {
    const verbHelp = cmd !== undefined && wantsHelp(rest) ? helpFor(cmd) : undefined;
    if (verbHelp) {
      out(verbHelp);
      return EXIT_OK;
    }
    switch (cmd) {
      case '--version':
      case 'version':
        // The runtime ships inside the single executable: which Node it is matters for security updates.
        if (rest.includes('--json') && !printedJson()) printJson({ name: TOOL_NAME, version: VERSION, node: process.version, execArgv: process.execArgv });
        else out(`${TOOL_NAME} ${VERSION} (node ${process.version})`);
        return EXIT_OK;
      case undefined:
      case '-h':
      case '--help':
      case 'help': {
        const verbHelp = cmd === 'help' && rest[0] !== undefined ? helpFor(rest[0]) : undefined;
        if (cmd === 'help' && rest[0] !== undefined && !verbHelp && rest[0] !== 'restore' && rest[0] !== 'keygen') throw new UsageError(`no command ${JSON.stringify(rest[0])}; run \`etcd-backupd help\` for the list`);
        if (rest[0] === 'restore' || rest[0] === 'keygen') return await main([rest[0], '--help']);
        (cmd === undefined ? err : out)(verbHelp ?? USAGE);
        return cmd === undefined ? EXIT_USAGE : EXIT_OK;
      }
      case 'backup':
        return await cmdBackup(rest, log);
      case 'list':
        return await cmdList(rest);
      case 'verify':
        return await cmdVerify(rest, log);
      case 'fetch':
        return await cmdFetch(rest, log);
      case 'restore': {
        const { cmdRestore } = await import('./cli/restore-cmd.js');
        return await cmdRestore(rest, log);
      }
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
    // --json promises one JSON document on stdout, on failure too.
    if (rest.includes('--json') && !printedJson()) printJson({ reason, error: messageOf(e), ...(e instanceof BackupError && e.hint ? { hint: e.hint } : {}) });
    err(`error: ${messageOf(e)}`);
    if (e instanceof BackupError && e.hint) err(`  what to do: ${e.hint}`);
    if (reason === 'internal') log.error({ err: e }, 'unexpected error');
    else err(`  reason: ${reason}`);
    return reason === 'usage' || reason === 'config-invalid' ? EXIT_USAGE : EXIT_FAILED;
  }
}

// Exit once every byte is out, and explicitly (see exitWhenWritten).
void main(process.argv.slice(2)).then(exitWhenWritten);
