import type { Config } from '../config/load.js';
import { ClusterBackupSource } from './cluster-backup.js';
import { EtcdctlSource } from './etcdctl.js';
import type { Source } from './source.js';

export type { Source, SourceArtifacts, SourceContext } from './source.js';

export function createSource(cfg: Config): Source {
  const s = cfg.source;
  if (s.type === 'cluster-backup') return new ClusterBackupSource({ script: s.script, timeoutSeconds: s.timeoutSeconds, stallSeconds: s.stallSeconds, env: s.env });
  return new EtcdctlSource({
    etcdctl: s.etcdctl,
    staticPodDir: s.staticPodDir,
    timeoutSeconds: s.timeoutSeconds,
    stallSeconds: s.stallSeconds,
    endpoint: cfg.etcd.endpoints[0]!,
    caFile: cfg.etcd.caFile,
    certFile: cfg.etcd.certFile,
    keyFile: cfg.etcd.keyFile,
  });
}
