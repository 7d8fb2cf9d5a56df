/**
 * The pure half of `restore`: the operator's flags, the tools found and the
 * state of the target data dir become a validated plan, the restore tool's
 * argv, warnings and the next steps to print. No I/O here, so every rule is
 * tested from a table (test/unit/restore-plan.test.ts).
 */
import { BackupError } from '../errors.js';

/**
 * What etcd's docs and Kubernetes recommend when a snapshot is restored under
 * a running API server's watchers: the restored revision jumps ahead (a
 * billion is more than any cluster writes between backup and restore) and
 * the old revisions are marked compacted, so informers see a newer revision
 * and re-list instead of silently missing the changes lost with the restore.
 */
export const DEFAULT_BUMP_REVISION = 1_000_000_000;
/** etcdctl's own default; every member of one cluster must use the same token. */
export const DEFAULT_CLUSTER_TOKEN = 'etcd-cluster';

export interface RestoreFlags {
  dataDir: string;
  name: string;
  initialCluster: string;
  initialAdvertisePeerUrls: string;
  initialClusterToken?: string;
  /** 0 disables; default DEFAULT_BUMP_REVISION. */
  bumpRevision?: number;
}

/** The binaries found: etcdutl (etcd >= 3.5) is preferred, etcdctl (3.4) otherwise. */
export interface RestoreTools {
  etcdutl?: string;
  etcdctl?: string;
}

/** What is at the data dir path now: only missing or empty is restored into. */
export type DataDirState = 'missing' | 'empty' | 'not-empty' | 'not-a-directory';

export interface RestorePlan {
  dataDir: string;
  name: string;
  initialCluster: string;
  /** The members of --initial-cluster, parsed: name → peer URLs. */
  members: Map<string, string[]>;
  advertisePeerUrls: string[];
  clusterToken: string;
  tool: 'etcdutl' | 'etcdctl';
  toolPath: string;
  /** The bump passed to the tool; 0 when disabled or unsupported (etcdctl). */
  bumpRevision: number;
  warnings: string[];
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function usage(msg: string): BackupError {
  return new BackupError('usage', msg, { hint: 'run `etcd-backupd restore --help` for the flags and an example' });
}

/** A peer URL as etcd takes it: http(s)://host:port, nothing else. */
function parsePeerUrl(flag: string, text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw usage(`${flag}: ${JSON.stringify(text)} is not a URL (expected http(s)://HOST:PORT)`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.port || (u.pathname !== '/' && u.pathname !== '') || u.search || u.hash || u.username) {
    throw usage(`${flag}: ${JSON.stringify(text)} is not a peer URL (expected http(s)://HOST:PORT)`);
  }
  return text.replace(/\/$/, '');
}

/** `n1=https://10.0.0.1:2380,n2=https://10.0.0.2:2380` → name → URLs (a name may repeat for several URLs). */
export function parseInitialCluster(text: string): Map<string, string[]> {
  const members = new Map<string, string[]>();
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const name = part.slice(0, eq).trim();
    if (eq <= 0 || !NAME_RE.test(name)) throw usage(`--initial-cluster: ${JSON.stringify(part)} is not NAME=PEER-URL`);
    const url = parsePeerUrl('--initial-cluster', part.slice(eq + 1).trim());
    members.set(name, [...(members.get(name) ?? []), url]);
  }
  return members;
}

function checkBump(n: number | undefined): number {
  const bump = n ?? DEFAULT_BUMP_REVISION;
  if (!Number.isSafeInteger(bump) || bump < 0) throw usage(`--bump-revision: expected a whole number >= 0, got ${n}`);
  return bump;
}

/** Refuses a target that holds anything: restore never overwrites or merges into a data dir. */
export function checkDataDir(dataDir: string, state: DataDirState): void {
  if (!dataDir.startsWith('/')) throw usage(`--data-dir: expected an absolute path, got ${JSON.stringify(dataDir)}`);
  if (state === 'not-empty' || state === 'not-a-directory') {
    throw new BackupError('restore-target-not-empty', `${dataDir} ${state === 'not-empty' ? 'is not empty' : 'exists and is not a directory'}; nothing was changed`, {
      hint: `etcd must start from a fresh data dir: stop etcd, move the old one aside (mv ${dataDir} ${dataDir}.old), then run restore again`,
    });
  }
}

/**
 * Validates the flags against each other and picks the tool. Usage errors
 * first (they cost nothing), then the data dir, then the tools: a refused
 * target is reported even on a host without the tools.
 */
