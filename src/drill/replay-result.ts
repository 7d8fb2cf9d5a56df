/**
 * What a replay drill reports (the drill itself is continuous/replay-drill.ts):
 * here, so the drill metrics and schedule know it without importing the
 * continuous-backup code (continuous/ builds on drill/, not the reverse).
 */
import type { Reason } from '../errors.js';
import type { KeyspaceComparison } from '../etcd/live-keys.js';

export type ReplayDrillStep = 'choose' | 'replay' | 'fetch' | 'compare' | 'stop';

/** Every reason a replay drill can fail with; `etcd_backup_drill_failures_total{kind="replay",reason}` starts at 0 for each. */
export const REPLAY_DRILL_FAILURE_REASONS = [
  'usage',
  'checksum-mismatch',
  'unsafe-archive',
  'manifest-invalid',
  'signature-untrusted',
  'store-unavailable',
  'snapshot-corrupt',
  'preflight-disk-space',
  'segment-gap',
  'segment-corrupt',
  'replay-mismatch',
  'drill-restore-failed',
  'drill-start-failed',
  'restore-failed',
  'drill-replay-mismatch',
  'drill-timeout',
  'drill-aborted',
  'internal',
] as const satisfies readonly Reason[];

export interface ReplayDrillResult {
  kind: 'replay';
  /** skipped: no pair to drill (no chain reaches a next full backup yet); not counted. */
  result: 'success' | 'failed' | 'skipped';
  /** B2, the full backup the replay must reproduce. */
  id?: string;
  /** B1, the base replayed onto. */
  base?: string;
  reason?: Reason;
  error?: string;
  hint?: string;
  steps: { name: ReplayDrillStep; seconds: number }[];
  startedAt: string;
  finishedAt: string;
  /** rev(B2), which the replay reached. */
  revision?: number;
  revisionsReplayed?: number;
  segmentsUsed?: number;
  /** Live keys of B2 (and of the replay, when they match). */
  keys?: number;
  /** What differed (counts and the first keys) when the keyspaces did not match. */
  mismatch?: KeyspaceComparison;
}
