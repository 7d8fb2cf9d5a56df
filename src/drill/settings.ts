import type { Config } from '../config/load.js';
import { drillScratchDir } from '../layout.js';
import { parseDurationSeconds } from '../units/duration.js';

/** The drill's options that come from the config: the same for a scheduled drill and `verify --restore`. */
export function drillSettings(cfg: Config) {
  return {
    scratchDir: drillScratchDir(cfg.workDir),
    etcdBinary: cfg.drill.etcd,
    etcdctlBinary: cfg.drill.etcdctl,
    timeoutSeconds: parseDurationSeconds(cfg.drill.timeout),
    sampleKeys: cfg.drill.sampleKeys,
  };
}
