import { z } from 'zod';
import type { PinOp } from '../layout.js';

/**
 * The body of a pin marker (its key is layout.ts's pinMarkerKey). The key
 * alone decides the pin state; the body says why and who, for people.
 */
const markerSchema = z.object({
  format: z.literal(1),
  id: z.string(),
  op: z.enum(['pin', 'unpin']),
  at: z.string(),
  reason: z.string().max(1000).optional(),
  by: z.string().max(255).optional(),
});
export type PinMarker = z.infer<typeof markerSchema>;

export function pinMarkerBody(id: string, op: PinOp, at: Date, by: string, reason?: string): string {
  const m: PinMarker = { format: 1, id, op, at: at.toISOString(), by, ...(reason ? { reason } : {}) };
  return JSON.stringify(m);
}

/** A marker body, or undefined when it is not one (it then only lacks its reason). */
export function parsePinMarker(text: string): PinMarker | undefined {
  try {
    const r = markerSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
