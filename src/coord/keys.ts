/**
 * What coordination writes into the cluster's etcd, spelled once: the keys
 * under `/etcd-backupd/<cluster>/` and the JSON values stored at them.
 * Pure: no I/O. See docs/coordination.md.
 *
 *   /etcd-backupd/<cluster>/slots/<kind>/<slot>    the claim: leased, present while its holder runs
 *   /etcd-backupd/<cluster>/results/<kind>/<slot>  the slot's latest attempt: running | success | failed
 *   /etcd-backupd/<cluster>/manual/<backup-id>     a manual (CLI) backup, recorded for the cluster view
 *   /etcd-backupd/<cluster>/continuous/writer      the continuous writer's election: leased, held by the node that writes segments
 *
 * `<slot>` is the slot's time as `YYYY-MM-DDTHH:MM:SSZ` (UTC, no fraction),
 * so keys sort by time and a prune is one ordered range.
 */

/** What a slot is for: a scheduled (or catch-up) backup, or a restore drill. */
export const SLOT_KINDS = ['backup', 'drill'] as const;
export type SlotKind = (typeof SLOT_KINDS)[number];

/** The root of everything the daemon writes; outside Kubernetes' `/registry/` and OpenShift's `/kubernetes.io/`. */
export const ROOT = '/etcd-backupd/';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const SLOT_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

function checkName(what: string, v: string): string {
  if (!NAME_RE.test(v)) throw new Error(`coord: ${what} "${v}" is not a name (letters, digits, ".", "_", "-")`);
  return v;
}

function checkKind(kind: string): SlotKind {
  if (!(SLOT_KINDS as readonly string[]).includes(kind)) throw new Error(`coord: unknown slot kind "${kind}"`);
  return kind as SlotKind;
}

/** The slot's key segment: UTC to the second. A slot time with a fraction of a second is refused (cron ticks are whole seconds). */
export function slotName(slot: Date): string {
  const t = slot.getTime();
  if (!Number.isFinite(t)) throw new Error('coord: invalid slot time');
  if (t % 1000 !== 0) throw new Error(`coord: slot time ${slot.toISOString()} has a fraction of a second`);
  return slot.toISOString().replace(/\.000Z$/, 'Z');
}

/** The inverse of slotName; undefined for anything else. */
export function parseSlotName(s: string): Date | undefined {
  if (!SLOT_RE.test(s)) return undefined;
  const d = new Date(s);
  return Number.isFinite(d.getTime()) && slotName(d) === s ? d : undefined;
}

/** Every key of one cluster, from one place. */
export class CoordKeys {
  readonly cluster: string;
  constructor(cluster: string) {
    this.cluster = checkName('cluster', cluster);
  }
  /** Everything this cluster's daemons write: `/etcd-backupd/<cluster>/`. */
  get prefix(): string {
    return `${ROOT}${this.cluster}/`;
  }
  claimPrefix(kind: SlotKind): string {
    return `${this.prefix}slots/${checkKind(kind)}/`;
  }
  resultPrefix(kind: SlotKind): string {
    return `${this.prefix}results/${checkKind(kind)}/`;
  }
  get manualPrefix(): string {
    return `${this.prefix}manual/`;
  }
  /** The continuous writer's election key (docs/continuous.md): present, bound to its lease, while a node writes segments. */
  get continuousWriter(): string {
    return `${this.prefix}continuous/writer`;
  }
  claim(kind: SlotKind, slot: Date): string {
    return this.claimPrefix(kind) + slotName(slot);
  }
  result(kind: SlotKind, slot: Date): string {
    return this.resultPrefix(kind) + slotName(slot);
  }
  manual(backupId: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(backupId)) throw new Error(`coord: backup id "${backupId}" cannot be a key`);
    return this.manualPrefix + backupId;
  }
}

// ---------------------------------------------------------------------------
// Values (JSON). Parsers never throw: a value that is not ours reads as undefined.
// ---------------------------------------------------------------------------

