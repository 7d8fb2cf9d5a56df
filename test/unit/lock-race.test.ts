import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireRunLock } from '../../src/run/lock.js';

/** A pid no process has: above the kernel's pid_max default range. */
const DEAD_PID = 4_194_300;

describe('run lock: taking over a stale lock', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('many starters racing for one stale lock: exactly one gets it', async () => {
    for (let round = 0; round < 10; round++) {
      const dir = mkdtempSync(join(tmpdir(), 'ebd-lock-race-'));
      dirs.push(dir);
      writeFileSync(join(dir, 'run.lock'), JSON.stringify({ pid: DEAD_PID, what: 'a dead run', since: '2026-01-01T00:00:00Z' }));
      const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => acquireRunLock(dir, `starter ${i}`)));
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won.length, `round ${round}`).toBe(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ reason: 'lock-busy' });
    }
  });

  it('a lock file without a pid is busy while young (its creator may be writing it) and stale when old', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ebd-lock-young-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'run.lock'), '');
    await expect(acquireRunLock(dir, 'second')).rejects.toMatchObject({ reason: 'lock-busy' });
    const old = new Date(Date.now() - 60_000);
    utimesSync(join(dir, 'run.lock'), old, old);
    const lock = await acquireRunLock(dir, 'second');
    await lock.release();
  });
});
