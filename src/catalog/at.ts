/**
 * `--at TIME`: reading TIME and saying how far before it. Which base and
 * which segments reach TIME is src/continuous/at-time.ts (with the pure
 * planner, continuous/plan.ts). pickAt, the newest usable backup at or
 * before TIME, is what `--at` was before continuous backups; the commands
 * no longer call it. Pure.
 */
import type { Manifest } from '../bundle/manifest.js';
import { BackupError } from '../errors.js';

/** `now` or an ISO-8601 time with a zone (a bare local time would depend on the host's TZ). */
export function parseAt(text: string, now: Date): Date {
  if (text === 'now') return now;
  const ok = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}))?$/.test(text);
  const d = new Date(text);
  if (!ok || Number.isNaN(d.getTime())) {
    throw new BackupError('usage', `--at: ${JSON.stringify(text)} is not "now" or an ISO-8601 time with a zone (2026-11-26T21:30:00Z)`, {
      hint: 'times carry Z or an offset, so the answer does not depend on the host time zone',
    });
  }
  return d;
}

export interface AtChoice {
  manifest: Manifest;
  /** How long before TIME the chosen backup was taken. */
  beforeMs: number;
}

/**
 * The newest backup with createdAt <= at among those `usable` accepts
 * (trusted, or any with --allow-untrusted): a planted backup is never the
 * one picked for a time, as it never is for `latest`.
 */
export function pickAt(backups: Manifest[], at: Date, usable: (m: Manifest) => boolean, storeName: string): AtChoice {
  let best: Manifest | undefined;
  for (const m of backups) {
    const t = Date.parse(m.createdAt);
    if (t > at.getTime() || !usable(m)) continue;
    if (!best || t > Date.parse(best.createdAt) || (t === Date.parse(best.createdAt) && m.id > best.id)) best = m;
  }
  if (!best) {
    throw new BackupError('not-found', `store ${storeName} holds no usable committed backup taken at or before ${at.toISOString()}`, {
      hint: 'run `etcd-backupd list` to see the backups and their times',
    });
  }
  return { manifest: best, beforeMs: at.getTime() - Date.parse(best.createdAt) };
}

/** 0s, 42s, 5m3s, 2h5m, 3d4h: how far before TIME, readable. */
export function fmtAge(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60) ? `${Math.floor((s % 3600) / 60)}m` : ''}`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600) ? `${Math.floor((s % 86400) / 3600)}h` : ''}`;
}
