/**
 * The project's child processes, each in its own process group so that
 * stopping one also stops whatever it started:
 *   runCommand      a source's tool (cluster-backup.sh, etcdctl): every output
 *                   line logged, a timeout, failures as BackupErrors;
 *   captureCommand  a tool run to completion with its stdout and last lines
 *                   captured (the drill's etcdutl/etcdctl);
 *   startService    a long-running server stopped on demand (the drill's etcd).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { BackupError, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { watchStall } from './stall.js';

export interface ExecOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutSeconds: number;
  log: Logger;
  /** Labels the child's output lines in the log. */
  what: string;
  signal?: AbortSignal;
  /** Kill the command when the snapshot file in `dir` stops growing for `seconds` (see stall.ts). */
  stall?: { dir: string; seconds: number };
}

export interface ExecResult {
  code: number;
  /** Last lines of combined output, for error messages. */
  tail: string[];
}

const TAIL_LINES = 20;
const KILL_GRACE_MS = 5000;
const CAPTURE_TAIL_LINES = 40;
const PROCESS_TAIL_LINES = 60;
const MAX_LINE = 4000;
const MAX_STDOUT = 4 * 1024 * 1024;

/** Signals the process group a detached child leads; a group that is gone already is fine. */
export function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * Runs a command in its own process group, streams each output line into the
 * log, and on timeout kills the whole group: cluster-backup.sh starts etcdctl
 * and podman children that must not outlive it.
 */
export function runCommand(cmd: string, args: string[], opts: ExecOptions): Promise<ExecResult> {
  return new Promise((resolvePromise, reject) => {
    let child;
    try {
      child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (e) {
      reject(new BackupError('source-failed', `${opts.what}: cannot start ${cmd}: ${(e as Error).message}`));
      return;
    }
    const tail: string[] = [];
    const collect = (stream: NodeJS.ReadableStream, level: 'info' | 'warn') => {
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
        opts.log[level]({ source: opts.what, stream: stream === child.stdout ? 'stdout' : 'stderr' }, line.slice(0, 4000));
      });
    };
    collect(child.stdout!, 'info');
    collect(child.stderr!, 'info'); // tools log progress on stderr; failures show in the exit code and the tail

    let timedOut = false;
    let aborted = false;
    const stop = () => {
      killGroup(child.pid, 'SIGTERM');
      setTimeout(() => killGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS).unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, opts.timeoutSeconds * 1000);
    const onAbort = () => {
      aborted = true;
      stop();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let stalled = false;
    const stopWatch = opts.stall
      ? watchStall(opts.stall.dir, opts.stall.seconds * 1000, () => {
          stalled = true;
          opts.log.warn({ source: opts.what, dir: opts.stall!.dir, stallSeconds: opts.stall!.seconds }, 'the snapshot file stopped growing: killing the source');
          stop();
        })
      : () => undefined;

    child.on('error', (e: NodeJS.ErrnoException) => {
      stopWatch();
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(
        new BackupError('source-failed', `${opts.what}: cannot run ${cmd}: ${e.code ?? e.message}`, {
          hint: e.code === 'ENOENT' ? `install ${cmd} or set its path in the config` : undefined,
        }),
      );
    });
    child.on('close', (code, sig) => {
      stopWatch();
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (stalled) {
        reject(
          new BackupError('source-stalled', `${opts.what}: its snapshot file in ${opts.stall!.dir} did not grow for ${opts.stall!.seconds}s; killed`, {
            hint: 'etcd is not answering the snapshot (the script waits forever then): check `etcdctl endpoint health` and the etcd logs on this node; raise source.stallTimeout only if etcd is known to pause that long',
          }),
        );
      } else if (timedOut) {
        reject(
          new BackupError('source-timeout', `${opts.what} did not finish within ${opts.timeoutSeconds}s and was killed`, {
            hint: 'check etcd health and the script log above; raise source.timeout if the cluster is just big',
          }),
        );
      } else if (aborted) {
        reject(new BackupError('source-failed', `${opts.what} was stopped because the run was aborted`));
      } else {
        resolvePromise({ code: code ?? (sig ? 128 : 1), tail });
      }
    });
  });
}

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

