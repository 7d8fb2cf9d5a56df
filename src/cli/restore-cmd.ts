/**
 * `etcd-backupd restore`: the CLI glue. Picks the backup as fetch does (plus
 * --at), plans with src/restore/plan.ts, runs with src/restore/run.ts and
 * prints what to do next.
 */
import { resolve } from 'node:path';
import { loadIdentities } from '../bundle/encrypt.js';
import type { Manifest } from '../bundle/manifest.js';
import { parseAt } from '../catalog/at.js';
import type { AtTimeChoice, AtTimeResult } from '../continuous/at-time.js';
import { replaySettings } from '../drill/settings.js';
import { findBackup, loadCatalogFor } from '../catalog/catalog.js';
import { needIdentity } from '../catalog/fetch.js';
import { loadTrust } from '../catalog/trust.js';
import { BackupError, messageOf, reasonOf } from '../errors.js';
import { catalogCacheDir } from '../layout.js';
import type { Logger } from '../log.js';
import { DEFAULT_BUMP_REVISION, DEFAULT_CLUSTER_TOKEN, memberWarnings, nextSteps, planRestore, type RestoreFlags } from '../restore/plan.js';
import { dataDirState, runRestore } from '../restore/run.js';
import { findExecutable } from '../source/exec.js';
import type { Store } from '../storage/index.js';
import type { Config } from '../config/load.js';
import { common, configFrom, err, EXIT_OK, interruptSignal, out, parse, pickStore, printJson, UsageError, withProgress, withStores } from './io.js';

export const RESTORE_USAGE = `Usage:
  etcd-backupd restore --config F [--store S] ID|latest [--at TIME|now] --data-dir DIR --name N
                       --initial-cluster S --initial-advertise-peer-urls U [--initial-cluster-token T]
                       [--bump-revision N] [--etcdutl PATH] [--etcdctl PATH]
                       [--identity FILE] [--allow-untrusted] [--json]

Fetches the backup, checks every sha256 (and its signature when signing.trustedKeys
is set), then restores its snapshot into DIR for ONE member with
\`etcdutl snapshot restore\` (etcd 3.5+, found on PATH or --etcdutl) or else
\`ETCDCTL_API=3 etcdctl snapshot restore\` (etcd 3.4). Run it on every member with
the same backup, --initial-cluster and --initial-cluster-token, then start etcd.

NOT for OpenShift: there use \`etcd-backupd fetch ... --to /home/core/assets/backup\`
on one recovery host and cluster-restore.sh (docs/restore.md).

  --data-dir DIR          the new data dir: must not exist or be empty (never overwritten)
  --name N                this member's name; --initial-cluster must hold N=<its peer URL>
  --initial-cluster S     every member: n1=https://10.0.0.1:2380,n2=...,n3=...
  --initial-advertise-peer-urls U   this member's peer URL(s), as in --initial-cluster
  --initial-cluster-token T  default "${DEFAULT_CLUSTER_TOKEN}"; every member must use the same
                          token (and etcd must start with it)
  --bump-revision N       etcdutl only: add N to the revision and mark the old ones
                          compacted, so Kubernetes watchers re-list instead of missing
                          changes; default ${DEFAULT_BUMP_REVISION}, 0 disables. etcdctl 3.4
                          cannot: restore warns and goes on
  --at TIME|now           the state at TIME (ISO-8601 with Z or an offset); give latest as
                          the backup: the newest backup taken at or before TIME, plus the
                          continuous-backup segments seen by TIME replayed onto it in a
                          throwaway etcd (docs/restore.md "Restoring to a point in time")
  --etcdutl PATH, --etcdctl PATH   the tools, instead of looking them up on PATH
  --identity FILE         age identity for an encrypted backup (not kept on the masters)
  --allow-untrusted       accept a backup no trusted key signed
  --json                  one JSON document on stdout, on failure too

Example (member m1 of three):
  etcd-backupd restore --config /var/lib/etcd-backupd/recovery/config.yaml latest \\
    --data-dir /var/lib/etcd-restored --name m1 \\
    --initial-cluster m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380 \\
    --initial-advertise-peer-urls https://10.0.0.1:2380

Exit codes: 0 restored, 1 failed (nothing left in DIR), 2 bad usage or config.`;

const OPTIONS = {
  ...common,
  at: { type: 'string' },
  'data-dir': { type: 'string' },
  name: { type: 'string' },
  'initial-cluster': { type: 'string' },
  'initial-advertise-peer-urls': { type: 'string' },
  'initial-cluster-token': { type: 'string' },
  'bump-revision': { type: 'string' },
  etcdutl: { type: 'string' },
  etcdctl: { type: 'string' },
  identity: { type: 'string' },
  'allow-untrusted': { type: 'boolean' },
} as const;

type Values = Record<string, string | boolean | undefined>;

function required(values: Values, flag: string): string {
  const v = values[flag];
  if (typeof v !== 'string' || !v) throw new UsageError(`restore: --${flag} is required (see \`etcd-backupd restore --help\`)`);
  return v;
}

function flagsFrom(values: Values): RestoreFlags {
  const bump = values['bump-revision'];
  if (bump !== undefined && !/^\d+$/.test(String(bump))) throw new UsageError(`--bump-revision: expected a whole number >= 0, got ${JSON.stringify(bump)}`);
  return {
    dataDir: resolve(required(values, 'data-dir')),
    name: required(values, 'name'),
    initialCluster: required(values, 'initial-cluster'),
    initialAdvertisePeerUrls: required(values, 'initial-advertise-peer-urls'),
    initialClusterToken: values['initial-cluster-token'] as string | undefined,
    bumpRevision: bump === undefined ? undefined : Number(bump),
  };
}

