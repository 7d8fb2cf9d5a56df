import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DaemonStateFile } from '../../src/daemon/state.js';
import type { DrillResult } from '../../src/drill/drill.js';
import type { ReplayDrillResult } from '../../src/drill/replay-result.js';
import type { Logger } from '../../src/log.js';
import type { RunResult } from '../../src/run/backup.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function workDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'daemon-state-'));
  dirs.push(d);
  return d;
}
function fakeLog(): Logger & { warn: ReturnType<typeof vi.fn> } {
  return { warn: vi.fn() } as unknown as Logger & { warn: ReturnType<typeof vi.fn> };
}
function run(over: Partial<RunResult>): RunResult {
  return { id: 'b1', result: 'success', trigger: 'schedule', startedAt: '2024-06-10T02:00:00.000Z', finishedAt: '2024-06-10T02:01:00.000Z', phases: {}, stores: {}, ...over };
}
function drill(over: Partial<DrillResult>): DrillResult {
  return { id: 'b1', result: 'success', steps: [], startedAt: '2024-06-10T04:00:00.000Z', finishedAt: '2024-06-10T04:02:00.000Z', ...over };
}
const saved = (dir: string) => JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));

describe('DaemonStateFile', () => {
  it('starts empty without a state file (a catch-up run follows)', async () => {
    const s = await DaemonStateFile.load(workDir(), fakeLog());
    expect(s.current).toEqual({ consecutiveFailures: 0, stores: {} });
  });

  it('refusals of a rollout and lock-busy are recorded but not counted as failures in a row (readiness, the restored metric)', async () => {
    const s = await DaemonStateFile.load(workDir(), fakeLog());
    await s.recordRun(run({ result: 'failed', reason: 'source-failed', stores: {} }));
    for (const reason of ['source-rollout-in-progress', 'source-apiserver-unavailable', 'lock-busy'] as const) await s.recordRun(run({ result: 'failed', reason, stores: {} }));
    expect(s.current).toMatchObject({ consecutiveFailures: 1, lastResult: 'failed', lastReason: 'lock-busy' });
    await s.recordRun(run({ result: 'failed', reason: 'source-stalled', stores: {} }));
    expect(s.current.consecutiveFailures).toBe(2);
  });

  it('records runs: failures count up with their reason, a success resets them; every change is saved', async () => {
    const dir = workDir();
    const s = await DaemonStateFile.load(dir, fakeLog());
    await s.recordRun(run({ result: 'failed', reason: 'upload-failed', stores: { nfs: { result: 'failed', reason: 'upload-failed' } } }));
    await s.recordRun(run({ id: 'b2', result: 'failed', reason: 'source-failed', stores: {} }));
    expect(s.current).toMatchObject({ consecutiveFailures: 2, lastResult: 'failed', lastReason: 'source-failed', lastId: 'b2', stores: { nfs: { lastFailure: '2024-06-10T02:01:00.000Z', lastReason: 'upload-failed' } } });
    expect(saved(dir)).toEqual(s.current);
    await s.recordRun(run({ id: 'b3', stores: { nfs: { result: 'success' } } }));
    expect(s.current).toMatchObject({ consecutiveFailures: 0, lastResult: 'success', lastSuccess: '2024-06-10T02:01:00.000Z', stores: { nfs: { lastSuccess: '2024-06-10T02:01:00.000Z' } } });
    expect(s.current.lastReason).toBeUndefined();
    expect((await DaemonStateFile.load(dir, fakeLog())).current).toEqual(s.current);
  });

  it('keeps the member list the last run saw (for the recovery kit), also across a failed run that saw none', async () => {
    const dir = workDir();
    const st = await DaemonStateFile.load(dir, fakeLog());
    const members = [{ name: 'm0', peerURLs: ['https://10.0.0.1:2380'] }];
    await st.recordRun(run({ members }));
    await st.recordRun(run({ id: 'b2', result: 'failed', reason: 'preflight-no-quorum', startedAt: '2024-06-11T02:00:00.000Z' }));
    expect(saved(dir)).toMatchObject({ members, membersSeenAt: '2024-06-10T02:00:00.000Z' });
    expect((await DaemonStateFile.load(dir, fakeLog())).current.members).toEqual(members);
  });

  it('records late deliveries as a store success, and saves nothing when none succeeded', async () => {
    const dir = workDir();
    const s = await DaemonStateFile.load(dir, fakeLog());
    expect(await s.recordRetries([{ id: 'b1', store: 'nfs', outcome: { result: 'failed', reason: 'upload-failed' } }])).toEqual([]);
    expect(() => saved(dir)).toThrow(/ENOENT/); // nothing was written
    const delivered = await s.recordRetries([
      { id: 'b1', store: 'nfs', outcome: { result: 'success' } },
      { id: 'b1', store: 's3', outcome: { result: 'failed', reason: 'upload-failed' } },
    ]);
    expect(delivered.map((d) => d.store)).toEqual(['nfs']);
    expect(Date.parse(saved(dir).stores.nfs.lastSuccess)).toBeGreaterThan(Date.now() - 60_000);
    expect(saved(dir).stores.s3).toBeUndefined();
  });

  it('records drills: failures count up with their reason, a success keeps the count at 0', async () => {
    const dir = workDir();
    const s = await DaemonStateFile.load(dir, fakeLog());
    await s.recordDrill(drill({ result: 'failed', reason: 'drill-mismatch' }));
    await s.recordDrill(drill({ id: 'b2', result: 'failed', reason: 'drill-timeout' }));
    expect(saved(dir).drill).toEqual({ lastAttempt: '2024-06-10T04:00:00.000Z', lastId: 'b2', consecutiveFailures: 2, lastFailureReason: 'drill-timeout' });
    await s.recordDrill(drill({ id: 'b3' }));
    expect(saved(dir).drill).toEqual({ lastAttempt: '2024-06-10T04:00:00.000Z', lastId: 'b3', lastSuccess: '2024-06-10T04:02:00.000Z', consecutiveFailures: 0 });
  });

  it('a save that fails is a warning with a reason: the state in memory still changes and nothing throws', async () => {
    const dir = workDir();
    const notADir = join(dir, 'file');
    writeFileSync(notADir, 'x');
    const log = fakeLog();
    const s = await DaemonStateFile.load(notADir, log);
    await s.recordRun(run({}));
    await s.recordDrill(drill({}));
    await s.recordRetries([{ id: 'b1', store: 'nfs', outcome: { result: 'success' } }]);
    expect(s.current).toMatchObject({ lastId: 'b1', consecutiveFailures: 0, drill: { consecutiveFailures: 0 }, stores: { nfs: {} } });
    expect(log.warn).toHaveBeenCalledTimes(3);
    for (const [fields, msg] of log.warn.mock.calls) {
      expect(fields).toMatchObject({ reason: 'internal' });
      expect(msg).toBe('cannot save the daemon state (state.json); keeping it in memory');
    }
  });
});

