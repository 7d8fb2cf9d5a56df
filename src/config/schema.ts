import { z } from 'zod';
import { CODECS } from '../layout.js';
import { parseDurationSeconds } from './duration.js';
import { toNodeCronPatterns } from '../schedule/cron.js';
import { parseDuration as parseRetentionDuration } from '../retention/duration.js';

/** Node fires a timer longer than 2^31-1 ms (~24.8 days) at once, so timer durations stay below that. */
const MAX_TIMER_SECONDS = 24 * 86400;

const duration = z.string().superRefine((v, ctx) => {
  try {
    if (parseDurationSeconds(v) > MAX_TIMER_SECONDS) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" is too long: at most 24d` });
    }
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
  }
});

/** A duration that is only compared with dates, never used as a timer. */
const age = z.string().superRefine((v, ctx) => {
  try {
    parseDurationSeconds(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
  }
});

/** A cron expression with the semantics of src/schedule/cron.ts (5 fields, or 6 with seconds first). */
const cronExpr = z
  .string()
  .min(1)
  .superRefine((v, ctx) => {
    try {
      toNodeCronPatterns(v);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    }
  });

/** Names end up in object keys and metric labels: keep them boring. */
const name = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'expected 1-63 characters of letters, digits, ".", "_" or "-"');

const count = z.number().int().min(0);

const RATE_UNITS: Record<string, number> = { '': 1, b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, kb: 1000, mb: 1000 ** 2, gb: 1000 ** 3 };

/** `16KiB`, `1MiB/s`, `500000`, `0` (off): bytes per second. */
export function parseByteRate(v: string | number): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new Error(`${v} is not a rate in bytes per second`);
    return v;
  }
  const m = /^(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?(?:\/s)?$/i.exec(v.trim());
  if (!m) throw new Error(`"${v}" is not a rate (examples: 16KiB, 1MiB/s, 0)`);
  return Number(m[1]) * RATE_UNITS[(m[2] ?? '').toLowerCase()]!;
}

