/**
 * Issue 19's pure parts: the static pod revisions from the archive's entry
 * names, the members as the manifest records them, the new manifest fields
 * (old manifests still parse; the signature covers the new fields) and the
 * restore warnings when the members given differ from those recorded.
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { manifestSchema, parseManifest, type Manifest } from '../../src/bundle/manifest.js';
import { checkSignature, keyIdOf, signManifest } from '../../src/bundle/sign.js';
import { manifestMembers } from '../../src/run/cluster-metadata.js';
import { memberWarnings, parseInitialCluster } from '../../src/restore/plan.js';
import { revisionOfEntry, revisionsOf } from '../../src/source/static-revisions.js';

describe('static pod revisions from the archive entry names', () => {
  it.each([
    ['static-pod-resources/kube-apiserver-pod-7/', { pod: 'kube-apiserver', revision: 7 }],
    ['static-pod-resources/kube-apiserver-pod-7/secrets/serving-cert/tls.key', { pod: 'kube-apiserver', revision: 7 }],
    ['./static-pod-resources/etcd-pod-12/etcd-pod.yaml', { pod: 'etcd', revision: 12 }],
    ['static-pod-resources/kube-controller-manager-pod-5', { pod: 'kube-controller-manager', revision: 5 }],
    ['static-pod-resources/etcd-certs/configmaps/x', undefined],
    ['manifests/etcd-pod.yaml', undefined],
    ['kubernetes/static-pod-resources/etcd-pod-3/', undefined],
    ['static-pod-resources/etcd-pod-x/', undefined],
    ['static-pod-resources/etcd-pod-3x/', undefined],
    ['static-pod-resources/-pod-3/', undefined],
  ])('%s', (name, want) => expect(revisionOfEntry(name)).toEqual(want));

  it('one revision per pod; a pod archived with two revisions is left out, not guessed', () => {
    const names = [
      'static-pod-resources/kube-apiserver-pod-7/',
      'static-pod-resources/kube-apiserver-pod-7/a',
      'static-pod-resources/kube-scheduler-pod-4/a',
      'static-pod-resources/etcd-pod-3/a',
      'static-pod-resources/etcd-pod-2/a',
      'README',
    ];
    expect(revisionsOf(names)).toEqual({ 'kube-apiserver': 7, 'kube-scheduler': 4 });
    expect(revisionsOf([])).toEqual({});
  });
});

describe('manifestMembers', () => {
  it('names, URLs, the leader, learners and versions; nothing without a member list', () => {
    const facts = {
      leader: '222',
      members: [
        { id: '111', name: 'm0', reachable: true, isLearner: false, peerURLs: ['https://10.0.0.1:2380'], clientURLs: ['https://10.0.0.1:2379'], version: '3.5.17' },
        { id: '222', name: 'm1', reachable: true, isLearner: false, peerURLs: ['https://10.0.0.2:2380'], clientURLs: ['https://10.0.0.2:2379'], version: '3.5.17' },
        { id: '333', name: '', reachable: false, isLearner: true, peerURLs: ['https://10.0.0.3:2380'] },
      ],
    };
    expect(manifestMembers(facts)).toEqual([
      { id: '111', name: 'm0', peerURLs: ['https://10.0.0.1:2380'], clientURLs: ['https://10.0.0.1:2379'], version: '3.5.17' },
      { id: '222', name: 'm1', peerURLs: ['https://10.0.0.2:2380'], clientURLs: ['https://10.0.0.2:2379'], leader: true, version: '3.5.17' },
      { id: '333', name: '', peerURLs: ['https://10.0.0.3:2380'], clientURLs: [], learner: true },
    ]);
    expect(manifestMembers({})).toBeUndefined();
    expect(manifestMembers({ leader: '0', members: [{ id: '0', name: 'm0', reachable: true, isLearner: false }] })![0]!.leader).toBeUndefined();
  });
});

const OLD = {
  format: 1,
  id: '20260101T000000Z-m0',
  cluster: 'c1',
  node: 'm0',
  trigger: 'manual',
  pinned: false,
  createdAt: '2026-01-01T00:00:00.000Z',
  startedAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:00:01.000Z',
  tool: { name: 'etcd-backupd', version: '0.1.0' },
  source: { type: 'cluster-backup', possiblyDirty: false },
  preflight: { forced: false, failedChecks: [] },
  etcd: { revision: 42, totalKey: 5, hash: 1, totalSize: 4096 },
  artifacts: [{ name: 'snapshot_x.db', size: 1, sha256: 'a'.repeat(64) }],
};
const NEW = {
  ...OLD,
  label: 'pre-upgrade-4.17.3',
  clusterVersion: '4.17.2',
  clusterVersionFrom: 'openshift',
  members: [{ id: '1', name: 'm0', peerURLs: ['https://10.0.0.1:2380'], clientURLs: ['https://10.0.0.1:2379'], leader: true, version: '3.5.17' }],
  staticPodRevisions: { 'kube-apiserver': 7, etcd: 3 },
};

describe('the manifest', () => {
  it('an old manifest without the new fields still parses; a new one round-trips', () => {
    expect(parseManifest(JSON.stringify(OLD), 'old')).toEqual(OLD);
    expect(parseManifest(JSON.stringify(NEW), 'new')).toEqual(NEW);
  });

  it.each([
    ['clusterVersionFrom', { clusterVersionFrom: 'oc' }],
    ['clusterVersion with a control character', { clusterVersion: '4.17.2\u001b[2J' }],
    ['desiredVersion with a space', { desiredVersion: '4.17.3 now' }],
    ['members[].leader', { members: [{ ...NEW.members[0], leader: false }] }],
    ['members[] unknown key', { members: [{ ...NEW.members[0], role: 'x' }] }],
    ['staticPodRevisions bad name', { staticPodRevisions: { 'Kube/API': 7 } }],
    ['staticPodRevisions negative', { staticPodRevisions: { etcd: -1 } }],
  ])('refuses a bad %s', (_what, patch) => {
    expect(manifestSchema.safeParse({ ...NEW, ...patch }).success).toBe(false);
  });

  it('the signature covers the cluster version, members and revisions', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const key = { privateKey, keyId: keyIdOf(publicKey) };
    const trusted = new Map([[key.keyId, publicKey]]);
    const signed = signManifest(manifestSchema.parse(NEW), key);
    expect(checkSignature(signed, trusted)).toBe('trusted');
    const tampered: Manifest[] = [
      { ...signed, clusterVersion: '4.16.0' },
      { ...signed, desiredVersion: '4.17.3' },
      { ...signed, staticPodRevisions: { 'kube-apiserver': 6, etcd: 3 } },
      { ...signed, members: [{ ...signed.members![0]!, peerURLs: ['https://10.9.9.9:2380'] }] },
    ];
    for (const t of tampered) expect(checkSignature(t, trusted)).toBe('untrusted');
  });
});

describe('memberWarnings: restore against the members the backup was taken with', () => {
  const recorded = [
    { name: 'm1', peerURLs: ['https://10.0.0.1:2380'] },
    { name: 'm2', peerURLs: ['https://10.0.0.2:2380'] },
    { name: 'm3', peerURLs: ['https://10.0.0.3:2380'] },
  ];
  const plan = (name: string, cluster: string) => ({ name, members: parseInitialCluster(cluster) });
  const SAME = 'm1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380';
  const rows: { what: string; name: string; cluster: string; recorded?: typeof recorded; warn: RegExp[] }[] = [
    { what: 'the same members', name: 'm1', cluster: SAME, recorded, warn: [] },
    { what: 'nothing recorded (an older backup)', name: 'm1', cluster: SAME, recorded: undefined, warn: [] },
    { what: 'a typo in one name', name: 'm1', cluster: SAME.replace('m3=', 'm4='), recorded, warn: [/taken on members m1, m2, m3; --initial-cluster names m1, m2, m4/] },
    { what: 'this member moved to another URL', name: 'm2', cluster: SAME.replace('10.0.0.2', '10.0.0.9'), recorded, warn: [/member m2 had peer URL\(s\) https:\/\/10.0.0.2:2380 .* gives https:\/\/10.0.0.9:2380/] },
    { what: 'all new hosts', name: 'a', cluster: 'a=https://10.1.0.1:2380', recorded, warn: [/fine on new hosts/] },
    { what: 'a learner recorded is not a member to restore', name: 'm1', cluster: SAME, recorded: [...recorded, { name: 'm4', peerURLs: ['https://10.0.0.4:2380'], learner: true as const }], warn: [] },
  ];
  it.each(rows)('$what', ({ name, cluster, recorded: r, warn }) => {
    const w = memberWarnings(plan(name, cluster), r);
    expect(w).toHaveLength(warn.length);
    warn.forEach((re, i) => expect(w[i]).toMatch(re));
  });
});
