/**
 * A claimer in its own process, for the coordination tests: claims one slot
 * with src/coord/acquire.ts, prints one JSON line with the outcome, and (when
 * it won) keeps the claim alive until it is killed. Configured by the
 * COORD_CHILD environment variable (JSON). Bundled by test/support/coord.ts.
 */
import { acquireSlot } from '../../src/coord/acquire.js';
import { makePooledClient } from '../../src/etcd/client.js';
import { DEFAULT_POLICY } from '../../src/coord/decide.js';
import { CoordKeys } from '../../src/coord/keys.js';

interface ChildConfig {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  cluster: string;
  node: string;
  slot: string;
  deadline: string;
  leaseTtlSec: number;
}

const cfg = JSON.parse(process.env.COORD_CHILD ?? '{}') as ChildConfig;
const client = makePooledClient(cfg);
const ctx = { client, keys: new CoordKeys(cfg.cluster), node: cfg.node, leaseTtlSec: cfg.leaseTtlSec, callTimeoutMs: 3000 };
const r = await acquireSlot(ctx, {
  kind: 'backup',
  slot: new Date(cfg.slot),
  deadline: new Date(cfg.deadline),
  policy: { ...DEFAULT_POLICY, leaderDelayMs: 0 },
  probe: async () => ({ role: 'follower', quorum: true }),
});
if (r.outcome === 'won') {
  process.stdout.write(`${JSON.stringify({ outcome: 'won', attempt: r.claim.attempt, lease: r.claim.leaseId })}\n`);
  r.claim.lost.addEventListener('abort', () => process.exit(3));
  setInterval(() => undefined, 1000); // hold the claim until killed
} else {
  process.stdout.write(`${JSON.stringify(r)}\n`);
  client.close();
}
