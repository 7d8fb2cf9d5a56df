import { BackupError } from '../../errors.js';
import { startService, type ServiceProcess } from '../../source/exec.js';
import { pickClientAndPeerPorts, type DrillPorts } from '../ports.js';
import { childEnv, toolError } from '../tools.js';
import { MEMBER_NAME, type StepContext } from './context.js';

const START_ATTEMPTS = 3;
const STOP_GRACE_MS = 10_000;
const HEALTH_TIMEOUT_MS = 2000;
const MIB = 1024 * 1024;

/** SIGTERM to the drill etcd's process group, SIGKILL after a grace period; resolves once it is gone. */
export function stopDrillEtcd(etcd: ServiceProcess): Promise<void> {
  return etcd.stop(STOP_GRACE_MS);
}

async function waitHealthy(ctx: StepContext, etcd: ServiceProcess, base: string): Promise<void> {
  const { signal } = ctx;
  for (;;) {
    if (signal.aborted) throw new Error('aborted');
    if (etcd.exited) {
      throw new BackupError(
        'drill-start-failed',
        `the restored etcd exited during startup (code ${etcd.exited.code}, signal ${etcd.exited.signal}): ${toolError(etcd.tail)}`,
        { hint: 'the snapshot restored but etcd cannot serve it; check that the etcd binary is the cluster\'s version and see the log above' },
      );
    }
    // What etcd's /health answered: no alarm, a leader, a quorum read (over gRPC, etcd/client.ts).
    if ((await ctx.etcd.endpoint(base).health({ signal, timeoutMs: HEALTH_TIMEOUT_MS })) === undefined) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function etcdArgs(ctx: StepContext, base: string, peerUrl: string): string[] {
  // --quota-backend-bytes above the snapshot size: below it etcd raises a NOSPACE alarm and the health check fails.
  const quota = ctx.quotaBytes ?? Math.max(2048 * MIB, Math.ceil(ctx.manifest.etcd.totalSize * 1.25) + 256 * MIB);
  return [
    '--name', MEMBER_NAME,
    '--data-dir', ctx.dataDir,
    '--listen-client-urls', base,
    '--advertise-client-urls', base,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `${MEMBER_NAME}=${peerUrl}`,
    '--quota-backend-bytes', String(quota),
    '--logger', 'zap',
    '--log-outputs', 'stderr',
    '--log-level', 'warn',
    ...(ctx.etcdFlags ?? []),
  ];
}

/**
 * The start step: `etcd` on the restored data dir, on free 127.0.0.1 ports,
 * until it is healthy (no alarm, a leader, a quorum read). A port taken between picking and binding is
 * retried on other ports. `onSpawn` learns each etcd as soon as it runs (and
 * undefined once a failed attempt's etcd is stopped): the caller stops the
 * one it knows whatever happens. Returns the client URL.
 */
export async function startDrillEtcd(
  ctx: StepContext,
  firstPorts: DrillPorts,
  onSpawn: (etcd: ServiceProcess | undefined) => Promise<void>,
): Promise<string> {
  const { tools, log, signal } = ctx;
  let ports = firstPorts;
  for (let attempt = 1; ; attempt++) {
    const base = `http://127.0.0.1:${ports.client}`;
    const argv = [...tools.prio, tools.etcd, ...etcdArgs(ctx, base, `http://127.0.0.1:${ports.peer}`)];
    const etcd = startService(argv, { env: childEnv(tools.goEnv), cwd: ctx.dir, log, what: 'drill-etcd', name: 'etcd' });
    await onSpawn(etcd);
    try {
      await waitHealthy(ctx, etcd, base);
      log.info({ endpoint: base, pid: etcd.pid }, 'restore drill: etcd serves the restored data');
      return base;
    } catch (e) {
      const inUse = etcd.tail.some((l) => /address already in use/i.test(l));
      if (!inUse || attempt >= START_ATTEMPTS || signal.aborted) throw e;
      log.warn({ attempt }, 'restore drill: a drill port was taken meanwhile; retrying on other ports');
      await stopDrillEtcd(etcd);
      await onSpawn(undefined);
      ports = await pickClientAndPeerPorts();
    }
  }
}
