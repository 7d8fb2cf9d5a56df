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
 *            waits for `/health`.
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
 * etcd raises a NOSPACE alarm and /health fails). Every ETCD_* / ETCDCTL_*
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
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, existsSync, statSync } from 'node:fs';
import { access, chmod, mkdtemp, open, readFile, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { delimiter, join, resolve } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import { BackupError, messageOf, type Reason } from '../errors.js';
import {
  BboltFormatError,
  BRANCH_PAGE,
  LEAF_PAGE,
  checkMetaPage,
  chooseMeta,
  crc32c,
  parseBucketValue,
  readBranchChildren,
  readLeafElements,
  readPageHeader,
  type BucketRef,
  type MetaCheck,
} from '../etcd/bbolt.js';
import { PageReader } from '../etcd/page-reader.js';
import { inspectSnapshot } from '../etcd/snapshot.js';
import { mkdirPrivate } from '../fsutil.js';
import type { Logger } from '../log.js';
import { fetchBackup } from '../catalog/fetch.js';
import type { Store } from '../storage/store.js';

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
const STOP_GRACE_MS = 10_000;
const KILL_GRACE_MS = 5_000;
const HTTP_TIMEOUT_MS = 60_000;
const START_ATTEMPTS = 3;
const MEMBER_NAME = 'drill';
const OWNER_FILE = 'drill-owner.json';
const DIR_PREFIX = 'drill-';
const MIB = 1024 * 1024;

/**
 * Ports a drill never uses, even when the kernel hands them out: the node's
 * real etcd (2379 client, 2380 peer), the metrics port kubeadm gives etcd
 * (2381), OpenShift's etcd metrics/readiness ports (9978-9980) and
 * etcd-backupd's own default metrics port (9979). Ports below 1024 are
 * refused too.
 */
export const FORBIDDEN_DRILL_PORTS: ReadonlySet<number> = new Set([2379, 2380, 2381, 9978, 9979, 9980]);

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/** A port the kernel considers free on 127.0.0.1 right now (bind to port 0). */
function ephemeralPort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = addr && typeof addr === 'object' ? addr.port : 0;
      srv.close(() => resolvePromise(port));
    });
  });
}

/** Whether nothing listens on 127.0.0.1:port (we can bind it, then release it). */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolvePromise(false));
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => srv.close(() => resolvePromise(true)));
  });
}

/** Whether a drill may use this port at all (independent of whether it is free). */
export function isAllowedDrillPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1024 && port <= 65535 && !FORBIDDEN_DRILL_PORTS.has(port);
}

/**
 * `count` distinct free loopback ports for a drill etcd. Candidates come from
 * binding 127.0.0.1:0 (injectable for tests); a candidate that is forbidden
 * (FORBIDDEN_DRILL_PORTS, < 1024), already picked, or not free when checked
 * again is skipped. Internal; exported for tests.
 */
