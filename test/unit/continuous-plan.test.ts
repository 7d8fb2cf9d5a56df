import { describe, expect, it } from 'vitest';
import { planReplay, type BaseRef, type SegmentRef } from '../../src/continuous/plan.js';
import { decodeRecord, encodeRecord } from '../../src/continuous/segment.js';
import { parseSegmentManifestName, segmentKeys, splitBackupKey, segmentManifestName, segmentObjectName } from '../../src/layout.js';

const T0 = Date.UTC(2026, 10, 26, 10, 0, 0);
const at = (s: number) => new Date(T0 + s * 1000);
const base = (id: string, revision: number, s: number): BaseRef => ({ id, revision, createdAt: at(s) });
const seg = (fromRev: number, toRev: number, first: number, last: number): SegmentRef => ({ key: `${fromRev}-${toRev}`, fromRev, toRev, firstTime: at(first), lastTime: at(last) });

describe('planReplay', () => {
  const B1 = base('b1', 100, 0);
  const B2 = base('b2', 500, 3600);
  const chain1 = [seg(101, 150, 1, 10), seg(151, 300, 11, 20), seg(301, 520, 21, 3605)];
  const chain2 = [seg(501, 600, 3601, 3610)];
  const of = (m: Record<string, SegmentRef[]>) => (id: string) => m[id] ?? [];

  const rows: [string, BaseRef[], Record<string, SegmentRef[]>, number, { base: string; keys: string[]; maxRev: number } | { reason: string; from?: number; to?: number }][] = [
    ['no base before TIME', [B2], {}, 10, { reason: 'no-base' }],
    ['base alone (no segments yet)', [B1], {}, 30, { base: 'b1', keys: [], maxRev: 100 }],
    ['whole segments up to TIME, then a partial one', [B1], { b1: chain1 }, 15, { base: 'b1', keys: ['101-150', '151-300'], maxRev: 300 }],
    ['TIME before the first segment: the base alone', [B1], { b1: chain1 }, 0.5, { base: 'b1', keys: [], maxRev: 100 }],
    ['segments seen after TIME are not used', [B1], { b1: chain1 }, 10, { base: 'b1', keys: ['101-150'], maxRev: 150 }],
    ['a gap before TIME is an error naming the range', [B1], { b1: [seg(101, 150, 1, 10), seg(171, 300, 11, 20)] }, 30, { reason: 'segment-gap', from: 151, to: 170 }],
    ['a gap after TIME does not matter', [B1], { b1: [seg(101, 150, 1, 10), seg(171, 300, 40, 50)] }, 30, { base: 'b1', keys: ['101-150'], maxRev: 150 }],
    ['overlapping segments (writer failover): the one reaching furthest', [B1], { b1: [seg(101, 150, 1, 10), seg(101, 120, 1, 5), seg(121, 200, 5, 12), seg(140, 260, 9, 14)] }, 30, { base: 'b1', keys: ['101-150', '140-260'], maxRev: 260 }],
    ['newest base with its chain', [B1, B2], { b1: chain1, b2: chain2 }, 3700, { base: 'b2', keys: ['501-600'], maxRev: 600 }],
    ['an older base whose chain reaches closer to TIME', [B1, B2], { b1: chain1 }, 3650, { base: 'b1', keys: ['101-150', '151-300', '301-520'], maxRev: 520 }],
    ['a gap in the newest chain is not hidden by an older base', [B1, B2], { b1: chain1, b2: [seg(501, 550, 3601, 3605), seg(561, 600, 3606, 3610)] }, 3700, { reason: 'segment-gap', from: 551, to: 560 }],
    ['an empty base (revision 0): the chain starts at 2, etcd\'s first change', [base('b0', 0, 0)], { b0: [seg(2, 9, 1, 5)] }, 30, { base: 'b0', keys: ['2-9'], maxRev: 9 }],
    ['a segment below the base revision is ignored', [B2], { b2: [seg(400, 500, 3500, 3600), ...chain2] }, 3700, { base: 'b2', keys: ['501-600'], maxRev: 600 }],
  ];
  it.each(rows)('%s', (_name, bases, segs, s, want) => {
    const r = planReplay(bases, of(segs), at(s));
    if ('reason' in want) {
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.reason).toBe(want.reason);
        if (r.reason === 'segment-gap') expect([r.missingFrom, r.missingTo]).toEqual([want.from, want.to]);
      }
    } else {
      expect(r.ok).toBe(true);
      if (r.ok) expect({ base: r.plan.base.id, keys: r.plan.segments.map((x) => x.key), maxRev: r.plan.maxRev }).toEqual(want);
    }
  });
});

