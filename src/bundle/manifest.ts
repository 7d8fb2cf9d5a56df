import { z } from 'zod';
import { CODECS } from '../layout.js';
import { VERSION_TEXT_RE } from '../etcd/cluster-version.js';

export const MANIFEST_FORMAT = 1;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/);
/** A version as the parser records it (src/etcd/cluster-version.ts). */
const version = z.string().regex(VERSION_TEXT_RE);
const member = z
  .object({
    id: z.string(),
    name: z.string(),
    peerURLs: z.array(z.string()),
    clientURLs: z.array(z.string()),
    /** Present (true) on the member that led when the preflight asked. */
    leader: z.literal(true).optional(),
    learner: z.literal(true).optional(),
    /** The member's etcd version (Maintenance.Status); absent when it did not answer. */
    version: z.string().optional(),
  })
  .strict();
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
    /** The schedule tick (ISO time) this backup was claimed for under coordination (docs/coordination.md); absent otherwise. */
    slot: z.string().datetime({ offset: true }).optional(),
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
    /**
     * The version the cluster last completed (OpenShift: the newest Completed
     * entry of the ClusterVersion history; kubeadm: kubernetesVersion), read
     * from etcd at the snapshot's revision (src/etcd/cluster-version.ts).
     * Absent when etcd holds no such object or it could not be read: never a guess.
     */
    clusterVersion: version.optional(),
    /** Where clusterVersion came from. */
    clusterVersionFrom: z.enum(['openshift', 'kubeadm']).optional(),
    /** OpenShift: status.desired.version when it differs from clusterVersion (an upgrade in progress or one that failed part way). */
    desiredVersion: version.optional(),
    /** The etcd members as the preflight saw them (the recovery kit and `restore` compare against them). */
    members: z.array(member).optional(),
    /** cluster-backup.sh: the revision of each static pod whose resources the archive holds (static-pod-resources/<name>-pod-<N>). */
    staticPodRevisions: z.record(z.string().regex(/^[a-z0-9-]{1,63}$/), z.number().int().nonnegative()).optional(),
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
export type ManifestMember = z.infer<typeof member>;

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
