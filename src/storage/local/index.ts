import { z } from 'zod';
import { registerStoreType, settingsOf, storeConfigSchema, storeSettings } from '../registry.js';
import type { StoreCapabilities } from '../store.js';

/** A directory on this node or a mounted NFS share. */
export const localSchema = storeConfigSchema('local', {
  path: z.string().min(1),
  ...storeSettings,
});

export type LocalStoreConfig = z.infer<typeof localSchema>;

export const LOCAL_CAPABILITIES: StoreCapabilities = { putFile: true, serverHash: false, readBack: true, cleanupIncomplete: true, objectLock: false };

registerStoreType<LocalStoreConfig>({
  type: 'local',
  schema: localSchema,
  paths: ['path'],
  requiredFiles: [],
  remote: false,
  capabilities: () => LOCAL_CAPABILITIES,
  // A link or a kernel copy reports nothing until it is done: only the deadline applies.
  putFileUnit: () => Infinity,
  create: async (cfg) => new (await import('./store.js')).LocalStore(cfg.name, cfg.path, settingsOf(cfg)),
});