/** Whether a command runs and exits 0 (a probe: no output, no timeout). */
export function commandSucceeds(cmd: string, args: string[]): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const c = spawn(cmd, args, { stdio: 'ignore' });
    c.once('error', () => resolvePromise(false));
    c.once('close', (code) => resolvePromise(code === 0));
  });
}

/** Calls `onLine` for each complete line of the chunks fed to it; `flush` hands over the rest. */
function lineSplitter(onLine: (line: string) => void): { feed: (d: Buffer) => void; flush: () => string } {
  let buf = '';
  return {
    feed: (d) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      lines.forEach(onLine);
    },
    flush: () => buf,
  };
}

export interface CaptureOptions {
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Aborting kills the process group. */
  signal: AbortSignal;
  log: Logger;
  /** Labels the child's output lines in the (debug) log. */
  what: string;
}

export interface Captured {
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
 * caller can remove its files afterwards. A command that cannot be started
 * rejects with the spawn error.
 */
export function captureCommand(argv: string[], opts: CaptureOptions): Promise<Captured> {
  const { env, cwd, signal, log, what } = opts;
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
      tail.push(line.slice(0, MAX_LINE));
      if (tail.length > CAPTURE_TAIL_LINES) tail.shift();
      log.debug({ source: what }, line.slice(0, MAX_LINE));
    };
    const stderr = lineSplitter(onLine);
    child.stdout!.on('data', (d: Buffer) => {
      if (stdout.length < MAX_STDOUT) stdout += d.toString();
    });
    child.stderr!.on('data', stderr.feed);
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
      onLine(stderr.flush());
      for (const l of stdout.split('\n').slice(-5)) if (l.trim() && !tail.includes(l)) tail.push(l);
      resolvePromise({ code, signal: sig, stdout, tail });
    });
  });
}

export interface ServiceOptions {
  env: NodeJS.ProcessEnv;
  cwd: string;
  log: Logger;
  /** Labels the child's output lines in the (debug) log. */
  what: string;
  /** Names the program in the tail line written when it cannot be started. */
  name: string;
}

/**
 * A long-running command (a server) in its own process group, started with
 * `startService`: its last output lines are kept for error messages, and
 * `stop` ends the whole group.
 */
export class ServiceProcess {
  readonly tail: string[] = [];
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly closed: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    opts: Pick<ServiceOptions, 'log' | 'what' | 'name'>,
  ) {
    const onLine = (l: string) => {
      if (!l) return;
      this.tail.push(l.slice(0, MAX_LINE));
      if (this.tail.length > PROCESS_TAIL_LINES) this.tail.shift();
      opts.log.debug({ source: opts.what }, l.slice(0, MAX_LINE));
    };
    // One splitter for both streams, as etcd logs on stderr and the rare stdout line belongs in the same tail.
    const lines = lineSplitter(onLine);
    child.stdout?.on('data', lines.feed);
    child.stderr?.on('data', lines.feed);
    child.on('error', (e) => this.tail.push(`cannot run ${opts.name}: ${messageOf(e)}`));
    this.closed = new Promise((r) =>
      child.once('close', (code, signal) => {
        this.exited = { code, signal };
        const rest = lines.flush();
        if (rest) this.tail.push(rest);
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

  /** SIGTERM the group, SIGKILL after `graceMs`; resolves once it is gone. */
  async stop(graceMs: number): Promise<void> {
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

/** Starts a long-running command in its own process group (see ServiceProcess). */
export function startService(argv: string[], opts: ServiceOptions): ServiceProcess {
  const child = spawn(argv[0]!, argv.slice(1), { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  return new ServiceProcess(child, opts);
}
