import { z } from 'zod';
import { parseDurationSeconds } from '../../units/duration.js';
import { registerStoreType, storeConfigSchema, storeSettings } from '../registry.js';
import type { StoreCapabilities } from '../store.js';

/** AWS accepts retention up to 100 years; a lock of 0 would be no lock at all. */
const MAX_RETAIN_SECONDS = 36_500 * 86_400;

const retainDuration = z.string().superRefine((v, ctx) => {
  let seconds: number;
  try {
    seconds = parseDurationSeconds(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${(e as Error).message}; the time each object stays locked, e.g. 30d` });
    return;
  }
  if (seconds < 1) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" locks nothing: give at least 1s (typically the age of the oldest backup retention keeps, e.g. 30d)` });
  else if (seconds > MAX_RETAIN_SECONDS) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" is longer than S3 allows (100 years)` });
});

/** An S3 bucket: AWS or an S3-compatible server (MinIO, Ceph RGW, ODF/NooBaa). */
export const s3Schema = storeConfigSchema('s3', {
  bucket: z.string().min(3),
  prefix: z.string().default('').transform((p) => p.replace(/^\/+|\/+$/g, '')),
  region: z.string().min(1).default('us-east-1'),
  /** S3-compatible servers (MinIO, Ceph RGW, ODF/NooBaa); http:// only for loopback tests and labs. */
  endpoint: z.string().url().optional(),
  forcePathStyle: z.boolean().default(false),
  /** Mounted Secret files; without them the AWS default chain (env, web identity, instance role) applies. */
  accessKeyIdFile: z.string().min(1).optional(),
  secretAccessKeyFile: z.string().min(1).optional(),
  sessionTokenFile: z.string().min(1).optional(),
  sse: z.enum(['AES256', 'aws:kms']).optional(),
  kmsKeyId: z.string().min(1).optional(),
  storageClass: z.string().min(1).optional(),
  /** The SDK's newer default (aws-chunked with trailers) breaks many S3-compatible servers. */
  checksum: z.enum(['WHEN_REQUIRED', 'WHEN_SUPPORTED']).default('WHEN_REQUIRED'),
  partSize: z.number().int().min(5 * 1024 * 1024).default(8 * 1024 * 1024),
  queueSize: z.number().int().min(1).max(16).default(3),
  /**
   * S3 Object Lock (WORM): every object written carries this retention, and
   * nothing is deleted before it expires. The bucket must have been created
   * with Object Lock enabled (docs/stores.md, "Object Lock").
   */
  objectLock: z
    .object({
      /**
       * GOVERNANCE by default: the daemon's credentials cannot delete or shorten a lock, but
       * a principal with s3:BypassGovernanceRetention can undo a mistake (a retain of years,
       * a backup that must be purged). COMPLIANCE binds everyone, the account root included.
       */
      mode: z.enum(['GOVERNANCE', 'COMPLIANCE']).default('GOVERNANCE'),
      /** How long each object stays locked after it is written: 30d, 2w, 12h... */
      retain: retainDuration,
    })
    .strict()
    .optional(),
  ...storeSettings,
});

export type S3StoreConfig = z.infer<typeof s3Schema>;
export type S3ObjectLock = NonNullable<S3StoreConfig['objectLock']>;

const FILES = ['accessKeyIdFile', 'secretAccessKeyFile', 'sessionTokenFile'] as const;

/**
 * putFile only with WHEN_REQUIRED checksums: flexible checksums need ChecksumAlgorithm on the
 * multipart upload and per-part checksums on completion, which lib-storage sends; without
 * putFile, delivery streams the file through put() and lib-storage.
 */
export function s3Capabilities(cfg: Pick<S3StoreConfig, 'checksum' | 'objectLock'>): StoreCapabilities {
  return { putFile: cfg.checksum === 'WHEN_REQUIRED', serverHash: false, readBack: false, cleanupIncomplete: true, objectLock: cfg.objectLock !== undefined };
}

registerStoreType<S3StoreConfig>({
  type: 's3',
  schema: s3Schema,
  check(s, problem) {
    if (!!s.accessKeyIdFile !== !!s.secretAccessKeyFile) {
      problem(s.accessKeyIdFile ? 'secretAccessKeyFile' : 'accessKeyIdFile', 'accessKeyIdFile and secretAccessKeyFile go together');
    }
    if (s.kmsKeyId && s.sse !== 'aws:kms') problem('kmsKeyId', 'only valid with sse: aws:kms');
  },
  paths: FILES,
  requiredFiles: FILES,
  ambientCredentials: (s) =>
    s.accessKeyIdFile
      ? undefined
      : 'the AWS default credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity or an instance role): export them before running a command',
  remote: true,
  capabilities: s3Capabilities,
  putFileUnit: (cfg) => cfg.partSize,
  // The AWS SDK costs ~30 MiB and most of a second to import: only when an S3 store is created.
  create: async (cfg) => new (await import('./store.js')).S3Store(cfg),
});
