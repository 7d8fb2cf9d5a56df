import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalStore } from '../../src/storage/local.js';
import { tempDir } from '../support/cli.js';
import { storeContract } from '../support/store-contract.js';

storeContract('local directory', {
  async make() {
    const dir = tempDir('store-local');
    return { store: new LocalStore('local', join(dir, 'root')), cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
});
