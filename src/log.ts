import { Writable } from 'node:stream';
import { isatty } from 'node:tty';
import pino, { type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';

export type { Logger };

/**
 * Logs go to stderr so that `--json` output on stdout stays one clean document.
 * JSON lines for machines; a readable rendering when a person watches a TTY.
 * Paths that could ever hold credentials are redacted by pino itself, so a
 * careless `log.info({ config })` cannot leak them.
 */
export function createLogger(opts: { level?: string; pretty?: boolean; /** Also receives every JSON line (control-socket clients watch a run this way). */ tee?: (line: string) => void } = {}): Logger {
  const level = opts.level ?? process.env.ETCD_BACKUPD_LOG_LEVEL ?? 'info';
  // isatty, not process.stderr.isTTY: asking the stream creates it, which turns a pipe on fd 2
  // non-blocking (for every process sharing it, fd 1 too after 2>&1). Logs go out by
  // synchronous writes to fd 2 (sonic-boom's sync mode, which waits on EAGAIN).
  const usePretty = opts.pretty ?? isatty(2);
  const options: pino.LoggerOptions = {
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['*.secretAccessKey', '*.accessKeyId', '*.password', '*.passphrase', '*.privateKey', '*.sessionToken', '*.identity'],
      censor: '<redacted>',
    },
  };
  const fd2 = pino.destination({ dest: 2, sync: true });
  // Rendered here, synchronously, rather than by pino-pretty's stream: a live progress area on the
  // terminal (src/progress/tty.ts) steps aside around exactly this write, or lines would tear it.
  const prettify = usePretty ? prettyFactory({ colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname' }) : undefined;
  const main = {
    write(line: string) {
      liveArea?.suspend();
      fd2.write(prettify ? prettify(line) : line);
      liveArea?.resume();
    },
  };
  if (!opts.tee) return pino(options, main);
  const tee = opts.tee;
  const side = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) tee(line);
      cb();
    },
  });
  return pino(options, pino.multistream([{ stream: main, level: 'trace' as pino.Level }, { stream: side, level: 'trace' as pino.Level }]));
}

/** What owns the bottom lines of the terminal (the live progress): cleared before a log line is written, drawn again after. */
export interface LiveArea {
  suspend(): void;
  resume(): void;
}
let liveArea: LiveArea | undefined;

/** Installs (or, with undefined, removes) the live area log lines must step around. */
export function setLiveArea(area: LiveArea | undefined): void {
  liveArea = area;
}

/** Writes something to the terminal that is not a log line of ours (a daemon's forwarded line) around the live area. */
export function aroundLiveArea(write: () => void): void {
  liveArea?.suspend();
  try {
    write();
  } finally {
    liveArea?.resume();
  }
}

export const silentLogger: Logger = pino({ level: 'silent' });