export async function pickDrillPorts(
  count: number,
  deps: { candidate?: () => Promise<number>; isFree?: (port: number) => Promise<boolean>; maxAttempts?: number } = {},
): Promise<number[]> {
  const candidate = deps.candidate ?? ephemeralPort;
  const isFree = deps.isFree ?? isPortFree;
  const maxAttempts = deps.maxAttempts ?? 100;
  const out: number[] = [];
  for (let i = 0; i < maxAttempts && out.length < count; i++) {
    const p = await candidate();
    if (!isAllowedDrillPort(p) || out.includes(p)) continue;
    if (!(await isFree(p))) continue;
    out.push(p);
  }
  if (out.length < count) {
    throw new BackupError('drill-start-failed', `no free loopback port for the drill etcd after ${maxAttempts} attempts`);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Tools, environment, child processes
// ---------------------------------------------------------------------------

const EXTRA_BIN_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

function isExecutable(p: string): boolean {
  try {
    const st = statSync(p);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Absolute path of a binary given as a path or a name on PATH (+ the sbin dirs); undefined if missing. */
export function findExecutable(bin: string): string | undefined {
  if (bin.includes('/')) {
    const abs = resolve(bin);
    return isExecutable(abs) ? abs : undefined;
  }
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_BIN_DIRS];
  for (const d of dirs) {
    const p = join(d, bin);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

/**
 * The environment of every child: ours without ETCD_* / ETCDCTL_* (which
 * etcd and etcdctl read as flags; on a master they can name the real member)
 * and without Go runtime knobs we set ourselves.
 */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^ETCD(CTL)?_/.test(k) && k !== 'ETCD_UNSUPPORTED_ARCH') continue;
    if (k === 'GOMEMLIMIT' || k === 'GOMAXPROCS' || k === 'GOGC') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

let ioniceOk: Promise<boolean> | undefined;

/** `ionice -c 3` can fail in some containers (no permission); probe once per process. */
function ioniceWorks(ionice: string): Promise<boolean> {
  const trueBin = findExecutable('true');
  if (!trueBin) return Promise.resolve(false);
  ioniceOk ??= new Promise((resolvePromise) => {
    const c = spawn(ionice, ['-c', '3', trueBin], { stdio: 'ignore' });
    c.once('error', () => resolvePromise(false));
    c.once('close', (code) => resolvePromise(code === 0));
  });
  return ioniceOk;
}

/** `nice -n 19 ionice -c 3` (each part only when present and working). Both exec the command: the pid stays etcd's. */
async function priorityPrefix(enabled: boolean): Promise<string[]> {
  if (!enabled) return [];
  const out: string[] = [];
  const nice = findExecutable('nice');
  if (nice) out.push(nice, '-n', '19');
  const ionice = findExecutable('ionice');
  if (ionice && (await ioniceWorks(ionice))) out.push(ionice, '-c', '3');
  return out;
}

function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, sig);
  } catch {
    /* gone already */
  }
}

interface Captured {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** Last lines of stderr (and stdout for tools that log there). */
  tail: string[];
}

/**
 * Runs a command to completion in its own process group, capturing stdout
 * and the last lines of output. Aborting kills the group (SIGTERM, SIGKILL
 * after a grace) and still resolves only once the process is gone, so the
 * caller can remove its files afterwards.
 */
function execCapture(argv: string[], env: NodeJS.ProcessEnv, cwd: string, signal: AbortSignal, log: Logger, what: string): Promise<Captured> {
  return new Promise((resolvePromise, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { env, cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (e) {
      reject(e);
      return;
    }
    let stdout = '';
    const tail: string[] = [];
    const onLine = (line: string) => {
      if (!line) return;
      tail.push(line.slice(0, 4000));
      if (tail.length > 40) tail.shift();
      log.debug({ source: what }, line.slice(0, 4000));
    };
    let errBuf = '';
    child.stdout!.on('data', (d: Buffer) => {
      if (stdout.length < 4 * MIB) stdout += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      errBuf += d.toString();
      const lines = errBuf.split('\n');
      errBuf = lines.pop() ?? '';
      lines.forEach(onLine);
    });
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      killGroup(child.pid, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    child.once('error', (e) => {
      signal.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      reject(e);
    });
    child.once('close', (code, sig) => {
      signal.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      onLine(errBuf);
      for (const l of stdout.split('\n').slice(-5)) if (l.trim() && !tail.includes(l)) tail.push(l);
      resolvePromise({ code, signal: sig, stdout, tail });
    });
  });
}

/** The error a Go tool printed: the last zap fatal/error entry ("msg: error"), else the last line. */
export function toolError(tail: string[]): string {
  for (let i = tail.length - 1; i >= 0; i--) {
    const l = tail[i]!.trim();
    if (!l.startsWith('{')) continue;
    try {
      const j = JSON.parse(l) as { level?: string; msg?: string; error?: string };
      if (j.level && ['fatal', 'panic', 'error'].includes(j.level)) return j.error ? `${j.msg}: ${j.error}` : String(j.msg);
    } catch {
      /* not JSON */
    }
  }
  const plain = tail.map((l) => l.trim()).filter((l) => l && !l.startsWith('{') && !/^(goroutine |\s)/.test(l));
  return (plain.find((l) => /^(Error|panic|fatal)/i.test(l)) ?? plain[plain.length - 1] ?? tail[tail.length - 1] ?? '(no output)').slice(0, 1000);
}

/** A running drill etcd. */
class EtcdProcess {
  readonly tail: string[] = [];
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly closed: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    log: Logger,
  ) {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        if (!l) continue;
        this.tail.push(l.slice(0, 4000));
        if (this.tail.length > 60) this.tail.shift();
        log.debug({ source: 'drill-etcd' }, l.slice(0, 4000));
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('error', (e) => this.tail.push(`cannot run etcd: ${messageOf(e)}`));
    this.closed = new Promise((r) =>
      child.once('close', (code, signal) => {
        this.exited = { code, signal };
        if (buf) this.tail.push(buf);
        r();
      }),
    );
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private waitExit(ms: number): Promise<boolean> {
    if (this.exited) return Promise.resolve(true);
    return new Promise((r) => {
      const t = setTimeout(() => r(false), ms);
      void this.closed.then(() => {
        clearTimeout(t);
        r(true);
      });
    });
  }

  /** SIGTERM the group, SIGKILL after the grace; resolves once it is gone. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    if (this.child.pid === undefined) return;
    if (!this.exited) {
      killGroup(this.child.pid, 'SIGTERM');
      if (!(await this.waitExit(graceMs))) {
        killGroup(this.child.pid, 'SIGKILL');
        await this.waitExit(KILL_GRACE_MS);
      }
    }
    // Anything left in its group (there should be nothing) goes too.
    killGroup(this.child.pid, 'SIGKILL');
  }
}

// ---------------------------------------------------------------------------
// Stale drills (a crash mid-drill)
// ---------------------------------------------------------------------------

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes drill dirs in scratchDir whose owning process is gone, first
 * killing an etcd that still serves from one (only a process whose command
 * line names that very dir). Dirs of a live drill (another process, e.g. the
 * CLI while the daemon drills) are left alone.
 */
async function cleanupStaleDrills(scratchDir: string, log: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(scratchDir);
  } catch {
    return;
  }
  for (const name of names.filter((n) => n.startsWith(DIR_PREFIX))) {
    const dir = join(scratchDir, name);
    let owner: { pid?: number; etcdPid?: number } = {};
    try {
      owner = JSON.parse(await readFile(join(dir, OWNER_FILE), 'utf8')) as typeof owner;
    } catch {
      // No owner file: a drill that crashed right after creating its dir, or one
      // (in another process) that is about to write it: leave young ones alone.
      const st = await stat(dir).catch(() => undefined);
      if (!st || Date.now() - st.mtimeMs < 10 * 60_000) continue;
    }
    if (typeof owner.pid === 'number' && owner.pid !== process.pid && processAlive(owner.pid)) continue;
    if (owner.pid === process.pid) continue; // a concurrent drill in this process
    if (typeof owner.etcdPid === 'number' && processAlive(owner.etcdPid)) {
      const cmdline = await readFile(`/proc/${owner.etcdPid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(dir)) {
        log.warn({ dir, pid: owner.etcdPid }, 'killing the etcd of an interrupted restore drill');
        killGroup(owner.etcdPid, 'SIGKILL');
        try {
          process.kill(owner.etcdPid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    log.warn({ dir }, 'removing the files of an interrupted restore drill');
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// What the snapshot's key bucket says etcd must serve
// ---------------------------------------------------------------------------

/** Expectations derived natively from the snapshot file. Internal; exported for tests. */
export interface KeyspaceExpectation {
  /** Entries per top-level bucket; they sum to `snapshot status` totalKey. */
  buckets: Record<string, number>;
  /** Main revision of the last key bucket entry (= `snapshot status` revision; 0 for an empty store). */
  lastRevision: number;
  /** From the meta bucket; -1 when there is none (never compacted: etcd's own convention). */
  finishedCompactRevision: number;
  scheduledCompactRevision: number;
  /** The revision etcd serves after a restore: max(1, lastRevision, finished compaction). */
  servedRevision: number;
  /** etcd's compaction revision after a restore (a scheduled, unfinished compaction is resumed); -1: never compacted. */
  compactRevision: number;
  /** Keys a client sees at servedRevision. */
  liveKeys: number;
  /** What HashKV at servedRevision answers (CRC-32C over "key" and the entries that survive). */
  hashKV: number;
}

const TOMBSTONE = 0x74; // 't'

function isTombstone(revKey: Buffer): boolean {
  return revKey.length === 18 && revKey[17] === TOMBSTONE;
}

function mainRev(revKey: Buffer): number {
  if (revKey.length < 8) throw new BboltFormatError(`key bucket key of ${revKey.length} bytes is too short for a revision`);
  return Number(revKey.readBigInt64BE(0));
}

/** Field 1 (`key`) of an mvccpb.KeyValue, bounds-checked; only varint and length-delimited fields occur. */
export function keyOfKeyValue(v: Buffer): Buffer {
  let i = 0;
  const varint = (): number => {
    let r = 0;
    let mul = 1;
    for (let n = 0; n < 10; n++) {
      if (i >= v.length) throw new BboltFormatError('mvccpb.KeyValue: truncated varint');
      const b = v[i++]!;
      r += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return r;
      mul *= 128;
    }
    throw new BboltFormatError('mvccpb.KeyValue: varint longer than 10 bytes');
  };
  while (i < v.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      varint();
    } else if (wire === 2) {
      const n = varint();
      if (i + n > v.length) throw new BboltFormatError('mvccpb.KeyValue: field runs past the value');
      if (field === 1) return v.subarray(i, i + n);
      i += n;
    } else {
      throw new BboltFormatError(`mvccpb.KeyValue: unexpected wire type ${wire} for field ${field}`);
    }
  }
  throw new BboltFormatError('mvccpb.KeyValue without a key');
}

type EntryFn = (k: Buffer, v: Buffer, isBucket: boolean) => void;

class BucketWalker {
  private seen = 0;
  constructor(
    private readonly reader: PageReader,
    private readonly signal: AbortSignal,
  ) {}

  async forEach(ref: BucketRef, where: string, fn: EntryFn): Promise<void> {
    if (ref.inline) {
      for (const e of readLeafElements(ref.inline, `${where} (inline)`)) fn(e.key, e.value, e.isBucket);
      return;
    }
    await this.walk(ref.root, where, 0, fn);
  }

  private async walk(id: number, where: string, depth: number, fn: EntryFn): Promise<void> {
    if (depth > 64) throw new BboltFormatError(`${where}: B+tree deeper than 64 levels`);
    if ((++this.seen & 0xff) === 0 && this.signal.aborted) throw new Error('aborted');
    const buf = await this.reader.page(id);
    const hdr = readPageHeader(buf);
    if (hdr.flags === BRANCH_PAGE) {
      for (const c of readBranchChildren(buf, id)) await this.walk(c, where, depth + 1, fn);
    } else if (hdr.flags === LEAF_PAGE) {
      for (const e of readLeafElements(buf, `${where} page ${id}`)) fn(e.key, e.value, e.isBucket);
    } else {
      throw new BboltFormatError(`${where}: page ${id} has flags 0x${hdr.flags.toString(16)}`);
    }
  }
}

/**
 * Reads the snapshot's buckets and computes what a restored etcd must serve:
 * its revision, its live key count, and its HashKV. The HashKV rule
 * (etcd mvcc `HashByRev` at revision R with compaction revision C): entries
 * above C all count; an entry at or below C counts only when it is its key's
 * latest entry and not a tombstone (`kvindex.Keep(R)`), unless no key is live
 * at all (then every entry counts). Memory: the keys written since the last
 * compaction (none are held when there is nothing to filter).
 *
 * Internal; exported for tests.
 */
export async function expectFromSnapshot(path: string, signal: AbortSignal = new AbortController().signal): Promise<KeyspaceExpectation> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const dataLen = size % 512 === 32 ? size - 32 : size;
    const readAt = async (off: number, len: number) => {
      const b = Buffer.alloc(Math.max(0, Math.min(len, dataLen - off)));
      await fh.read(b, 0, b.length, off);
      return b;
    };
    const m0 = checkMetaPage(await readAt(0, 4096), 0);
    let pageSize = m0.ok ? m0.meta.pageSize : 0;
    if (!pageSize) {
      for (let i = 0; i <= 14 && !pageSize; i++) {
        const pos = 1024 << i;
        if (pos >= dataLen - 1024) break;
        const m1 = checkMetaPage(await readAt(pos, 4096), 1);
        if (m1.ok && m1.meta.pageSize === pos) pageSize = pos;
      }
    }
    if (!pageSize) throw new BboltFormatError('no valid meta page');
    const m1: MetaCheck = checkMetaPage(await readAt(pageSize, 4096), 1);
    const meta = chooseMeta(m0.ok && m0.meta.pageSize === pageSize ? m0 : { ok: false, reason: 'invalid' }, m1);
    if (meta.pgid * pageSize > dataLen) throw new BboltFormatError('file shorter than its high-water mark');
    const walker = new BucketWalker(new PageReader(fh, pageSize, meta.pgid), signal);

    const tops = new Map<string, BucketRef>();
    await walker.forEach({ root: meta.root }, 'root bucket', (name, value, isBucket) => {
      if (!isBucket) throw new BboltFormatError(`top-level key ${name.toString('latin1')} is not a bucket`);
      tops.set(name.toString('latin1'), parseBucketValue(value, `bucket ${name.toString('latin1')}`));
    });

    // The compaction marks first (the meta bucket is small).
    let finished = -1;
    let scheduled = -1;
    const metaRef = tops.get('meta');
    if (metaRef) {
      await walker.forEach(metaRef, 'bucket meta', (k, v, isSub) => {
        if (isSub) return;
        const key = k.toString('latin1');
        if (key === 'finishedCompactRev' && v.length >= 8) finished = mainRev(v);
        if (key === 'scheduledCompactRev' && v.length >= 8) scheduled = mainRev(v);
      });
    }
    // Pass 1: entries per bucket; in the key bucket the last revision and the keys written after the
    // finished compaction F: above C (`later`: is its latest entry a tombstone) and between F and C
    // (`between`: the revision key of its latest entry). etcd resumes a scheduled compaction S > F at
    // start when S is not beyond its revision; C is S then, else F.
    const buckets: Record<string, number> = {};
    let lastRevision = 0;
    const later = new Map<string, boolean>();
    const between = new Map<string, string>();
    const tentativeC = scheduled > finished ? scheduled : finished;
    for (const [name, ref] of tops) {
      let n = 0;
      const isKey = name === 'key';
      await walker.forEach(ref, `bucket ${name}`, (k, v, isSub) => {
        n++;
        if (!isKey || isSub) return;
        const r = mainRev(k);
        lastRevision = r;
        if (r <= finished) return;
        const key = keyOfKeyValue(v).toString('latin1');
        if (r > tentativeC) later.set(key, isTombstone(k));
        else between.set(key, k.toString('latin1'));
      });
      buckets[name] = n;
    }
    // A store without any key starts at revision 1, and a compaction past the last entry moves the revision up to it (mvcc restore).
    const servedRevision = Math.max(1, lastRevision, finished);
    const compactRevision = scheduled > finished && scheduled <= servedRevision ? scheduled : finished;
    if (compactRevision !== tentativeC) {
      // The scheduled compaction is not resumed: what lies between F and S is "later" after all (older than what is there).
      for (const [key, revKey] of between) if (!later.has(key)) later.set(key, isTombstone(Buffer.from(revKey, 'latin1')));
      between.clear();
    }
    const KEY = Buffer.from('key');
    const base = { buckets, lastRevision, finishedCompactRevision: finished, scheduledCompactRevision: scheduled, servedRevision, compactRevision };
    const keyRef = tops.get('key');
    if (!keyRef) return { ...base, liveKeys: 0, hashKV: crc32c(KEY) };

    let liveKeys = 0;
    for (const t of later.values()) if (!t) liveKeys++;

    // Pass 2: the hash. Entries above C all count; one at or below C counts when it is its key's latest
    // entry and no tombstone. When no key is live at all, etcd counts every entry: keep that hash too.
    const needAll = liveKeys === 0;
    let hashKept = crc32c(KEY);
    let hashAll = hashKept;
    const filter = later.size > 0 || between.size > 0;
    await walker.forEach(keyRef, 'bucket key', (k, v, isSub) => {
      if (isSub) return;
      if (needAll) hashAll = crc32c(v, crc32c(k, hashAll));
      const r = mainRev(k);
      let keep = r > compactRevision;
      if (!keep && !isTombstone(k)) {
        if (!filter) keep = true;
        else {
          const key = keyOfKeyValue(v).toString('latin1');
          keep = !later.has(key) && (r > finished ? between.get(key) === k.toString('latin1') : !between.has(key));
        }
        if (keep) liveKeys++;
      }
      if (keep) hashKept = crc32c(v, crc32c(k, hashKept));
    });
    return { ...base, liveKeys, hashKV: liveKeys === 0 ? hashAll : hashKept };
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------
// The restored etcd's v3 JSON gateway
// ---------------------------------------------------------------------------

/** Runs `fn` with a signal that aborts with `parent` or after `ms`; the listener on `parent` is removed afterwards. */
async function withTimeout<T>(parent: AbortSignal, ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const c = new AbortController();
  const onAbort = () => c.abort();
  if (parent.aborted) c.abort();
  else parent.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => c.abort(), ms);
  try {
    return await fn(c.signal);
  } finally {
    clearTimeout(timer);
    parent.removeEventListener('abort', onAbort);
  }
}

interface RangeResponse {
  header?: { revision?: string };
  kvs?: { key?: string; value?: string; mod_revision?: string }[];
  count?: string;
  more?: boolean;
}

async function gateway<T>(base: string, path: string, body: unknown, signal: AbortSignal): Promise<T> {
  const text = await withTimeout(signal, HTTP_TIMEOUT_MS, async (s) => {
    const res = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: s });
    const t = await res.text();
    if (!res.ok) throw new Error(`POST ${path}: HTTP ${res.status}: ${t.slice(0, 500)}`);
    return t;
  });
  return JSON.parse(text) as T;
}

async function waitHealthy(etcd: EtcdProcess, base: string, signal: AbortSignal): Promise<void> {
  for (;;) {
    if (signal.aborted) throw new Error('aborted');
    if (etcd.exited) {
      throw new BackupError(
        'drill-start-failed',
        `the restored etcd exited during startup (code ${etcd.exited.code}, signal ${etcd.exited.signal}): ${toolError(etcd.tail)}`,
        { hint: 'the snapshot restored but etcd cannot serve it; check that the etcd binary is the cluster\'s version and see the log above' },
      );
    }
    try {
      const { ok, text } = await withTimeout(signal, 2000, async (s) => {
        const res = await fetch(`${base}/health`, { signal: s });
        return { ok: res.ok, text: await res.text() };
      });
      if (ok && (JSON.parse(text) as { health?: string }).health === 'true') return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---------------------------------------------------------------------------
// The drill
// ---------------------------------------------------------------------------

function safeName(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80);
}

async function checkFreeSpace(dir: string, m: Manifest): Promise<void> {
  const need = (m.object?.size ?? 0) + Math.ceil(m.etcd.totalSize * 1.2) + 128 * MIB;
  let free: number;
  try {
    const st = await statfs(dir);
    free = st.bavail * st.bsize;
  } catch {
    return; // cannot tell: let the writes fail if they must
  }
  if (free < need) {
    throw new BackupError(
      'preflight-disk-space',
      `restore drill of ${m.id}: ${dir} has ${Math.floor(free / MIB)} MiB free, the drill needs about ${Math.ceil(need / MIB)} MiB (bundle + restored data dir + WAL)`,
      { hint: 'free space there or point the drill at a larger scratch directory' },
    );
  }
}

const hintFor: Partial<Record<Reason, string>> = {
  'checksum-mismatch': 'the stored copy is damaged: run `etcd-backupd verify` on the other stores and take a new backup',
  'snapshot-corrupt': 'the stored snapshot is not the one recorded at backup time: do not restore from it; take a new backup and check the store',
  'drill-restore-failed': 'this backup cannot be restored: do not rely on it; take a new backup now and drill it',
  'drill-mismatch': 'the restored etcd does not serve what the backup holds: do not rely on this backup; take a new one and drill it',
  'drill-timeout': 'raise the drill timeout or run the drill when the node is less busy',
};

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
  const ctl = new AbortController();
  const signal = ctl.signal;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, Math.min(2 ** 31 - 1, Math.max(0, timeoutSeconds * 1000)));
  const onOuterAbort = () => ctl.abort();
  if (opts.signal?.aborted) ctl.abort();
  else opts.signal?.addEventListener('abort', onOuterAbort, { once: true });

  let dir: string | undefined;
  let etcd: EtcdProcess | undefined;
  // What the restored etcd must serve, computed from the snapshot while restore and start run.
  let expectation: Promise<{ ok: true; value: KeyspaceExpectation } | { ok: false; error: unknown }> | undefined;
  let current: DrillStep = 'fetch';
  const step = async <T>(name: DrillStep, fn: () => Promise<T>): Promise<T> => {
    current = name;
    const t0 = performance.now();
    try {
      if (signal.aborted) throw new Error('aborted');
      const v = await fn();
      if (signal.aborted) throw new Error('aborted');
      return v;
    } finally {
      steps.push({ name, seconds: (performance.now() - t0) / 1000 });
    }
  };
  const writeOwner = async (etcdPid?: number) => {
    if (dir) await writeFile(join(dir, OWNER_FILE), JSON.stringify({ pid: process.pid, etcdPid, startedAt: result.startedAt }), { mode: 0o600 });
  };

  try {
    log.info({ store: opts.store.name, revision: m.etcd.revision, totalKey: m.etcd.totalKey, totalSize: m.etcd.totalSize }, 'restore drill started');
    const prio = await priorityPrefix(opts.lowPriority ?? true);
    const etcdBin = findExecutable(opts.etcdBinary ?? 'etcd');
    if (!etcdBin) {
      throw new BackupError('drill-start-failed', `etcd binary ${JSON.stringify(opts.etcdBinary ?? 'etcd')} not found`, {
        hint: "install the cluster's etcd version on this node or set the path of its etcd binary",
      });
    }
    const etcdctlBin = findExecutable(opts.etcdctlBinary ?? 'etcdctl');
    const etcdutlBin = opts.etcdutlBinary !== undefined ? findExecutable(opts.etcdutlBinary) : findExecutable('etcdutl');
    if (opts.etcdutlBinary !== undefined && !etcdutlBin) {
      throw new BackupError('drill-restore-failed', `etcdutl binary ${JSON.stringify(opts.etcdutlBinary)} not found`, { hint: 'install etcdutl or leave it unset to restore with etcdctl' });
    }
    if (!etcdctlBin) {
      throw new BackupError('drill-restore-failed', `etcdctl binary ${JSON.stringify(opts.etcdctlBinary ?? 'etcdctl')} not found`, {
        hint: "install the cluster's etcdctl version on this node or set its path",
      });
    }
    // A soft heap limit for the Go tools: generous for the index of a big db, small next to a master's memory.
    const goEnv = {
      GOMEMLIMIT: `${Math.max(512, Math.min(4096, Math.ceil((m.etcd.totalSize * 1.5) / MIB)))}MiB`,
      GOMAXPROCS: '2',
    };

    // ---- fetch: every sha256, then the snapshot's content against the manifest
    let snapshot = '';
    await step('fetch', async () => {
      await mkdirPrivate(opts.scratchDir);
      await cleanupStaleDrills(opts.scratchDir, log);
      dir = await mkdtemp(join(opts.scratchDir, `${DIR_PREFIX}${safeName(m.id)}-`));
      await chmod(dir, 0o700);
      await writeOwner();
      await checkFreeSpace(dir, m);
      const fetched = await fetchBackup(opts.store, m, join(dir, 'fetch'), opts.identities, signal);
      snapshot = fetched.snapshot;
      const snap = await inspectSnapshot(snapshot);
      const diffs: string[] = [];
      if (snap.trailer !== 'ok') diffs.push(`snapshot sha256 trailer ${snap.trailer}`);
      for (const k of ['hash', 'revision', 'totalKey', 'totalSize'] as const) {
        if (snap[k] !== m.etcd[k]) diffs.push(`${k} is ${snap[k]}, the manifest recorded ${m.etcd[k]} at backup time`);
      }
      if (diffs.length) {
        throw new BackupError('snapshot-corrupt', `backup ${m.id}: the fetched snapshot is not the one that was backed up (its sha256 values match the manifest, its content does not): ${diffs.join('; ')}`);
      }
      result.totalKey = snap.totalKey;
      log.info({ files: fetched.files.length }, 'restore drill: fetched and verified the backup');
    });

    expectation = expectFromSnapshot(snapshot, signal).then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );

    // ---- restore
    let ports = { client: 0, peer: 0 };
    const dataDir = join(dir!, 'data');
    await step('restore', async () => {
      const [c, p] = await pickDrillPorts(2);
      ports = { client: c!, peer: p! };
      const peerUrl = `http://127.0.0.1:${ports.peer}`;
      const args = [
        'snapshot', 'restore', snapshot,
        '--data-dir', dataDir,
        '--name', MEMBER_NAME,
        '--initial-cluster', `${MEMBER_NAME}=${peerUrl}`,
        '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster-token', 'etcd-backupd-drill',
      ];
      const tool = etcdutlBin ? 'etcdutl' : 'etcdctl';
      result.restoreTool = tool;
      const argv = [...prio, etcdutlBin ?? etcdctlBin, ...args];
      let r: Captured;
      try {
        r = await execCapture(argv, childEnv({ ETCDCTL_API: '3', ...goEnv }), dir!, signal, log, `drill-${tool}`);
      } catch (e) {
        throw new BackupError('drill-restore-failed', `cannot run ${tool}: ${messageOf(e)}`);
      }
      if (signal.aborted) throw new Error('aborted');
      if (r.code !== 0) {
        throw new BackupError('drill-restore-failed', `backup ${m.id}: \`${tool} snapshot restore\` failed (${r.code !== null ? `exit ${r.code}` : `signal ${r.signal}`}): ${toolError(r.tail)}`);
      }
      if (!existsSync(join(dataDir, 'member'))) {
        throw new BackupError('drill-restore-failed', `backup ${m.id}: \`${tool} snapshot restore\` exited 0 but wrote no member dir`);
      }
      log.info({ tool }, 'restore drill: snapshot restored');
    });

    // ---- start
    const quota = Math.max(2048 * MIB, Math.ceil(m.etcd.totalSize * 1.25) + 256 * MIB);
    let base = '';
    await step('start', async () => {
      for (let attempt = 1; ; attempt++) {
        base = `http://127.0.0.1:${ports.client}`;
        const peerUrl = `http://127.0.0.1:${ports.peer}`;
        const args = [
          '--name', MEMBER_NAME,
          '--data-dir', dataDir,
          '--listen-client-urls', base,
          '--advertise-client-urls', base,
          '--listen-peer-urls', peerUrl,
          '--initial-advertise-peer-urls', peerUrl,
          '--initial-cluster', `${MEMBER_NAME}=${peerUrl}`,
          '--quota-backend-bytes', String(quota),
          '--logger', 'zap',
          '--log-outputs', 'stderr',
          '--log-level', 'warn',
        ];
        const argv = [...prio, etcdBin, ...args];
        const child = spawn(argv[0]!, argv.slice(1), { env: childEnv(goEnv), cwd: dir!, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
        etcd = new EtcdProcess(child, log);
        await writeOwner(child.pid);
        try {
          await waitHealthy(etcd, base, signal);
          log.info({ endpoint: base, pid: child.pid }, 'restore drill: etcd serves the restored data');
          return;
        } catch (e) {
          const inUse = etcd.tail.some((l) => /address already in use/i.test(l));
          if (!inUse || attempt >= START_ATTEMPTS || signal.aborted) throw e;
          log.warn({ attempt }, 'restore drill: a drill port was taken meanwhile; retrying on other ports');
          await etcd.stop();
          etcd = undefined;
          const [c, p] = await pickDrillPorts(2);
          ports = { client: c!, peer: p! };
        }
      }
    });

    // ---- check
    await step('check', async () => {
      const expected = await expectation!;
      if (!expected.ok) {
        if (signal.aborted) throw expected.error;
        throw new BackupError('internal', `cannot compute what the restored etcd must serve from ${snapshot}: ${messageOf(expected.error)}`);
      }
      const want = expected.value;
      const total = Object.values(want.buckets).reduce((a, b) => a + b, 0);
      log.info({ buckets: want.buckets, liveKeys: want.liveKeys, compactRevision: want.compactRevision }, 'restore drill: what the snapshot holds');
      const diffs: string[] = [];
      if (total !== m.etcd.totalKey) diffs.push(`the buckets hold ${total} entries, the manifest's totalKey is ${m.etcd.totalKey}`);
      if (want.lastRevision !== m.etcd.revision) diffs.push(`the key bucket ends at revision ${want.lastRevision}, the manifest says ${m.etcd.revision}`);
      if (diffs.length) throw new BackupError('drill-mismatch', `backup ${m.id}: ${diffs.join('; ')}`);

      // At or below the compaction revision, etcd only answers for the current revision.
      const atRev = want.servedRevision > want.compactRevision ? want.servedRevision : 0;
      // Serializable reads: one member, nobody else writes; a linearizable read waits for a raft round each.
      const countAt = async (rev: number) => {
        try {
          const r = await gateway<RangeResponse>(base, '/v3/kv/range', { key: 'AA==', range_end: 'AA==', count_only: true, revision: String(rev), serializable: true }, signal);
          return { revision: Number(r.header?.revision ?? NaN), count: Number(r.count ?? 0) };
        } catch (e) {
          if (signal.aborted) throw e;
          throw new BackupError('drill-mismatch', `backup ${m.id}: the restored etcd did not answer a count of its keys${rev ? ` at revision ${rev}` : ''}: ${messageOf(e)}`);
        }
      };
      const now = await countAt(0);
      if (!(now.revision >= want.servedRevision)) {
        throw new BackupError('drill-mismatch', `backup ${m.id}: the restored etcd serves revision ${now.revision}, the backup is at revision ${want.servedRevision} (${now.count} keys, the snapshot holds ${want.liveKeys})`);
      }
      if (now.revision > want.servedRevision) {
        // Only the drill etcd itself writes (it revokes leases whose TTL ran out since it started); the checks below are at the backup's revision.
        if (atRev === 0) throw new BackupError('drill-mismatch', `backup ${m.id}: the restored etcd moved on to revision ${now.revision} before it could be checked at ${want.servedRevision}`);
        log.warn({ served: now.revision, backup: want.servedRevision }, 'restore drill: the restored etcd wrote revisions of its own (expired leases); checking at the backup revision');
      }
      const served = atRev === 0 ? now : await countAt(atRev);
      result.revision = want.servedRevision;
      result.liveKeys = served.count;
      if (served.count !== want.liveKeys) diffs.push(`it serves ${served.count} keys at revision ${want.servedRevision}, the snapshot holds ${want.liveKeys}`);
      if (served.count > want.buckets.key!) diffs.push(`it serves more keys (${served.count}) than the key bucket has entries (${want.buckets.key})`);

      // HashKV, through etcdctl: the gateway's /v3/maintenance/hash is Hash (the whole backend), not HashKV.
      const remaining = Math.max(5, Math.floor((started.getTime() + timeoutSeconds * 1000 - Date.now()) / 1000));
      const hk = await execCapture(
        [...prio, etcdctlBin, `--endpoints=${base}`, `--command-timeout=${remaining}s`, 'endpoint', 'hashkv', `--rev=${atRev}`, '-w', 'json'],
        childEnv({ ETCDCTL_API: '3' }),
        dir!,
        signal,
        log,
        'drill-etcdctl',
      );
      if (signal.aborted) throw new Error('aborted');
      let hash: number | undefined;
      let compactRev: number | undefined;
      try {
        const j = JSON.parse(hk.stdout) as { HashKV?: { hash?: number; compact_revision?: number } }[];
        hash = j[0]?.HashKV?.hash;
        compactRev = j[0]?.HashKV?.compact_revision;
      } catch {
        /* below */
      }
      if (hk.code !== 0 || typeof hash !== 'number') {
        diffs.push(`etcdctl endpoint hashkv failed (${hk.code !== null ? `exit ${hk.code}` : `signal ${hk.signal}`}): ${toolError(hk.tail)}`);
      } else {
        result.hashKV = hash >>> 0;
        if (result.hashKV !== want.hashKV) {
          diffs.push(`its HashKV at revision ${want.servedRevision} is ${result.hashKV}, the snapshot's key bucket gives ${want.hashKV}`);
        }
        if (compactRev !== undefined && compactRev !== want.compactRevision) {
          diffs.push(`its compaction revision is ${compactRev}, the snapshot's is ${want.compactRevision}`);
        }
      }
      if (diffs.length) throw new BackupError('drill-mismatch', `backup ${m.id}: the restored etcd does not serve what the snapshot holds: ${diffs.join('; ')}`);

      // A sample of keys: one range, then each key on its own.
      let sampled = 0;
      if (sampleKeys > 0) {
        try {
          const page = await gateway<RangeResponse>(base, '/v3/kv/range', { key: 'AA==', range_end: 'AA==', limit: String(sampleKeys), revision: String(atRev), serializable: true }, signal);
          const kvs = page.kvs ?? [];
          const show = (k: string | undefined) => Buffer.from(k ?? '', 'base64').toString('utf8').slice(0, 200);
          let next = 0;
          const reader = async () => {
            while (next < kvs.length && diffs.length === 0) {
              const kv = kvs[next++]!;
              const one = await gateway<RangeResponse>(base, '/v3/kv/range', { key: kv.key ?? '', revision: String(atRev), serializable: true }, signal);
              const got = one.kvs?.[0];
              if (!got || got.key !== kv.key || (got.value ?? '') !== (kv.value ?? '') || got.mod_revision !== kv.mod_revision) {
                diffs.push(`key ${show(kv.key)} reads differently on its own than in a range`);
              } else if (Number(got.mod_revision) > want.servedRevision) {
                diffs.push(`key ${show(kv.key)} has mod_revision ${got.mod_revision}, beyond the backup's revision`);
              } else {
                sampled++;
              }
            }
          };
          await Promise.all(Array.from({ length: 8 }, reader));
          if (sampled < Math.min(sampleKeys, want.liveKeys) && !diffs.length) diffs.push(`a range of ${sampleKeys} keys returned ${sampled}, the snapshot holds ${want.liveKeys}`);
        } catch (e) {
          if (signal.aborted) throw e;
          if (e instanceof BackupError) throw e;
          diffs.push(`reading sample keys failed: ${messageOf(e)}`);
        }
      }
      result.sampled = sampled;
      if (diffs.length) throw new BackupError('drill-mismatch', `backup ${m.id}: ${diffs.join('; ')}`);
      log.info({ revision: result.revision, liveKeys: result.liveKeys, hashKV: result.hashKV, sampled }, 'restore drill: the restored etcd serves exactly what the backup holds');
    });
    result.result = 'success';
  } catch (e) {
    const err =
      signal.aborted
        ? timedOut
          ? new BackupError('drill-timeout', `restore drill of ${m.id} did not finish within ${timeoutSeconds}s (it was in the ${current} step)`, { hint: hintFor['drill-timeout'] })
          : new BackupError('drill-aborted', `restore drill of ${m.id} was stopped during the ${current} step`)
        : e instanceof BackupError
          ? e
          : new BackupError('internal', `restore drill of ${m.id}, ${current} step: ${messageOf(e)}`, { cause: e });
    result.result = 'failed';
    result.reason = err.reason;
    result.error = err.message;
    result.hint = err.hint ?? hintFor[err.reason];
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onOuterAbort);
    const t0 = performance.now();
    try {
      // (assigned inside the step closures, which TypeScript's narrowing does not see)
      const proc = etcd as EtcdProcess | undefined;
      const drillDir = dir as string | undefined;
      if (proc) await proc.stop();
      ctl.abort(); // ends a computation still reading the snapshot
      await expectation;
      if (drillDir) {
        await rm(drillDir, { recursive: true, force: true, maxRetries: 3 });
        if (await access(drillDir, fsConstants.F_OK).then(() => true, () => false)) throw new Error(`${drillDir} is still there`);
      }
    } catch (e) {
      log.error({ err: messageOf(e), dir }, 'restore drill: cleanup failed; remove the directory by hand (it holds a copy of every Secret)');
      if (result.result === 'success') {
        result.result = 'failed';
        result.reason = 'internal';
        result.error = `restore drill of ${m.id}: cleanup failed: ${messageOf(e)}`;
      }
    }
    steps.push({ name: 'stop', seconds: (performance.now() - t0) / 1000 });
    result.finishedAt = new Date().toISOString();
  }
  const summary = { result: result.result, reason: result.reason, steps: Object.fromEntries(steps.map((s) => [s.name, Number(s.seconds.toFixed(3))])) };
  if (result.result === 'success') {
    log.info({ ...summary, revision: result.revision, liveKeys: result.liveKeys, sampled: result.sampled }, 'restore drill passed');
  } else {
    log.error({ ...summary, err: result.error }, 'restore drill failed');
  }
  return result;
}
