import { parseDurationSeconds } from '../units/duration.js';
import { parseByteRate } from '../units/fields.js';
import { DEFAULT_LIMITS, guardStore, type StoreLimits } from './guard.js';
import type { Store } from './store.js';
import { storeType, type StoreConfig } from './stores.js';

export type { Store, ObjectInfo, PutResult } from './store.js';

/** The limits a store's config sets (guard.ts); defaults where a config built by hand lacks them. */
export function limitsOf(cfg: StoreConfig): StoreLimits {
  const c = cfg as Partial<Record<'requestTimeout' | 'transferTimeout' | 'stallWindow', string>> & { minRate?: string | number };
  const ms = (v: string | undefined, dflt: number) => (v === undefined ? dflt : Math.max(1, parseDurationSeconds(v) * 1000));
  return {
    requestMs: ms(c.requestTimeout, DEFAULT_LIMITS.requestMs),
    transferMs: ms(c.transferTimeout, DEFAULT_LIMITS.transferMs),
    minBytesPerSecond: c.minRate === undefined ? DEFAULT_LIMITS.minBytesPerSecond : parseByteRate(c.minRate),
    stallWindowMs: ms(c.stallWindow, DEFAULT_LIMITS.stallWindowMs),
    maxListEntries: DEFAULT_LIMITS.maxListEntries,
  };
}

/**
 * Store modules load on demand (each type's `create`, src/storage/<type>/index.ts):
 * the AWS SDK alone takes most of a second to import, and `list` against a local
 * store (or `--version`) should not pay it. Every store comes back guarded:
 * deadlines, stall watchdog, bounded listings.
 */
export async function createStore(cfg: StoreConfig): Promise<Store> {
  // A config built by hand may name a type this build lacks: config-invalid, naming the store.
  const t = storeType(cfg.type, cfg.name);
  return guardStore(await t.create(cfg), limitsOf(cfg), { putFile: t.putFileUnit(cfg) });
}

export async function createStores(cfgs: StoreConfig[]): Promise<Store[]> {
  return Promise.all(cfgs.map(createStore));
}
