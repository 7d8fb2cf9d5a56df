/**
 * Deterministic randomness for the fuzz tests: the seeded PRNG of ./rng.ts (mulberry32),
 * so a failing case is reproduced by its seed, plus generators of hostile
 * values and helpers to mutate plain JSON-like documents by path.
 */

import { rng } from './rng.js';

export type Path = (string | number)[];

export class Rng {
  /** [0, 1) */
  readonly next: () => number;
  constructor(readonly seed: number) {
    this.next = rng(seed >>> 0 || 1);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  string(max = 12): string {
    const alphabet = 'abcXYZ019_-./: \t\n"\'{}[],&*!|>%@`#~\\\u0000\u00e9\u2028\ud83d\ude00';
    let s = '';
    const n = this.int(max + 1);
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
}

/** Values of every JSON type and a few that only JavaScript has, biased toward edge cases. */
export function hostileValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 3 ? 14 : 18)) {
    case 0:
      return null;
    case 1:
      return r.bool();
    case 2:
      return r.pick([0, -0, 1, -1, 0.5, 2 ** 31, 2 ** 53 + 2, -(2 ** 53), 1e308, Number.MAX_VALUE, Number.MIN_VALUE, 65536, 99999]);
    case 3:
      return r.pick([Infinity, -Infinity, NaN]);
    case 4:
      return r.string();
    case 5:
      return '';
    case 6:
      return r.pick(['0', '1s', '30d', '99999999999999d', '1e3s', '-5s', '1h30m', 'P1D', '1y', '24855d', '25d']);
    case 7:
      return r.pick(['* * * * * *', '0 0 30 2 *', '61 * * * *', '*/0 * * * *', '0 2 1 * 1', '@daily', 'a b c d e']);
    case 8:
      return r.pick(['UTC', 'Europe/Berlin', 'Mars/Olympus', '+05:00', 'utc', '']);
    case 9:
      return r.pick(['/', '/tmp', 'relative/dir', '../../etc', '\0', '/dev/null', 'x'.repeat(5000)]);
    case 10:
      return r.pick(['http://127.0.0.1:2379', 'https://127.0.0.1:2379', 'ftp://x', 'http://', 'not a url', 'http://[::1]:2379']);
    case 11:
      return r.pick(['127.0.0.1:0', '0.0.0.0:9979', '[::1]:9979', 'x:99999', ':80', 'host:port', '[zz]:1']);
    case 12:
      return 'x'.repeat(r.pick([64, 65, 1000, 100_000]));
    case 13:
      return r.pick(['local', 's3', 'sftp', 'cluster-backup', 'etcdctl', 'readback', 'size', 'aws:kms', 'AES256']);
    case 14:
      return Array.from({ length: r.int(4) }, () => hostileValue(r, depth + 1));
    case 15: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(4); i > 0; i--) o[r.pick(['name', 'type', 'path', r.string(6), '__proto__', 'constructor'])] = hostileValue(r, depth + 1);
      return o;
    }
    case 16:
      return deepNest(r.pick([50, 500, 3000]), r.bool());
    default:
      return r.pick([[], {}, [[]], [{}]]);
  }
}

export function deepNest(depth: number, arrays: boolean): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = arrays ? [v] : { a: v };
  return v;
}

/** Every path to a value inside `doc` (objects and arrays), the root excluded. */
export function allPaths(doc: unknown, base: Path = [], maxDepth = 12): Path[] {
  const out: Path[] = [];
  if (base.length >= maxDepth) return out;
  if (Array.isArray(doc)) {
    doc.forEach((v, i) => {
      out.push([...base, i]);
      out.push(...allPaths(v, [...base, i], maxDepth));
    });
  } else if (doc && typeof doc === 'object') {
    for (const [k, v] of Object.entries(doc)) {
      out.push([...base, k]);
      out.push(...allPaths(v, [...base, k], maxDepth));
    }
  }
  return out;
}

export function getAt(doc: unknown, path: Path): unknown {
  let v = doc as Record<string | number, unknown> | undefined;
  for (const p of path) v = v?.[p] as Record<string | number, unknown> | undefined;
  return v;
}

function parentOf(doc: unknown, path: Path): Record<string | number, unknown> | unknown[] | undefined {
  const parent = getAt(doc, path.slice(0, -1));
  return parent && typeof parent === 'object' ? (parent as Record<string | number, unknown>) : undefined;
}

export function setAt(doc: unknown, path: Path, value: unknown): void {
  const parent = parentOf(doc, path);
  if (!parent) return;
  Object.defineProperty(parent, path[path.length - 1]!, { value, enumerable: true, writable: true, configurable: true });
}

export function deleteAt(doc: unknown, path: Path): void {
  const parent = parentOf(doc, path);
  if (!parent) return;
  const k = path[path.length - 1]!;
  if (Array.isArray(parent) && typeof k === 'number') parent.splice(k, 1);
  else delete (parent as Record<string | number, unknown>)[k];
}

/** A deep copy; a structure too deep to copy is shared instead (the fuzzers only ever add to documents). */
export function clone<T>(v: T): T {
  try {
    return structuredClone(v);
  } catch {
    return v;
  }
}
