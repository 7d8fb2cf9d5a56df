import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/**
 * Logs go to stderr so that `--json` output on stdout stays one clean document.
 * JSON lines for machines; a readable rendering when a person watches a TTY.
 * Paths that could ever hold credentials are redacted by pino itself, so a
 * careless `log.info({ config })` cannot leak them.
 */
export function createLogger(opts: { level?: string; pretty?: boolean } = {}): Logger {
  const level = opts.level ?? process.env.ETCD_BACKUPD_LOG_LEVEL ?? 'info';
  const usePretty = opts.pretty ?? process.stderr.isTTY === true;
  const options: pino.LoggerOptions = {
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['*.secretAccessKey', '*.accessKeyId', '*.password', '*.passphrase', '*.privateKey', '*.sessionToken', '*.identity'],
      censor: '<redacted>',
    },
  };
  if (usePretty) {
    return pino(options, pretty({ destination: 2, sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname' }));
  }
  return pino(options, pino.destination({ dest: 2, sync: true }));
}

export const silentLogger: Logger = pino({ level: 'silent' });
