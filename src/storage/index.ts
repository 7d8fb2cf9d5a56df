import type { StoreConfig } from '../config/load.js';
import { BackupError } from '../errors.js';
import { LocalStore } from './local.js';
import type { Store } from './store.js';

export type { Store, ObjectInfo, PutResult } from './store.js';

/**
 * Store modules load on demand: the AWS SDK alone takes most of a second to
 * import, and `list` against a local store (or `--version`) should not pay it.
 */
export async function createStore(cfg: StoreConfig): Promise<Store> {
  switch (cfg.type) {
    case 'local':
      return new LocalStore(cfg.name, cfg.path);
    case 's3':
      return new (await import('./s3.js')).S3Store(cfg);
    case 'sftp':
      return new (await import('./sftp.js')).SftpStore(cfg);
    default: {
      // Unreachable while every type of the schema has a case; kept for configs built by hand.
      const other = cfg as { name: string; type: string };
      throw new BackupError('config-invalid', `store ${other.name}: type ${other.type} is not available in this build`);
    }
  }
}

export async function createStores(cfgs: StoreConfig[]): Promise<Store[]> {
  return Promise.all(cfgs.map(createStore));
}
