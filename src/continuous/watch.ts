/**
 * The watch over the whole keyspace (docs/continuous.md): every revision
 * from `fromRev` on, as etcd gives it, handed over one response at a time.
 * etcd3's watcher reconnects by itself; it would resume from the revision in
 * the last response's header, which is the store's revision, not the last
 * event's: on a disconnect we set where it resumes ourselves (the first
 * revision not recorded), so a reconnect neither skips nor repeats.
 */
import type { Etcd3, IWatchResponse } from 'etcd3';
import { deadlineOf } from '../coord/etcd-calls.js';
import { messageOf } from '../errors.js';
import type { WatchEvent } from './records.js';

export type WatchEnd = { kind: 'compacted'; error: string } | { kind: 'failed'; error: string };

export interface WatchHandlers {
  /** One response's events, in etcd's order. */
  events(events: WatchEvent[]): void;
  /** The first revision not recorded yet (where a reconnect resumes). */
  next(): number;
  /** The watch ended for good (etcd canceled it). */
  ended(end: WatchEnd): void;
}

export interface WholeKeyspaceWatch {
  cancel(): Promise<void>;
}

function toEvents(res: IWatchResponse): WatchEvent[] {
  return (res.events ?? []).map((ev) => ({
    type: ev.type === 'Delete' ? 'DELETE' : 'PUT',
    key: ev.kv.key,
    value: ev.kv.value ?? Buffer.alloc(0),
    modRevision: String(ev.kv.mod_revision),
    lease: String(ev.kv.lease ?? '0'),
  }));
}

/** Whether revision `rev` is compacted away: a range read at it says so (a future revision is not compacted). */
export async function isCompacted(client: Etcd3, rev: number, timeoutMs = 5_000): Promise<boolean> {
  try {
    await client.kv.range({ key: Buffer.from([0]), range_end: Buffer.from([0]), revision: String(rev), limit: 1, keys_only: true }, { deadline: deadlineOf(timeoutMs) });
    return false;
  } catch (e) {
    return /compacted/i.test(messageOf(e));
  }
}

/** etcd's current revision (a one-key, keys-only read). */
export async function headRevision(client: Etcd3, timeoutMs = 5_000): Promise<number> {
  const res = await client.kv.range({ key: Buffer.from([0]), limit: 1, keys_only: true }, { deadline: deadlineOf(timeoutMs) });
  return Number(res.header.revision);
}

export function watchWholeKeyspace(client: Etcd3, fromRev: number, h: WatchHandlers): WholeKeyspaceWatch {
  // key "\0" with range_end "\0": every key (etcd3's prefix('') spells exactly that).
  const w = client.watch().prefix('').startRevision(String(fromRev)).watcher();
  let done = false;
  w.on('data', (res: IWatchResponse) => {
    if (!done && res.events?.length) h.events(toEvents(res));
  });
  w.on('disconnected', () => {
    (w.request as { start_revision?: string }).start_revision = String(h.next());
  });
  w.on('error', (err: Error) => {
    if (done) return;
    done = true;
    const msg = messageOf(err);
    void (async () => {
      const compacted = /compact/i.test(msg) || (await isCompacted(client, h.next()));
      h.ended(compacted ? { kind: 'compacted', error: msg } : { kind: 'failed', error: msg });
    })();
  });
  return {
    cancel: async () => {
      done = true;
      await Promise.race([w.cancel().catch(() => undefined), new Promise((r) => setTimeout(r, 5_000).unref())]);
    },
  };
}
