import { z } from 'zod';

export const MANIFEST_FORMAT = 1;
export const MANIFEST_NAME = 'manifest.json';
export const BUNDLE_NAME = 'backup.tar';
export const CODECS = ['zstd', 'none'] as const;
export type Codec = (typeof CODECS)[number];

const sha256 = z.string().regex(/^[0-9a-f]{64}$/);
const artifact = z.object({ name: z.string().regex(/^[A-Za-z0-9._-]+$/), size: z.number().int().nonnegative(), sha256 }).strict();

/**
 * The manifest describes one backup. The copy inside the tar lacks `object`
 * (it cannot hash the tar that contains it); the copy stored beside the
 * object has it, and writing that copy last is what commits the backup.
 */
export const manifestSchema = z
  .object({
    format: z.literal(MANIFEST_FORMAT),
    id: z.string().min(1),
    cluster: z.string().min(1),
    node: z.string().min(1),
    trigger: z.enum(['schedule', 'manual', 'catch-up']),
    label: z.string().optional(),
    reason: z.string().optional(),
    pinned: z.boolean(),
    pinReason: z.string().optional(),
    createdAt: z.string().datetime({ offset: true }),
    startedAt: z.string().datetime({ offset: true }),
    finishedAt: z.string().datetime({ offset: true }),
    tool: z.object({ name: z.string(), version: z.string() }).strict(),
    source: z.object({ type: z.string(), possiblyDirty: z.boolean() }).strict(),
    preflight: z
      .object({ forced: z.boolean(), failedChecks: z.array(z.object({ name: z.string(), detail: z.string() }).strict()) })
      .strict(),
    etcd: z
      .object({
        version: z.string().optional(),
        clusterId: z.string().optional(),
        memberId: z.string().optional(),
        leader: z.string().optional(),
        revision: z.number().int(),
        totalKey: z.number().int(),
        hash: z.number().int(),
        totalSize: z.number().int(),
      })
      .strict(),
    clusterVersion: z.string().optional(),
    artifacts: z.array(artifact).min(1),
    object: z
      .object({
        key: z.string(),
        size: z.number().int().nonnegative(),
        sha256,
        encrypted: z.boolean(),
        recipients: z.array(z.string()),
        /** How the tar was compressed before (any) encryption; absent in backups from before compression: none. */
        codec: z.enum(CODECS).optional(),
        /** Bytes of the tar before compression and encryption. */
        rawSize: z.number().int().nonnegative().optional(),
      })
      .strict()
      .optional(),
    // ed25519 over signingPayload() (src/bundle/sign.ts); optional so unsigned
    // manifests of older versions still parse.
    signature: z
      .object({ alg: z.literal('ed25519'), keyId: z.string().regex(/^[0-9a-f]{16}$/), sig: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/) })
      .strict()
      .optional(),
  })
  .strict();

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestArtifact = z.infer<typeof artifact>;

export class ManifestError extends Error {}

export function parseManifest(text: string | Buffer, where: string): Manifest {
  let doc: unknown;
  try {
    doc = JSON.parse(text.toString());
  } catch (e) {
    throw new ManifestError(`${where}: not JSON (${(e as Error).message})`);
  }
  const r = manifestSchema.safeParse(doc);
  if (!r.success) {
    const first = r.error.issues[0]!;
    throw new ManifestError(`${where}: ${first.path.join('.') || '(top level)'}: ${first.message}`);
  }
  return r.data;
}

export function serializeManifest(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify(m, null, 2) + '\n');
}

/** `20261125T020000Z-master-0`: sorts by time, unique per node per second. */
export function backupId(at: Date, node: string): string {
  const iso = at.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
  return `${iso}-${node}`;
}

const ID_RE = /^(\d{8}T\d{6}Z)-(.+)$/;

export function parseBackupId(id: string): { time: Date; node: string } | undefined {
  const m = ID_RE.exec(id);
  if (!m) return undefined;
  const s = m[1]!;
  const time = new Date(`${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}Z`);
  return Number.isNaN(time.getTime()) ? undefined : { time, node: m[2]! };
}

/** What a stored bundle is called: `backup.tar`, `.zst` when compressed, `.age` after that when encrypted. */
export function bundleName(o: { codec?: Codec; encrypted: boolean }): string {
  return `${BUNDLE_NAME}${o.codec === 'zstd' ? '.zst' : ''}${o.encrypted ? '.age' : ''}`;
}

/** Every name a backup's own object may have (a manifest may only speak for one of these). */
export const BUNDLE_NAMES: readonly string[] = CODECS.flatMap((codec) => [false, true].map((encrypted) => bundleName({ codec, encrypted })));

/** Remote layout: `<prefix>/<cluster>/<backup-id>/{backup.tar[.zst][.age],manifest.json}`; the store adds its own prefix. */
export function objectKeys(cluster: string, id: string, o: { codec?: Codec; encrypted: boolean }): { dir: string; object: string; manifest: string } {
  const dir = `${cluster}/${id}`;
  return { dir, object: `${dir}/${bundleName(o)}`, manifest: `${dir}/${MANIFEST_NAME}` };
}

/** The manifest that commits an object: beside it in the backup's directory. */
export function manifestKeyOf(objectKey: string): string {
  return objectKey.replace(/[^/]+$/, MANIFEST_NAME);
}
