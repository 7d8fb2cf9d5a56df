/**
 * `fetch latest --at TIME` and `restore latest --at TIME` with continuous
 * backups: the cluster's usable full backups are the bases, the committed
 * segments under the newest few are listed and checked (segments.ts), the
 * pure planner picks the base and the chain (plan.ts), and then either the
 * base alone is fetched as `fetch` does (no segment was seen by TIME) or
 * the chain is replayed onto it (replay.ts).
 */
import type { Manifest } from '../bundle/manifest.js';
import { loadCatalog } from '../catalog/catalog.js';
import { fetchBackup } from '../catalog/fetch.js';
import { counts, type Trust } from '../catalog/trust.js';
import { fmtAge } from '../catalog/at.js';
import { BackupError } from '../errors.js';
import type { Store } from '../storage/store.js';
import { candidateBases, planReplay, type BaseRef, type ReplayPlan } from './plan.js';
import { replayToTime, type ReplayOptions } from './replay.js';
import type { SegmentManifest } from './segment.js';
import { listSegments, type BaseSegments } from './segments.js';

export interface AtTimeChoice {
  base: Manifest;
  plan: ReplayPlan;
  manifests: ReadonlyMap<string, SegmentManifest>;
  /** Committed segments under the chosen base (used or not). */
  segmentsListed: number;
}

/** Lists, checks and plans; throws `not-found` (no base by TIME) or `segment-gap` (naming the range). */
export async function chooseAtTime(o: { store: Store; cluster: string; trust: Trust; cacheDir: string; at: Date; allowUntrusted: boolean; signal?: AbortSignal }): Promise<AtTimeChoice> {
  const cat = await loadCatalog(o.store, o.cluster, o.trust, { cacheDir: o.cacheDir, signal: o.signal });
  const usable = cat.backups.filter((m) => o.allowUntrusted || counts(m, o.trust));
  const byId = new Map(usable.map((m) => [m.id, m]));
  const bases: BaseRef[] = usable.map((m) => ({ id: m.id, revision: m.etcd.revision, createdAt: new Date(m.createdAt) }));
  const segs = new Map<string, BaseSegments>();
  for (const b of candidateBases(bases, o.at)) segs.set(b.id, await listSegments(o.store, o.cluster, b.id, o.trust, o.allowUntrusted, o.signal));
  const r = planReplay(bases, (id) => segs.get(id)?.refs ?? [], o.at);
  if (!r.ok && r.reason === 'no-base') {
    throw new BackupError('not-found', `store ${o.store.name} holds no usable committed backup taken at or before ${o.at.toISOString()}`, { hint: 'run `etcd-backupd list` to see the backups and their times' });
  }
  if (!r.ok) {
    throw new BackupError('segment-gap', r.message, {
      hint: `pick a TIME before revision ${r.missingFrom} was written, or a base taken after the gap; the writer's log says why it missed revisions ${r.missingFrom}-${r.missingTo}`,
    });
  }
  const got = segs.get(r.plan.base.id);
  return { base: byId.get(r.plan.base.id)!, plan: r.plan, manifests: got?.manifests ?? new Map(), segmentsListed: got?.refs.length ?? 0 };
}

export interface AtTimeResult {
  base: Manifest;
  /** false: the base alone (no segment seen by TIME, or none at all). */
  replayed: boolean;
  /** Why the base alone, for the operator. */
  note?: string;
  files: string[];
  snapshot: string;
  revisionReached: number;
  reachedTime: Date;
  segmentsUsed: number;
  revisionsReplayed: number;
  leaselessKeys: number;
}

/** What the replay needs besides the choice: the same options, the base, plan and manifests coming from `c`. */
export type MaterializeOptions = Omit<ReplayOptions, 'base' | 'plan' | 'manifests'>;

/** Writes the state at TIME into `to`: the base's files, or a replayed snapshot (plus the base's static resources). */
export async function materializeAt(c: AtTimeChoice, o: MaterializeOptions): Promise<AtTimeResult> {
  if (c.plan.segments.length === 0) {
    const f = await fetchBackup(o.store, c.base, o.to, o.identities, o.signal);
    const note = c.segmentsListed === 0 ? `no continuous-backup segments for base ${c.base.id}: the base alone` : `no segment of base ${c.base.id} was seen by ${c.plan.until.toISOString()}: the base alone`;
    return { base: c.base, replayed: false, note, files: f.files, snapshot: f.snapshot, revisionReached: c.base.etcd.revision, reachedTime: new Date(c.base.createdAt), segmentsUsed: 0, revisionsReplayed: 0, leaselessKeys: 0 };
  }
  const r = await replayToTime({ ...o, base: c.base, plan: c.plan, manifests: c.manifests });
  return { base: c.base, replayed: true, ...r };
}

/** What `--json` adds for a restore to a time. */
export function atTimeJson(r: AtTimeResult, at: Date) {
  return {
    base: r.base.id,
    revisionReached: r.revisionReached,
    reachedTime: r.reachedTime.toISOString(),
    segmentsUsed: r.segmentsUsed,
    revisionsReplayed: r.revisionsReplayed,
    leaselessKeys: r.leaselessKeys,
    replayed: r.replayed,
    at: at.toISOString(),
    beforeSeconds: Math.floor((at.getTime() - r.reachedTime.getTime()) / 1000),
    ...(r.note ? { note: r.note } : {}),
  };
}

/** The human line: which base, how many revisions replayed, the time reached and how far before TIME. */
export function atTimeSummary(r: AtTimeResult, at: Date): string {
  const before = fmtAge(at.getTime() - r.reachedTime.getTime());
  if (!r.replayed) return `--at ${at.toISOString()}: backup ${r.base.id} taken ${r.base.createdAt}, ${before} before it, revision ${r.base.etcd.revision} (${r.note})`;
  return `--at ${at.toISOString()}: base ${r.base.id} (revision ${r.base.etcd.revision}) + ${r.revisionsReplayed} revisions replayed from ${r.segmentsUsed} segment(s): revision ${r.revisionReached}, seen ${r.reachedTime.toISOString()}, ${before} before TIME${r.leaselessKeys ? `; ${r.leaselessKeys} key write(s) replayed without their lease (their holders re-create or expire them)` : ''}`;
}
