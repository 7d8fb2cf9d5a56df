/**
 * Duration syntax for retention (`keepWithin`), in seconds.
 *
 * A duration is one or more `<non-negative integer><unit>` terms with no
 * spaces between them, each unit at most once, in any order; or a bare `0`.
 *
 *   unit  meaning                       seconds
 *   y     year  (fixed 365 days)        31 536 000
 *   mo    month (fixed 30 days)          2 592 000
 *   w     week                             604 800
 *   d     day   (24 hours)                  86 400
 *   h     hour                                3 600
 *   min   minute                                 60
 *   s     second                                  1
 *
 * Examples: `7d`, `2w`, `1y2mo3d4h`, `36h`, `90s`, `1h30min`, `0s`, `0`.
 *
 * A bare `m` is rejected on purpose: restic's `--keep-within 6m` means six
 * MONTHS while everywhere else in etcd-backupd (`timeout: 30m`) `m` means
 * minutes. Reading it the wrong way round silently prunes (or keeps) months of
 * backups, so the user must say `mo` or `min`.
 *
 * Years and months are fixed lengths because the planner works in exact
 * seconds; restic instead subtracts calendar years/months (Go `AddDate`) in the
 * snapshot's local time. For `d`/`h` in UTC both agree exactly.
 */

const UNIT_SECONDS: Readonly<Record<string, number>> = {
  y: 365 * 86_400,
  mo: 30 * 86_400,
  w: 7 * 86_400,
  d: 86_400,
  h: 3_600,
  min: 60,
  s: 1,
};

const EXAMPLES = 'examples: 7d, 2w, 36h, 1y2mo3d4h, 90s, 1h30min, 0s';

export function parseDuration(text: string): number {
  if (typeof text !== 'string') throw new Error(`duration must be a string, got ${typeof text}`);
  const s = text.trim();
  const bad = (why: string): Error => new Error(`invalid duration "${text}": ${why} (${EXAMPLES})`);
  if (s === '') throw bad('it is empty');
  if (s === '0') return 0;
  if (s.startsWith('-')) throw bad('it must not be negative');

  const term = /(\d+)([A-Za-z]+)/y;
  const seen = new Set<string>();
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    term.lastIndex = pos;
    const m = term.exec(s);
    if (m === null) {
      const rest = s.slice(pos);
      if (/^\d+$/.test(rest)) throw bad(`the number ${rest} has no unit`);
      throw bad(`unexpected "${rest}"`);
    }
    const [, digits, unit] = m as unknown as [string, string, string];
    if (unit === 'm') {
      throw bad(`"m" is ambiguous (restic: months, elsewhere: minutes); write "${digits}mo" for months or "${digits}min" for minutes`);
    }
    const factor = UNIT_SECONDS[unit];
    if (factor === undefined) throw bad(`unknown unit "${unit}" (units: y, mo, w, d, h, min, s)`);
    if (seen.has(unit)) throw bad(`unit "${unit}" appears more than once`);
    seen.add(unit);
    total += Number(digits) * factor;
    pos = term.lastIndex;
  }
  if (!Number.isSafeInteger(total)) throw bad('it is too large');
  return total;
}
