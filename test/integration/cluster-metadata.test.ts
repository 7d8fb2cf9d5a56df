/**
 * Issue 19 through the CLI, on real etcd 3.4: an OpenShift-shaped etcd
 * holding a ClusterVersion (JSON, as OpenShift stores custom resources) and
 * the faithful cluster-backup.sh stand-in; the manifest and `list` (table
 * and --json) show the version, the label and pin of a pre-upgrade backup,
 * the members and the archived static pod revisions. An etcd without the
 * object gives no version at all; one with kubeadm's kubeadm-config
 * (protobuf, as the API server stores it) gives the Kubernetes version; a
 * ClusterVersion that is not readable gives a warning and no version, and
 * the backup still succeeds.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir, writeConfig } from '../support/cli.js';
import { freePort, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { CURRENT_REVISION, makeFakeMaster } from '../support/fake-master.js';

const CV_KEY = '/kubernetes.io/config.openshift.io/clusterversions/version';
const KUBEADM_KEY = '/registry/configmaps/kube-system/kubeadm-config';

let openshift: EtcdCluster;
let plain: EtcdCluster;
let dir: string;

beforeAll(async () => {
  dir = tempDir('metadata');
  [openshift, plain] = await Promise.all([startEtcdCluster({ members: 1, tls: true }), startEtcdCluster({ members: 1, tls: false })]);
  await openshift.putMany([['/kubernetes.io/configmaps/a', 'b']]);
  await plain.putMany([['/registry/configmaps/default/a', 'b']]);
});

afterAll(async () => {
  await Promise.all([openshift?.stop(), plain?.stop()]);
});

const entry = (state: string, version: string) => ({ state, version, image: `quay.io/openshift-release-dev/ocp-release@sha256:${'b'.repeat(64)}`, startedTime: '2026-11-01T00:00:00Z', verified: true });
const clusterVersion = (desired: string, history: ReturnType<typeof entry>[]) =>
  JSON.stringify({
    apiVersion: 'config.openshift.io/v1',
    kind: 'ClusterVersion',
    metadata: { name: 'version', uid: 'c0ffee', resourceVersion: '1234' },
    spec: { channel: 'stable-4.17', clusterID: 'c0ffee' },
    status: { desired: { version: desired, image: 'x' }, history, observedGeneration: 2, versionHash: 'abc' },
  });

function openshiftConfig(name: string, endpoints = [openshift.endpoints[0]!]): string {
  const d = join(dir, name);
  const m = makeFakeMaster(join(d, 'root'), openshift.endpoints[0]!, openshift.tls);
  return writeConfig(d, {
    cluster: 'ocp',
    node: 'master-0',
    workDir: join(d, 'work'),
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP, timeout: '60s', env: m.env },
    etcd: { endpoints, caFile: openshift.tls!.caFile, certFile: openshift.tls!.certFile, keyFile: openshift.tls!.keyFile },
    stores: [{ name: 'nfs', type: 'local', path: join(d, 'store') }],
  });
}

function plainConfig(name: string): string {
  const d = join(dir, name);
  mkdirSync(join(dir, 'static'), { recursive: true });
  writeFileSync(join(dir, 'static', 'etcd.yaml'), 'kind: Pod\n');
  mkdirSync(d, { recursive: true });
  return writeConfig(d, {
    cluster: 'k8s',
    node: 'cp-0',
    workDir: join(d, 'work'),
    source: { type: 'etcdctl', staticPodDir: join(dir, 'static') },
    etcd: { endpoints: [plain.endpoints[0]!] },
    stores: [{ name: 'nfs', type: 'local', path: join(d, 'store') }],
  });
}

type Listed = { id: string; label: string | null; pinned: boolean; clusterVersion?: string; clusterVersionFrom?: string; desiredVersion?: string; members?: Record<string, unknown>[]; staticPodRevisions?: Record<string, number> };

async function backup(file: string, ...extra: string[]): Promise<{ id: string; stderr: string; json: Record<string, unknown> }> {
  const r = await runCli(['backup', '--config', file, '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  const json = JSON.parse(r.stdout) as Record<string, unknown>;
  return { id: json.id as string, stderr: r.stderr, json };
}

async function listJson(file: string): Promise<Listed[]> {
  const r = await runCli(['list', '--config', file, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { backups: Listed[] }).backups;
}

const manifestOf = (file: string, cluster: string, id: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(file, '..', 'store', cluster, id, 'manifest.json'), 'utf8')) as Record<string, unknown>;

describe('an OpenShift-shaped cluster', () => {
  it('a pre-upgrade backup records the version it was taken on, its label and pin, the members and the archived revisions; list shows them', async () => {
    await openshift.put(CV_KEY, clusterVersion('4.17.2', [entry('Completed', '4.17.2'), entry('Completed', '4.16.9')]));
    const file = openshiftConfig('pre-upgrade');
    const { id, json } = await backup(file, '--label', 'pre-upgrade-4.17.3', '--pin');
    expect(json).toMatchObject({ result: 'success', clusterVersion: '4.17.2' });

    const m = manifestOf(file, 'ocp', id);
    expect(m).toMatchObject({ clusterVersion: '4.17.2', clusterVersionFrom: 'openshift', label: 'pre-upgrade-4.17.3', pinned: true });
    expect(m.desiredVersion).toBeUndefined();
    expect(m.staticPodRevisions).toEqual(CURRENT_REVISION);
    const members = m.members as Record<string, unknown>[];
    expect(members).toHaveLength(1);
    expect(members[0]).toMatchObject({ name: openshift.members[0]!.name, peerURLs: [openshift.members[0]!.peerUrl], clientURLs: [openshift.endpoints[0]], leader: true });
    expect(members[0]!.version).toMatch(/^3\.4\.\d+$/);

    const listed = await listJson(file);
    expect(listed).toEqual([expect.objectContaining({ id, label: 'pre-upgrade-4.17.3', pinned: true, clusterVersion: '4.17.2', clusterVersionFrom: 'openshift', staticPodRevisions: CURRENT_REVISION })]);
    expect(listed[0]!.members).toEqual(members);

    const table = await runCli(['list', '--config', file]);
    expect(table.code).toBe(0);
    const [header, , row] = table.stdout.split('\n');
    expect(header).toMatch(/Revision\s+Version\s+Label\s+Pinned/);
    expect(row).toMatch(new RegExp(`^${id}\\b.*\\s4\\.17\\.2\\s+pre-upgrade-4\\.17\\.3\\s+yes\\b`));
  });

  it('during the upgrade: the version it completed and where it is going', async () => {
    await openshift.put(CV_KEY, clusterVersion('4.17.3', [entry('Partial', '4.17.3'), entry('Completed', '4.17.2')]));
    const file = openshiftConfig('upgrading');
    const { id } = await backup(file);
    expect(manifestOf(file, 'ocp', id)).toMatchObject({ clusterVersion: '4.17.2', desiredVersion: '4.17.3', clusterVersionFrom: 'openshift' });
    expect((await listJson(file))[0]).toMatchObject({ clusterVersion: '4.17.2', desiredVersion: '4.17.3', label: null });
    expect((await runCli(['list', '--config', file])).stdout).toMatch(/4\.17\.2 -> 4\.17\.3/);
  });

  it('a ClusterVersion that is not readable: a warning with its reason, no version, the backup still succeeds', async () => {
    await openshift.put(CV_KEY, '{"kind":"ClusterVersion","apiVersion":"config.openshift.io/v1","status":{"history":[{"state":"Completed","version":"4.17; echo"}]}}');
    const file = openshiftConfig('garbage');
    const { id, stderr } = await backup(file);
    expect(stderr).toMatch(/cluster-metadata-unreadable/);
    expect(stderr).toMatch(/the newest completed history entry has no valid version/);
    const m = manifestOf(file, 'ocp', id);
    expect(m.clusterVersion).toBeUndefined();
    expect(m.clusterVersionFrom).toBeUndefined();
    expect(m.staticPodRevisions).toEqual(CURRENT_REVISION);
    expect((await listJson(file))[0]!.clusterVersion).toBeUndefined();
  });

  it('etcd not answering the read: a warning, no version, the backup still succeeds', async () => {
    await openshift.put(CV_KEY, clusterVersion('4.17.2', [entry('Completed', '4.17.2')]));
    // The script snapshots through etcd.env; the daemon's own endpoint answers nothing (preflight forced past it).
    const file = openshiftConfig('unreachable', [`https://127.0.0.1:${await freePort()}`]);
    const { id, stderr, json } = await backup(file, '--force');
    expect(json.result).toBe('success');
    expect(stderr).toMatch(/cluster-metadata-unreadable/);
    expect(stderr).toMatch(/cannot read the cluster version from etcd/);
    const m = manifestOf(file, 'ocp', id);
    expect(m.clusterVersion).toBeUndefined();
    expect(m.members).toBeUndefined();
    expect(m.staticPodRevisions).toEqual(CURRENT_REVISION);
  });
});

// kubeadm-config as the API server stores it: k8s\0 + runtime.Unknown{typeMeta, raw=ConfigMap}.
function kubeadmConfigProtobuf(version: string): Buffer {
  const varint = (n: number): Buffer => {
    const out: number[] = [];
    for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n & 0x7f) | 0x80);
    return Buffer.from([...out, n]);
  };
  const f = (no: number, body: Buffer | string) => Buffer.concat([varint((no << 3) | 2), varint(Buffer.byteLength(body)), Buffer.from(body)]);
  const cc = `apiVersion: kubeadm.k8s.io/v1beta3\nclusterName: kubernetes\nkind: ClusterConfiguration\nkubernetesVersion: ${version}\n`;
  const cm = Buffer.concat([f(1, f(1, 'kubeadm-config')), f(2, Buffer.concat([f(1, 'ClusterConfiguration'), f(2, cc)]))]);
  return Buffer.concat([Buffer.from('k8s\0'), f(1, Buffer.concat([f(1, 'v1'), f(2, 'ConfigMap')])), f(2, cm)]);
}

describe('other clusters', () => {
  it('an etcd without a version object: no version anywhere, members still recorded', async () => {
    const file = plainConfig('none');
    const { id, stderr, json } = await backup(file);
    expect(json.clusterVersion).toBeUndefined();
    expect(stderr).not.toMatch(/cluster-metadata-unreadable/);
    const m = manifestOf(file, 'k8s', id);
    for (const k of ['clusterVersion', 'clusterVersionFrom', 'desiredVersion', 'staticPodRevisions']) expect(m[k], k).toBeUndefined();
    expect(m.members).toEqual([expect.objectContaining({ name: plain.members[0]!.name, leader: true })]);
    const listed = (await listJson(file))[0]!;
    expect(listed.clusterVersion).toBeUndefined();
    expect(listed.label).toBeNull();
    const [header, , row] = (await runCli(['list', '--config', file])).stdout.split('\n');
    // The Version column is there and empty: the row has no version-like text.
    expect(header).toMatch(/Version/);
    expect(row).not.toMatch(/\b\d+\.\d+\.\d+\b/);
  });

  it('kubeadm: the Kubernetes version from kubeadm-config, decoded from protobuf', async () => {
    await plain.put(KUBEADM_KEY, kubeadmConfigProtobuf('v1.30.2'));
    const file = plainConfig('kubeadm');
    const { id } = await backup(file);
    expect(manifestOf(file, 'k8s', id)).toMatchObject({ clusterVersion: 'v1.30.2', clusterVersionFrom: 'kubeadm' });
    expect((await runCli(['list', '--config', file])).stdout).toMatch(/v1\.30\.2/);
  });
});
