import { isAbsolute } from 'node:path';
import { z, type ZodDiscriminatedUnionOption } from 'zod';
import { CODECS } from '../layout.js';
import { duration, name } from '../units/fields.js';
import { parseDurationSeconds } from '../units/duration.js';
import { storeType, storeTypes, type StoreConfig } from '../storage/stores.js';
import { toNodeCronPatterns } from '../schedule/cron.js';
import { parseDuration as parseRetentionDuration } from '../retention/duration.js';

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

const count = z.number().int().min(0);

/** Retention's duration syntax (restic's 1y2mo3d4h), default 0s: retention.keepWithin and continuous.keepWithin. */
const retentionDuration = z
  .string()
  .default('0s')
  .superRefine((v, ctx) => {
    try {
      parseRetentionDuration(v);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    }
  });

/** A keepWithin that keeps something (an invalid one is reported by its own check). */
function keepsWithin(v: string): boolean {
  try {
    return parseRetentionDuration(v) > 0;
  } catch {
    return true;
  }
}

/** Every store type this build has, from the store registry (src/storage/registry.ts), in registration order. */
export const storeSchema = z.discriminatedUnion(
  'type',
  storeTypes().map((t) => t.schema) as [ZodDiscriminatedUnionOption<'type'>, ...ZodDiscriminatedUnionOption<'type'>[]],
) as unknown as z.ZodType<StoreConfig, z.ZodTypeDef, unknown>;

/**
 * No growth of the snapshot file for this long ends the run (source-stalled):
 * with etcd not answering, cluster-backup.sh waits instead of failing. At least 1s.
 */
const stallTimeout = duration.default('2m').refine((v) => {
  try {
    return parseDurationSeconds(v) >= 1;
  } catch {
    return true; // not a duration: said once already, by `duration`
  }
}, 'expected at least 1s');

const clusterBackupSource = z
  .object({
    type: z.literal('cluster-backup'),
    script: z.string().min(1).default('/usr/local/bin/cluster-backup.sh'),
    timeout: duration.default('30m'),
    stallTimeout,
    /**
     * Extra environment for the script (ETCDCTL_BIN, proxies). Values are not secrets. It cannot set
     * KUBECONFIG or etcdctl's endpoint and TLS: the real script takes them from the node's files.
     */
    env: z.record(z.string()).default({}),
  })
  .strict();

