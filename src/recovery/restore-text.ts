import { join } from 'node:path';
import type { Config } from '../config/load.js';
import { KIT_CONFIG, KIT_EXECUTABLE, type KitPlan } from './plan.js';

/** An etcd member as the last preflight saw it. */
export interface KitMember {
  name: string;
  peerURLs: string[];
}

export interface RestoreTextInput {
  cfg: Config;
  plan: KitPlan;
  /** The kit's final place (the text names it, not the temp dir it is built in). */
  kitDir: string;
  /** The single executable is in the kit (the daemon runs as one). */
  executable: boolean;
  members?: KitMember[];
  membersSeenAt?: string;
  now: Date;
}

export const OPENSHIFT_DR_DOCS = 'https://docs.openshift.com/container-platform/latest/backup_and_restore/control_plane_backup_and_restore/disaster_recovery/scenario-2-restoring-cluster-state.html';
export const RESTORE_DOCS = 'https://github.com/etcd-backupd/etcd-backupd/blob/main/docs/restore.md';

/** Quotes a shell word only when it needs it (the commands are meant to be copied). */
export function sh(word: string): string {
  return /^[A-Za-z0-9_./:=,@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The `restore` line of each member: the same --initial-cluster everywhere, its own name and peer URLs. */
export function memberRestoreLines(bin: string, config: string, cluster: string, members: readonly KitMember[]): string[] {
  const initial = members.flatMap((m) => m.peerURLs.map((u) => `${m.name}=${u}`)).join(',');
  return members.map((m) =>
    [
      `# on ${m.name}:`,
      `${bin} restore --config ${sh(config)} latest --data-dir /var/lib/etcd-restored --name ${sh(m.name)}` +
        ` --initial-cluster ${sh(initial)} --initial-advertise-peer-urls ${sh(m.peerURLs.join(','))} --initial-cluster-token ${sh(`${cluster}-restored`)}`,
    ].join('\n'),
  );
}

/** RESTORE.txt: this cluster's exact commands, OpenShift's first when its script makes the backups. */
export function restoreText(i: RestoreTextInput): string {
  const { cfg, kitDir } = i;
  const bin = i.executable ? sh(join(kitDir, KIT_EXECUTABLE)) : 'etcd-backupd';
  const config = join(kitDir, KIT_CONFIG);
  const out: string[] = [
    `etcd-backupd recovery kit for cluster ${cfg.cluster}, written by node ${cfg.node} at ${i.now.toISOString()}.`,
    'Everything a restore needs when the API server is down: the executable, a config whose',
    'files point into this directory, the store credentials and trusted keys. Copy the whole',
    'directory if you restore elsewhere (its config uses paths relative to itself).',
    'Run the commands as root (`sudo -i`): the kit is root\'s own (0700, files 0600).',
    '',
  ];
  if (!i.executable) {
    out.push(
      'WARNING: the executable is NOT in this kit: the daemon was not running as the single',
      'executable (it ran under node). Bring etcd-backupd (the single executable from the release',
      'or the container image) and run the commands below with it.',
      '',
    );
  }
  out.push(...preliminaries(i, bin, config), '');
  if (cfg.source.type === 'cluster-backup') out.push(...openshiftSection(bin, config), '');
  out.push(...membersSection(i, bin, config), '', `More: ${RESTORE_DOCS}`, '');
  return out.join('\n');
}

function preliminaries(i: RestoreTextInput, bin: string, config: string): string[] {
  const out = [
    'Which backups there are (newest last), and a check of the newest:',
    `  ${bin} list --config ${sh(config)}`,
    `  ${bin} verify --config ${sh(config)} latest`,
    '',
    'After a failed upgrade restore the backup taken BEFORE it, not latest: `list` shows the',
    "cluster version each backup was taken on and its label (`backup --label pre-upgrade-<version> --pin`);",
    'give that backup\'s ID instead of `latest` below. `list --json` also names the etcd members',
    'and static pod revisions each backup was taken with.',
  ];
  for (const a of i.plan.ambient) out.push('', `Store ${a.store} takes its credentials from the environment, not from a file in this kit:`, `  ${a.what}.`);
  if (i.cfg.encryption.recipients.length > 0) {
    out.push(
      '',
      'Backups are encrypted (age). The age identity (secret key) is NOT in this kit, by design:',
      'bring it from where it is kept offline and add `--identity FILE` to fetch, verify and restore.',
    );
  }
  return out;
}

function openshiftSection(bin: string, config: string): string[] {
  return [
    'OpenShift (this cluster backs up with cluster-backup.sh): on ONE recovery control plane host,',
    '  ' + `${bin} fetch --config ${sh(config)} latest --to /home/core/assets/backup`,
    '  sudo -E /usr/local/bin/cluster-restore.sh /home/core/assets/backup',
    'then follow OpenShift\'s disaster recovery procedure for the other hosts:',
    `  ${OPENSHIFT_DR_DOCS}`,
  ];
}

function membersSection(i: RestoreTextInput, bin: string, config: string): string[] {
  // On OpenShift cluster-restore.sh is the supported way (docs/restore.md); these lines are the fallback.
  const head = i.cfg.source.type === 'cluster-backup' ? 'Only if cluster-restore.sh cannot be used (plain etcd restore, not the OpenShift way)' : 'Restore';
  const members = i.members?.filter((m) => m.peerURLs.length > 0) ?? [];
  if (members.length === 0) {
    return [
      `${head}: the member list is not known yet (no preflight has seen it). On EACH member, with its values:`,
      `  ${bin} restore --config ${sh(config)} latest --data-dir /var/lib/etcd-restored --name <member> --initial-cluster <name=peer-url,...> --initial-advertise-peer-urls <peer-url> --initial-cluster-token ${sh(`${i.cfg.cluster}-restored`)}`,
    ];
  }
  const seen = i.membersSeenAt ? ` (member list as seen at ${i.membersSeenAt})` : '';
  return [
    `${head}: on EACH member, stop etcd, run its line${seen}, then start etcd on the restored data dir:`,
    ...memberRestoreLines(bin, config, i.cfg.cluster, members).map((l) => l.replace(/^/gm, '  ')),
  ];
}
