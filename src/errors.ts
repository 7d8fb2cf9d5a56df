/**
 * Every failure the tool can report carries a stable `reason` string. The same
 * string is the `reason` label on metrics, the `reason` field in logs and in
 * `--json` output, so an alert, a log search and a CLI message all agree.
 */
export type Reason =
  | 'config-invalid'
  | 'usage'
  | 'lock-busy'
  | 'preflight-unhealthy'
  | 'preflight-no-quorum'
  | 'preflight-no-leader'
  | 'preflight-member-unreachable'
  | 'preflight-disk-space'
  | 'source-failed'
  // cluster-backup.sh refused: an operator is progressing (a rollout, an
  // upgrade), or it could not ask the API server; both pass, so runs retry
  // within their slot and they do not count as consecutive failures.
  | 'source-rollout-in-progress'
  | 'source-apiserver-unavailable'
  // The source's snapshot file stopped growing for source.stallTimeout
  // (etcd not answering: the real script then waits forever).
  | 'source-stalled'
  | 'source-timeout'
  | 'source-missing-artifact'
  | 'source-empty-artifact'
  | 'snapshot-corrupt'
  | 'bundle-failed'
  | 'upload-failed'
  | 'remote-verify-failed'
  | 'store-unavailable'
  // A store operation passed its deadline or moved fewer bytes than minRate
  // over stallWindow (a hung or trickling server).
  | 'store-timeout'
  // The store answered something that cannot be true: a listing that loops
  // or is cut short without a way on, an id search that never ends.
  | 'store-misbehaving'
  // A backup id is already committed in a store with other content: never overwritten.
  | 'id-conflict'
  // A delete was refused because the object is under an S3 Object Lock (WORM)
  // retention that has not expired: nothing was sent, nothing deleted.
  | 'object-locked'
  // Trusted keys are configured and the backup carries no valid signature by one of them.
  | 'signature-untrusted'
  | 'not-found'
  | 'manifest-invalid'
  | 'checksum-mismatch'
  | 'unsafe-archive'
  // Restore drills (src/drill/drill.ts): the snapshot would not restore, the
  // restored etcd would not start, it served other data than the backup
  // holds, the drill ran out of time, or it was stopped (shutdown).
  | 'drill-restore-failed'
  | 'drill-start-failed'
  | 'drill-mismatch'
  | 'drill-timeout'
  | 'drill-aborted'
  // The replay drill (src/continuous/replay-drill.ts): a full backup plus its
  // continuous-backup segments replayed to the next full backup's revision
  // is not that backup (keys, values or revisions differ).
  | 'drill-replay-mismatch'
  // `restore` (src/restore/): the target data dir holds something (nothing
  // was touched); neither etcdutl nor etcdctl was found; the restore tool
  // failed or wrote no member dir (what it wrote was removed).
  | 'restore-target-not-empty'
  | 'restore-tool-missing'
  | 'restore-failed'
  // Coordination (src/coord/): no slot claim is possible because the cluster
  // has no quorum (no leader a majority follows); etcd did not answer a
  // coordination call within its deadline; a holder's claim lease lapsed
  // while it ran (another node may now hold the slot).
  | 'coord-no-quorum'
  | 'coord-unavailable'
  | 'coord-lost'
  // Best effort, never fails a backup (a warning in the log): the cluster
  // version or the static pod revisions could not be read for the manifest.
  | 'cluster-metadata-unreadable'
  /** The recovery kit could not be refreshed (best effort: never fails a backup). */
  | 'recovery-kit-failed'
  // Restore to a time (src/continuous/): the chain of segments from the base
  // misses revisions (a later one exists); a segment's records are not what
  // its manifest says (undecodable, out of sequence, short); the throwaway
  // etcd's revision after a replayed txn is not the record's revision.
  | 'segment-gap'
  | 'segment-corrupt'
  | 'replay-mismatch'
  // Continuous backups (src/continuous/): the watch skipped a revision (the
  // chain ends; a new one starts from a fresh full backup); etcd compacted
  // past the revision the writer needed (a full backup starts a new chain).
  | 'continuous-gap'
  | 'continuous-compacted'
  | 'internal';

/**
 * Failed runs that do not count in etcd_backup_consecutive_failures (and the
 * state file's count), so EtcdBackupFailing does not page for them:
 * lock-busy (no backup was attempted; the other run speaks for the node), and
 * cluster-backup.sh's refusals during a control-plane rollout or while the API
 * server is away: every upgrade causes them, they retry within the slot, and
 * they say nothing about etcd or the backups. A cluster that stays in that
 * state still pages: EtcdBackupMissing fires when no backup was taken for
 * its window, whatever the reason.
 */
export const UNCOUNTED_FAILURE_REASONS: readonly Reason[] = ['lock-busy', 'source-rollout-in-progress', 'source-apiserver-unavailable'];

export class BackupError extends Error {
  readonly reason: Reason;
  /** What the operator should do about it; printed by the CLI under the message. */
  readonly hint?: string;
  constructor(reason: Reason, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'BackupError';
    this.reason = reason;
    this.hint = opts.hint;
  }
}

export function reasonOf(err: unknown): Reason {
  return err instanceof BackupError ? err.reason : 'internal';
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
