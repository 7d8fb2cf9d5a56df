import { spawn, type ChildProcess } from 'node:child_process';
import { CLI } from './cli.js';
import { followJsonLog } from './logs.js';

export interface DaemonProcess {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  metricsUrl: string;
  /** Resolves with the first log line matching `pred`, or rejects after `timeoutMs`. */
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  metrics(): Promise<string>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

/** Starts `etcd-backupd run` as a real process and follows its JSON log. */
export async function startDaemonProcess(configFile: string, env: NodeJS.ProcessEnv = {}): Promise<DaemonProcess> {
  const child = spawn(process.execPath, [CLI, 'run', '--config', configFile], {
    env: { ...process.env, ETCD_BACKUPD_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let exited = false;
  const exit = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      exited = true;
      resolve(code);
    }),
  );
  const { lines, waitFor } = followJsonLog(child.stderr!);
  const started = await waitFor((l) => l.msg === 'etcd-backupd daemon started', 30_000, 'daemon start');
  const metricsUrl = `http://${String(started.metrics).includes(':') && String(started.metrics).split(':').length > 2 ? `[${String(started.metrics).replace(/:\d+$/, '')}]:${String(started.metrics).split(':').pop()}` : started.metrics}`;
  return {
    child,
    lines,
    metricsUrl,
    waitFor,
    metrics: async () => (await fetch(`${metricsUrl}/metrics`)).text(),
    stop: async (signal = 'SIGTERM', timeoutMs = 60_000) => {
      if (!exited) child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exit;
      clearTimeout(t);
      return code;
    },
  };
}

/** Value of a sample in Prometheus text format, e.g. metricValue(text, 'etcd_backup_runs_total', {result: 'success'}). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let total: number | undefined;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total = (total ?? 0) + Number(m[4]);
  }
  return total;
}