const etcdctlSource = z
  .object({
    type: z.literal('etcdctl'),
    etcdctl: z.string().min(1).default('etcdctl'),
    staticPodDir: z.string().min(1).default('/etc/kubernetes/manifests'),
    timeout: duration.default('30m'),
    stallTimeout,
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
    /**
     * restic's `forget` policy. A block that is present is the whole policy:
     * the tiers it does not name are 0 (`{keepLast: 5}` keeps 5, as restic
     * would). The defaults below apply only when there is no block at all.
     */
    retention: z
      .object({
        keepLast: count.default(0),
        hourly: count.default(0),
        daily: count.default(0),
        weekly: count.default(0),
        monthly: count.default(0),
        yearly: count.default(0),
        /** restic-style (1y2mo3d4h); a bare `m` is refused because restic reads it as months. */
        keepWithin: retentionDuration,
      })
      .strict()
      .refine((r) => r.keepLast + r.hourly + r.daily + r.weekly + r.monthly + r.yearly > 0 || keepsWithin(r.keepWithin), {
        message: 'names no tier: it would keep nothing. Name at least one (keepLast, hourly, daily, weekly, monthly, yearly, keepWithin), or remove the block for the defaults (keepLast 3, daily 7, weekly 4, monthly 12)',
      })
      .default({ keepLast: 3, hourly: 0, daily: 7, weekly: 4, monthly: 12, yearly: 0, keepWithin: '0s' }),
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
    /**
     * The priority a backup runs at (the daemon, and a `backup` run by hand): etcd's
     * fsyncs come first on a master. The systemd unit sets the same with Nice= and
     * IOSchedulingClass=; the process applies it itself where nothing else does.
     */
    priority: z
      .object({
        nice: z.number().int().min(0).max(19).default(10),
        ioClass: z.enum(['best-effort', 'idle', 'none']).default('best-effort'),
        ioLevel: z.number().int().min(0).max(7).default(7),
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
    /**
     * One backup per slot for the whole cluster (docs/coordination.md): each slot is claimed
     * on the cluster's etcd with a leased create-if-absent key under /etcd-backupd/<cluster>/.
     * `none`: every node backs up on its own (one series per node).
     */
    coordination: z
      .object({
        mode: z.enum(['etcd', 'none']).default('etcd'),
        /** Without quorum no claim is possible: `backup` = each node backs up alone, labelled no-quorum; `skip` = none does. */
        onNoQuorum: z.enum(['backup', 'skip']).default('backup'),
        /** A node whose etcd member is the leader waits this long before it claims, so a healthy follower takes the load. */
        leaderDelay: duration.default('5s'),
        /** TTL of a claim's lease: how long a holder that died blocks its slot before another node takes over. Whole seconds, 2s-5m. */
        leaseTtl: duration
          .default('15s')
          .refine((v) => {
            try {
              const s = parseDurationSeconds(v);
              return Number.isInteger(s) && s >= 2 && s <= 300;
            } catch {
              return true; // not a duration: said once already, by `duration`
            }
          }, 'expected whole seconds between 2s and 5m (etcd lease TTLs are whole seconds)'),
        /** Claims per slot, counting failed attempts and holders that died. */
        maxAttempts: z.number().int().min(1).max(100).default(3),
      })
      .strict()
      .default({}),
    /**
     * Continuous backups (docs/continuous.md): one elected node watches the whole keyspace
     * from the newest full backup's revision + 1 and writes segments to every store.
     * Needs the election on the cluster's etcd, so `coordination.mode: etcd`.
     */
    continuous: z
      .object({
        enabled: z.boolean().default(false),
        /** A segment at least this often while changes flow (the RPO is about this plus delivery time). 1s-1h. */
        interval: duration.default('10s').refine((v) => {
          try {
            const s = parseDurationSeconds(v);
            return s >= 1 && s <= 3600;
          } catch {
            return true; // not a duration: said once already, by `duration`
          }
        }, 'expected between 1s and 1h'),
        /** A segment is cut sooner once its records (before compression) reach this many bytes. 64 KiB-256 MiB. */
        maxSegmentBytes: z
          .number()
          .int()
          .min(64 * 1024)
          .max(256 * 1024 * 1024)
          .default(4 * 1024 * 1024),
        /**
         * Segments of a kept base are deleted, whole chain at once, once its newest segment is
         * older than this (retention's duration syntax); 0 (default): they live as long as their base.
         */
        keepWithin: retentionDuration,
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
    /**
     * The recovery kit (docs/recovery-kit.md): what a restore needs when the API server is
     * down, kept on the host. Absolute (it is a host path the DaemonSet mounts); "" turns it off.
     */
    recovery: z
      .object({
        dir: z
          .string()
          .default('/var/lib/etcd-backupd/recovery')
          .refine((v) => v === '' || isAbsolute(v), 'expected an absolute path, or "" to turn the kit off'),
      })
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
      // The checks of the store's own keys that a schema cannot say (its folder's `check`).
      storeType(s.type).check?.(s, (k, message) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['stores', i, k], message }));
    });
    if (cfg.drill.store !== undefined && !cfg.stores.some((s) => s.name === cfg.drill.store)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['drill', 'store'], message: `no store named "${cfg.drill.store}"` });
    }
    if (cfg.continuous.enabled && cfg.coordination.mode !== 'etcd') {
      // Every node would write its own chain: the election on etcd is what makes one writer.
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['continuous', 'enabled'], message: 'continuous backups need coordination.mode: etcd (one node is elected to write segments); set coordination.mode: etcd or continuous.enabled: false' });
    }
    const tls = cfg.etcd.endpoints.some((e) => e.startsWith('https://'));
    if (tls) {
      for (const k of ['caFile', 'certFile', 'keyFile'] as const) {
        if (!cfg.etcd[k]) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['etcd', k], message: 'required when an etcd endpoint uses https://' });
      }
    }
  });

export type RawConfig = z.infer<typeof configSchema>;
export type { StoreConfig };
export type SourceConfig = RawConfig['source'];
