import { loadConfig, type Config } from '../config/load.js';
import { messageOf, reasonOf } from '../errors.js';
import { type Logger } from '../log.js';
import { configFrom, EXIT_OK, parse } from './io.js';
/**
 * The daemon. SIGHUP reloads the config file: the services stop (a run in
 * progress is waited for, as at shutdown) and start again with the new
 * config; a config that does not validate is logged and the running one
 * stays. SIGTERM/SIGINT stop it.
 */
export async function cmdRun(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, { config: { type: 'string', short: 'c' } }, 0);
  let cfg = configFrom(values);
  const { startDaemon } = await import('../daemon/index.js');
  let d: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let stopping = false;
  let reloading: Promise<void> | undefined;
  let hupPending = false;
  const reload = async () => {
    let next: Config;
    try {
      next = loadConfig(cfg.configPath!);
    } catch (e) {
      log.error({ reason: reasonOf(e), err: messageOf(e) }, 'SIGHUP: the config file does not validate; the daemon keeps running with the configuration it has');
      return;
    }
    log.info({ config: cfg.configPath }, 'SIGHUP: reloading the configuration');
    await d!.stop();
    if (stopping) return;
    try {
      d = await startDaemon(next, log);
      cfg = next;
    } catch (e) {
      log.error({ reason: reasonOf(e), err: messageOf(e) }, 'SIGHUP: cannot start with the new configuration; starting again with the previous one');
      d = await startDaemon(cfg, log);
    }
  };
  // A SIGHUP while starting or reloading is not lost: it triggers one more reload afterwards
  // (and is never left to its default action, which kills the process).
  const onHup = () => {
    if (stopping) return;
    hupPending = true;
    if (!d || reloading) return;
    reloading = (async () => {
      while (hupPending && !stopping) {
        hupPending = false;
        await reload();
      }
    })().finally(() => (reloading = undefined));
  };
  process.on('SIGHUP', onHup);
  // Installed before the daemon starts: a SIGTERM while it is starting (a pod stopped right
  // after it came up) must be a graceful stop, not node's default of dying by the signal.
  const onSignal = (sig: string) => {
    log.info({ signal: sig }, 'shutting down');
    stopping = true;
    if (d) void (reloading ?? Promise.resolve()).then(() => d!.stop());
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  d = await startDaemon(cfg, log);
  if (stopping) {
    await d.stop();
    return EXIT_OK;
  }
  if (hupPending) onHup();
  for (;;) {
    await d.done;
    const r = reloading;
    if (!r) break;
    await r;
    if (stopping) {
      await d.stop();
      break;
    }
  }
  return EXIT_OK;
}
