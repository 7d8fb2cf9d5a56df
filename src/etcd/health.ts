import { statfs } from 'node:fs/promises';
// Types only: the gRPC client is loaded by the caller (run/preflight.ts), so `list` and friends never load it.
import type { EtcdClients, MemberInfo, MemberStatus } from './client.js';

export interface PreflightCheck {
  name: 'endpoint-health' | 'member-list' | 'leader' | 'members-reachable' | 'quorum' | 'disk-space';
  ok: boolean;
  detail: string;
}

export interface EtcdFacts {
  version?: string;
  /** uint64s as decimal strings, as etcd's API gives them. */
  clusterId?: string;
  memberId?: string;
  leader?: string;
  dbSize?: number;
  revision?: number;
  members?: { id: string; name: string; reachable: boolean; isLearner: boolean; peerURLs?: string[]; clientURLs?: string[]; /** Its etcd version, when it answered. */ version?: string }[];
}

export interface PreflightReport {
  ok: boolean;
  checks: PreflightCheck[];
  etcd: EtcdFacts;
}

/**
 * Asks etcd whether it is fit to be backed up: does the local endpoint
 * answer, is there a leader everyone agrees on, is every member reachable,
 * does a voting quorum answer. Each question is one check with a detail a
 * person can act on; the report never throws for an unhealthy cluster.
 * All of it over gRPC (etcd/client.ts), each call under its deadline.
 */
const HEALTH_ATTEMPTS = 3;
/** etcdctl's default --command-timeout: the budget of one quorum read (the client's timeout when that is shorter). */
const HEALTH_READ_MS = 5000;

const reasonOf = (e: unknown): string => ((e as { reason?: unknown }).reason !== undefined ? String((e as { reason: unknown }).reason) : (e as Error).message);

/** The status of the first configured endpoint that answers, or why none did. */
async function firstAnswering(clients: Pick<EtcdClients, 'endpoint'>, endpoints: string[]): Promise<{ local: MemberStatus; endpoint: string } | { errors: string[] }> {
  const errors: string[] = [];
  for (const ep of endpoints) {
    try {
      return { local: await clients.endpoint(ep).status(), endpoint: ep };
    } catch (e) {
      errors.push((e as Error).message.startsWith(ep) ? (e as Error).message : `${ep}: ${(e as Error).message}`);
    }
  }
  return { errors };
}

/**
 * A quorum read on a busy member (a compaction, a defrag, fsync stalls) can
 * fail for a moment. Asks up to 3 times, half a second apart, before a
 * scheduled backup is refused for it; a cluster that is really sick stays
 * unhealthy. Undefined when healthy, else why not.
 */
async function quorumReadWithRetries(c: ReturnType<EtcdClients['endpoint']>, readTimeoutMs: number): Promise<string | undefined> {
  let unhealthy: string | undefined;
  for (let attempt = 0; attempt < HEALTH_ATTEMPTS; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 500));
    unhealthy = await c.health({ readTimeoutMs });
    if (unhealthy === undefined) break;
  }
  return unhealthy;
}

export async function checkEtcdHealth(clients: Pick<EtcdClients, 'endpoint' | 'timeoutMs'>, endpoints: string[]): Promise<{ checks: PreflightCheck[]; facts: EtcdFacts }> {
  const checks: PreflightCheck[] = [];
  const facts: EtcdFacts = {};

  // Status is answered from the member's own state, even without quorum, so
  // it tells "unreachable" apart from "reachable but unhealthy" (the health
  // question needs a quorum read); the quorum and leader checks then say why.
  const first = await firstAnswering(clients, endpoints);
  if ('errors' in first) {
    checks.push({ name: 'endpoint-health', ok: false, detail: `no configured etcd endpoint answers: ${first.errors.join('; ')}` });
    return { checks, facts };
  }
  const { local, endpoint: usedEndpoint } = first;
  const c = clients.endpoint(usedEndpoint);
  const unhealthy = await quorumReadWithRetries(c, Math.min(clients.timeoutMs, HEALTH_READ_MS));
  checks.push({
    name: 'endpoint-health',
    ok: unhealthy === undefined,
    detail: unhealthy === undefined ? `${usedEndpoint} is healthy` : `${usedEndpoint} reports unhealthy: ${unhealthy}`,
  });

  facts.version = local.version;
  facts.clusterId = local.clusterId;
  facts.memberId = local.memberId;
  facts.dbSize = local.dbSize;
  facts.revision = local.revision;

  let members: MemberInfo[] = [];
  try {
    members = await c.memberList();
    checks.push({ name: 'member-list', ok: members.length > 0, detail: `${members.length} members` });
  } catch (e) {
    checks.push({ name: 'member-list', ok: false, detail: `member list failed: ${reasonOf(e)}` });
    return { checks, facts };
  }

  // One client per member URL: a client over several hosts would answer from any of them.
  const statuses = await Promise.all(
    members.map(async (m) => {
      for (const url of m.clientURLs) {
        try {
          return await clients.endpoint(url).status();
        } catch {
          /* try the member's next URL */
        }
      }
      return undefined;
    }),
  );
  facts.members = members.map((m, i) => ({
    id: m.id || '?',
    name: m.name,
    reachable: statuses[i] !== undefined,
    isLearner: m.isLearner,
    peerURLs: m.peerURLs,
    clientURLs: m.clientURLs,
    ...(statuses[i] ? { version: statuses[i].version } : {}),
  }));
  const unreachable = facts.members.filter((m) => !m.reachable);
  checks.push({
    name: 'members-reachable',
    ok: unreachable.length === 0,
    detail: unreachable.length === 0 ? `all ${members.length} members answer` : `unreachable: ${unreachable.map((m) => m.name || m.id).join(', ')}`,
  });

  const voters = facts.members.filter((m) => !m.isLearner);
  const votersUp = voters.filter((m) => m.reachable).length;
  const quorum = Math.floor(voters.length / 2) + 1;
  checks.push({
    name: 'quorum',
    ok: votersUp >= quorum,
    detail: `${votersUp} of ${voters.length} voting members answer, quorum needs ${quorum}`,
  });

  const leaders = new Set(statuses.filter((s): s is MemberStatus => s !== undefined).map((s) => s.leader || '0'));
  const memberIds = new Set(members.map((m) => m.id));
  const leader = local.leader;
  const leaderOk = leader !== '' && leader !== '0' && memberIds.has(leader) && leaders.size === 1 && votersUp >= quorum;
  facts.leader = leader;
  checks.push({
    name: 'leader',
    ok: leaderOk,
    detail: leaderOk
      ? `leader ${members.find((m) => m.id === leader)?.name ?? leader}`
      : leaders.size > 1
        ? `members disagree on the leader: ${[...leaders].join(', ')}`
        : `no leader (reported ${leader || 'none'})`,
  });
  return { checks, facts };
}

/** cluster-backup.sh writes the snapshot and we write the bundle next to it: a factor of 2 covers both. */
export async function checkDiskSpace(dir: string, dbSize: number, factor: number): Promise<PreflightCheck> {
  const st = await statfs(dir);
  const free = Number(st.bavail) * Number(st.bsize);
  const need = Math.ceil(dbSize * factor);
  return {
    name: 'disk-space',
    ok: free >= need,
    detail: `${fmtBytes(free)} free in ${dir}, need ${fmtBytes(need)} (${factor} x etcd db size ${fmtBytes(dbSize)})`,
  };
}

export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
