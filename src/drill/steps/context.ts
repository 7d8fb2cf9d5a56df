import type { Manifest } from '../../bundle/manifest.js';
import type { EtcdClients } from '../../etcd/client.js';
import type { Logger } from '../../log.js';
import type { DrillTools } from '../tools.js';

/** What every drill step works with. */
export interface StepContext {
  manifest: Manifest;
  /** This drill's 0700 dir (workdir.ts). */
  dir: string;
  /** The restored member's data dir, inside `dir`. */
  dataDir: string;
  log: Logger;
  /** Aborted by the drill's timeout or by its caller. */
  signal: AbortSignal;
  tools: DrillTools;
  /** gRPC clients for the drill etcd (plain HTTP/2 on loopback); closed by the orchestrator. */
  etcd: EtcdClients;
  /** More etcd flags (after the drill's own): restore to a time raises etcd's request limits for its replay. */
  etcdFlags?: readonly string[];
  /** --quota-backend-bytes instead of the drill's (sized to the snapshot): a replay adds every revision it applies. */
  quotaBytes?: number;
}

/** The restored member's name: `snapshot restore` and `etcd` must agree on it. */
export const MEMBER_NAME = 'drill';
