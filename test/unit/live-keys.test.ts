import { describe, expect, it } from 'vitest';
import { BboltFormatError } from '../../src/etcd/bbolt.js';
import { compareLiveKeys, decodeKeyValue, type KeyFacts } from '../../src/etcd/live-keys.js';

/** An mvccpb.KeyValue as etcd encodes it (fields in order, zero values left out). */
function kv(key: string, o: { create?: number; mod?: number; version?: number; value?: string; lease?: number }): Buffer {
  const varint = (n: number) => {
    const out: number[] = [];
    while (n >= 0x80) {
      out.push((n % 128) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(n);
    return Buffer.from(out);
  };
  const bytes = (field: number, b: Buffer) => Buffer.concat([varint(field * 8 + 2), varint(b.length), b]);
  const num = (field: number, n?: number) => (n ? Buffer.concat([varint(field * 8), varint(n)]) : Buffer.alloc(0));
  return Buffer.concat([bytes(1, Buffer.from(key)), num(2, o.create), num(3, o.mod), num(4, o.version), o.value ? bytes(5, Buffer.from(o.value)) : Buffer.alloc(0), num(6, o.lease)]);
}

describe('decodeKeyValue', () => {
  it('reads key, revisions, version and value; skips the lease', () => {
    const d = decodeKeyValue(kv('/a', { create: 5, mod: 300_000, version: 3, value: 'v', lease: 7587869523423 }));
    expect(d.key.toString()).toBe('/a');
    expect(d.value.toString()).toBe('v');
    expect([d.createRevision, d.modRevision, d.version]).toEqual([5, 300_000, 3]);
  });
  it.each([
    ['no key', Buffer.from([0x10, 0x01])],
    ['a field running past the end', Buffer.from([0x0a, 0x05, 0x61])],
    ['a truncated varint', Buffer.from([0x10, 0x80])],
    ['a fixed64 field', Buffer.from([0x09, 0, 0, 0, 0, 0, 0, 0, 0])],
  ])('refuses %s', (_n, b) => {
    expect(() => decodeKeyValue(b)).toThrow(BboltFormatError);
  });
});

describe('compareLiveKeys', () => {
  const f = (value: string, createRevision = 2, modRevision = 2, version = 1): KeyFacts => ({ value, createRevision, modRevision, version });
  const m = (o: Record<string, KeyFacts>) => new Map(Object.entries(o));
  // [name, expected (the full backup), actual (the replay), counts [missing, extra, changed], first differences]
  const rows: [string, Map<string, KeyFacts>, Map<string, KeyFacts>, [number, number, number], { key: string; what: string[] }[]][] = [
    ['equal', m({ '/a': f('x'), '/b': f('y') }), m({ '/b': f('y'), '/a': f('x') }), [0, 0, 0], []],
    ['both empty', m({}), m({}), [0, 0, 0], []],
    ['a key missing from the replay', m({ '/a': f('x'), '/b': f('y') }), m({ '/a': f('x') }), [1, 0, 0], [{ key: '"/b"', what: ['missing'] }]],
    ['an extra key in the replay', m({ '/a': f('x') }), m({ '/a': f('x'), '/z': f('q') }), [0, 1, 0], [{ key: '"/z"', what: ['extra'] }]],
    ['another value', m({ '/a': f('x') }), m({ '/a': f('X') }), [0, 0, 1], [{ key: '"/a"', what: ['value'] }]],
    ['same value, other revisions and version', m({ '/a': f('x', 2, 9, 3) }), m({ '/a': f('x', 3, 8, 2) }), [0, 0, 1], [{ key: '"/a"', what: ['createRevision', 'modRevision', 'version'] }]],
    ['first differences in key order, whatever their kind', m({ '/c': f('x'), '/a': f('1'), '/b': f('2') }), m({ '/a': f('0'), '/0': f('n') }), [2, 1, 1], [{ key: '"/0"', what: ['extra'] }, { key: '"/a"', what: ['value'] }, { key: '"/b"', what: ['missing'] }, { key: '"/c"', what: ['missing'] }]],
    ['a binary key is shown in hex', m({ '\u0000\u00ff': f('x') }), m({}), [1, 0, 0], [{ key: '0x00ff', what: ['missing'] }]],
  ];
  it.each(rows)('%s', (_n, want, got, [missing, extra, changed], first) => {
    const c = compareLiveKeys(want, got);
    expect([c.missing, c.extra, c.changed]).toEqual([missing, extra, changed]);
    expect(c.first).toEqual(first);
    expect([c.expectedKeys, c.actualKeys]).toEqual([want.size, got.size]);
  });
  it('names at most `limit` keys, counts them all', () => {
    const want = m(Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`/k${String(i).padStart(2, '0')}`, f('x')])));
    const c = compareLiveKeys(want, m({}), 3);
    expect(c.missing).toBe(50);
    expect(c.first.map((d) => d.key)).toEqual(['"/k00"', '"/k01"', '"/k02"']);
  });
});
