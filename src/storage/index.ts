import type { StoreConfig } from '../config/load.js';
import { parseDurationSeconds } from '../config/duration.js';
import { parseByteRate } from '../config/schema.js';
import { BackupError } from '../errors.js';
import { DEFAULT_LIMITS, guardStore, type ProgressUnits, type StoreLimits } from './guard.js';
import { LocalStore } from './local/store.js';
import type { Store } from './store.js';

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
 * Store modules load on demand: the AWS SDK alone takes most of a second to
 * import, and `list` against a local store (or `--version`) should not pay it.
 * Every store comes back guarded: deadlines, stall watchdog, bounded listings.
 */
export async function createStore(cfg: StoreConfig): Promise<Store> {
  let backend: Store;
  let units: ProgressUnits;
  switch (cfg.type) {
    case 'local':
      backend = new LocalStore(cfg.name, cfg.path);
      // A link or a kernel copy reports nothing until it is done: only the deadline applies.
      units = { putFile: Infinity };
      break;
    case 's3':
      backend = new (await import('./s3/store.js')).S3Store(cfg);
      units = { putFile: cfg.partSize };
      break;
    case 'sftp':
      backend = new (await import('./sftp/store.js')).SftpStore(cfg);
      units = { putFile: 1 << 20 };
      break;
    default: {
      // Unreachable while every type of the schema has a case; kept for configs built by hand.
      const other = cfg as { name: string; type: string };
      throw new BackupError('config-invalid', `store ${other.name}: type ${other.type} is not available in this build`);
    }
  }
  return guardStore(backend, limitsOf(cfg), units);
}

export async function createStores(cfgs: StoreConfig[]): Promise<Store[]> {
  return Promise.all(cfgs.map(createStore));
}
