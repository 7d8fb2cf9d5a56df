import type { ChildProcess } from 'node:child_process';
import { spawnDaemon } from './faults.js';

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

/** Starts `etcd-backupd run` as a real process and follows its JSON log (test/support/faults.ts's spawnDaemon, started). */
/** A daemon's last 40 log lines above debug (message and error, reason or base), for a failing test's output. */
export function dumpDaemonLog(d: DaemonProcess | undefined, label = ''): void {
  if (!d) return;
  console.error(label, JSON.stringify(d.lines.filter((l) => l.level !== 20).slice(-40).map((l) => [l.msg, l.err ?? l.reason ?? l.base ?? ''])));
}

export async function startDaemonProcess(configFile: string, env: NodeJS.ProcessEnv = {}): Promise<DaemonProcess> {
  const d = await spawnDaemon(configFile, { env });
  return { child: d.child, lines: d.lines, metricsUrl: d.metricsUrl!, waitFor: d.waitFor, metrics: d.metrics, stop: d.stop };
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
