import { writeSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, type Config } from '../config/load.js';
import { BackupError, messageOf } from '../errors.js';
import { callDaemon } from '../control/client.js';
import type { ControlEvent, ControlRequest } from '../control/protocol.js';
import { createStores, type Store } from '../storage/index.js';
import { aroundLiveArea } from '../log.js';
import { cliProgress, progressEventOf } from '../progress/forward.js';
import type { ProgressSink } from '../progress/model.js';
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
/** 128 + SIGPIPE: what a shell tool's status is when its reader closed the pipe. */
export const EXIT_STDOUT_CLOSED = 141;

/**
 * Writes all of `text`, however long and however slow the reader: writeSync
 * to a pipe writes what fits (a partial write) or fails with EAGAIN when the
 * pipe is non-blocking and full. Without the loop a long message lost its
 * tail, `reason:` line included.
 */
export function writeAllSync(fd: number, text: string): void {
  const buf = Buffer.from(text.endsWith('\n') ? text : text + '\n');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // The reader of stdout went away (`list | head`): it wants no more, so end as shell tools do
      // on SIGPIPE, quietly and at once. Output comes last, after the work is done.
      if (code === 'EPIPE' && fd === 1) process.exit(EXIT_STDOUT_CLOSED);
      if (code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 2); // the reader has not caught up: wait a moment, synchronously
    }
  }
}
export function out(text: string): void {
  writeAllSync(1, text);
}
export function err(text: string): void {
  writeAllSync(2, text);
}
let jsonPrinted = false;

export function printJson(v: unknown): void {
  jsonPrinted = true;
  out(JSON.stringify(v, null, 2));
}

/** Whether a JSON document is on stdout already (`--json` promises exactly one). */
export function printedJson(): boolean {
  return jsonPrinted;
}

/**
 * Ends the CLI with `code` once everything it wrote has left the process.
 * Our own output is already out (writeAllSync), but a write through the
 * process.stdout/stderr streams (a Node warning, a dependency's console.warn)
 * is asynchronous on a pipe: what a full pipe did not take waits in libuv, and
 * process.exit would drop it. So wait for those streams to drain, however slow
 * the reader (our own writes wait for it too), then exit explicitly: a
 * lingering handle (a half-closed connection, a timer) must never keep a
 * finished CLI alive.
 */
export async function exitWhenWritten(code: number): Promise<never> {
  process.exitCode = code;
  for (const s of [process.stdout, process.stderr]) {
    if (s.writableLength === 0 || s.destroyed) continue;
    await new Promise<void>((done) => {
      s.once('drain', done);
      s.once('error', () => done()); // the reader went away (EPIPE): nothing more can arrive
      s.once('close', done);
    });
  }
  process.exit(code);
}

export class UsageError extends BackupError {
  constructor(msg: string) {
    super('usage', msg, { hint: 'run `etcd-backupd --help` for usage' });
  }
}

export type Opts = NonNullable<ParseArgsConfig['options']>;
export const common: Opts = { config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, store: { type: 'string' } };

export function parse(argv: string[], options: Opts, positionals: number) {
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

export function configFrom(values: Record<string, unknown>): Config {
  const file = values.config ?? process.env.ETCD_BACKUPD_CONFIG;
  if (typeof file !== 'string' || !file) throw new UsageError('--config FILE is required (or set ETCD_BACKUPD_CONFIG)');
  return loadConfig(file);
}

export function pickStore(cfg: Config, stores: Store[], name: unknown): Store {
  if (name === undefined) return stores[0]!;
  const s = stores.find((x) => x.name === name);
  if (!s) throw new UsageError(`no store named ${String(name)}; configured: ${cfg.stores.map((x) => x.name).join(', ')}`);
  return s;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(rows[0]!), sep, ...rows.slice(1).map(line), sep].join('\n');
}

export async function withStores<T>(cfg: Config, fn: (stores: Store[]) => Promise<T>): Promise<T> {
  const stores = await createStores(cfg.stores);
  try {
    return await fn(stores);
  } finally {
    await Promise.all(stores.map((s) => s.close?.()));
  }
}

/**
 * Sends a request to the daemon when one listens; its log lines are echoed to stderr as they
 * come, and its progress events fed to `progress` (the terminal's live lines) when given.
 */
export async function daemonCall(cfg: Config, req: ControlRequest, quiet: boolean, progress?: ProgressSink): Promise<ControlEvent | undefined> {
  if (process.env.ETCD_BACKUPD_NO_DAEMON === '1') return undefined;
  return callDaemon(cfg.control.socket, req, (e) => {
    if (e.type === 'log' && !quiet) aroundLiveArea(() => err(`[daemon] ${String(e.msg)}${e.reason ? ` (${String(e.reason)})` : ''}`));
    else if (e.type === 'log') err(JSON.stringify(e));
    else if (e.type === 'progress' && progress) {
      const p = progressEventOf(e);
      if (p) progress(p);
    }
  });
}

/**
 * Runs `fn` with a live progress display when stderr is a terminal and no --json was asked for
 * (src/progress/forward.ts); the display is gone before `fn`'s caller prints its result.
 */
export async function withProgress<T>(json: boolean, fn: (progress: ProgressSink | undefined) => Promise<T>): Promise<T> {
  const live = await cliProgress({ json });
  try {
    return await fn(live?.sink);
  } finally {
    live?.close();
  }
}

/** Ctrl-C / SIGTERM abort the operation; it cleans up after itself (a drill stops its etcd and removes its files). */
export function interruptSignal(): AbortSignal {
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  process.once('SIGTERM', () => ac.abort());
  return ac.signal;
}
