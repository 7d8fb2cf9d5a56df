/**
 * The health check acquireSlot asks before every step: this node's etcd
 * member role (leader | follower | unhealthy) and whether the cluster has
 * quorum. The local member is the FIRST configured endpoint (the config's
 * `etcd.endpoints` lists the node's own member first). Every call has its own
 * deadline; the probe never throws.
 */
import type { Etcd3 } from 'etcd3';
import { makeEtcdClient, type EtcdConnection } from './client.js';
import type { LocalRole } from './decide.js';
import { deadlineOf, leaderOfCluster } from './etcd-calls.js';

/** What the local member's Status call said (ids as decimal strings), or undefined when it did not answer. */
export interface LocalStatus {
  /** The member id the responding member believes is the leader ('0' = none). */
  leader: string;
  /** The responding member's own id (header.member_id). */
  memberId: string;
}

export interface Health {
  role: LocalRole;
  quorum: boolean;
}

/**
 * Pure: the local member's status, and (asked only when the local member
 * did not name a leader) the leader the other members name ('0' none,
 * undefined nobody answered). A local member that knows a leader means
 * quorum; one that is down or leaderless is `unhealthy`, and then quorum is
 * whatever the rest of the cluster says: a node whose own member is down
 * must wait for a healthy node, not back up alone.
 */
export function healthFrom(local: LocalStatus | undefined, clusterLeader: string | undefined): Health {
  if (local && local.leader !== '0' && local.leader !== '') {
    return { role: local.leader === local.memberId ? 'leader' : 'follower', quorum: true };
  }
  return { role: 'unhealthy', quorum: clusterLeader !== undefined && clusterLeader !== '0' && clusterLeader !== '' };
}

export interface HealthProbe {
  probe(): Promise<Health>;
  close(): void;
}

/** A probe with a client bound to the first endpoint (the local member); `timeoutMs` bounds each call (default 3 s). */
export function makeHealthProbe(conn: EtcdConnection, opts: { timeoutMs?: number } = {}): HealthProbe {
  const timeoutMs = opts.timeoutMs ?? 3_000;
  let local: Etcd3 | undefined;
  const localClient = (): Etcd3 => (local ??= makeEtcdClient({ ...conn, endpoints: [conn.endpoints[0]!] }, { callTimeoutMs: timeoutMs, dialTimeoutMs: timeoutMs }));
  return {
    async probe() {
      let status: LocalStatus | undefined;
      try {
        const s = await localClient().maintenance.status({ deadline: deadlineOf(timeoutMs) });
        status = { leader: String(s.leader), memberId: String(s.header.member_id) };
      } catch {
        status = undefined;
      }
      if (status && status.leader !== '0') return healthFrom(status, undefined);
      let clusterLeader: string | undefined;
      if (conn.endpoints.length > 1) {
        try {
          clusterLeader = await leaderOfCluster({ client: localClient(), conn: { ...conn, endpoints: conn.endpoints.slice(1) } }, timeoutMs);
        } catch {
          clusterLeader = undefined;
        }
      }
      return healthFrom(status, clusterLeader);
    },
    close() {
      local?.close();
      local = undefined;
    },
  };
}