describe('segment names and records', () => {
  it('names sort by revision and parse back', () => {
    expect(segmentManifestName(5, 12)).toBe('00000000000000000005-00000000000000000012.json');
    expect(segmentObjectName(5, 12, { codec: 'zstd', encrypted: true })).toBe('00000000000000000005-00000000000000000012.seg.zst.age');
    expect(parseSegmentManifestName(segmentManifestName(99, 100))).toEqual({ fromRev: 99, toRev: 100 });
    for (const bad of ['1-2.json', '00000000000000000009-00000000000000000008.json', 'x.json', '00000000000000000000-00000000000000000001.json']) expect(parseSegmentManifestName(bad)).toBeUndefined();
    expect(() => segmentManifestName(9, 8)).toThrow(/backwards/);
    // Never taken for a backup directory by the catalog (listing, latest, retention).
    expect(splitBackupKey('c1', 'c1/continuous/20261126T100000Z-master-0/00000000000000000005-00000000000000000012.json')).toBeUndefined();
    expect(splitBackupKey('c1', 'c1/20261126T100000Z-master-0/manifest.json')).toEqual({ id: '20261126T100000Z-master-0', name: 'manifest.json' });
    expect(segmentKeys('c1', '20261126T100000Z-master-0', 5, 12, { codec: 'none', encrypted: false })).toEqual({
      dir: 'c1/continuous/20261126T100000Z-master-0',
      object: 'c1/continuous/20261126T100000Z-master-0/00000000000000000005-00000000000000000012.seg',
      manifest: 'c1/continuous/20261126T100000Z-master-0/00000000000000000005-00000000000000000012.json',
    });
  });

  it('records round-trip bytes exactly, and a corrupt line fails loudly', () => {
    const r = { rev: 7, time: '2026-11-26T10:00:00.123Z', ops: [{ put: Buffer.from([0, 255, 10]), value: Buffer.from('v\n'), lease: '42' }, { del: Buffer.from('/k') }] };
    const line = encodeRecord(r);
    expect(line.endsWith('\n')).toBe(true);
    expect(line.slice(0, -1)).not.toContain('\n');
    expect(decodeRecord(line.trim())).toEqual(r);
    expect(() => decodeRecord('{"rev":7')).toThrow(/not JSON/);
    expect(() => decodeRecord('{"rev":7,"time":"2026-11-26T10:00:00Z","ops":[]}')).toThrow();
    expect(() => decodeRecord('{"rev":-1,"time":"2026-11-26T10:00:00Z","ops":[{"del":"AA=="}]}')).toThrow();
  });
});

describe('segment manifests are signed like backups', () => {
  it('sign, check, and a changed range is untrusted', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { checkSignature, keyIdOf, signManifest } = await import('../../src/bundle/sign.js');
    const { segmentManifestSchema } = await import('../../src/continuous/segment.js');
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const keyId = keyIdOf(publicKey);
    const m = segmentManifestSchema.parse({
      format: 1, kind: 'segment', cluster: 'c1', base: '20261126T100000Z-master-0', node: 'master-1', fromRev: 101, toRev: 150, revisions: 50,
      firstTime: '2026-11-26T10:00:01Z', lastTime: '2026-11-26T10:00:10Z', createdAt: '2026-11-26T10:00:11Z', tool: { name: 'etcd-backupd', version: '1' },
      object: { key: 'c1/continuous/x/a.seg', size: 10, sha256: 'a'.repeat(64), encrypted: false, recipients: [], codec: 'none', rawSize: 10 },
    });
    const signed = signManifest(m, { privateKey, keyId });
    expect(segmentManifestSchema.parse(signed)).toEqual(signed);
    const trusted = new Map([[keyId, publicKey]]);
    expect(checkSignature(signed, trusted)).toBe('trusted');
    expect(checkSignature({ ...signed, toRev: 151, revisions: 51 }, trusted)).toBe('untrusted');
    expect(checkSignature(m, trusted)).toBe('none');
  });
});