describe('DaemonStateFile: the replay drill verdict', () => {
  const replay = (over: Partial<ReplayDrillResult>): ReplayDrillResult => ({ kind: 'replay', result: 'success', steps: [], startedAt: '2026-11-25T02:01:00.000Z', finishedAt: '2026-11-25T02:01:30.000Z', ...over });
  it('keeps the last success and the failure after it; skipped and aborted drills change nothing; a restart reads it back', async () => {
    const dir = workDir();
    const s = await DaemonStateFile.load(dir, fakeLog());
    await s.recordReplayDrill(replay({ result: 'skipped', reason: 'not-found' }));
    expect(s.current.replayDrill).toBeUndefined();
    await s.recordReplayDrill(replay({ revisionsReplayed: 4321 }));
    expect(saved(dir).replayDrill).toEqual({ lastSuccess: '2026-11-25T02:01:30.000Z', revisions: 4321 });
    await s.recordReplayDrill(replay({ result: 'failed', reason: 'drill-replay-mismatch', finishedAt: '2026-11-26T02:01:30.000Z' }));
    await s.recordReplayDrill(replay({ result: 'failed', reason: 'drill-aborted' }));
    expect(saved(dir).replayDrill).toEqual({ lastSuccess: '2026-11-25T02:01:30.000Z', revisions: 4321, lastFailureReason: 'drill-replay-mismatch' });
    expect((await DaemonStateFile.load(dir, fakeLog())).current.replayDrill).toEqual(saved(dir).replayDrill);
    await s.recordReplayDrill(replay({ finishedAt: '2026-11-27T02:01:30.000Z', revisionsReplayed: 99 }));
    expect(saved(dir).replayDrill).toEqual({ lastSuccess: '2026-11-27T02:01:30.000Z', revisions: 99 });
  });
});
