/**
 * The check step: what the restored etcd serves, against what the snapshot
 * holds (the KeyspaceSummary read from the snapshot file, etcd/keyspace.ts)
 * and what the manifest recorded. See "What the check proves" in drill.ts.
 */
import { BackupError, messageOf } from '../../errors.js';
import type { KeyspaceSummary } from '../../etcd/keyspace.js';
import { captureCommand } from '../../source/exec.js';
import { childEnv, toolError } from '../tools.js';
import type { StepContext } from './context.js';

/** What the check found, reported as it goes (a failed check still tells what it saw). */
export interface CheckFindings {
  revision?: number;
  liveKeys?: number;
  hashKV?: number;
  sampled?: number;
}

/** The whole keyspace in a range request ("\0" to "\0"). */
const ALL_KEYS = { key: Buffer.from([0]), rangeEnd: Buffer.from([0]) };
const SAMPLE_READERS = 8;

/** The snapshot's buckets against the manifest: the sum of entries is totalKey, the key bucket ends at its revision. */
function checkAgainstManifest(ctx: StepContext, want: KeyspaceSummary): void {
  const m = ctx.manifest;
  const total = Object.values(want.buckets).reduce((a, b) => a + b, 0);
  ctx.log.info({ buckets: want.buckets, liveKeys: want.liveKeys, compactRevision: want.compactRevision }, 'restore drill: what the snapshot holds');
  const diffs: string[] = [];
  if (total !== m.etcd.totalKey) diffs.push(`the buckets hold ${total} entries, the manifest's totalKey is ${m.etcd.totalKey}`);
  if (want.lastRevision !== m.etcd.revision) diffs.push(`the key bucket ends at revision ${want.lastRevision}, the manifest says ${m.etcd.revision}`);
  if (diffs.length) throw new BackupError('drill-mismatch', `backup ${m.id}: ${diffs.join('; ')}`);
}

/** The revision and the number of keys etcd serves at `rev` (0: the current revision). */
async function countAt(ctx: StepContext, base: string, rev: number): Promise<{ revision: number; count: number }> {
  try {
    // Serializable reads: one member, nobody else writes; a linearizable read waits for a raft round each.
    const r = await ctx.etcd.endpoint(base).range({ ...ALL_KEYS, countOnly: true, revision: rev, serializable: true }, { signal: ctx.signal });
    return { revision: r.revision, count: r.count };
  } catch (e) {
    if (ctx.signal.aborted) throw e;
    throw new BackupError('drill-mismatch', `backup ${ctx.manifest.id}: the restored etcd did not answer a count of its keys${rev ? ` at revision ${rev}` : ''}: ${messageOf(e)}`);
  }
}

/**
 * The revision etcd serves and its key count at the backup's revision.
 * Returns the revision the later reads use (0 = the current one).
 */
async function checkRevisionAndCount(ctx: StepContext, base: string, want: KeyspaceSummary, found: CheckFindings, diffs: string[]): Promise<number> {
  const m = ctx.manifest;
  // At or below the compaction revision, etcd only answers for the current revision.
  const atRev = want.servedRevision > want.compactRevision ? want.servedRevision : 0;
  const now = await countAt(ctx, base, 0);
  if (!(now.revision >= want.servedRevision)) {
    throw new BackupError('drill-mismatch', `backup ${m.id}: the restored etcd serves revision ${now.revision}, the backup is at revision ${want.servedRevision} (${now.count} keys, the snapshot holds ${want.liveKeys})`);
  }
  if (now.revision > want.servedRevision) {
    // Only the drill etcd itself writes (it revokes leases whose TTL ran out since it started); the checks below are at the backup's revision.
    if (atRev === 0) throw new BackupError('drill-mismatch', `backup ${m.id}: the restored etcd moved on to revision ${now.revision} before it could be checked at ${want.servedRevision}`);
    ctx.log.warn({ served: now.revision, backup: want.servedRevision }, 'restore drill: the restored etcd wrote revisions of its own (expired leases); checking at the backup revision');
  }
  const served = atRev === 0 ? now : await countAt(ctx, base, atRev);
  found.revision = want.servedRevision;
  found.liveKeys = served.count;
  if (served.count !== want.liveKeys) diffs.push(`it serves ${served.count} keys at revision ${want.servedRevision}, the snapshot holds ${want.liveKeys}`);
  if (served.count > want.buckets.key!) diffs.push(`it serves more keys (${served.count}) than the key bucket has entries (${want.buckets.key})`);
  return atRev;
}

