import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metricValue } from '../support/daemon.js';
import type { EtcdCluster } from '../support/etcd.js';
import { makeEnv, startFilledEtcd, tempDir } from '../support/fault-env.js';
import { fdTargets, listFiles, procSample, sleep, spawnDaemon, type DaemonProc } from '../support/faults.js';

/**
 * Soak: the daemon on a 1-second schedule against a real etcd and a local
 * store for hundreds of runs (SOAK_RUNS, default 300; the suite's long test,
 * bounded by SOAK_MINUTES, default 7.5). Memory and file descriptors stay
 * flat, every tick is accounted for (a run or a counted skip), the metrics
 * agree with the log, and retention keeps the store and the outbox bounded.
 */
const TARGET = Number(process.env.SOAK_RUNS ?? 300);
const MINUTES = Number(process.env.SOAK_MINUTES ?? 7.5);
const SAMPLE_EVERY = Math.max(5, Math.round(TARGET / 15)); // ~20 runs at the default

let etcd: EtcdCluster;
let root: string;
let d: DaemonProc | undefined;

beforeAll(async () => {
  root = tempDir('soak');
  etcd = await startFilledEtcd({ keys: 200 });
});
afterAll(async () => {
  await d?.stop('SIGKILL');
  await etcd?.stop();
});

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.floor((s.length - 1) / 2)]! + s[Math.ceil((s.length - 1) / 2)]!) / 2 : NaN;
};

describe('soak', () => {
  it(`${TARGET} runs on a 1-second schedule: flat memory and fds, every tick accounted for`, async () => {
    const env = makeEnv(root, 'soak', etcd, {
      schedule: '* * * * * *',
      retention: { keepLast: 3, hourly: 0, daily: 0, weekly: 0, monthly: 0 },
      local: { keep: 1, retryMin: '1m', retryMax: '1h' },
      etcd: { endpoints: [etcd.endpoints[0]], timeout: '5s' },
    });
    d = await spawnDaemon(env.file);
    const t0 = Date.now();
    const deadline = t0 + MINUTES * 60_000;
    const samples: { runs: number; rssKiB: number; fds: number }[] = [];
    const done = () => d!.count((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed');
    let nextSample = SAMPLE_EVERY;
    while (done() < TARGET && Date.now() < deadline && !d.exited()) {
      await sleep(250);
      if (done() >= nextSample) {
        samples.push({ runs: done(), ...procSample(d.pid()) });
        nextSample += SAMPLE_EVERY;
      }
    }
    expect(d.exited(), d.stderr().slice(-2000)).toBe(false);
    const fdsAtEnd = fdTargets(d.pid());
    // Read the books between two runs: the log line of a run comes before its cycle is recorded in the metrics.
    const ended = () => d!.lines.filter((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed').length;
    const recorded = (t: string) =>
      ['success', 'failed'].reduce((a, result) => a + ['schedule', 'manual', 'catch-up'].reduce((b, trigger) => b + (metricValue(t, 'etcd_backup_runs_total', { result, trigger }) ?? 0), 0), 0);
    let text = '';
    let log: Record<string, unknown>[] = [];
    let elapsedS = 0;
    for (let i = 0; i < 50; i++) {
      const before = ended();
      text = await d.metrics();
      elapsedS = (Date.now() - t0) / 1000;
      log = [...d.lines];
      if (recorded(text) === before && ended() === before) break;
      await sleep(97);
    }
    expect(await d.stop()).toBe(0);
    d = undefined;

    const runs = log.filter((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed').length;
    expect(runs, `only ${runs} runs in ${MINUTES} minutes`).toBeGreaterThanOrEqual(TARGET);

    // --- accounting: the metrics say what the log says
    const sum = (result: string) => ['schedule', 'manual', 'catch-up'].reduce((a, trigger) => a + (metricValue(text, 'etcd_backup_runs_total', { result, trigger }) ?? 0), 0);
    const dp = log;
    const okLines = dp.filter((l) => l.msg === 'backup run finished' && l.result === 'success').length;
    const failedLines = dp.filter((l) => l.msg === 'backup run failed');
    expect(sum('success')).toBe(okLines);
    expect(sum('failed')).toBe(failedLines.length);
    expect(failedLines.map((l) => `${String(l.reason)}: ${String(l.err)}`), 'runs that failed in a healthy soak').toEqual([]);
    const skipped = metricValue(text, 'etcd_backup_skipped_ticks_total', { reason: 'busy' }) ?? 0;
    const scheduled = (metricValue(text, 'etcd_backup_runs_total', { result: 'success', trigger: 'schedule' }) ?? 0) + (metricValue(text, 'etcd_backup_runs_total', { result: 'failed', trigger: 'schedule' }) ?? 0);
    // One tick per second since the start: each started a run or was counted as skipped.
    expect(Math.abs(scheduled + skipped - elapsedS), `ticks: ${scheduled} runs + ${skipped} skipped vs ${elapsedS.toFixed(0)} s`).toBeLessThanOrEqual(Math.max(5, elapsedS * 0.02));
    expect(dp.filter((l) => l.msg === 'schedule tick skipped: a run is still in progress').length).toBe(skipped);

    // --- resources: after warm-up, the last third looks like the first third
    const warm = samples.slice(2);
    expect(warm.length).toBeGreaterThanOrEqual(6);
    const third = Math.floor(warm.length / 3);
    const first = warm.slice(0, third);
    const last = warm.slice(-third);
    const rss0 = median(first.map((s) => s.rssKiB));
    const rss1 = median(last.map((s) => s.rssKiB));
    const fd0 = median(first.map((s) => s.fds));
    const fd1 = median(last.map((s) => s.fds));
    const table = samples.map((s) => `${s.runs}: ${Math.round(s.rssKiB / 1024)} MiB, ${s.fds} fds`).join('\n');
    if (process.env.SOAK_VERBOSE) console.log(`${runs} runs in ${elapsedS.toFixed(0)} s, ${skipped} ticks skipped\n${table}`);
    expect(rss1, `RSS grew from ${Math.round(rss0 / 1024)} to ${Math.round(rss1 / 1024)} MiB:\n${table}`).toBeLessThanOrEqual(rss0 * 1.25);
    expect(fd1, `fds grew from ${fd0} to ${fd1}:\n${table}\nat the end: ${fdsAtEnd.join(', ')}`).toBeLessThanOrEqual(fd0 + 10);

    // --- bounded on disk
    const store = join(env.dir, 'store', 'c1');
    const committed = readdirSync(store).filter((id) => existsSync(join(store, id, 'manifest.json')));
    expect(committed.length).toBeLessThanOrEqual(4); // keepLast 3, plus at most one committed while the last prune ran
    expect(readdirSync(store).length).toBe(committed.length); // no manifest-less leftovers
    expect(readdirSync(join(env.dir, 'work', 'outbox')).length).toBeLessThanOrEqual(2);
    expect(listFiles(join(env.dir, 'work', 'runs'))).toEqual([]);
    expect(listFiles(join(env.dir, 'store')).filter((f) => /\.tmp-/.test(f))).toEqual([]);
  }, (MINUTES + 2) * 60_000);
});
