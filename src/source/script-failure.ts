/**
 * What a failed cluster-backup.sh run says about its cause, read from the
 * script's last output lines (the messages of the real upstream script), so
 * the reason and the hint name what failed instead of one generic guess. Pure.
 */
import type { Reason } from '../errors.js';

export interface ScriptFailure {
  reason: Reason;
  hint: string;
}

interface Rule {
  test: RegExp;
  failure: (m: RegExpExecArray) => ScriptFailure;
}

// Order matters: the first match wins, and the operator check runs before anything else.
const RULES: Rule[] = [
  {
    test: /Currently the (\S+) operator is progressing\. A reliable backup requires that a rollout is not in progress/,
    failure: (m) => ({
      reason: 'source-rollout-in-progress',
      hint: `the ${m[1]} operator is rolling out (an upgrade or a configuration change); scheduled runs retry until the next tick. For a backup before an upgrade run \`etcd-backupd backup --force\` (files marked __POSSIBLY_DIRTY__)`,
    }),
  },
  {
    test: /Could not find the status of the (\S+)\. Check if the API server is running/,
    failure: () => ({
      reason: 'source-apiserver-unavailable',
      hint: 'the script could not ask the API server whether operators are progressing (it uses the node\'s localhost.kubeconfig; source.env cannot change that); check `oc get co` on this node. Scheduled runs retry until the next tick; `etcd-backupd backup --force` skips the check',
    }),
  },
  {
    test: /Valid kubeconfig is not found in kube-apiserver-certs/,
    failure: () => ({
      reason: 'source-apiserver-unavailable',
      hint: 'the node has no localhost.kubeconfig under /etc/kubernetes/static-pod-resources/kube-apiserver-certs: is this a control-plane node? `etcd-backupd backup --force` skips the operator check',
    }),
  },
  {
    test: /error finding (?:manifests|static-pod-resources) for the (\S+) pod/,
    failure: (m) => ({
      reason: 'source-failed',
      hint: `the ${m[1]} static pod manifest or its revision directory is missing under /etc/kubernetes: run the source on a control-plane node whose static pods are running`,
    }),
  },
  {
    test: /required dependencies not found|Certificate \S+ is also missing/,
    failure: () => ({
      reason: 'source-failed',
      hint: 'etcd.env, etcd-common-tools or the etcd certificates are missing under /etc/kubernetes/static-pod-resources/etcd-certs: run the source on a control-plane node with a running etcd static pod',
    }),
  },
  {
    test: /Backup integrity verification failed/,
    failure: () => ({ reason: 'snapshot-corrupt', hint: 'etcdctl/etcdutl snapshot status rejected the new snapshot: check the disk under workDir and the etcd logs, then run the backup again' }),
  },
];

/** The reason and hint for a non-zero exit of cluster-backup.sh, from its exit code and last lines. */
export function classifyScriptFailure(code: number, tail: readonly string[]): ScriptFailure {
  const text = tail.join('\n');
  for (const r of RULES) {
    const m = r.test.exec(text);
    if (m) return r.failure(m);
  }
  if (code === 5) {
    return { reason: 'source-failed', hint: 'etcdctl snapshot save failed (exit 5): check `etcdctl endpoint health` on this node and that the etcd certificates are the current ones' };
  }
  return { reason: 'source-failed', hint: 'read the script output in the log (the lines above the error) for the command that failed' };
}

/** Reasons that say the cluster is busy (a rollout, an API server restarting), not broken: worth retrying within the slot. */
export const TRANSIENT_SOURCE_REASONS: readonly Reason[] = ['source-rollout-in-progress', 'source-apiserver-unavailable'];
