/**
 * The records beside the claims: manual backups (not coordinated, recorded so
 * the cluster view is complete) and the prune that keeps every key the daemon
 * writes under /etcd-backupd/<cluster>/ bounded over a long run.
 */
import type { IRequestOp } from 'etcd3';
import { classifyFailure, deadlineOf, keyBuf } from './etcd-calls.js';
import { prefixEnd, type CoordContext } from './claims.js';
import { manualToPrune, slotsToPrune } from './decide.js';
import { encodeValue, SLOT_KINDS, type ManualValue } from './keys.js';

const timeoutOf = (ctx: CoordContext): number => ctx.callTimeoutMs ?? 5_000;

/** Records a manual backup at `manual/<backupId>` (no lease; pruned by pruneOldSlots). */
export async function recordManual(ctx: CoordContext, v: ManualValue): Promise<void> {
  const key = ctx.keys.manual(v.backupId);
  try {
    await ctx.client.kv.put({ key: keyBuf(key), value: Buffer.from(encodeValue(v)) }, { deadline: deadlineOf(timeoutOf(ctx)) });
  } catch (err) {
    throw await classifyFailure(ctx, err, 'record a manual backup', timeoutOf(ctx));
  }
}

export interface PruneKeep {
  /** Slots kept per kind (the newest), claims and results together (default 64). */
  slots?: number;
  /** Manual records kept (the newest, default 64). */
  manual?: number;
}

/** Keys listed per prefix in one call; more than this means a prune was missed for a long time, and the next prune takes the rest. */
const LIST_LIMIT = 5_000;
/** Deletes per txn: below etcd's default --max-txn-ops (128). */
const TXN_OPS = 100;

/**
 * Deletes the claim and result keys of all but the newest `keep.slots` slots
 * of each kind, and all but the newest `keep.manual` manual records. Keys
 * that are not ours by name are left alone. Returns the number of keys deleted.
 */
export async function pruneOldSlots(ctx: CoordContext, keep: PruneKeep = {}): Promise<{ deleted: number }> {
  const doomed: string[] = [];
  for (const kind of SLOT_KINDS) {
    const claimPrefix = ctx.keys.claimPrefix(kind);
    const resultPrefix = ctx.keys.resultPrefix(kind);
    const claims = new Set(await listNames(ctx, claimPrefix));
    const results = new Set(await listNames(ctx, resultPrefix));
    const present = new Set([...claims, ...results]);
    for (const name of slotsToPrune([...present], keep.slots ?? 64)) {
      if (claims.has(name)) doomed.push(claimPrefix + name);
      if (results.has(name)) doomed.push(resultPrefix + name);
    }
  }
  for (const id of manualToPrune(await listNames(ctx, ctx.keys.manualPrefix), keep.manual ?? 64)) doomed.push(ctx.keys.manualPrefix + id);
  for (let i = 0; i < doomed.length; i += TXN_OPS) {
    const ops: IRequestOp[] = doomed.slice(i, i + TXN_OPS).map((k) => ({ request_delete_range: { key: keyBuf(k) } }));
    try {
      await ctx.client.kv.txn({ success: ops }, { deadline: deadlineOf(timeoutOf(ctx)) });
    } catch (err) {
      throw await classifyFailure(ctx, err, 'prune old slot keys', timeoutOf(ctx));
    }
  }
  return { deleted: doomed.length };
}

/** The last segments of the keys under `prefix` (keys only, at most LIST_LIMIT, oldest first). */
async function listNames(ctx: CoordContext, prefix: string): Promise<string[]> {
  try {
    const res = await ctx.client.kv.range(
      { key: keyBuf(prefix), range_end: prefixEnd(prefix), keys_only: true, limit: LIST_LIMIT },
      { deadline: deadlineOf(timeoutOf(ctx)) },
    );
    return (res.kvs ?? []).map((kv) => kv.key.toString().slice(prefix.length)).filter((n) => n.length > 0 && !n.includes('/'));
  } catch (err) {
    throw await classifyFailure(ctx, err, 'list slot keys', timeoutOf(ctx));
  }
}
