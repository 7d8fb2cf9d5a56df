import { z, type ZodDiscriminatedUnionOption } from 'zod';
import { age, byteRate, duration, name } from '../units/fields.js';
import { BackupError } from '../errors.js';
import { DEFAULT_STORE_SETTINGS, type Store, type StoreCapabilities, type StoreSettings } from './store.js';

/**
 * The store registry, after restic's `backends.Register`: each store type is
 * a folder (src/storage/<type>/) whose index.ts registers what the rest of the
 * program needs to know about it, as data. Config validation, path handling,
 * the required-files check and createStore ask the registry; nothing outside
 * a store's folder switches on its type. src/storage/stores.ts lists the
 * folders of this build.
 */
export interface StoreType<C extends StoreConfig = StoreConfig> {
  type: string;
  /** The store's config object, from storeConfigSchema (strict: unknown keys are errors). */
  schema: ZodDiscriminatedUnionOption<'type'>;
  /** Rules across keys that a schema cannot say; `problem` reports one at a key of this store. */
  check?(cfg: C, problem: (key: string, message: string) => void): void;
  /** Keys naming local files or directories: made absolute against the config file's directory, in this order. */
  paths: readonly string[];
  /** Keys (of `paths`) naming files that must exist when set: finding out at 2 a.m. on the first run is too late. */
  requiredFiles: readonly string[];
  /**
   * Credentials this store takes from the environment (not from a file the config names), said
   * in one sentence; undefined when every credential is a file. The recovery kit copies files
   * only, so its RESTORE.txt tells the operator what to supply.
   */
  ambientCredentials?(cfg: C): string | undefined;
  /** Others can write there: unsigned backups in it could be planted (config warnings). */
  remote: boolean;
  /** What the store can do beyond the basics; its Store reports the same in `caps`. */
  capabilities(cfg: C): StoreCapabilities;
  /** Bytes its putFile moves between two progress reports (guard.ts: the stall window widens to pass one). */
  putFileUnit(cfg: C): number;
  /** The backend, unguarded. Imports its implementation on demand (the AWS SDK alone takes most of a second). */
  create(cfg: C): Promise<Store>;
}

/** The keys every store config has, whatever its type; each folder's own type adds to these. */
export interface StoreConfig extends StoreSettings {
  name: string;
  type: string;
  requestTimeout: string;
  transferTimeout: string;
  minRate: string | number;
  stallWindow: string;
}

/** Per-store settings (src/storage/store.ts StoreSettings): they travel with the store as `store.settings`. */
export const storeSettings = {
  verify: z.enum(['readback', 'size']).default(DEFAULT_STORE_SETTINGS.verify),
  /** Incomplete uploads and manifest-less backups older than this are removed by prune. */
  incompleteGrace: age.default(DEFAULT_STORE_SETTINGS.incompleteGrace),
};

/**
 * Every store: how long one operation may take (guard.ts). A hung, trickling
 * or looping server fails the operation instead of holding the run.
 */
const storeLimits = {
  /** One metadata request: head, one list page, delete, a manifest. */
  requestTimeout: duration.default('60s'),
  /** One object moved whole: upload, download, read-back; also one whole listing. */
  transferTimeout: duration.default('6h'),
  /** A transfer moving fewer bytes per second than this, averaged over stallWindow, has stalled. 0: off. */
  minRate: byteRate.default('16KiB'),
  stallWindow: duration.default('60s'),
};

/** A store's config object: name and type first, its own keys (with ...storeSettings where it wants them), the limits last. */
export function storeConfigSchema<T extends string, S extends z.ZodRawShape>(type: T, shape: S) {
  return z
    .object({ name, type: z.literal(type), ...shape, ...storeLimits })
    .strict();
}

/** The settings of a store config; defaults where a config built by hand lacks them (as limitsOf). */
export function settingsOf(cfg: Partial<StoreSettings>): StoreSettings {
  return { verify: cfg.verify ?? DEFAULT_STORE_SETTINGS.verify, incompleteGrace: cfg.incompleteGrace ?? DEFAULT_STORE_SETTINGS.incompleteGrace };
}

const types = new Map<string, StoreType>();

export function registerStoreType<C extends StoreConfig>(t: StoreType<C>): void {
  if (types.has(t.type)) throw new Error(`store type ${t.type} is registered twice`);
  types.set(t.type, t as unknown as StoreType);
}

/** Every registered type, in registration order (the order config errors list them in). */
export function storeTypes(): StoreType[] {
  return [...types.values()];
}

/** The registered type of a store config; a config built by hand may name one this build lacks. */
export function storeType(type: string, storeName?: string): StoreType {
  const t = types.get(type);
  if (!t) throw new BackupError('config-invalid', `store ${storeName ?? '?'}: type ${type} is not available in this build`);
  return t;
}
