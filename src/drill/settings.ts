import type { Config } from '../config/load.js';
import { drillScratchDir, replayScratchDir } from '../layout.js';
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

/** What a restore to a time (its throwaway etcd) takes from the config: the drill's tools, its own scratch dir. */
export function replaySettings(cfg: Config) {
  return { scratchDir: replayScratchDir(cfg.workDir), etcdBinary: cfg.drill.etcd, etcdctlBinary: cfg.drill.etcdctl };
}

/** What the replay drill takes from the config: the drill's tools, timeout and scratch dir, the replay's scratch dir. */
export function replayDrillSettings(cfg: Config) {
  return { ...drillSettings(cfg), cluster: cfg.cluster, replayScratchDir: replayScratchDir(cfg.workDir) };
}