/** The claim key's value: who holds the slot, which attempt, since when, under which lease. */
export interface ClaimValue {
  node: string;
  /** 1 for the first claim of the slot, +1 for every claim after a failure or a lost holder. */
  attempt: number;
  startedAt: string;
  /** The etcd lease id (decimal string) the claim key is bound to. */
  lease: string;
}

export type SlotResult = 'running' | 'success' | 'failed';

/**
 * The result key's value: the latest attempt of the slot. Written `running`
 * together with the claim, then `success` or `failed` when its holder
 * releases; `running` with no claim key left means the holder died.
 */
export interface ResultValue {
  node: string;
  attempt: number;
  result: SlotResult;
  startedAt: string;
  finishedAt?: string;
  backupId?: string;
  /** A stable reason (src/errors.ts) for a failure. */
  reason?: string;
}

/** The continuous writer key's value: who writes segments, since when, under which lease. */
export interface WriterValue {
  node: string;
  since: string;
  /** The etcd lease id (decimal string) the writer key is bound to. */
  lease: string;
}

export function encodeWriter(v: WriterValue): string {
  return JSON.stringify(v);
}

/** A manual backup (`etcd-backupd backup`): not coordinated, only recorded. */
export interface ManualValue {
  node: string;
  result: 'success' | 'failed';
  backupId: string;
  finishedAt: string;
  reason?: string;
  label?: string;
}

const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 1024;
const isOptStr = (v: unknown): boolean => v === undefined || isStr(v);
const isAttempt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 1000;

function parseObject(raw: string | Buffer | null | undefined): Record<string, unknown> | undefined {
  if (raw === null || raw === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(raw.toString());
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function encodeValue(v: ClaimValue | ResultValue | ManualValue): string {
  return JSON.stringify(v);
}

export function parseClaim(raw: string | Buffer | null | undefined): ClaimValue | undefined {
  const o = parseObject(raw);
  if (!o || !isStr(o.node) || !isAttempt(o.attempt) || !isStr(o.startedAt) || !isStr(o.lease)) return undefined;
  return { node: o.node, attempt: o.attempt, startedAt: o.startedAt, lease: o.lease };
}

export function parseResult(raw: string | Buffer | null | undefined): ResultValue | undefined {
  const o = parseObject(raw);
  if (!o || !isStr(o.node) || !isAttempt(o.attempt) || !isStr(o.startedAt)) return undefined;
  if (o.result !== 'running' && o.result !== 'success' && o.result !== 'failed') return undefined;
  if (!isOptStr(o.finishedAt) || !isOptStr(o.backupId) || !isOptStr(o.reason)) return undefined;
  const v: ResultValue = { node: o.node, attempt: o.attempt, result: o.result, startedAt: o.startedAt };
  if (o.finishedAt !== undefined) v.finishedAt = o.finishedAt as string;
  if (o.backupId !== undefined) v.backupId = o.backupId as string;
  if (o.reason !== undefined) v.reason = o.reason as string;
  return v;
}

export function parseManual(raw: string | Buffer | null | undefined): ManualValue | undefined {
  const o = parseObject(raw);
  if (!o || !isStr(o.node) || !isStr(o.backupId) || !isStr(o.finishedAt)) return undefined;
  if (o.result !== 'success' && o.result !== 'failed') return undefined;
  if (!isOptStr(o.reason) || !isOptStr(o.label)) return undefined;
  const v: ManualValue = { node: o.node, result: o.result, backupId: o.backupId, finishedAt: o.finishedAt };
  if (o.reason !== undefined) v.reason = o.reason as string;
  if (o.label !== undefined) v.label = o.label as string;
  return v;
}

export function parseWriter(raw: string | Buffer | null | undefined): WriterValue | undefined {
  const o = parseObject(raw);
  if (!o || !isStr(o.node) || !isStr(o.since) || !isStr(o.lease)) return undefined;
  return { node: o.node, since: o.since, lease: o.lease };
}
