import type { StoreConfig } from '../config/load.js';
import { BackupError } from '../errors.js';
import { LocalStore } from './local.js';
import type { Store } from './store.js';

export type { Store, ObjectInfo, PutResult } from './store.js';

export function createStore(cfg: StoreConfig): Store {
  switch (cfg.type) {
    case 'local':
      return new LocalStore(cfg.name, cfg.path);
    default:
      throw new BackupError('config-invalid', `store ${cfg.name}: type ${cfg.type} is not available in this build`);
  }
}

export function createStores(cfgs: StoreConfig[]): Store[] {
  return cfgs.map(createStore);
}
