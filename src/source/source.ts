import type { Logger } from '../log.js';

/** What every source leaves in its run directory. */
export interface SourceArtifacts {
  snapshot: string; // absolute path of snapshot_<ts>.db
  staticResources: string; // absolute path of static_kuberesources_<ts>.tar.gz
  /** cluster-backup.sh --force marks files __POSSIBLY_DIRTY__. */
  possiblyDirty: boolean;
}

export interface SourceContext {
  runDir: string;
  log: Logger;
  force: boolean;
  signal?: AbortSignal;
}

export interface Source {
  readonly type: string;
  produce(ctx: SourceContext): Promise<SourceArtifacts>;
}
