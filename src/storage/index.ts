import type { StoreConfig } from '../config/load.js';
import { BackupError } from '../errors.js';
import { LocalStore } from './local.js';
import { S3Store } from './s3.js';
import { SftpStore } from './sftp.js';
import type { Store } from './store.js';

export type { Store, ObjectInfo, PutResult } from './store.js';

export function createStore(cfg: StoreConfig): Store {
  switch (cfg.type) {
    case 'local':
      return new LocalStore(cfg.name, cfg.path);
    case 's3':
      return new S3Store(cfg);
    case 'sftp':
      return new SftpStore(cfg);
    default: {
      // Unreachable while every type of the schema has a case; kept for configs built by hand.
      const other = cfg as { name: string; type: string };
      throw new BackupError('config-invalid', `store ${other.name}: type ${other.type} is not available in this build`);
    }
  }
}

export function createStores(cfgs: StoreConfig[]): Store[] {
  return cfgs.map(createStore);
}
