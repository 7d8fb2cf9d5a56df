import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { BackupError } from '../errors.js';
import type { Logger } from '../log.js';

export interface ExecOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutSeconds: number;
  log: Logger;
  /** Labels the child's output lines in the log. */
  what: string;
  signal?: AbortSignal;
}

export interface ExecResult {
  code: number;
  /** Last lines of combined output, for error messages. */
  tail: string[];
}

const TAIL_LINES = 20;
const KILL_GRACE_MS = 5000;

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
    const killGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        /* already gone */
      }
    };
    const stop = () => {
      killGroup('SIGTERM');
      setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS).unref();
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

    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(
        new BackupError('source-failed', `${opts.what}: cannot run ${cmd}: ${e.code ?? e.message}`, {
          hint: e.code === 'ENOENT' ? `install ${cmd} or set its path in the config` : undefined,
        }),
      );
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (timedOut) {
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
