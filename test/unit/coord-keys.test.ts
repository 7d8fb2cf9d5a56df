import { describe, expect, it } from 'vitest';
import { CoordKeys, encodeValue, parseClaim, parseManual, parseResult, parseSlotName, slotName } from '../../src/coord/keys.js';

describe('coord keys', () => {
  const k = new CoordKeys('prod-east');
  const slot = new Date('2025-03-04T02:00:00Z');

  it.each([
    ['claim', k.claim('backup', slot), '/etcd-backupd/prod-east/slots/backup/2025-03-04T02:00:00Z'],
    ['result', k.result('backup', slot), '/etcd-backupd/prod-east/results/backup/2025-03-04T02:00:00Z'],
    ['drill claim', k.claim('drill', slot), '/etcd-backupd/prod-east/slots/drill/2025-03-04T02:00:00Z'],
    ['manual', k.manual('20250304T021500Z-master-0'), '/etcd-backupd/prod-east/manual/20250304T021500Z-master-0'],
    ['prefix', k.prefix, '/etcd-backupd/prod-east/'],
  ])('%s key', (_what, got, want) => {
    expect(got).toBe(want);
  });

  it('every key is under /etcd-backupd/<cluster>/, never under /registry/', () => {
    for (const key of [k.claim('backup', slot), k.result('drill', slot), k.manual('20250304T021500Z-m')]) {
      expect(key.startsWith('/etcd-backupd/prod-east/')).toBe(true);
    }
  });

  it.each([
    ['a bad cluster name', () => new CoordKeys('a/b')],
    ['an empty cluster name', () => new CoordKeys('')],
    ['an unknown kind', () => k.claim('other' as never, slot)],
    ['a slot with milliseconds', () => k.claim('backup', new Date('2025-03-04T02:00:00.500Z'))],
    ['an invalid date', () => k.claim('backup', new Date('nope'))],
    ['a backup id with a slash', () => k.manual('x/../y')],
  ])('refuses %s', (_what, f) => {
    expect(f).toThrow(/coord:/);
  });

  it('slot names sort as times and round-trip', () => {
    const times = ['2025-12-31T23:59:59Z', '2025-01-01T00:00:00Z', '2025-06-15T12:30:00Z'].map((s) => new Date(s));
    const names = times.map(slotName);
    expect([...names].sort()).toEqual([...times].sort((a, b) => a.getTime() - b.getTime()).map(slotName));
    for (const n of names) expect(slotName(parseSlotName(n)!)).toBe(n);
    expect(parseSlotName('2025-13-01T00:00:00Z')).toBeUndefined();
    expect(parseSlotName('2025-01-01T00:00:00.000Z')).toBeUndefined();
    expect(parseSlotName('garbage')).toBeUndefined();
  });
});

describe('coord values', () => {
  it('round-trips claims, results and manual records', () => {
    const claim = { node: 'm0', attempt: 2, startedAt: '2025-03-04T02:00:01.000Z', lease: '7587862' };
    expect(parseClaim(encodeValue(claim))).toEqual(claim);
    const result = { node: 'm0', attempt: 2, result: 'failed' as const, startedAt: 'a', finishedAt: 'b', reason: 'source-failed' };
    expect(parseResult(Buffer.from(encodeValue(result)))).toEqual(result);
    const manual = { node: 'm1', result: 'success' as const, backupId: '20250304T021500Z-m1', finishedAt: 'c', label: 'pre-upgrade' };
    expect(parseManual(encodeValue(manual))).toEqual(manual);
  });

  it.each([
    ['null', null],
    ['not JSON', '{'],
    ['an array', '[]'],
    ['no node', '{"attempt":1,"startedAt":"a","lease":"1"}'],
    ['attempt 0', '{"node":"m","attempt":0,"startedAt":"a","lease":"1"}'],
    ['attempt a string', '{"node":"m","attempt":"1","startedAt":"a","lease":"1"}'],
  ])('a claim value that is %s reads as undefined', (_what, raw) => {
    expect(parseClaim(raw)).toBeUndefined();
  });

  it.each([
    ['an unknown result', '{"node":"m","attempt":1,"result":"maybe","startedAt":"a"}'],
    ['a numeric reason', '{"node":"m","attempt":1,"result":"failed","startedAt":"a","reason":5}'],
  ])('a result value with %s reads as undefined', (_what, raw) => {
    expect(parseResult(raw)).toBeUndefined();
  });

  it('a manual record must be success or failed', () => {
    expect(parseManual('{"node":"m","result":"running","backupId":"x","finishedAt":"a"}')).toBeUndefined();
  });
});
