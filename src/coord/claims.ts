/**
 * The I/O edge of coordination: slot claims on the cluster's etcd with etcd3
 * (gRPC). Every call has a deadline; every wait ends at the slot's deadline;
 * nothing here loops without bound. The decisions are in decide.ts (pure),
 * the keys and values in keys.ts. See docs/coordination.md.
 */
import type { Etcd3, IKeyValue, IRangeResponse, ITxnResponse } from 'etcd3';
import { classifyFailure, deadlineOf, keyBuf } from './etcd-calls.js';
import type { Members } from '../etcd/client.js';
import { SlotLease } from './lease.js';
import { CoordKeys, encodeValue, parseClaim, parseResult, type ClaimValue, type ResultValue, type SlotKind } from './keys.js';

export interface CoordContext {
  client: Etcd3;
  /** The members, each with its own client: lets a failure be told apart (no quorum or unreachable) by asking each member. */
  members?: Members | undefined;
  keys: CoordKeys;
  /** This node's name (config `node`). */
  node: string;
  /** Deadline of each etcd call (default 5 s). */
  callTimeoutMs?: number;
  /** TTL of a claim's lease in seconds (default 15): how long a dead holder blocks its slot. */
  leaseTtlSec?: number;
}

/** What etcd holds for one slot, read at one revision. */
export interface SlotRead {
  claim?: ClaimValue;
  result?: ResultValue;
  /** mod_revision of the result key (0 when absent): the claim txn compares it. */
  resultRev: string;
  /** The revision the read saw (a watch starts after it). */
  rev: string;
}

export type ClaimOutcome = { won: true; claim: SlotClaim } | { won: false; seen: SlotRead };

export interface ReleaseOutcome {
  /** False when another attempt has claimed the slot since (this holder's lease had lapsed): nothing was written. */
  recorded: boolean;
}

export interface SlotClaim {
  readonly kind: SlotKind;
  readonly slot: Date;
  readonly attempt: number;
  /** The claim's lease id (decimal). */
  readonly leaseId: string;
  /** Aborted (reason: BackupError coord-lost) when the lease may have lapsed: keepalives failed for most of its TTL. */
  readonly lost: AbortSignal;
  /**
   * Records the result for the slot and drops the claim (revokes its lease),
   * unless another attempt has claimed the slot since (then `recorded: false`).
   * A holder whose lease lapsed still records, as long as nobody claimed after
   * it. A second call records nothing. Throws coord-no-quorum | coord-unavailable.
   */
  release(r: { result: 'success' | 'failed'; backupId?: string; reason?: string }): Promise<ReleaseOutcome>;
  /** Stops keeping the lease alive without revoking it: the claim lapses after its TTL (a crash, as etcd sees it). `release` still works after it. */
  abandon(): void;
}

const timeoutOf = (ctx: CoordContext): number => ctx.callTimeoutMs ?? 5_000;

function rangeOp(key: string) {
  return { request_range: { key: keyBuf(key) } };
}

function firstKv(r: { response_range?: IRangeResponse } | undefined): IKeyValue | undefined {
  return r?.response_range?.kvs?.[0];
}

function toRead(res: ITxnResponse, claimAt: number, resultAt: number): SlotRead {
  const c = firstKv(res.responses[claimAt]);
  const r = firstKv(res.responses[resultAt]);
  const read: SlotRead = { resultRev: r?.mod_revision ?? '0', rev: res.header.revision };
  const claim = c ? parseClaim(c.value) : undefined;
  const result = r ? parseResult(r.value) : undefined;
  if (claim) read.claim = claim;
  else if (c) read.claim = { node: '?', attempt: 1, startedAt: '?', lease: c.lease }; // a claim key we cannot read still holds the slot
  if (result) read.result = result;
  return read;
}

async function txn(ctx: CoordContext, req: Parameters<Etcd3['kv']['txn']>[0], what: string): Promise<ITxnResponse> {
  try {
    return await ctx.client.kv.txn(req, { deadline: deadlineOf(timeoutOf(ctx)) });
  } catch (err) {
    throw await classifyFailure(ctx, err, what, timeoutOf(ctx));
  }
}

/** The slot's claim and result at one revision. Throws BackupError coord-no-quorum | coord-unavailable. */
export async function readSlot(ctx: CoordContext, kind: SlotKind, slot: Date): Promise<SlotRead> {
  const res = await txn(ctx, { success: [rangeOp(ctx.keys.claim(kind, slot)), rangeOp(ctx.keys.result(kind, slot))] }, 'read the slot');
  return toRead(res, 0, 1);
}

/**
 * One claim attempt: grants a lease, then a txn that creates the claim key
 * (bound to the lease) only if it is absent and the result key is unchanged
 * since `seen` (so the attempt number is right), writing the result `running`
 * with it. The loser gets what it lost to; its lease is revoked.
 */
