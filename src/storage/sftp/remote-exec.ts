import { ConnectionLost, type Session } from './session.js';

/** One POSIX shell word: single quotes, with each ' written as '\''. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs one command on an exec channel of the session's connection, returns
 * its stdout (first 4 KiB) when it exits 0. Hashing a large file takes a
 * while, so the caller's limit is generous; past it the caller reads back
 * instead (a forced command that ignores EOF must not hang a run).
 */
export function execOn(s: Session, cmd: string, opts: { where: string; limitMs: number; signal?: AbortSignal }): Promise<string> {
  const { where, limitMs, signal } = opts;
  return new Promise<string>((resolve, reject) => {
    if (!s.alive) return reject(new ConnectionLost(`connection to ${where} lost: ${s.lostReason ?? 'closed'}`));
    if (signal?.aborted) return reject(new Error('aborted'));
    s.client.exec(cmd, (err, stream) => {
      if (err) return reject(err);
      const timer = setTimeout(() => stream.close(), limitMs);
      stream.once('close', () => clearTimeout(timer));
      // No input: a server that forces internal-sftp for every session then sees EOF and exits instead of waiting.
      stream.end();
      let out = '';
      const onAbort = () => stream.close();
      signal?.addEventListener('abort', onAbort, { once: true });
      stream.on('data', (d: Buffer) => {
        if (out.length < 4096) out += d.toString('latin1');
      });
      stream.stderr.resume();
      stream.on('close', (code: number | null) => {
        signal?.removeEventListener('abort', onAbort);
        if (code === 0) resolve(out);
        else reject(new Error(`exec exited ${code}`));
      });
    });
  });
}
