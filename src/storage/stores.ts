/**
 * The store types of this build. Each import registers one folder
 * (src/storage/<type>/index.ts); the order is the order config errors list
 * the types in. Importers use the registry through this module, so the
 * registrations have run before the first lookup.
 */
import './local/index.js';
import './s3/index.js';
import './sftp/index.js';

export { storeType, storeTypes, type StoreConfig, type StoreType } from './registry.js';
