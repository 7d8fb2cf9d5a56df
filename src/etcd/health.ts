import { statfs } from 'node:fs/promises';
import type { EtcdGateway } from './gateway.js';

export interface PreflightCheck {
  name: 'endpoint-health' | 'member-list' | 'leader' | 'members-reachable' | 'quorum' | 'disk-space';
  ok: boolean;
  detail: string;
}

export interface EtcdFacts {
  version?: string;
  clusterId?: string;
  memberId?: string;
  leader?: string;
  dbSize?: number;
  revision?: number;
  members?: { id: string; name: string; reachable: boolean; isLearner: boolean }[];
}

export interface PreflightReport {
  ok: boolean;
  checks: PreflightCheck[];
  etcd: EtcdFacts;
}

interface StatusResponse {
  header?: { cluster_id?: string; member_id?: string; revision?: string };
  version?: string;
  dbSize?: string;
  leader?: string;
  errors?: string[];
}
interface MemberListResponse {
  members?: { ID?: string; name?: string; clientURLs?: string[]; isLearner?: boolean }[];
}

/**
 * Asks etcd whether it is fit to be backed up: does the local endpoint
 * answer, is there a leader everyone agrees on, is every member reachable,
 * does a voting quorum answer. Each question is one check with a detail a
 * person can act on; the report never throws for an unhealthy cluster.
 */
const HEALTH_ATTEMPTS = 3;

export async function checkEtcdHealth(gw: EtcdGateway, endpoints: string[]): Promise<{ checks: PreflightCheck[]; facts: EtcdFacts }> {
  const checks: PreflightCheck[] = [];
  const facts: EtcdFacts = {};

  // Status is answered from the member's own state, even without quorum, so
  // it tells "unreachable" apart from "reachable but unhealthy" (/health
  // needs a quorum read); the quorum and leader checks then say why.
  let local: StatusResponse | undefined;
  let usedEndpoint: string | undefined;
  const errors: string[] = [];
  for (const ep of endpoints) {
    try {
      local = await gw.call<StatusResponse>(ep, 'v3/maintenance/status', {});
      usedEndpoint = ep;
      break;
    } catch (e) {
      errors.push(`${ep}: ${(e as Error).message}`);
    }
  }
  if (!local || !usedEndpoint) {
    checks.push({ name: 'endpoint-health', ok: false, detail: `no configured etcd endpoint answers: ${errors.join('; ')}` });
    return { checks, facts };
  }
  // /health is a quorum read with a 1 s budget inside etcd: on a busy member (a compaction, a
  // defrag, fsync stalls) it says "false" for a moment. Ask up to 3 times, half a second apart,
  // before a scheduled backup is refused for it; a cluster that is really sick stays "false".
  let health: { health?: string; reason?: string } = {};
  for (let attempt = 0; attempt < HEALTH_ATTEMPTS; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 500));
    health = await gw.call<{ health?: string; reason?: string }>(usedEndpoint, 'health').catch((e: Error) => ({ health: 'false', reason: e.message }));
    if (health.health === 'true') break;
  }
  checks.push({
    name: 'endpoint-health',
    ok: health.health === 'true',
    detail: health.health === 'true' ? `${usedEndpoint} is healthy` : `${usedEndpoint} reports unhealthy${health.reason ? `: ${health.reason}` : ''}`,
  });

  facts.version = local.version;
  facts.clusterId = local.header?.cluster_id;
  facts.memberId = local.header?.member_id;
  facts.dbSize = Number(local.dbSize ?? 0);
  facts.revision = Number(local.header?.revision ?? 0);

  let members: NonNullable<MemberListResponse['members']> = [];
  try {
    members = (await gw.call<MemberListResponse>(usedEndpoint, 'v3/cluster/member/list', {})).members ?? [];
    checks.push({ name: 'member-list', ok: members.length > 0, detail: `${members.length} members` });
  } catch (e) {
    checks.push({ name: 'member-list', ok: false, detail: `member list failed: ${(e as Error).message}` });
    return { checks, facts };
  }

  const statuses = await Promise.all(
    members.map(async (m) => {
      for (const url of m.clientURLs ?? []) {
        try {
          return await gw.call<StatusResponse>(url, 'v3/maintenance/status', {});
        } catch {
          /* try the member's next URL */
        }
      }
      return undefined;
    }),
  );
  facts.members = members.map((m, i) => ({ id: m.ID ?? '?', name: m.name ?? '', reachable: statuses[i] !== undefined, isLearner: m.isLearner === true }));
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

  const leaders = new Set(statuses.filter((s): s is StatusResponse => s !== undefined).map((s) => s.leader ?? '0'));
  const memberIds = new Set(members.map((m) => m.ID));
  const leader = local.leader;
  const leaderOk = leader !== undefined && leader !== '0' && memberIds.has(leader) && leaders.size === 1 && votersUp >= quorum;
  facts.leader = leader;
  checks.push({
    name: 'leader',
    ok: leaderOk,
    detail: leaderOk
      ? `leader ${members.find((m) => m.ID === leader)?.name ?? leader}`
      : leaders.size > 1
        ? `members disagree on the leader: ${[...leaders].join(', ')}`
        : `no leader (reported ${leader ?? 'none'})`,
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