export function planRestore(flags: RestoreFlags, tools: RestoreTools, state: DataDirState): RestorePlan {
  if (!NAME_RE.test(flags.name)) throw usage(`--name: ${JSON.stringify(flags.name)} is not a member name (letters, digits, ".", "_", "-")`);
  const members = parseInitialCluster(flags.initialCluster);
  const advertise = flags.initialAdvertisePeerUrls.split(',').map((u) => parsePeerUrl('--initial-advertise-peer-urls', u.trim()));
  const own = members.get(flags.name);
  if (!own) throw usage(`--initial-cluster names no member ${JSON.stringify(flags.name)} (it has ${[...members.keys()].join(', ')}): it must hold ${flags.name}=${advertise[0]}`);
  // etcd refuses to start a member whose advertised peer URLs differ from its --initial-cluster entry.
  const missing = advertise.filter((u) => !own.includes(u));
  if (missing.length) throw usage(`--initial-cluster gives ${flags.name}=${own.join(',')}, but --initial-advertise-peer-urls is ${advertise.join(',')}: they must match`);
  const token = flags.initialClusterToken ?? DEFAULT_CLUSTER_TOKEN;
  if (!token.trim()) throw usage('--initial-cluster-token: empty');
  const bump = checkBump(flags.bumpRevision);
  checkDataDir(flags.dataDir, state);
  const tool = tools.etcdutl ? 'etcdutl' : 'etcdctl';
  const toolPath = tools.etcdutl ?? tools.etcdctl;
  if (!toolPath) {
    throw new BackupError('restore-tool-missing', 'neither etcdutl nor etcdctl was found', {
      hint: "install the cluster's etcd version (etcdutl for 3.5+, etcdctl for 3.4) or pass --etcdutl PATH / --etcdctl PATH",
    });
  }
  const warnings: string[] = [];
  if (tool === 'etcdctl' && bump > 0) {
    warnings.push(
      `etcdctl (etcd 3.4) cannot bump the revision: the restored cluster starts at the backup's revision, so Kubernetes watchers may miss changes made after it; restart kube-apiserver (and controllers) after etcd is up, or restore with etcdutl 3.5+ (--etcdutl PATH)`,
    );
  }
  return {
    dataDir: flags.dataDir,
    name: flags.name,
    initialCluster: flags.initialCluster,
    members,
    advertisePeerUrls: advertise,
    clusterToken: token,
    tool,
    toolPath,
    bumpRevision: tool === 'etcdutl' ? bump : 0,
    warnings,
  };
}

/** The restore command line: the same flags for both tools, the revision bump only for etcdutl. */
export function restoreArgv(plan: RestorePlan, snapshot: string): string[] {
  const argv = [
    plan.toolPath, 'snapshot', 'restore', snapshot,
    '--data-dir', plan.dataDir,
    '--name', plan.name,
    '--initial-cluster', plan.initialCluster,
    '--initial-advertise-peer-urls', plan.advertisePeerUrls.join(','),
    '--initial-cluster-token', plan.clusterToken,
  ];
  if (plan.bumpRevision > 0) argv.push('--bump-revision', String(plan.bumpRevision), '--mark-compacted');
  return argv;
}

/** What the operator does next, in order; printed as text and as `next` in --json. */
export function nextSteps(plan: RestorePlan): string[] {
  const others = [...plan.members.keys()].filter((n) => n !== plan.name);
  return [
    ...(others.length
      ? [`run this same restore (same backup, same --initial-cluster and --initial-cluster-token) on the other members: ${others.join(', ')}, each with its own --name and --initial-advertise-peer-urls`]
      : []),
    `start etcd on this member with --name ${plan.name} --data-dir ${plan.dataDir} --initial-advertise-peer-urls ${plan.advertisePeerUrls.join(',')} --initial-cluster ${plan.initialCluster} --initial-cluster-token ${plan.clusterToken}${others.length ? ', and every other member likewise with its own name, data dir and peer URL' : ''}`,
    'check the members: ETCDCTL_API=3 etcdctl --endpoints <every member> endpoint status -w table (one leader, the same revision and raft index)',
    'then start kube-apiserver and the rest of the control plane',
    'OpenShift: do NOT use restore; use `etcd-backupd fetch` and cluster-restore.sh on one host (docs/restore.md)',
  ];
}

/** A member as the backup's manifest recorded it (src/bundle/manifest.ts `members`). */
export interface RecordedMember {
  name: string;
  peerURLs: string[];
  learner?: true;
}

/**
 * Warnings when the members given to restore differ from those the backup
 * was taken with. Not an error: restoring onto new hosts (other names, other
 * URLs) is legitimate; a typo in one member's name is the mistake this
 * catches, before the members fail to find each other.
 */
export function memberWarnings(plan: Pick<RestorePlan, 'name' | 'members'>, recorded: readonly RecordedMember[] | undefined): string[] {
  const known = (recorded ?? []).filter((m) => m.name !== '' && !m.learner);
  if (known.length === 0) return [];
  const was = known.map((m) => m.name).sort();
  const now = [...plan.members.keys()].sort();
  const warnings: string[] = [];
  if (was.join(',') !== now.join(',')) {
    warnings.push(`the backup was taken on members ${was.join(', ')}; --initial-cluster names ${now.join(', ')}: fine on new hosts, otherwise check the names (etcd members find each other only by the names and URLs given)`);
  }
  const own = known.find((m) => m.name === plan.name);
  const ownUrls = plan.members.get(plan.name) ?? [];
  if (own && own.peerURLs.length > 0 && [...own.peerURLs].sort().join(',') !== [...ownUrls].sort().join(',')) {
    warnings.push(`member ${plan.name} had peer URL(s) ${own.peerURLs.join(',')} when the backup was taken; --initial-cluster gives ${ownUrls.join(',')}`);
  }
  return warnings;
}
