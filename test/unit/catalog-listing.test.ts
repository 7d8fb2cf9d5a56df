import { describe, expect, it } from 'vitest';
import { groupListing, pinnedState, versionOf, type PinEvent } from '../../src/catalog/listing.js';
import { parsePinMarkerName, pinMarkerKey } from '../../src/layout.js';
import { parsePinMarker, pinMarkerBody } from '../../src/catalog/pin-marker.js';

const T = (s: string) => new Date(s);

describe('groupListing', () => {
  it('groups keys by backup directory, newest id first, with node, time, manifest version and markers', () => {
    const listed = groupListing('c1', [
      { key: 'c1/20261126T010000Z-m0/backup.tar', size: 10, modifiedAt: T('2026-11-26T01:00:01Z') },
      { key: 'c1/20261126T010000Z-m0/manifest.json', size: 5, modifiedAt: T('2026-11-26T01:00:02Z'), etag: '"abc"' },
      { key: 'c1/20261126T010000Z-m0/pins/20261126T030000.000Z-unpin-bb.json', size: 3, modifiedAt: T('2026-11-26T03:00:00Z') },
      { key: 'c1/20261126T010000Z-m0/pins/20261126T020000.000Z-pin-aa.json', size: 3, modifiedAt: T('2026-11-26T02:00:00Z') },
      { key: 'c1/20261126T020000Z-ocp-master-1/backup.tar', size: 10, modifiedAt: T('2026-11-26T02:00:01Z') },
      { key: 'c1/not-an-id/manifest.json', size: 1 },
      { key: 'c1/stray-file', size: 1 },
    ]);
    expect(listed.map((b) => b.id)).toEqual(['not-an-id', '20261126T020000Z-ocp-master-1', '20261126T010000Z-m0']);
    const [odd, incomplete, done] = listed;
    expect(odd).toMatchObject({ id: 'not-an-id', manifest: { key: 'c1/not-an-id/manifest.json', version: 'mtime:none:1' } });
    expect(odd!.node).toBeUndefined();
    expect(incomplete).toMatchObject({ node: 'ocp-master-1', time: T('2026-11-26T02:00:00Z'), keys: ['c1/20261126T020000Z-ocp-master-1/backup.tar'] });
    expect(incomplete!.manifest).toBeUndefined();
    expect(done).toMatchObject({ node: 'm0', manifest: { version: 'etag:"abc":5' }, newest: T('2026-11-26T03:00:00Z') });
    expect(done!.keys).toHaveLength(4);
    expect(done!.pins.map((p) => p.op)).toEqual(['pin', 'unpin']);
  });

  it('a name in pins/ that is not a marker is a key of the backup, not a pin', () => {
    const [b] = groupListing('c1', [
      { key: 'c1/20261126T010000Z-m0/manifest.json', size: 5 },
      { key: 'c1/20261126T010000Z-m0/pins/garbage.json', size: 3 },
      { key: 'c1/20261126T010000Z-m0/pins/20261126T020000.000Z-pin-XYZ.json', size: 3 },
    ]);
    expect(b!.pins).toEqual([]);
    expect(b!.keys).toHaveLength(3);
  });
});

describe('pinnedState', () => {
  const ev = (at: string, op: 'pin' | 'unpin', key = at): PinEvent => ({ at: T(at), op, key, version: 'v' });
  it.each([
    ['no markers: the manifest flag', true, [], true],
    ['no markers, unpinned manifest', false, [], false],
    ['the newest marker wins over the manifest', true, [ev('2026-01-01T00:00:00Z', 'unpin')], false],
    ['pin then unpin', false, [ev('2026-01-01T00:00:00Z', 'pin'), ev('2026-01-02T00:00:00Z', 'unpin')], false],
    ['unpin then pin', false, [ev('2026-01-01T00:00:00Z', 'unpin'), ev('2026-01-02T00:00:00Z', 'pin')], true],
  ] as const)('%s', (_, manifestPinned, pins, want) => {
    expect(pinnedState(manifestPinned, pins).pinned).toBe(want);
  });
});

describe('pin marker names and bodies', () => {
  it('round-trip through the key and the listing', () => {
    const at = T('2026-11-26T19:24:00.123Z');
    const key = pinMarkerKey('c1', '20261126T010000Z-m0', at, 'unpin', '0a1b2c3d');
    expect(key).toBe('c1/20261126T010000Z-m0/pins/20261126T192400.123Z-unpin-0a1b2c3d.json');
    expect(parsePinMarkerName(key.slice('c1/20261126T010000Z-m0/'.length))).toEqual({ at, op: 'unpin', name: 'pins/20261126T192400.123Z-unpin-0a1b2c3d.json' });
    expect(parsePinMarkerName('pins/20261126T192400Z-pin-aa.json')).toBeUndefined();
    expect(parsePinMarkerName('manifest.json')).toBeUndefined();
    expect(parsePinMarker(pinMarkerBody('x', 'pin', at, 'm0', 'why'))).toEqual({ format: 1, id: 'x', op: 'pin', at: at.toISOString(), by: 'm0', reason: 'why' });
    expect(parsePinMarker('{"format":2}')).toBeUndefined();
    expect(parsePinMarker('not json')).toBeUndefined();
  });

  it('versionOf prefers the ETag and falls back to size and time', () => {
    expect(versionOf({ key: 'k', size: 3, etag: '"e"', modifiedAt: T('2026-01-01T00:00:00Z') })).toBe('etag:"e":3');
    expect(versionOf({ key: 'k', size: 3, modifiedAt: T('2026-01-01T00:00:00Z') })).toBe(`mtime:${T('2026-01-01T00:00:00Z').getTime()}:3`);
  });
});
