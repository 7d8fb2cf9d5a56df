/**
 * What a backup records about the cluster besides the snapshot, for the day
 * it is restored (issue 19): the cluster version etcd holds, the etcd
 * members, the static pod revisions cluster-backup.sh archived. All of it
 * is best effort: a read that fails is one warning with a reason and a field
 * left out, never a failed backup, never a guess.
 */
import type { ManifestMember } from '../bundle/manifest.js';
import type { Config } from '../config/load.js';
import { messageOf, type Reason } from '../errors.js';
import { KUBEADM_CONFIG_KEY, OPENSHIFT_CLUSTERVERSION_KEY, parseKubeadmConfig, parseOpenShiftClusterVersion, type ClusterVersionInfo, type VersionOutcome } from '../etcd/cluster-version.js';
import type { EtcdFacts } from '../etcd/health.js';
import type { Logger } from '../log.js';
import { archivedRevisions } from '../source/static-revisions.js';

/** The whole metadata read, every endpoint and key included: a backup waits no longer than this for it. */
const METADATA_BUDGET_MS = 10_000;
/** One etcd call of it. */
const CALL_MS = 5_000;
const REASON: Reason = 'cluster-metadata-unreadable';

export interface ClusterMetadata {
  version?: ClusterVersionInfo;
  staticPodRevisions?: Record<string, number>;
}

/** The members as the manifest records them, from the preflight's facts. Pure. */
export function manifestMembers(facts: EtcdFacts): ManifestMember[] | undefined {
  if (!facts.members?.length) return undefined;
  return facts.members.map((m) => ({
    id: m.id,
    name: m.name,
    peerURLs: m.peerURLs ?? [],
    clientURLs: m.clientURLs ?? [],
    ...(facts.leader && facts.leader !== '0' && m.id === facts.leader ? { leader: true as const } : {}),
    ...(m.isLearner ? { learner: true as const } : {}),
    ...(m.version ? { version: m.version } : {}),
  }));
}

/** The cluster version and (cluster-backup.sh) the archived revisions, read at once under one budget. */
export async function readClusterMetadata(cfg: Config, input: { revision: number; staticArchive: string; log: Logger; signal?: AbortSignal }): Promise<ClusterMetadata> {
  const t0 = performance.now();
  const budget = AbortSignal.timeout(METADATA_BUDGET_MS);
  const signal = input.signal ? AbortSignal.any([input.signal, budget]) : budget;
  const [version, staticPodRevisions] = await Promise.all([
    readClusterVersion(cfg, input.revision, input.log, signal),
    cfg.source.type === 'cluster-backup' ? readRevisions(input.staticArchive, input.log, signal) : undefined,
  ]);
  const seconds = (performance.now() - t0) / 1000;
  input.log.info({ clusterVersion: version?.version, desiredVersion: version?.desired, from: version?.from, staticPodRevisions, seconds }, 'cluster metadata read');
  return { ...(version ? { version } : {}), ...(staticPodRevisions ? { staticPodRevisions } : {}) };
}

async function readRevisions(path: string, log: Logger, signal: AbortSignal): Promise<Record<string, number> | undefined> {
  try {
    const revs = await archivedRevisions(path, signal);
    if (Object.keys(revs).length === 0) {
      log.warn({ reason: REASON, archive: path }, 'the static resources archive holds no static-pod-resources/<pod>-pod-<N> directories: no revisions recorded');
      return undefined;
    }
    return revs;
  } catch (e) {
    log.warn({ reason: REASON, archive: path, err: messageOf(e) }, 'cannot read the static pod revisions from the archive; the manifest goes without them');
    return undefined;
  }
}

const SOURCES: { key: string; parse: (v: Buffer) => VersionOutcome }[] = [
  { key: OPENSHIFT_CLUSTERVERSION_KEY, parse: parseOpenShiftClusterVersion },
  { key: KUBEADM_CONFIG_KEY, parse: parseKubeadmConfig },
];

/**
 * The version from the first configured endpoint that answers: OpenShift's
 * ClusterVersion, else kubeadm-config. Read at the snapshot's revision, so
 * the version is the one the snapshot holds, or at the current one when
 * that member cannot serve it (compacted, or behind). Serializable: it
 * works without a quorum too (a forced backup of a sick cluster).
 */
async function readClusterVersion(cfg: Config, revision: number, log: Logger, signal: AbortSignal): Promise<ClusterVersionInfo | undefined> {
  const { EtcdClients } = await import('../etcd/client.js');
  let clients: InstanceType<typeof EtcdClients>;
  try {
    clients = new EtcdClients(cfg.etcd, Math.min(CALL_MS, cfg.etcd.timeoutSeconds * 1000));
  } catch (e) {
    log.warn({ reason: REASON, err: messageOf(e) }, 'cannot set up the etcd client to read the cluster version; the manifest goes without it');
    return undefined;
  }
  const errors: string[] = [];
  try {
    for (const url of cfg.etcd.endpoints) {
      try {
        const c = clients.endpoint(url);
        for (const s of SOURCES) {
          const value = await readAt(c, s.key, revision, signal);
          if (value === undefined) continue;
          const r = s.parse(value);
          if (r.ok) return r.info;
          // The object is there but not as expected: say so, record nothing (an older object elsewhere would be a guess).
          log.warn({ reason: REASON, key: s.key, why: r.why }, 'the cluster version object in etcd is not readable; the manifest goes without a cluster version');
          return undefined;
        }
        log.debug({ endpoint: url }, 'etcd holds no ClusterVersion or kubeadm-config: no cluster version recorded');
        return undefined;
      } catch (e) {
        errors.push(messageOf(e));
        if (signal.aborted) break;
      }
    }
  } finally {
    clients.close();
  }
  log.warn({ reason: REASON, errors }, 'cannot read the cluster version from etcd; the manifest goes without it');
  return undefined;
}

type Endpoint = ReturnType<InstanceType<typeof import('../etcd/client.js').EtcdClients>['endpoint']>;

async function readAt(c: Endpoint, key: string, revision: number, signal: AbortSignal): Promise<Buffer | undefined> {
  const at = (rev: number) => c.range({ key: Buffer.from(key), revision: rev, limit: 1, serializable: true }, { signal });
  let r;
  try {
    r = await at(revision);
  } catch (e) {
    if (!/compacted|future revision/i.test((e as { grpcMessage?: string }).grpcMessage ?? messageOf(e))) throw e;
    r = await at(0);
  }
  return r.kvs[0]?.value;
}
