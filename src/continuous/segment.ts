/**
 * Continuous backups, the format (docs/continuous.md): between full backups
 * one elected node watches etcd from the base backup's revision + 1 and
 * writes SEGMENTS, each holding consecutive revisions' events in order with
 * the wall time each revision was seen. Pure: names, the record encoding
 * and the segment manifest's schema; no I/O.
 *
 * Remote layout (the store adds its prefix; layout.ts spells the keys and names):
 *   <cluster>/continuous/<base-id>/<from>-<to>.seg[.zst][.age]   the records
 *   <cluster>/continuous/<base-id>/<from>-<to>.json              its manifest, written last: the commit
 * `<from>`/`<to>` are the first and last revision held, zero-padded to 20
 * digits so that names sort by revision. A segment is immutable once
 * committed; a chain is the base's revision R, then segments R+1..a,
 * a+1..b, ... with no gap.
 *
 * Records: one JSON line per revision (NDJSON, UTF-8), keys and values in
 * base64 because etcd keys and values are bytes:
 *   {"rev":123,"time":"2026-11-26T21:30:00.123Z","ops":[{"put":"a2V5","value":"dmFs","lease":"0"},{"del":"a2V5Mg=="}]}
 * `ops` are the revision's events in etcd's order (one revision is one txn:
 * several events may share it). `lease` is the lease id (decimal; "0" none).
 */
import { z } from 'zod';
import { CODECS } from '../layout.js';

export const SEGMENT_FORMAT = 1;

export type SegmentOp = { put: Buffer; value: Buffer; lease: string } | { del: Buffer };

/** One revision's events, in order, and when the watcher saw it. */
export interface RevisionRecord {
  rev: number;
  /** Wall time the writer received the revision (ISO UTC, ms). */
  time: string;
  ops: SegmentOp[];
}

/** One record as its NDJSON line (with the trailing newline). */
export function encodeRecord(r: RevisionRecord): string {
  const ops = r.ops.map((o) => ('put' in o ? { put: o.put.toString('base64'), value: o.value.toString('base64'), lease: o.lease } : { del: o.del.toString('base64') }));
  return `${JSON.stringify({ rev: r.rev, time: r.time, ops })}\n`;
}

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/);
const recordSchema = z
  .object({
    rev: z.number().int().positive(),
    time: z.string().datetime({ offset: true }),
    ops: z.array(z.union([z.object({ put: b64, value: b64, lease: z.string().regex(/^\d{1,20}$/) }).strict(), z.object({ del: b64 }).strict()])).min(1),
  })
  .strict();

/** One NDJSON line back into a record; throws with the line's problem (a corrupt segment must fail loudly). */
export function decodeRecord(line: string): RevisionRecord {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (e) {
    throw new Error(`not JSON: ${(e as Error).message}`);
  }
  const r = recordSchema.parse(raw);
  return {
    rev: r.rev,
    time: r.time,
    ops: r.ops.map((o) => ('put' in o ? { put: Buffer.from(o.put, 'base64'), value: Buffer.from(o.value, 'base64'), lease: o.lease } : { del: Buffer.from(o.del, 'base64') })),
  };
}

const sha256 = z.string().regex(/^[0-9a-f]{64}$/);

/** The segment's manifest, stored beside it and written last. Signed like a backup's manifest (signature over the rest). */
export const segmentManifestSchema = z
  .object({
    format: z.literal(SEGMENT_FORMAT),
    kind: z.literal('segment'),
    cluster: z.string().min(1),
    /** The full backup the chain starts from (its revision is the chain's start). */
    base: z.string().min(1),
    /** The node whose watcher wrote it. */
    node: z.string().min(1),
    fromRev: z.number().int().positive(),
    toRev: z.number().int().positive(),
    /** Revisions held (= toRev - fromRev + 1: the chain inside a segment has no gap either). */
    revisions: z.number().int().positive(),
    /** Wall times the first and last revision were seen. */
    firstTime: z.string().datetime({ offset: true }),
    lastTime: z.string().datetime({ offset: true }),
    createdAt: z.string().datetime({ offset: true }),
    tool: z.object({ name: z.string(), version: z.string() }).strict(),
    object: z
      .object({
        key: z.string(),
        size: z.number().int().nonnegative(),
        sha256,
        encrypted: z.boolean(),
        recipients: z.array(z.string()),
        codec: z.enum(CODECS),
        rawSize: z.number().int().nonnegative(),
      })
      .strict(),
    /** Signed like a backup's manifest (src/bundle/sign.ts signManifest/checkSignature over the rest). */
    signature: z.object({ alg: z.literal('ed25519'), keyId: z.string(), sig: z.string() }).strict().optional(),
  })
  .strict()
  .refine((m) => m.toRev >= m.fromRev && m.revisions === m.toRev - m.fromRev + 1, { message: 'revisions must equal toRev - fromRev + 1' });

export type SegmentManifest = z.infer<typeof segmentManifestSchema>;
