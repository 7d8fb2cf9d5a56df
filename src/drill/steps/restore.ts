import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BackupError, messageOf } from '../../errors.js';
import { captureCommand, type Captured } from '../../source/exec.js';
import type { DrillPorts } from '../ports.js';
import { childEnv, toolError } from '../tools.js';
import { MEMBER_NAME, type StepContext } from './context.js';

/** Which tool restores: etcdutl when there is one (etcd >= 3.5), else etcdctl (3.4). */
export function restoreTool(ctx: Pick<StepContext, 'tools'>): 'etcdutl' | 'etcdctl' {
  return ctx.tools.etcdutl ? 'etcdutl' : 'etcdctl';
}

/**
 * The restore step: `etcdutl snapshot restore` or `ETCDCTL_API=3 etcdctl
 * snapshot restore` into ctx.dataDir as member `drill` on the peer port.
 */
export async function restoreSnapshot(ctx: StepContext, snapshot: string, ports: DrillPorts): Promise<void> {
  const { manifest: m, tools, signal } = ctx;
  const peerUrl = `http://127.0.0.1:${ports.peer}`;
  const args = [
    'snapshot', 'restore', snapshot,
    '--data-dir', ctx.dataDir,
    '--name', MEMBER_NAME,
    '--initial-cluster', `${MEMBER_NAME}=${peerUrl}`,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster-token', 'etcd-backupd-drill',
  ];
  const tool = restoreTool(ctx);
  const argv = [...tools.prio, tools.etcdutl ?? tools.etcdctl, ...args];
  let r: Captured;
  try {
    r = await captureCommand(argv, { env: childEnv({ ETCDCTL_API: '3', ...tools.goEnv }), cwd: ctx.dir, signal, log: ctx.log, what: `drill-${tool}` });
  } catch (e) {
    throw new BackupError('drill-restore-failed', `cannot run ${tool}: ${messageOf(e)}`);
  }
  if (signal.aborted) throw new Error('aborted');
  if (r.code !== 0) {
    throw new BackupError('drill-restore-failed', `backup ${m.id}: \`${tool} snapshot restore\` failed (${r.code !== null ? `exit ${r.code}` : `signal ${r.signal}`}): ${toolError(r.tail)}`);
  }
  if (!existsSync(join(ctx.dataDir, 'member'))) {
    throw new BackupError('drill-restore-failed', `backup ${m.id}: \`${tool} snapshot restore\` exited 0 but wrote no member dir`);
  }
  ctx.log.info({ tool }, 'restore drill: snapshot restored');
}
