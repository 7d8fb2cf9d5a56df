/**
 * The health check acquireSlot asks before every step: this node's etcd
 * member role (leader | follower | unhealthy) and whether the cluster has
 * quorum. The local member is the FIRST configured endpoint (the config's
 * `etcd.endpoints` lists the node's own member first). Every call has its own
 * deadline; the probe never throws.
 */
import type { Members } from '../etcd/client.js';
import type { LocalRole } from './decide.js';
import { leaderOfCluster } from './etcd-calls.js';

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
}

/**
 * A probe that asks the first of `members.endpoints` (the local member), and
 * the others only when it names no leader. `timeoutMs` bounds each call
 * (default 3 s). The clients are the caller's (it closes them).
 */
export function makeHealthProbe(members: Members, opts: { timeoutMs?: number } = {}): HealthProbe {
  const timeoutMs = opts.timeoutMs ?? 3_000;
  const [local, ...others] = members.endpoints;
  if (local === undefined) throw new Error('etcd: no endpoints');
  return {
    async probe() {
      let status: LocalStatus | undefined;
      try {
        const s = await members.clients.endpoint(local).status({ timeoutMs });
        status = { leader: s.leader, memberId: s.memberId };
      } catch {
        status = undefined;
      }
      if (status && status.leader !== '0') return healthFrom(status, undefined);
      const clusterLeader = others.length > 0 ? await leaderOfCluster({ clients: members.clients, endpoints: others }, timeoutMs) : undefined;
      return healthFrom(status, clusterLeader);
    },
  };
}
