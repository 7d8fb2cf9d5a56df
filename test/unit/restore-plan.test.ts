import { describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { fmtAge, parseAt, pickAt } from '../../src/catalog/at.js';
import { BackupError, reasonOf } from '../../src/errors.js';
import { nextSteps, planRestore, restoreArgv, type DataDirState, type RestoreFlags, type RestoreTools } from '../../src/restore/plan.js';

const P1 = 'https://10.0.0.1:2380';
const CLUSTER = `m1=${P1},m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380`;
const BASE: RestoreFlags = { dataDir: '/var/lib/etcd-new', name: 'm1', initialCluster: CLUSTER, initialAdvertisePeerUrls: P1 };
const BOTH: RestoreTools = { etcdutl: '/usr/bin/etcdutl', etcdctl: '/usr/bin/etcdctl' };
const CTL: RestoreTools = { etcdctl: '/usr/bin/etcdctl' };
const COMMON = ['snapshot', 'restore', '/t/snap.db', '--data-dir', '/var/lib/etcd-new', '--name', 'm1', '--initial-cluster', CLUSTER, '--initial-advertise-peer-urls', P1];

describe('restoreArgv: the tool and its flags', () => {
  const rows: { what: string; flags?: Partial<RestoreFlags>; tools: RestoreTools; argv: string[]; warn: boolean }[] = [
    {
      what: 'etcdutl, default bump and token',
      tools: BOTH,
      argv: ['/usr/bin/etcdutl', ...COMMON, '--initial-cluster-token', 'etcd-cluster', '--bump-revision', '1000000000', '--mark-compacted'],
      warn: false,
    },
    {
      what: 'etcdutl, bump disabled, own token',
      flags: { bumpRevision: 0, initialClusterToken: 'prod-etcd' },
      tools: { etcdutl: '/opt/etcdutl' },
      argv: ['/opt/etcdutl', ...COMMON, '--initial-cluster-token', 'prod-etcd'],
      warn: false,
    },
    { what: 'etcdutl, a smaller bump', flags: { bumpRevision: 5000 }, tools: BOTH, argv: ['/usr/bin/etcdutl', ...COMMON, '--initial-cluster-token', 'etcd-cluster', '--bump-revision', '5000', '--mark-compacted'], warn: false },
    { what: 'etcdctl 3.4: no bump flags, a warning', tools: CTL, argv: ['/usr/bin/etcdctl', ...COMMON, '--initial-cluster-token', 'etcd-cluster'], warn: true },
    { what: 'etcdctl with the bump disabled: no warning', flags: { bumpRevision: 0 }, tools: CTL, argv: ['/usr/bin/etcdctl', ...COMMON, '--initial-cluster-token', 'etcd-cluster'], warn: false },
  ];
  it.each(rows)('$what', ({ flags, tools, argv, warn }) => {
    const plan = planRestore({ ...BASE, ...flags }, tools, 'missing');
    expect(restoreArgv(plan, '/t/snap.db')).toEqual(argv);
    expect(plan.warnings.length > 0).toBe(warn);
    if (warn) expect(plan.warnings[0]).toMatch(/cannot bump the revision/);
  });
});

describe('planRestore refuses what etcd would not start from', () => {
  const rows: { what: string; flags?: Partial<RestoreFlags>; tools?: RestoreTools; state?: DataDirState; reason: string; msg: RegExp }[] = [
    { what: 'a non-empty data dir', state: 'not-empty', reason: 'restore-target-not-empty', msg: /is not empty; nothing was changed/ },
    { what: 'a file where the data dir goes', state: 'not-a-directory', reason: 'restore-target-not-empty', msg: /not a directory/ },
    { what: '--name missing from --initial-cluster', flags: { name: 'm9' }, reason: 'usage', msg: /names no member "m9"/ },
    { what: 'advertise URL differs from the member entry', flags: { initialAdvertisePeerUrls: 'https://10.0.0.9:2380' }, reason: 'usage', msg: /must match/ },
    { what: 'an entry without =', flags: { initialCluster: `m1=${P1},m2` }, reason: 'usage', msg: /not NAME=PEER-URL/ },
    { what: 'a peer URL without a port', flags: { initialCluster: 'm1=https://10.0.0.1', initialAdvertisePeerUrls: 'https://10.0.0.1' }, reason: 'usage', msg: /not a peer URL/ },
    { what: 'a peer URL that is no URL', flags: { initialCluster: 'm1=10.0.0.1:2380' }, reason: 'usage', msg: /not a peer URL|not a URL/ },
    { what: 'a relative data dir', flags: { dataDir: 'etcd-new' }, reason: 'usage', msg: /absolute path/ },
    { what: 'a negative bump', flags: { bumpRevision: -1 }, reason: 'usage', msg: /bump-revision/ },
    { what: 'no tool at all', tools: {}, reason: 'restore-tool-missing', msg: /neither etcdutl nor etcdctl/ },
  ];
  it.each(rows)('$what', ({ flags, tools, state, reason, msg }) => {
    let caught: unknown;
    try {
      planRestore({ ...BASE, ...flags }, tools ?? BOTH, state ?? 'missing');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(BackupError);
    expect(reasonOf(caught)).toBe(reason);
    expect((caught as BackupError).message).toMatch(msg);
    expect((caught as BackupError).hint).toBeTruthy();
  });

  it.each(['missing', 'empty'] as const)('restores into a %s data dir', (state) => {
    expect(planRestore(BASE, BOTH, state).tool).toBe('etcdutl');
  });

  it('takes several advertise URLs when --initial-cluster lists them all for the member', () => {
    const p = planRestore({ ...BASE, initialCluster: `m1=${P1},m1=http://127.0.0.1:2380`, initialAdvertisePeerUrls: `${P1},http://127.0.0.1:2380` }, CTL, 'empty');
    expect(p.advertisePeerUrls).toEqual([P1, 'http://127.0.0.1:2380']);
  });
});

describe('nextSteps', () => {
  it('names the other members, the token and the OpenShift way out', () => {
    const steps = nextSteps(planRestore({ ...BASE, initialClusterToken: 'tok-1' }, BOTH, 'missing')).join('\n');
    expect(steps).toMatch(/other members: m2, m3/);
    expect(steps).toMatch(/--initial-cluster-token tok-1/);
    expect(steps).toMatch(/endpoint status/);
    expect(steps).toMatch(/OpenShift: do NOT use restore/);
  });
});

describe('--at: the newest usable backup at or before TIME', () => {
  const m = (id: string, createdAt: string): Manifest => ({ id, createdAt }) as Manifest;
  const backups = [m('c', '2026-11-26T12:00:00.000Z'), m('b', '2026-11-26T06:00:00.000Z'), m('a', '2026-11-25T00:00:00.000Z')];
  const rows: { at: string; usable?: string[]; id: string | null; before?: number }[] = [
    { at: '2026-11-26T12:00:00Z', id: 'c', before: 0 },
    { at: '2026-11-26T11:59:59Z', id: 'b', before: 21599_000 },
    { at: '2026-11-26T07:00:00+01:00', id: 'b', before: 0 },
    { at: '2026-11-27T00:00:00Z', usable: ['a', 'b'], id: 'b' },
    { at: '2026-11-24T23:59:59Z', id: null },
  ];
  it.each(rows)('$at → $id', ({ at, usable, id, before }) => {
    const pick = () => pickAt(backups, parseAt(at, new Date()), (x) => !usable || usable.includes(x.id), 'nfs');
    if (id === null) {
      expect(pick).toThrow(/no usable committed backup taken at or before 2026-11-24T23:59:59.000Z/);
      return;
    }
    expect(pick().manifest.id).toBe(id);
    if (before !== undefined) expect(pick().beforeMs).toBe(before);
  });

  it('takes now, refuses times without a zone', () => {
    const now = new Date('2026-11-26T20:00:00Z');
    expect(parseAt('now', now)).toBe(now);
    expect(() => parseAt('2026-11-26T20:00:00', now)).toThrow(/with a zone/);
    expect(() => parseAt('yesterday', now)).toThrow(/not "now"/);
  });

  it.each([
    [0, '0s'],
    [42_000, '42s'],
    [303_000, '5m3s'],
    [7_500_000, '2h5m'],
    [3 * 86400_000 + 4 * 3600_000, '3d4h'],
  ])('fmtAge(%i) = %s', (ms, s) => expect(fmtAge(ms)).toBe(s));
});
