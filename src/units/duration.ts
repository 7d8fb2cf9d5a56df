const UNIT_SECONDS: Record<string, number> = {
  ms: 0.001,
  s: 1,
  m: 60,
  h: 3600,
  d: 86400,
  w: 7 * 86400,
};

/**
 * Parses durations such as `30m`, `1h30m`, `90s`, `7d`, `2w`, `500ms`, `0`.
 * Returns seconds. Months and years are deliberately absent: their length
 * varies, and a timeout or grace period should not.
 */
export function parseDurationSeconds(text: string): number {
  const s = text.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let consumed = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_SECONDS[m[2]!]!;
    consumed = re.lastIndex;
  }
  if (consumed === 0 || consumed !== s.length) {
    throw new Error(`"${text}" is not a duration (examples: 90s, 30m, 1h30m, 7d, 2w)`);
  }
  return total;
}
