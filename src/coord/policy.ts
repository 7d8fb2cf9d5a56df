/**
 * The config's `coordination` section as the numbers src/coord/ works with.
 */
import { parseDurationSeconds } from '../units/duration.js';
import { DEFAULT_POLICY, type CoordPolicy } from './decide.js';

export interface CoordinationConfig {
  mode: 'etcd' | 'none';
  onNoQuorum: 'backup' | 'skip';
  leaderDelay: string;
  leaseTtl: string;
  maxAttempts: number;
}

/** The decision policy and the claim lease TTL (seconds) for a validated `coordination` section. */
export function policyFromConfig(c: CoordinationConfig): { policy: CoordPolicy; leaseTtlSec: number } {
  return {
    policy: { ...DEFAULT_POLICY, onNoQuorum: c.onNoQuorum, leaderDelayMs: Math.round(parseDurationSeconds(c.leaderDelay) * 1000), maxAttempts: c.maxAttempts },
    leaseTtlSec: parseDurationSeconds(c.leaseTtl),
  };
}
