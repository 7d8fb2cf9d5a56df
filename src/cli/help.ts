/**
 * `VERB --help` and `help VERB`: one text per verb, its flags and an
 * example, printed on stdout with exit 0. `restore` and `keygen` print their
 * own (src/cli/restore-cmd.ts, src/bundle/keygen-cmd.ts).
 */

const CONFIG = '  --config F, -c F   the config file (or the ETCD_BACKUPD_CONFIG variable)';
const STORE = '  --store S          the store to read (default: the first in the config)';
const JSON_FLAG = '  --json             one JSON document on stdout (on failure too: {"reason", "error", "hint"})';
const IDENTITY = '  --identity FILE    age identity for encrypted backups (never kept on the masters: docs/restore.md)';
const UNTRUSTED = '  --allow-untrusted  accept a backup no key in signing.trustedKeys signed (only one you know the origin of)';

export const VERB_HELP: Readonly<Record<string, string>> = {
  backup: `Usage: etcd-backupd backup --config F [--label L] [--reason T] [--pin] [--force] [--json]

Takes a backup now: snapshot (cluster-backup.sh or etcdctl), checks it, seals
the bundle, delivers a verified copy to every store, then applies retention.
With a daemon running on this node, the daemon runs it (same lock and metrics).
Not coordinated with the other masters (an operator asked this node); recorded
for the cluster view.

${CONFIG}
  --label L          a label kept in the manifest and shown by list (1-63 of A-Z a-z 0-9 . _ -)
  --reason T         free text kept in the manifest (why this backup was taken)
  --pin              pin it: retention never deletes it
  --force            go past failed preflight checks and, with cluster-backup.sh, past
                     its operator rollout check (files marked __POSSIBLY_DIRTY__);
                     use it for the backup before an upgrade
${JSON_FLAG}

The manifest records the cluster version etcd holds (OpenShift's ClusterVersion,
kubeadm's kubeadm-config; absent elsewhere), the etcd members and the static pod
revisions cluster-backup.sh archived: list shows the version beside the label.

Example: etcd-backupd backup --config /etc/etcd-backupd/config.yaml --label pre-upgrade-4.17.3 --pin
`,
  list: `Usage: etcd-backupd list --config F [--store S] [--json]

Lists the committed backups of this cluster in one store, newest first: id,
time, node, size, etcd revision, cluster version (\`4.17.2 -> 4.17.3\` when taken
during an upgrade), label, pinned, signed, possibly dirty. --json adds the etcd
members and static pod revisions each backup was taken with.

${CONFIG}
${STORE}
${JSON_FLAG}
`,
  verify: `Usage: etcd-backupd verify --config F [--store S] ID|latest [--restore|--replay] [--identity FILE] [--allow-untrusted] [--json]

Reads a backup back from the store and checks every sha256, the signature
(with signing.trustedKeys) and the snapshot inside. With --restore it also
restores it into a throwaway etcd on free ports and checks that etcd serves
exactly what the backup holds (a restore drill on demand).

With --replay (continuous backups) it runs the replay drill instead: the full
backup before ID (latest: the newest pair whose chain reaches it) restored
into a throwaway etcd, its segments replayed up to ID's revision, and every
key, value (by digest), create/mod revision and version compared with ID.
Differences name the keys, never the values. Exit 1 on a difference or
when there is no such pair.

${CONFIG}
${STORE}
  --restore          also run a restore drill (needs etcd and etcdctl or etcdutl)
  --replay           run the replay drill ending at ID (needs the same tools)
${IDENTITY}
${UNTRUSTED}
${JSON_FLAG}
`,
  fetch: `Usage: etcd-backupd fetch --config F [--store S] ID|latest --to DIR [--identity FILE] [--allow-untrusted] [--json]

Downloads a backup into DIR (created 0700, must be empty) and checks every
sha256 (and the signature): snapshot_<ts>.db and static_kuberesources_<ts>.tar.gz
as cluster-backup.sh wrote them, which OpenShift's cluster-restore.sh takes.

${CONFIG}
${STORE}
  --to DIR           where to write the files
${IDENTITY}
${UNTRUSTED}
${JSON_FLAG}

Example (OpenShift, on the recovery host):
  etcd-backupd fetch --config /var/lib/etcd-backupd/recovery/config.yaml latest --to /home/core/assets/backup
`,
  prune: `Usage: etcd-backupd prune --config F [--store S] [--dry-run] [--json]

Applies the retention policy (restic forget semantics, plus pins) to the
store(s) now. The daemon does this after every run.

${CONFIG}
  --store S          only this store (default: every store)
  --dry-run          show what would be kept and deleted; delete nothing
${JSON_FLAG}
`,
  retention: `Usage: etcd-backupd retention --config F --simulate FILE [--now ISO] [--json]

Shows what the configured retention policy keeps of a list of backup times,
without any store: FILE holds one ISO-8601 time per line; "#" starts a
comment, blank lines are ignored.

${CONFIG}
  --simulate FILE    the times to plan for
  --now ISO          plan as if it were this time (default: now)
${JSON_FLAG}

Example FILE:
  # a week of nightly backups
  2026-11-20T02:00:00Z
  2026-11-21T02:00:00Z
`,
  pin: `Usage: etcd-backupd pin --config F [--store S] ID|latest [--reason T] [--json]

Pins a backup in every store: retention never deletes it. Written as a small
marker object beside the backup (a committed manifest is never rewritten).

${CONFIG}
  --reason T         why it is pinned (shown by list)
${JSON_FLAG}
`,
  unpin: `Usage: etcd-backupd unpin --config F [--store S] ID|latest [--json]

Removes a pin: retention may delete the backup again.

${CONFIG}
${JSON_FLAG}
`,
  run: `Usage: etcd-backupd run --config F

The daemon: backups on \`schedule\` (claimed per slot across the masters with
coordination), the outbox, retention, restore drills, the recovery kit,
/metrics, /healthz, /readyz and the control socket. SIGTERM stops it cleanly.

${CONFIG}
`,
  inspect: `Usage: etcd-backupd inspect SNAPSHOT.db|BUNDLE [--identity FILE] [--json]

Checks an etcd snapshot file without etcd: hash, revision, total keys and
size (what \`etcdctl snapshot status\` prints) and the sha256 trailer. A bundle
as the stores hold it (backup.tar[.zst][.age]) is opened and the snapshot
inside is checked. Exit 1 when the snapshot is damaged.

${IDENTITY}
${JSON_FLAG}
`,
  'check-config': `Usage: etcd-backupd check-config --config F [--json]

Loads and checks the config (every file it names must be readable) and prints
the effective configuration, every default filled in, secrets redacted.
Exit 2 with the keys at fault when it is not valid.

${CONFIG}
  --json             the effective configuration as JSON
`,
};

/** The help of `verb`, or undefined when the verb has none here (restore, keygen: their own). */
export function helpFor(verb: string): string | undefined {
  return Object.hasOwn(VERB_HELP, verb) ? VERB_HELP[verb] : undefined;
}

/** Whether argv asks for help (anywhere before a `--`). */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}
