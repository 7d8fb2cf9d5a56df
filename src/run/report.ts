import type { RunResult } from './backup.js';

/** The `backup --json` document (DESIGN.md contract), shared by the CLI and the control socket. */
export function backupJson(r: RunResult): Record<string, unknown> {
  return {
    id: r.id,
    result: r.result,
    ...(r.reason ? { reason: r.reason, error: r.error } : {}),
    ...(r.hint ? { hint: r.hint } : {}),
    trigger: r.trigger,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    phases: r.phases,
    stores: r.stores,
    ...(r.preflight ? { preflight: r.preflight } : {}),
    ...(r.manifest ? { revision: r.manifest.etcd.revision, totalKey: r.manifest.etcd.totalKey, size: r.manifest.object?.size } : {}),
    ...(r.manifest?.clusterVersion ? { clusterVersion: r.manifest.clusterVersion } : {}),
    ...(r.manifest?.desiredVersion ? { desiredVersion: r.manifest.desiredVersion } : {}),
  };
}
