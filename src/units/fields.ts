import { z } from 'zod';
import { parseDurationSeconds } from './duration.js';

/** Config field types shared by the config schema and the store folders (src/storage/<type>/). */

/** Node fires a timer longer than 2^31-1 ms (~24.8 days) at once, so timer durations stay below that. */
const MAX_TIMER_SECONDS = 24 * 86400;

export const duration = z.string().superRefine((v, ctx) => {
  try {
    if (parseDurationSeconds(v) > MAX_TIMER_SECONDS) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" is too long: at most 24d` });
    }
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
  }
});

/** A duration that is only compared with dates, never used as a timer. */
export const age = z.string().superRefine((v, ctx) => {
  try {
    parseDurationSeconds(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
  }
});

/** Names end up in object keys and metric labels: keep them boring. */
export const name = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'expected 1-63 characters of letters, digits, ".", "_" or "-"');

const RATE_UNITS: Record<string, number> = { '': 1, b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, kb: 1000, mb: 1000 ** 2, gb: 1000 ** 3 };

/** `16KiB`, `1MiB/s`, `500000`, `0` (off): bytes per second. */
export function parseByteRate(v: string | number): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new Error(`${v} is not a rate in bytes per second`);
    return v;
  }
  const m = /^(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?(?:\/s)?$/i.exec(v.trim());
  if (!m) throw new Error(`"${v}" is not a rate (examples: 16KiB, 1MiB/s, 0)`);
  return Number(m[1]) * RATE_UNITS[(m[2] ?? '').toLowerCase()]!;
}

export const byteRate = z.union([z.string(), z.number()]).superRefine((v, ctx) => {
  try {
    parseByteRate(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
  }
});