export async function claimSlot(ctx: CoordContext, kind: SlotKind, slot: Date, attempt: number, seen: Pick<SlotRead, 'resultRev'>): Promise<ClaimOutcome> {
  const claimKey = ctx.keys.claim(kind, slot);
  const resultKey = ctx.keys.result(kind, slot);
  const lease = await SlotLease.grant(ctx, ctx.leaseTtlSec ?? 15, timeoutOf(ctx));
  const startedAt = new Date().toISOString();
  const claim: ClaimValue = { node: ctx.node, attempt, startedAt, lease: lease.id };
  const running: ResultValue = { node: ctx.node, attempt, result: 'running', startedAt };
  let res: ITxnResponse;
  try {
    res = await txn(ctx, {
      compare: [
        { key: keyBuf(claimKey), target: 'Create', result: 'Equal', create_revision: 0 },
        { key: keyBuf(resultKey), target: 'Mod', result: 'Equal', mod_revision: seen.resultRev },
      ],
      success: [
        { request_put: { key: keyBuf(claimKey), value: Buffer.from(encodeValue(claim)), lease: lease.id } },
        { request_put: { key: keyBuf(resultKey), value: Buffer.from(encodeValue(running)) } },
      ],
      failure: [rangeOp(claimKey), rangeOp(resultKey)],
    }, 'claim the slot');
  } catch (err) {
    await lease.revoke(timeoutOf(ctx)).catch(() => undefined);
    throw err;
  }
  if (!res.succeeded) {
    await lease.revoke(timeoutOf(ctx)).catch(() => undefined);
    return { won: false, seen: toRead(res, 0, 1) };
  }
  return { won: true, claim: holdClaim(ctx, kind, slot, claim, running, res.header.revision, lease) };
}

function holdClaim(ctx: CoordContext, kind: SlotKind, slot: Date, claim: ClaimValue, running: ResultValue, claimRev: string, lease: SlotLease): SlotClaim {
  let released = false;
  const claimKey = ctx.keys.claim(kind, slot);
  const resultKey = ctx.keys.result(kind, slot);
  return {
    kind,
    slot,
    attempt: claim.attempt,
    leaseId: lease.id,
    lost: lease.lost,
    abandon: () => lease.abandon(),
    async release(r) {
      if (released) return { recorded: false };
      released = true;
      const final: ResultValue = { ...running, result: r.result, finishedAt: new Date().toISOString() };
      if (r.backupId !== undefined) final.backupId = r.backupId;
      if (r.reason !== undefined) final.reason = r.reason;
      try {
        // Recorded only while no later attempt rewrote the result (every claim does).
        const res = await txn(ctx, {
          compare: [{ key: keyBuf(resultKey), target: 'Mod', result: 'Equal', mod_revision: claimRev }],
          success: [
            { request_put: { key: keyBuf(resultKey), value: Buffer.from(encodeValue(final)) } },
            { request_delete_range: { key: keyBuf(claimKey) } },
          ],
        }, 'record the slot result');
        return { recorded: res.succeeded };
      } finally {
        await lease.revoke(timeoutOf(ctx)).catch(() => lease.abandon());
      }
    },
  };
}

/**
 * Waits until the slot's claim key changes after revision `after` (deleted:
 * released or its lease expired; or rewritten), or until `until`, or `signal`.
 * A watch from `after + 1`, so a change between the read and the watch is not
 * missed; any watch trouble falls back to waiting for the timer (the caller
 * reads again): watch, else poll. Never throws for a watch problem.
 */
export async function waitForSlotChange(ctx: CoordContext, kind: SlotKind, slot: Date, after: string, until: Date, signal?: AbortSignal): Promise<'changed' | 'timeout'> {
  const ms = until.getTime() - Date.now();
  if (ms <= 0 || signal?.aborted) return 'timeout';
  const key = ctx.keys.claim(kind, slot);
  let cancel: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await new Promise<'changed' | 'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), ms);
      onAbort = () => resolve('timeout');
      signal?.addEventListener('abort', onAbort, { once: true });
      const builder = ctx.client.watch().key(key).startRevision(String(BigInt(after) + 1n));
      const w = builder.watcher();
      cancel = () => void w.cancel().catch(() => undefined);
      w.on('delete', () => resolve('changed'));
      w.on('put', () => resolve('changed'));
      w.on('error', () => undefined); // the timer still ends the wait
    });
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    cancel?.();
  }
}

/** Every key under `prefix` with its value (at most 10 000): the cluster view, and tests. */
export async function readRaw(ctx: CoordContext, prefix: string): Promise<Map<string, string>> {
  const res = await txn(ctx, { success: [{ request_range: { key: keyBuf(prefix), range_end: prefixEnd(prefix), limit: 10_000 } }] }, 'list keys');
  const out = new Map<string, string>();
  for (const kv of res.responses[0]?.response_range?.kvs ?? []) out.set(kv.key.toString(), kv.value.toString());
  return out;
}

/** The end of the key range holding every key that starts with `prefix`. */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i] = b[i]! + 1;
      return end;
    }
  }
  return Buffer.from([0]);
}
