import type { Readable } from 'node:stream';
import { createInterface } from 'node:readline';

/** One line of etcd-backupd's JSON log; a line that is not JSON is kept as `{ msg: line, raw: true }`. */
export type LogLine = Record<string, unknown>;

export interface JsonLog {
  /** Every line so far, in order. */
  lines: LogLine[];
  /** Resolves with the first line (already seen or still to come) matching `pred`, or rejects after `timeoutMs` with the log's tail. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs?: number, what?: string): Promise<LogLine>;
  count(pred: (l: LogLine) => boolean): number;
}

/** Follows a process's JSON log (its stderr), line by line. */
export function followJsonLog(input: Readable): JsonLog {
  const lines: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  createInterface({ input }).on('line', (line) => {
    let l: LogLine;
    try {
      l = JSON.parse(line);
    } catch {
      l = { msg: line, raw: true };
    }
    lines.push(l);
    for (const w of [...waiters]) {
      if (w.pred(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  const waitFor = (pred: (l: LogLine) => boolean, timeoutMs = 60_000, what = 'log line') =>
    new Promise<LogLine>((resolve, reject) => {
      const found = lines.find(pred);
      if (found) return resolve(found);
      const timer = setTimeout(
        () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; log tail:\n${lines.slice(-20).map((l) => JSON.stringify(l)).join('\n')}`)),
        timeoutMs,
      );
      waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  return { lines, waitFor, count: (pred) => lines.filter(pred).length };
}
