import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../fsutil.js';
import { statePath } from '../layout.js';
import type { RunResult } from './backup.js';

/** What the daemon must remember across restarts: enough to decide on a catch-up run and to restore metrics. */
export interface DaemonState {
  lastAttempt?: string;
  lastSuccess?: string;
  lastResult?: 'success' | 'failed';
  lastReason?: string;
  lastId?: string;
  consecutiveFailures: number;
  stores: Record<string, { lastAttempt?: string; lastSuccess?: string; lastFailure?: string; lastReason?: string }>;
  /** Restore drills run by this node. */
  drill?: { lastAttempt?: string; lastSuccess?: string; consecutiveFailures?: number; lastFailureReason?: string; lastId?: string };
}

export async function loadState(workDir: string): Promise<DaemonState> {
  try {
    const s = JSON.parse(await readFile(statePath(workDir), 'utf8')) as Partial<DaemonState>;
    return { consecutiveFailures: 0, stores: {}, ...s };
  } catch {
    // Missing or unreadable state only costs a catch-up run, which is the safe direction.
    return { consecutiveFailures: 0, stores: {} };
  }
}

export function applyRun(state: DaemonState, r: RunResult): DaemonState {
  const next: DaemonState = { ...state, stores: { ...state.stores } };
  next.lastAttempt = r.startedAt;
  next.lastResult = r.result;
  next.lastId = r.id;
  if (r.result === 'success') {
    next.lastSuccess = r.finishedAt;
    next.consecutiveFailures = 0;
    delete next.lastReason;
  } else {
    next.consecutiveFailures = state.consecutiveFailures + 1;
    next.lastReason = r.reason;
  }
  for (const [name, o] of Object.entries(r.stores)) {
    const s = { ...next.stores[name], lastAttempt: r.startedAt };
    if (o.result === 'success') s.lastSuccess = r.finishedAt || new Date().toISOString();
    else {
      s.lastFailure = r.finishedAt || new Date().toISOString();
      s.lastReason = o.reason;
    }
    next.stores[name] = s;
  }
  return next;
}

export async function saveState(workDir: string, s: DaemonState): Promise<void> {
  await writeFileAtomic(statePath(workDir), JSON.stringify(s, null, 2) + '\n');
}
