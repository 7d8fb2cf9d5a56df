import type { RetentionItem } from './plan.js';

/*
 * Input for `simulate` mode: one ISO-8601 timestamp per line. Everything from
 * a `#` to the end of the line is a comment; blank lines are ignored.
 *
 * Accepted forms (extended ISO-8601 / RFC 3339, `T` or a space between date
 * and time, fraction with `.` or `,`):
 *   2024-05-01
 *   2024-05-01T13:45
 *   2024-05-01T13:45:30
 *   2024-05-01T13:45:30.123Z
 *   2024-05-01 13:45:30+02:00      (also +0200 and +02)
 * A timestamp without an offset is UTC (never the host's local time, so a
 * simulation gives the same answer on every machine); a bare date is midnight UTC.
 */

const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/i;

function daysInMonth(year: number, month: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, 0); // day 0 of the next month = last day of this one
  return d.getUTCDate();
}

/** Parses one timestamp; returns undefined when it is not a valid ISO-8601 instant. */
export function parseIsoTimestamp(text: string): Date | undefined {
  const m = ISO.exec(text);
  if (m === null) return undefined;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = m[4] === undefined ? 0 : Number(m[4]);
  const minute = m[5] === undefined ? 0 : Number(m[5]);
  const second = m[6] === undefined ? 0 : Number(m[6]);
  const ms = m[7] === undefined ? 0 : Number(m[7].padEnd(3, '0').slice(0, 3));
  if (month < 1 || month > 12) return undefined;
  if (day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  let offsetMinutes = 0;
  const zone = m[8];
  if (zone !== undefined && zone.toUpperCase() !== 'Z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const oh = Number(digits.slice(0, 2));
    const om = digits.length > 2 ? Number(digits.slice(2, 4)) : 0;
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = sign * (oh * 60 + om);
  }
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, ms);
  return new Date(d.getTime() - offsetMinutes * 60_000);
}

/**
 * Parses simulation input into items with an empty id (so plan output names
 * them by time). Throws an Error naming the 1-based line number of the first
 * bad line.
 */
export function parseSimulationInput(text: string): RetentionItem[] {
  const items: RetentionItem[] = [];
  const lines = text.split(/\r\n|\n|\r/);
  lines.forEach((raw, i) => {
    const hash = raw.indexOf('#');
    const line = (hash === -1 ? raw : raw.slice(0, hash)).trim();
    if (line === '') return;
    const time = parseIsoTimestamp(line);
    if (time === undefined) {
      throw new Error(
        `line ${i + 1}: "${line}" is not an ISO-8601 timestamp (expected e.g. 2024-05-01T13:45:00Z; one per line, # starts a comment)`,
      );
    }
    items.push({ id: '', time });
  });
  return items;
}
