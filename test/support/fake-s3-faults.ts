/**
 * The faults of test/support/fake-s3.ts: which requests a fault matches and
 * what it does to them (fail, hang, trickle, lie), switchable at any time.
 */
import type { ServerResponse } from 'node:http';
import type { S3Op } from './fake-s3.js';

export interface FaultMatch {
  op?: S3Op | S3Op[];
  /** HTTP method (PUT, GET, HEAD, POST, DELETE). */
  method?: string;
  /** Tested against the key (see LoggedRequest.key). */
  key?: RegExp;
  /** Query parameters the request must carry with these values, e.g. `{ partNumber: '2' }` for one part of every multipart upload. */
  query?: Record<string, string>;
  /** Only the next N matching requests; then it stops matching (requests it holds, hanging or trickling, stay held until off()/clear()). */
  times?: number;
}

export type FaultAction =
  /** Answer with this status and S3 error code (HEAD: status only, as S3 does). */
  | { kind: 'error'; status: number; code: string; message?: string }
  /** Never answer, until the fault is switched off (then the request is served) or the client gives up. */
  | { kind: 'hang' }
  /** GetObject: headers at once, then the body at this rate (full speed again once switched off). */
  | { kind: 'trickle'; bytesPerSecond: number }
  /** HeadObject: 200 for every key; real metadata when the key exists, else `contentLength` (default 1024). */
  | { kind: 'head-200'; contentLength?: number }
  /** ListObjectsV2: always IsTruncated, with the same NextContinuationToken, or with none at all. */
  | { kind: 'list-loop'; variant: 'same-token' | 'no-token' };

export interface Fault {
  readonly match: FaultMatch;
  readonly action: FaultAction;
  /** Requests this fault acted on. */
  hits: number;
  readonly active: boolean;
  off(): void;
}

export interface FakeS3Faults {
  add(match: FaultMatch, action: FaultAction): Fault;
  error(match: FaultMatch, status: number, code: string, message?: string): Fault;
  hang(match: FaultMatch): Fault;
  trickle(bytesPerSecond: number, match?: FaultMatch): Fault;
  head200(match?: FaultMatch, contentLength?: number): Fault;
  listLoop(variant: 'same-token' | 'no-token', match?: FaultMatch): Fault;
  /** Switches every fault off (hanging requests are then served). */
  clear(): void;
  active(): Fault[];
}

/** Where an op is the only one a fault kind makes sense for. */
const KIND_OP: Partial<Record<FaultAction['kind'], S3Op>> = { trickle: 'GetObject', 'head-200': 'HeadObject', 'list-loop': 'ListObjectsV2' };

export class FaultImpl implements Fault {
  hits = 0;
  private on = true;
  /** off() was called: held hangs are served, trickles finish at full speed. */
  released = false;
  private left: number | undefined;
  private readonly waiters = new Set<() => void>();
  constructor(
    readonly match: FaultMatch,
    readonly action: FaultAction,
  ) {
    this.left = match.times;
  }
  get active(): boolean {
    return this.on;
  }
  off(): void {
    this.on = false;
    this.released = true;
    for (const w of this.waiters) w();
    this.waiters.clear();
  }
  matches(op: S3Op, method: string, key: string, query: Record<string, string>): boolean {
    if (!this.on) return false;
    const ops = this.match.op === undefined ? (KIND_OP[this.action.kind] ? [KIND_OP[this.action.kind]!] : undefined) : [this.match.op].flat();
    if (ops && !ops.includes(op)) return false;
    if (this.match.method && this.match.method.toUpperCase() !== method) return false;
    if (this.match.key && !this.match.key.test(key)) return false;
    if (this.match.query && Object.entries(this.match.query).some(([k, v]) => query[k] !== v)) return false;
    return true;
  }
  /** Counts a hit; a fault limited to N requests turns itself off after the Nth (a hang it holds still waits for off()/clear()). */
  take(): void {
    this.hits++;
    if (this.left !== undefined && --this.left <= 0) this.on = false;
  }
  /** Resolves when off() is called (explicitly or by clear()) or `res` closes. */
  waitRelease(res: ServerResponse): Promise<void> {
    return new Promise((resolve) => {
      if (this.released) return resolve();
      const done = () => {
        this.waiters.delete(done);
        resolve();
      };
      this.waiters.add(done);
      res.once('close', done);
    });
  }
}

/** The `faults` handle of a fake S3 server, over its list of faults. */
export function faultControl(): { faults: FakeS3Faults; list: () => FaultImpl[] } {
  let faultList: FaultImpl[] = [];
  const faults: FakeS3Faults = {
    add(match, action) {
      const f = new FaultImpl(match, action);
      faultList.push(f);
      return f;
    },
    error: (match, status, code, message) => faults.add(match, { kind: 'error', status, code, message }),
    hang: (match) => faults.add(match, { kind: 'hang' }),
    trickle: (bytesPerSecond, match = {}) => faults.add(match, { kind: 'trickle', bytesPerSecond }),
    head200: (match = {}, contentLength) => faults.add(match, { kind: 'head-200', contentLength }),
    listLoop: (variant, match = {}) => faults.add(match, { kind: 'list-loop', variant }),
    clear() {
      for (const f of faultList) f.off();
      faultList = [];
    },
    active: () => faultList.filter((f) => f.active),
  };
  return { faults, list: () => faultList };
}