/** HashKV, through etcdctl, as before the gRPC client (Maintenance.HashKV over etcd/client.ts could replace it). */
async function checkHashKV(ctx: StepContext, base: string, atRev: number, want: KeyspaceSummary, deadline: number, found: CheckFindings, diffs: string[]): Promise<void> {
  const remaining = Math.max(5, Math.floor((deadline - Date.now()) / 1000));
  const hk = await captureCommand(
    [...ctx.tools.prio, ctx.tools.etcdctl, `--endpoints=${base}`, `--command-timeout=${remaining}s`, 'endpoint', 'hashkv', `--rev=${atRev}`, '-w', 'json'],
    { env: childEnv({ ETCDCTL_API: '3' }), cwd: ctx.dir, signal: ctx.signal, log: ctx.log, what: 'drill-etcdctl' },
  );
  if (ctx.signal.aborted) throw new Error('aborted');
  let hash: number | undefined;
  let compactRev: number | undefined;
  try {
    const j = JSON.parse(hk.stdout) as { HashKV?: { hash?: number; compact_revision?: number } }[];
    hash = j[0]?.HashKV?.hash;
    compactRev = j[0]?.HashKV?.compact_revision;
  } catch {
    /* below */
  }
  if (hk.code !== 0 || typeof hash !== 'number') {
    diffs.push(`etcdctl endpoint hashkv failed (${hk.code !== null ? `exit ${hk.code}` : `signal ${hk.signal}`}): ${toolError(hk.tail)}`);
    return;
  }
  found.hashKV = hash >>> 0;
  if (found.hashKV !== want.hashKV) {
    diffs.push(`its HashKV at revision ${want.servedRevision} is ${found.hashKV}, the snapshot's key bucket gives ${want.hashKV}`);
  }
  if (compactRev !== undefined && compactRev !== want.compactRevision) {
    diffs.push(`its compaction revision is ${compactRev}, the snapshot's is ${want.compactRevision}`);
  }
}

/** A sample of keys: one range, then each key on its own. Returns how many read back the same. */
async function checkSampleKeys(ctx: StepContext, base: string, atRev: number, want: KeyspaceSummary, sampleKeys: number, diffs: string[]): Promise<number> {
  let sampled = 0;
  if (sampleKeys <= 0) return sampled;
  const { signal } = ctx;
  const etcd = ctx.etcd.endpoint(base);
  try {
    const page = await etcd.range({ ...ALL_KEYS, limit: sampleKeys, revision: atRev, serializable: true }, { signal });
    const kvs = page.kvs;
    const show = (k: Buffer) => k.toString('utf8').slice(0, 200);
    let next = 0;
    const reader = async () => {
      while (next < kvs.length && diffs.length === 0) {
        const kv = kvs[next++]!;
        const one = await etcd.range({ key: kv.key, revision: atRev, serializable: true }, { signal });
        const got = one.kvs[0];
        if (!got || !got.key.equals(kv.key) || !got.value.equals(kv.value) || got.modRevision !== kv.modRevision) {
          diffs.push(`key ${show(kv.key)} reads differently on its own than in a range`);
        } else if (got.modRevision > want.servedRevision) {
          diffs.push(`key ${show(kv.key)} has mod_revision ${got.modRevision}, beyond the backup's revision`);
        } else {
          sampled++;
        }
      }
    };
    await Promise.all(Array.from({ length: SAMPLE_READERS }, reader));
    if (sampled < Math.min(sampleKeys, want.liveKeys) && !diffs.length) diffs.push(`a range of ${sampleKeys} keys returned ${sampled}, the snapshot holds ${want.liveKeys}`);
  } catch (e) {
    if (signal.aborted) throw e;
    if (e instanceof BackupError) throw e;
    diffs.push(`reading sample keys failed: ${messageOf(e)}`);
  }
  return sampled;
}

/**
 * The check step against the etcd at `base`: revision, live key count,
 * HashKV, then a sample of keys read back. `deadline` (ms since the epoch)
 * bounds etcdctl's own timeout. Throws 'drill-mismatch' for any difference.
 */
export async function checkRestored(
  ctx: StepContext,
  base: string,
  want: KeyspaceSummary,
  limits: { sampleKeys: number; deadline: number },
  found: CheckFindings,
): Promise<void> {
  const m = ctx.manifest;
  checkAgainstManifest(ctx, want);
  const diffs: string[] = [];
  const atRev = await checkRevisionAndCount(ctx, base, want, found, diffs);
  await checkHashKV(ctx, base, atRev, want, limits.deadline, found, diffs);
  if (diffs.length) throw new BackupError('drill-mismatch', `backup ${m.id}: the restored etcd does not serve what the snapshot holds: ${diffs.join('; ')}`);

  const sampled = await checkSampleKeys(ctx, base, atRev, want, limits.sampleKeys, diffs);
  found.sampled = sampled;
  if (diffs.length) throw new BackupError('drill-mismatch', `backup ${m.id}: ${diffs.join('; ')}`);
  ctx.log.info({ revision: found.revision, liveKeys: found.liveKeys, hashKV: found.hashKV, sampled }, 'restore drill: the restored etcd serves exactly what the backup holds');
}
