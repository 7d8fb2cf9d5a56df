/**
 * Small helpers for etcd3 calls in src/coord/: deadlines, key buffers, and
 * turning a failed call into a BackupError with a stable reason.
 */
import { EtcdLeaseInvalidError, type Etcd3 } from 'etcd3';
import { BackupError, messageOf } from '../errors.js';
import type { Members } from '../etcd/client.js';

export const keyBuf = (k: string): Buffer => Buffer.from(k);

export const deadlineOf = (ms: number): Date => new Date(Date.now() + ms);

const HINT_NO_QUORUM = 'Most etcd members are down or cut off: no node can claim a slot until quorum is back (coordination.onNoQuorum decides what happens meanwhile).';
const HINT_UNAVAILABLE = 'Check that etcd answers on the configured endpoints (etcd.endpoints, TLS files) from this node.';

/** How a failed call is explained: the client, and when known the members to ask one by one. */
export interface FailureProbe {
  client: Etcd3;
  members?: Members | undefined;
}

/**
 * Why an etcd call failed, as a BackupError: `coord-lost` for a lease etcd no
 * longer knows; otherwise asks the members for their status (short deadline):
 * some answer and none knows a leader means `coord-no-quorum`, anything else
 * `coord-unavailable`. Never throws.
 */
export async function classifyFailure(probe: FailureProbe, err: unknown, what: string, timeoutMs: number): Promise<BackupError> {
  if (err instanceof BackupError) return err;
  if (err instanceof EtcdLeaseInvalidError) {
    return new BackupError('coord-lost', `coordination: could not ${what}: the claim's lease is gone (${messageOf(err)})`, { cause: err });
  }
  const askMs = Math.min(2_000, timeoutMs);
  const leader = probe.members ? await leaderOfCluster(probe.members, askMs) : await leaderSeen(probe.client, askMs);
  if (leader === '0') {
    return new BackupError('coord-no-quorum', `coordination: could not ${what}: etcd has no leader (no quorum): ${messageOf(err)}`, { cause: err, hint: HINT_NO_QUORUM });
  }
  const detail = leader === undefined ? 'no etcd member answered' : 'etcd has a leader but did not answer in time';
  return new BackupError('coord-unavailable', `coordination: could not ${what}: ${detail}: ${messageOf(err)}`, { cause: err, hint: HINT_UNAVAILABLE });
}

/**
 * The leader as the members see it: a leader id when any member names one,
 * '0' when members answer but none knows a leader, undefined when none
 * answers. Every member is asked on its own, at once.
 */
export async function leaderOfCluster(members: Members, timeoutMs: number): Promise<string | undefined> {
  const seen = await Promise.all(
    members.endpoints.map((e) =>
      members.clients
        .endpoint(e)
        .status({ timeoutMs })
        .then((s) => s.leader, () => undefined),
    ),
  );
  const answered = seen.filter((l): l is string => l !== undefined);
  if (answered.length === 0) return undefined;
  return answered.find((l) => l !== '0') ?? '0';
}

/** The leader id the member the client reaches reports ('0' = none), or undefined when none answers. */
export async function leaderSeen(client: Etcd3, timeoutMs: number): Promise<string | undefined> {
  try {
    const s = await client.maintenance.status({ deadline: deadlineOf(timeoutMs) });
    return String(s.leader);
  } catch {
    return undefined;
  }
}

/** Resolves after `ms`, or early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