/** An explicit path that is not there fails; otherwise a tool missing from PATH is just absent. */
function findTools(values: Values): { etcdutl?: string; etcdctl?: string } {
  const pick = (flag: 'etcdutl' | 'etcdctl'): string | undefined => {
    const given = values[flag];
    if (typeof given !== 'string') return findExecutable(flag);
    const p = findExecutable(given);
    if (!p) throw new BackupError('restore-tool-missing', `--${flag} ${given}: no executable there`, { hint: `give the path of the cluster's ${flag}, or leave --${flag} out to look it up on PATH` });
    return p;
  };
  return { etcdutl: pick('etcdutl'), etcdctl: pick('etcdctl') };
}

interface Chosen {
  manifest: Manifest;
  /** With --at: the time asked for, and the base and chain that reach it (src/continuous/at-time.ts). */
  at?: { time: Date; choice: AtTimeChoice };
}

async function chooseBackup(cfg: Config, store: Store, ref: string, values: Values): Promise<Chosen> {
  const trust = await loadTrust(cfg);
  const allowUntrusted = values['allow-untrusted'] === true;
  const cacheDir = catalogCacheDir(cfg.workDir, store.name);
  if (typeof values.at !== 'string') {
    return { manifest: findBackup(await loadCatalogFor(store, cfg.cluster, ref, trust, { cacheDir }), ref, store.name, { allowUntrusted }) };
  }
  if (ref !== 'latest') throw new UsageError('--at picks the backup by time: give `latest` as the backup, not an id');
  const at = parseAt(values.at, new Date());
  // Loaded on demand: the replay talks gRPC to its throwaway etcd.
  const { chooseAtTime } = await import('../continuous/at-time.js');
  const choice = await chooseAtTime({ store, cluster: cfg.cluster, trust, cacheDir, at, allowUntrusted });
  return { manifest: choice.base, at: { time: at, choice } };
}

export async function cmdRestore(argv: string[], log: Logger): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    out(RESTORE_USAGE);
    return EXIT_OK;
  }
  const json = argv.includes('--json');
  try {
    return await restore(argv, log, json);
  } catch (e) {
    // --json: one document on stdout, on failure too; main() still prints the error on stderr and picks the exit code.
    if (json) printJson({ reason: reasonOf(e), error: messageOf(e), ...(e instanceof BackupError && e.hint ? { hint: e.hint } : {}) });
    throw e;
  }
}

async function restore(argv: string[], log: Logger, json: boolean): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS, 1);
  const cfg = configFrom(values);
  const flags = flagsFrom(values);
  // Everything checkable without the store is checked first: a refused target costs no download.
  const plan = planRestore(flags, findTools(values), await dataDirState(flags.dataDir));
  const identities = typeof values.identity === 'string' ? await loadIdentities(values.identity) : undefined;
  return withStores(cfg, async (stores) => {
    const store = pickStore(cfg, stores, values.store);
    const chosen = await chooseBackup(cfg, store, positionals[0]!, values);
    const m = chosen.manifest;
    // The members the backup was taken with, against the ones given: a warning, never a refusal.
    plan.warnings.push(...memberWarnings(plan, m.members));
    // Before anything is created beside the data dir.
    if (m.object?.encrypted && !identities?.length) throw needIdentity(m);
    const signal = interruptSignal();
    const atTime = chosen.at ? await import('../continuous/at-time.js') : undefined;
    let atResult: AtTimeResult | undefined;
    // With --at the snapshot to restore is made in restore's private dir: the base alone, or the base with the segments replayed.
    const produce =
      chosen.at && atTime
        ? async (dir: string) => {
            atResult = await atTime.materializeAt(chosen.at!.choice, { store, to: dir, identities, ...replaySettings(cfg), log, signal });
            return { snapshot: atResult.snapshot, replayed: atResult.replayed };
          }
        : undefined;
    const r = await withProgress(json, (progress) => runRestore({ store, manifest: m, identities, plan, signal, log, produce, progress }));
    if (atResult && atTime && !json) err(atTime.atTimeSummary(atResult, chosen.at!.time));
    const next = nextSteps(plan);
    if (json) {
      printJson({
        id: m.id,
        store: store.name,
        createdAt: m.createdAt,
        ...(m.clusterVersion ? { clusterVersion: m.clusterVersion } : {}),
        ...(m.label ? { label: m.label } : {}),
        ...(atResult && atTime ? atTime.atTimeJson(atResult, chosen.at!.time) : {}),
        dataDir: plan.dataDir,
        tool: plan.tool,
        revision: r.revision,
        ...(plan.bumpRevision > 0 ? { bumpRevision: plan.bumpRevision } : {}),
        warnings: plan.warnings,
        next,
      });
      return EXIT_OK;
    }
    const bumped = plan.bumpRevision > 0 ? `; revision bumped by ${plan.bumpRevision} and older revisions marked compacted` : '';
    const version = m.clusterVersion ? `, cluster version ${m.clusterVersion}` : '';
    out(`restored backup ${m.id} (${m.createdAt}, revision ${r.revision}, ${r.totalKey} keys${version}) from store ${store.name} into ${plan.dataDir} as member ${plan.name} with ${plan.tool}${bumped}`);
    for (const w of plan.warnings) err(`warning: ${w}`);
    out('next:');
    next.forEach((s, i) => out(`  ${i + 1}. ${s}`));
    return EXIT_OK;
  });
}
