import type { Config } from '../config/load.js';
import { BackupError, type Reason } from '../errors.js';
import { checkDiskSpace, checkEtcdHealth, type EtcdFacts, type PreflightCheck } from '../etcd/health.js';
import { mkdirPrivate } from '../fsutil.js';

export interface PreflightOutcome {
  checks: PreflightCheck[];
  /** Checks that failed and stop a run unless forced. */
  blocking: PreflightCheck[];
  etcd: EtcdFacts;
}

const REASON_OF: Record<PreflightCheck['name'], Reason> = {
  'endpoint-health': 'preflight-unhealthy',
  'member-list': 'preflight-unhealthy',
  leader: 'preflight-no-leader',
  quorum: 'preflight-no-quorum',
  'members-reachable': 'preflight-member-unreachable',
  'disk-space': 'preflight-disk-space',
};

/**
 * One member down with quorum intact is when a backup matters most, so an
 * unreachable member is recorded (manifest, log, metric) but does not block.
 * No quorum, no leader or no healthy endpoint means a snapshot may be stale
 * or impossible: those block a scheduled run.
 */
const WARN_ONLY = new Set<PreflightCheck['name']>(['members-reachable']);

export async function runPreflight(cfg: Config): Promise<PreflightOutcome> {
  // Loaded here, not at the top: gRPC is for the commands that talk to etcd.
  const { EtcdClients } = await import('../etcd/client.js');
  let clients: InstanceType<typeof EtcdClients>;
  try {
    clients = new EtcdClients(cfg.etcd, cfg.etcd.timeoutSeconds * 1000);
  } catch (e) {
    // Unreadable TLS files: the same answer as an endpoint that cannot be reached.
    const checks: PreflightCheck[] = [{ name: 'endpoint-health', ok: false, detail: `cannot set up the etcd client: ${(e as Error).message}` }];
    return { checks, blocking: checks.filter(() => cfg.preflight.requireHealthy), etcd: {} };
  }
  let checks: PreflightCheck[];
  let facts: EtcdFacts;
  try {
    ({ checks, facts } = await checkEtcdHealth(clients, cfg.etcd.endpoints));
  } finally {
    clients.close();
  }
  await mkdirPrivate(cfg.workDir);
  if (facts.dbSize !== undefined) {
    checks.push(await checkDiskSpace(cfg.workDir, facts.dbSize, cfg.preflight.freeSpaceFactor));
  }
  const blocking = checks.filter((c) => !c.ok && !WARN_ONLY.has(c.name) && (cfg.preflight.requireHealthy || c.name === 'disk-space'));
  return { checks, blocking, etcd: facts };
}

export function preflightError(blocking: PreflightCheck[]): BackupError {
  // Report the most fundamental failure: no quorum explains no leader, and so on.
  const order: PreflightCheck['name'][] = ['member-list', 'quorum', 'leader', 'endpoint-health', 'disk-space', 'members-reachable'];
  const first = [...blocking].sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name))[0]!;
  return new BackupError(REASON_OF[first.name], `preflight failed: ${blocking.map((c) => `${c.name}: ${c.detail}`).join('; ')}`, {
    hint:
      first.name === 'disk-space'
        ? 'free space in workDir or lower preflight.freeSpaceFactor'
        : 'fix etcd first; for an emergency backup of a sick cluster run `etcd-backupd backup --force`',
  });
}
