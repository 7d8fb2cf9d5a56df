import type { KeepReason, RetentionPlan } from './plan.js';

/**
 * Machine-readable plan. Each entry names the backup by `id` when it has a
 * non-empty id, otherwise by `time` (ISO-8601 UTC, as in simulate mode where
 * the input is bare timestamps). Entries are newest first.
 */
export interface RetentionPlanJson {
  keep: (({ id: string } | { time: string }) & { reasons: KeepReason[] })[];
  prune: ({ id: string } | { time: string })[];
}

function ref(e: { id: string; time: Date }): { id: string } | { time: string } {
  return e.id !== '' ? { id: e.id } : { time: e.time.toISOString() };
}

export function planToJson(plan: RetentionPlan): RetentionPlanJson {
  return {
    keep: plan.keep.map((k) => ({ ...ref(k), reasons: [...k.reasons] })),
    prune: plan.prune.map((p) => ref(p)),
  };
}

/**
 * Human table, newest first, one row per backup:
 *
 *   ACTION  ID        TIME (UTC)                REASONS
 *   keep    b-0003    2024-05-03T00:00:00.000Z  last, daily, newest-verified
 *   prune   b-0002    2024-05-02T00:00:00.000Z  -
 *
 *   2 backups: keep 1, prune 1
 *
 * The ID column is left out when no backup has an id (simulate mode).
 */
export function formatPlanTable(plan: RetentionPlan): string {
  type Row = { action: string; id: string; time: Date; reasons: string };
  const rows: Row[] = [
    ...plan.keep.map((k) => ({ action: 'keep', id: k.id, time: k.time, reasons: k.reasons.join(', ') })),
    ...plan.prune.map((p) => ({ action: 'prune', id: p.id, time: p.time, reasons: '-' })),
  ];
  // Stable sort: equal times keep keep-before-prune and plan order.
  rows.sort((a, b) => b.time.getTime() - a.time.getTime());
  const withId = rows.some((r) => r.id !== '');
  const header = withId ? ['ACTION', 'ID', 'TIME (UTC)', 'REASONS'] : ['ACTION', 'TIME (UTC)', 'REASONS'];
  const cells = rows.map((r) =>
    withId
      ? [r.action, r.id === '' ? '-' : r.id, r.time.toISOString(), r.reasons]
      : [r.action, r.time.toISOString(), r.reasons],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string =>
    c
      .map((v, i) => (i === c.length - 1 ? v : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const total = rows.length;
  const summary = `${total} backup${total === 1 ? '' : 's'}: keep ${plan.keep.length}, prune ${plan.prune.length}`;
  if (total === 0) return `no backups\n`;
  return [line(header), ...cells.map(line), '', summary].join('\n') + '\n';
}
