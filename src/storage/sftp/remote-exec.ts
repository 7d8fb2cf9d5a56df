import { ConnectionLost, type Session } from './session.js';

/** One POSIX shell word: single quotes, with each ' written as '\''. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The server would not open an exec channel (or run a command on it) at all. */
export class ExecRefused extends Error {}

export interface ExecOutcome {
  /** The command's exit status; null when it was killed, or the channel closed without one. */
  code: number | null;
  /** Set when we ended it: onData said stop ('enough'), or limitMs passed ('deadline'). */
  stopped?: 'enough' | 'deadline';
}

/**
 * Runs one command on an exec channel of the session's connection and hands
 * its stdout to `onData` as it arrives; `onData` returning false stops it
 * (the channel is closed, what follows is dropped). Settles when the
 * command exits, at such a stop, or after `limitMs` (the channel closed):
 * never later, whatever the server does, since a server that never
 * confirms the close is not waited for. Rejects with ExecRefused when the
 * server refuses the channel, with ConnectionLost on a dead session, and
 * when `signal` aborts. stderr is discarded.
 */
export function execStream(s: Session, cmd: string, opts: { where: string; limitMs: number; signal?: AbortSignal; onData: (chunk: Buffer) => boolean }): Promise<ExecOutcome> {
  const { where, limitMs, signal, onData } = opts;
  return new Promise<ExecOutcome>((resolve, reject) => {
    if (!s.alive) return reject(new ConnectionLost(`connection to ${where} lost: ${s.lostReason ?? 'closed'}`));
    if (signal?.aborted) return reject(new Error('aborted'));
    s.client.exec(cmd, (err, stream) => {
      if (err) return reject(new ExecRefused(`exec refused by ${where}: ${err.message}`));
      let settled = false;
      const finish = (outcome: ExecOutcome | Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      const stop = (why: 'enough' | 'deadline' | Error): void => {
        stream.removeListener('data', take);
        stream.resume(); // whatever still arrives is dropped
        stream.close();
        finish(why instanceof Error ? why : { code: null, stopped: why });
      };
      const timer = setTimeout(() => stop('deadline'), limitMs);
      const onAbort = () => stop(new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      // No input: a server that forces internal-sftp for every session then sees EOF and exits instead of waiting.
      stream.end();
      const take = (d: Buffer): void => {
        if (!onData(d)) stop('enough');
      };
      stream.on('data', take);
      stream.stderr.resume();
      stream.on('close', (code: number | null | undefined) => {
        if (!s.alive) finish(new ConnectionLost(`connection to ${where} lost: ${s.lostReason ?? 'closed'}`));
        finish({ code: code ?? null });
      });
    });
  });
}

/**
 * Runs one command on an exec channel of the session's connection, returns
 * its stdout (first 4 KiB) when it exits 0. Hashing a large file takes a
 * while, so the caller's limit is generous; past it the caller reads back
 * instead (a forced command that ignores EOF must not hang a run).
 */
export async function execOn(s: Session, cmd: string, opts: { where: string; limitMs: number; signal?: AbortSignal }): Promise<string> {
  let out = '';
  const r = await execStream(s, cmd, {
    ...opts,
    onData: (d) => {
      if (out.length < 4096) out += d.toString('latin1');
      return true;
    },
  });
  if (r.code !== 0 || r.stopped) throw new Error(r.stopped ? `exec: no exit within ${opts.limitMs} ms` : `exec exited ${r.code}`);
  return out;
}