const byteRate = z.union([z.string(), z.number()]).superRefine((v, ctx) => {
  try {
    parseByteRate(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
  }
});

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

const localStore = z
  .object({
    name,
    type: z.literal('local'),
    path: z.string().min(1),
    verify: z.enum(['readback', 'size']).default('readback'),
    incompleteGrace: age.default('24h'),
    ...storeLimits,
  })
  .strict();

const s3Store = z
  .object({
    name,
    type: z.literal('s3'),
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
    verify: z.enum(['readback', 'size']).default('readback'),
    /** Incomplete uploads and manifest-less backups older than this are removed by prune. */
    incompleteGrace: age.default('24h'),
    ...storeLimits,
  })
  .strict();

const sftpStore = z
  .object({
    name,
    type: z.literal('sftp'),
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
    verify: z.enum(['readback', 'size']).default('readback'),
    /**
     * With verify: readback, first ask the server for the sha256 of what it holds (openssl or
     * sha256sum over an SSH exec channel, as rclone does with md5sum); any failure of that falls
     * back to reading every byte back. false: always read back.
     */
    serverHash: z.boolean().default(true),
    incompleteGrace: age.default('24h'),
    ...storeLimits,
  })
  .strict();

export const storeSchema = z.discriminatedUnion('type', [localStore, s3Store, sftpStore]);

const clusterBackupSource = z
  .object({
    type: z.literal('cluster-backup'),
    script: z.string().min(1).default('/usr/local/bin/cluster-backup.sh'),
    timeout: duration.default('30m'),
    /** Extra environment for the script, e.g. KUBECONFIG. Values are not secrets. */
    env: z.record(z.string()).default({}),
  })
  .strict();

const etcdctlSource = z
  .object({
    type: z.literal('etcdctl'),
    etcdctl: z.string().min(1).default('etcdctl'),
    staticPodDir: z.string().min(1).default('/etc/kubernetes/manifests'),
    timeout: duration.default('30m'),
  })
  .strict();

export const configSchema = z
  .object({
    cluster: name,
    node: name.optional(),
    workDir: z.string().min(1).default('/var/lib/etcd-backupd'),
    schedule: cronExpr.default('0 2 * * *'),
    timezone: z
      .string()
      .default('UTC')
      .refine((tz) => {
        try {
          new Intl.DateTimeFormat('en-US', { timeZone: tz });
          return true;
        } catch {
          return false;
        }
      }, 'expected an IANA time zone such as UTC or Europe/Berlin'),
    source: z.discriminatedUnion('type', [clusterBackupSource, etcdctlSource]),
    etcd: z
      .object({
        endpoints: z
          .array(z.string().url().regex(/^https?:\/\//, 'expected an http:// or https:// URL'))
          .min(1)
          .default(['https://127.0.0.1:2379']),
        caFile: z.string().min(1).optional(),
        certFile: z.string().min(1).optional(),
        keyFile: z.string().min(1).optional(),
        timeout: duration.default('10s'),
      })
      .strict()
      .default({}),
    preflight: z
      .object({
        requireHealthy: z.boolean().default(true),
        freeSpaceFactor: z.number().finite().min(0).max(1e6).default(2),
      })
      .strict()
      .default({}),
    stores: z.array(storeSchema).min(1, 'expected at least one store'),
    retention: z
      .object({
        keepLast: count.default(3),
        hourly: count.default(0),
        daily: count.default(7),
        weekly: count.default(4),
        monthly: count.default(12),
        yearly: count.default(0),
        /** restic-style (1y2mo3d4h); a bare `m` is refused because restic reads it as months. */
        keepWithin: z
          .string()
          .default('0s')
          .superRefine((v, ctx) => {
            try {
              parseRetentionDuration(v);
            } catch (e) {
              ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
            }
          }),
      })
      .strict()
      .default({}),
    local: z
      .object({
        /** Delivered bundles kept on the node for a fast restore. */
        keep: count.default(1),
        /** Undelivered bundles the outbox may hold; past it the oldest is dropped with an error and a metric. */
        maxPending: z.number().int().min(1).default(5),
        /** Backoff between delivery retries of an outbox bundle, doubling from min to max. */
        retryMin: duration.default('1m'),
        retryMax: duration.default('1h'),
      })
      .strict()
      .default({}),
    /** Restore drills: a backup is restored into a throwaway etcd on a schedule. Off unless `schedule` is set. */
    drill: z
      .object({
        schedule: cronExpr.optional(),
        /** The store drills fetch from; default the first. */
        store: z.string().optional(),
        timeout: duration.default('1h'),
        sampleKeys: z.number().int().min(0).default(100),
        etcd: z.string().min(1).default('etcd'),
        etcdctl: z.string().min(1).default('etcdctl'),
        /** Only for encrypted backups: an age identity file. Keeping a secret key on a master weakens encryption; prefer drills on a separate host with `verify --restore`. */
        identityFile: z.string().min(1).optional(),
      })
      .strict()
      .default({}),
    /** Random delay before a scheduled run, to spread the masters of one cluster. */
    jitter: duration.default('0s'),
    /** How long SIGTERM waits for a run in progress before aborting it. */
    shutdownTimeout: duration.default('60s'),
    /** /readyz fails after this many consecutive failed runs. */
    readyFailureThreshold: z.number().int().min(1).default(3),
    /**
     * Signed manifests (ed25519): keyFile on the masters signs every manifest; with any
     * trustedKeys, only backups signed by one of them count as good (latest, verify, fetch,
     * retention's newest verified). Create a pair with `etcd-backupd keygen --out PREFIX`.
     */
    signing: z
      .object({
        keyFile: z.string().min(1).optional(),
        trustedKeys: z.array(z.string().min(1)).default([]),
      })
      .strict()
      .default({}),
    /**
     * zstd in the stream, before any encryption: etcd data of real clusters compresses 3-15x.
     * Level 1-19 (zstd's own scale; 3 is its default and a good trade on a busy master).
     */
    compression: z
      .object({
        codec: z.enum(CODECS).default('zstd'),
        level: z.number().int().min(1).max(19).default(3),
      })
      .strict()
      .default({}),
    encryption: z
      .object({ recipients: z.array(z.string().regex(/^age1[02-9ac-hj-np-z]{58}$/, 'expected an age X25519 recipient (age1...)')).default([]) })
      .strict()
      .default({}),
    metrics: z
      .object({
        listen: z
          .string()
          .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT')
          .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'port must be 0-65535')
          .default('127.0.0.1:9979'),
      })
      .strict()
      .default({}),
    control: z.object({ socket: z.string().min(1).default('/run/etcd-backupd/control.sock') }).strict().default({}),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const seen = new Set<string>();
    cfg.stores.forEach((s, i) => {
      if (seen.has(s.name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['stores', i, 'name'], message: `duplicate store name "${s.name}"` });
      seen.add(s.name);
      const at = (k: string) => ['stores', i, k];
      if (s.type === 's3') {
        if (!!s.accessKeyIdFile !== !!s.secretAccessKeyFile) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, path: at(s.accessKeyIdFile ? 'secretAccessKeyFile' : 'accessKeyIdFile'), message: 'accessKeyIdFile and secretAccessKeyFile go together' });
        }
        if (s.kmsKeyId && s.sse !== 'aws:kms') ctx.addIssue({ code: z.ZodIssueCode.custom, path: at('kmsKeyId'), message: 'only valid with sse: aws:kms' });
      }
      if (s.type === 'sftp' && !s.hostKey && !s.knownHostsFile) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: at('hostKey'), message: 'required (or knownHostsFile): the server host key must be pinned' });
      }
    });
    if (cfg.drill.store !== undefined && !cfg.stores.some((s) => s.name === cfg.drill.store)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['drill', 'store'], message: `no store named "${cfg.drill.store}"` });
    }
    const tls = cfg.etcd.endpoints.some((e) => e.startsWith('https://'));
    if (tls) {
      for (const k of ['caFile', 'certFile', 'keyFile'] as const) {
        if (!cfg.etcd[k]) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['etcd', k], message: 'required when an etcd endpoint uses https://' });
      }
    }
  });

export type RawConfig = z.infer<typeof configSchema>;
export type StoreConfig = z.infer<typeof storeSchema>;
export type SourceConfig = RawConfig['source'];
