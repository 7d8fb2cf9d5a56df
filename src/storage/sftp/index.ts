import { z } from 'zod';
import { duration } from '../../units/fields.js';
import { registerStoreType, storeConfigSchema, storeSettings } from '../registry.js';
import type { StoreCapabilities } from '../store.js';

/** An OpenSSH (or other SFTP) server, its host key pinned. */
export const sftpSchema = storeConfigSchema('sftp', {
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(22),
  username: z.string().min(1),
  privateKeyFile: z.string().min(1),
  passphraseFile: z.string().min(1).optional(),
  /** Pinned host key: `SHA256:<base64>` as `ssh-keygen -lf` prints it, or a known_hosts file. */
  hostKey: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/, 'expected a SHA256:... fingerprint as printed by ssh-keygen -lf').optional(),
  knownHostsFile: z.string().min(1).optional(),
  path: z.string().min(1),
  timeout: duration.default('30s'),
  verify: storeSettings.verify,
  /**
   * With verify: readback, first ask the server for the sha256 of what it holds (openssl or
   * sha256sum over an SSH exec channel, as rclone does with md5sum); any failure of that falls
   * back to reading every byte back. false: always read back.
   */
  serverHash: z.boolean().default(true),
  incompleteGrace: storeSettings.incompleteGrace,
});

export type SftpStoreConfig = z.infer<typeof sftpSchema>;

const FILES = ['privateKeyFile', 'passphraseFile', 'knownHostsFile'] as const;

export function sftpCapabilities(cfg: Pick<SftpStoreConfig, 'serverHash'>): StoreCapabilities {
  return { putFile: true, serverHash: cfg.serverHash !== false, readBack: false, cleanupIncomplete: true, objectLock: false };
}

registerStoreType<SftpStoreConfig>({
  type: 'sftp',
  schema: sftpSchema,
  check(s, problem) {
    if (!s.hostKey && !s.knownHostsFile) problem('hostKey', 'required (or knownHostsFile): the server host key must be pinned');
  },
  paths: FILES,
  requiredFiles: FILES,
  remote: true,
  capabilities: sftpCapabilities,
  putFileUnit: () => 1 << 20,
  // ssh2 loads only when an SFTP store is created.
  create: async (cfg) => new (await import('./store.js')).SftpStore(cfg),
});
