/**
 * Coordination: one backup (or drill) per slot for the whole cluster, decided
 * on the cluster's own etcd with leased claims. See docs/coordination.md.
 *
 * The surface the daemon uses (the etcd clients come from src/etcd/client.ts:
 * `makePooledClient` for the cluster, `EtcdClients` for one member each):
 * - `acquireSlot(ctx, req)`                   approach a slot until won / done / alone / give-up (failover included)
 * - `SlotClaim.release({result, backupId?, reason?})`, `.lost`, `.abandon()`
 * - `recordManual(ctx, value)`                record a CLI backup for the cluster view
 * - `pruneOldSlots(ctx, keep)`                keep the keys under /etcd-backupd/<cluster>/ bounded
 * - `readSlot`, `readRaw`                     what etcd holds (status, tests)
 * - `decide`, `slotsToPrune`, `missedWhy`     the pure core
 * - `policyFromConfig(cfg.coordination)`      config -> policy + lease TTL
 * - `makeHealthProbe(members)`                 the probe acquireSlot asks (local member role, quorum)
 */
export { acquireSlot, type AcquireOutcome, type AcquireRequest } from './acquire.js';
export { claimSlot, readRaw, readSlot, waitForSlotChange, type ClaimOutcome, type CoordContext, type ReleaseOutcome, type SlotClaim, type SlotRead } from './claims.js';
export { decide, DEFAULT_POLICY, manualToPrune, slotsToPrune, type Action, type CoordPolicy, type DecideInput, type LocalRole, type SlotView } from './decide.js';
export { CoordKeys, SLOT_KINDS, slotName, type ClaimValue, type ManualValue, type ResultValue, type SlotKind, type SlotResult } from './keys.js';
export { policyFromConfig, type CoordinationConfig } from './policy.js';
export { pruneOldSlots, recordManual, type PruneKeep } from './records.js';
export { missedWhy, MISSED_WHYS, type MissedWhy, type SlotDecision } from './missed.js';
export { healthFrom, makeHealthProbe, type Health, type HealthProbe, type LocalStatus } from './probe.js';
