/**
 * Who writes segments (docs/continuous.md): one node of the cluster, chosen
 * with a leased key on the cluster's etcd, as slots are claimed
 * (src/coord/claims.ts): a create-if-absent txn on
 * `/etcd-backupd/<cluster>/continuous/writer` bound to a lease the writer
 * keeps alive. The others watch the key and try again when it goes (the
 * writer released it at shutdown, or its lease expired: its node died).
 * Every call has a deadline; every wait ends after half the lease TTL (then
 * the key is read again), so a missed watch event only delays a takeover.
 */
import type { Etcd3, IKeyValue } from 'etcd3';
import { deadlineOf, keyBuf, sleep, type FailureProbe } from '../coord/etcd-calls.js';
import { encodeWriter, parseWriter, type CoordKeys } from '../coord/keys.js';
import { SlotLease } from '../coord/lease.js';
import { messageOf, reasonOf } from '../errors.js';
import type { Logger } from '../log.js';
import { writerAction } from './records.js';

const CALL_MS = 5_000;
/**
 * A watch for the key's deletion lasts at most half the lease TTL (1-30 s)
 * before the key is read again: a watch event that never comes (etcd3 drops
 * a watcher now and then when watchers come and go quickly on one stream)
 * then delays a takeover by that much at most. One read per node per
 * period is nothing for etcd.
 */
export function waitMsFor(leaseTtlSec: number): number {
  return Math.min(30_000, Math.max(1_000, leaseTtlSec * 500));
}
/** After a failed call (etcd unreachable, no quorum), look again after this. */
const RETRY_MS = 2_000;

export interface WriterHold {
  leaseId: string;
  /** Aborted when the lease may have lapsed (another node may write now): stop writing. */
  lost: AbortSignal;
  /** Deletes the key by revoking the lease, so another node takes over at once. */
  release(): Promise<void>;
}

export interface ElectionContext extends FailureProbe {
  client: Etcd3;
  keys: CoordKeys;
  node: string;
  leaseTtlSec: number;
}

async function readKey(ctx: ElectionContext): Promise<{ kv?: IKeyValue; rev: string }> {
  const res = await ctx.client.kv.range({ key: keyBuf(ctx.keys.continuousWriter) }, { deadline: deadlineOf(CALL_MS) });
  return { kv: res.kvs[0], rev: res.header.revision };
}

/** One attempt: the txn creates the key bound to a fresh lease only if it is absent. */
async function tryClaim(ctx: ElectionContext): Promise<WriterHold | undefined> {
  const lease = await SlotLease.grant(ctx, ctx.leaseTtlSec, CALL_MS);
  const key = keyBuf(ctx.keys.continuousWriter);
  const value = encodeWriter({ node: ctx.node, since: new Date().toISOString(), lease: lease.id });
  let won = false;
  try {
    const res = await ctx.client.kv.txn(
      { compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }], success: [{ request_put: { key, value: Buffer.from(value), lease: lease.id } }] },
      { deadline: deadlineOf(CALL_MS) },
    );
    won = res.succeeded;
  } finally {
    if (!won) await lease.revoke(CALL_MS).catch(() => lease.abandon());
  }
  if (!won) return undefined;
  return { leaseId: lease.id, lost: lease.lost, release: () => lease.revoke(CALL_MS).catch(() => lease.abandon()) };
}

/** Waits until the key changes after `rev`, half the lease TTL passes, or `signal`. Never throws. */
async function waitForChange(ctx: ElectionContext, rev: string, signal: AbortSignal): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  let cancel: (() => void) | undefined;
  try {
    await new Promise<void>((resolve) => {
      timer = setTimeout(resolve, waitMsFor(ctx.leaseTtlSec));
      onAbort = () => resolve();
      signal.addEventListener('abort', onAbort, { once: true });
      const w = ctx.client.watch().key(ctx.keys.continuousWriter).startRevision(String(BigInt(rev) + 1n)).watcher();
      cancel = () => void w.cancel().catch(() => undefined);
      w.on('delete', () => resolve());
      w.on('put', () => resolve());
      w.on('error', () => undefined); // the timer still ends the wait
    });
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
    cancel?.();
  }
}

/**
 * Returns once this node holds the writer key, or undefined when `signal`
 * ends the wait. Loops until then: each turn is one read (and one claim
 * txn when the key is free) under deadlines, then a bounded wait.
 */
export async function becomeWriter(ctx: ElectionContext, log: Logger, signal: AbortSignal): Promise<WriterHold | undefined> {
  let lastHolder = '';
  while (!signal.aborted) {
    try {
      const { kv, rev } = await readKey(ctx);
      const d = writerAction(kv !== undefined, kv ? parseWriter(kv.value) : undefined, { node: ctx.node });
      if (d.action === 'claim') {
        const hold = await tryClaim(ctx);
        if (hold) {
          if (signal.aborted) {
            await hold.release();
            return undefined;
          }
          return hold;
        }
        continue; // another node won the race: read who
      }
      if (d.action === 'wait') {
        const who = d.holder?.node ?? '?';
        if (who !== lastHolder) log.info({ writer: who, since: d.holder?.since }, 'continuous: another node writes segments; watching the writer key');
        lastHolder = who;
      }
      await waitForChange(ctx, rev, signal);
    } catch (e) {
      log.warn({ reason: reasonOf(e), err: messageOf(e) }, 'continuous: cannot read or claim the writer key; trying again');
      await sleep(RETRY_MS, signal);
    }
  }
  return undefined;
}
