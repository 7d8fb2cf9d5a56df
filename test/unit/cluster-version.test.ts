/**
 * The cluster version from what etcd holds (issue 19): OpenShift's
 * ClusterVersion JSON and kubeadm's kubeadm-config (protobuf and JSON).
 * Every shape that is not exactly right gives no version, never a guess.
 */
import { describe, expect, it } from 'vitest';
import { formatClusterVersion, MAX_VALUE_BYTES, parseKubeadmConfig, parseOpenShiftClusterVersion } from '../../src/etcd/cluster-version.js';

const cv = (status: unknown, extra: Record<string, unknown> = {}) =>
  Buffer.from(JSON.stringify({ apiVersion: 'config.openshift.io/v1', kind: 'ClusterVersion', metadata: { name: 'version' }, spec: { channel: 'stable-4.17' }, status, ...extra }));
const entry = (state: string, version: unknown) => ({ state, version, image: `quay.io/openshift-release-dev/ocp-release@sha256:${'a'.repeat(64)}`, startedTime: '2026-01-01T00:00:00Z', verified: true });

describe('parseOpenShiftClusterVersion', () => {
  const rows: { what: string; value: Buffer; info?: Record<string, unknown>; why?: RegExp }[] = [
    { what: 'installed, nothing pending', value: cv({ desired: { version: '4.17.2' }, history: [entry('Completed', '4.17.2')] }), info: { from: 'openshift', version: '4.17.2' } },
    {
      what: 'an upgrade in progress: the newest entry is Partial, the completed one below it',
      value: cv({ desired: { version: '4.17.3' }, history: [entry('Partial', '4.17.3'), entry('Completed', '4.17.2'), entry('Completed', '4.16.9')] }),
      info: { from: 'openshift', version: '4.17.2', desired: '4.17.3' },
    },
    {
      what: 'a failed upgrade left Partial entries: the last Completed counts',
      value: cv({ desired: { version: '4.18.0-rc.2' }, history: [entry('Partial', '4.18.0-rc.2'), entry('Partial', '4.18.0-rc.1'), entry('Completed', '4.17.9')] }),
      info: { from: 'openshift', version: '4.17.9', desired: '4.18.0-rc.2' },
    },
    { what: 'an install under way: no completed entry, only where it is going', value: cv({ desired: { version: '4.17.0' }, history: [entry('Partial', '4.17.0')] }), info: { from: 'openshift', desired: '4.17.0' } },
    { what: 'a nightly version', value: cv({ history: [entry('Completed', '4.16.0-0.nightly-2024-06-01-123456')] }), info: { from: 'openshift', version: '4.16.0-0.nightly-2024-06-01-123456' } },
    { what: 'a version longer than a manifest may hold', value: cv({ history: [entry('Completed', `4.17.2-${'a'.repeat(79)}+${'b'.repeat(64)}`)] }), why: /no valid version/ },
    { what: 'no history, no desired', value: cv({}), why: /no completed version/ },
    { what: 'no status', value: cv(undefined), why: /no status/ },
    { what: 'the newest completed entry has a bad version: nothing (not an older one)', value: cv({ history: [entry('Completed', '4.17; rm -rf /'), entry('Completed', '4.16.9')] }), why: /no valid version/ },
    { what: 'a version that is not a string', value: cv({ history: [entry('Completed', 4.17)] }), why: /no valid version/ },
    { what: 'a desired version that is garbage is left out', value: cv({ desired: { version: 'latest' }, history: [entry('Completed', '4.17.2')] }), info: { from: 'openshift', version: '4.17.2' } },
    { what: 'history not an array: no completed version, only the desired one', value: cv({ history: 'Completed 4.17.2', desired: { version: '4.17.2' } }), info: { from: 'openshift', desired: '4.17.2' } },
    { what: 'another kind', value: cv({ history: [entry('Completed', '4.17.2')] }, { kind: 'ClusterOperator' }), why: /not a config.openshift.io ClusterVersion/ },
    { what: 'another group', value: cv({ history: [entry('Completed', '4.17.2')] }, { apiVersion: 'example.com/v1' }), why: /not a config.openshift.io ClusterVersion/ },
    { what: 'protobuf bytes', value: Buffer.concat([Buffer.from('k8s\0'), Buffer.from([0x0a, 0x02, 0x41, 0x42])]), why: /not JSON/ },
    { what: 'garbage', value: Buffer.from('{"kind": "ClusterVersion", '), why: /not JSON/ },
    { what: 'JSON null', value: Buffer.from('null'), why: /not a config.openshift.io ClusterVersion/ },
    { what: 'an array', value: Buffer.from('[]'), why: /not a config.openshift.io ClusterVersion/ },
    { what: 'huge', value: Buffer.alloc(MAX_VALUE_BYTES + 1, 0x20), why: /more than/ },
  ];
  it.each(rows)('$what', ({ value, info, why }) => {
    const r = parseOpenShiftClusterVersion(value);
    if (info) expect(r).toEqual({ ok: true, info });
    else {
      expect(r.ok).toBe(false);
      expect(r.ok ? '' : r.why).toMatch(why!);
    }
  });

  it('a long history (hundreds of upgrades) is read within the bound', () => {
    const history = Array.from({ length: 500 }, (_, i) => entry(i === 0 ? 'Partial' : 'Completed', `4.${17 - Math.floor(i / 40)}.${i % 40}`));
    expect(parseOpenShiftClusterVersion(cv({ desired: { version: '4.17.0' }, history }))).toEqual({ ok: true, info: { from: 'openshift', version: '4.17.1', desired: '4.17.0' } });
  });
});

// A minimal protobuf writer: runtime.Unknown{typeMeta, raw=ConfigMap{metadata, data map}} as the API server stores it.
const varint = (n: number): Buffer => {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
};
const field = (no: number, body: Buffer | string): Buffer => {
  const b = Buffer.from(body);
  return Buffer.concat([varint((no << 3) | 2), varint(b.length), b]);
};
const intField = (no: number, v: number): Buffer => Buffer.concat([varint(no << 3), varint(v)]);
function configMapProto(data: Record<string, string>, kind = 'ConfigMap'): Buffer {
  const meta = field(1, Buffer.concat([field(1, 'kubeadm-config'), field(3, 'kube-system'), intField(8, 1)]));
  const entries = Object.entries(data).map(([k, v]) => field(2, Buffer.concat([field(1, k), field(2, v)])));
  const cm = Buffer.concat([meta, ...entries]);
  const unknown = Buffer.concat([field(1, Buffer.concat([field(1, 'v1'), field(2, kind)])), field(2, cm), field(3, ''), field(4, '')]);
  return Buffer.concat([Buffer.from('k8s\0'), unknown]);
}
const CC = (version: string) => `apiServer: {}\napiVersion: kubeadm.k8s.io/v1beta3\nclusterName: kubernetes\nkind: ClusterConfiguration\nkubernetesVersion: ${version}\nnetworking:\n  podSubnet: 10.244.0.0/16\n`;
const cmJson = (data: unknown) => Buffer.from(JSON.stringify({ kind: 'ConfigMap', apiVersion: 'v1', metadata: { name: 'kubeadm-config', namespace: 'kube-system' }, data }));

describe('parseKubeadmConfig', () => {
  const rows: { what: string; value: Buffer; version?: string; why?: RegExp }[] = [
    { what: 'protobuf, as the API server stores it by default', value: configMapProto({ ClusterConfiguration: CC('v1.30.2') }), version: 'v1.30.2' },
    { what: 'protobuf with other data entries beside it', value: configMapProto({ ClusterStatus: 'kubernetesVersion: v9.9.9\n', ClusterConfiguration: CC('v1.31.0-rc.1') }), version: 'v1.31.0-rc.1' },
    { what: 'JSON storage', value: cmJson({ ClusterConfiguration: CC('v1.29.4') }), version: 'v1.29.4' },
    { what: 'a version label is not a version', value: configMapProto({ ClusterConfiguration: CC('stable-1') }), why: /of the form/ },
    { what: 'a version without v', value: cmJson({ ClusterConfiguration: CC('1.29.4') }), why: /of the form/ },
    { what: 'not a ClusterConfiguration', value: cmJson({ ClusterConfiguration: 'kind: InitConfiguration\nkubernetesVersion: v1.29.4\n' }), why: /not a kubeadm ClusterConfiguration/ },
    { what: 'two YAML documents', value: cmJson({ ClusterConfiguration: `${CC('v1.29.4')}---\n${CC('v1.30.0')}` }), why: /not YAML/ },
    { what: 'YAML aliases are refused', value: cmJson({ ClusterConfiguration: 'kind: ClusterConfiguration\nx: &a v1.29.4\nkubernetesVersion: *a\n' }), why: /not YAML/ },
    { what: 'no ClusterConfiguration entry (protobuf)', value: configMapProto({ ClusterStatus: 'x' }), why: /no ClusterConfiguration/ },
    { what: 'ClusterConfiguration twice (protobuf)', value: Buffer.concat([configMapProto({ ClusterConfiguration: CC('v1.30.2') }), field(2, '')]), why: /malformed|twice/ },
    { what: 'a Secret in protobuf', value: configMapProto({ ClusterConfiguration: CC('v1.30.2') }, 'Secret'), why: /not a v1 ConfigMap/ },
    { what: 'truncated protobuf', value: configMapProto({ ClusterConfiguration: CC('v1.30.2') }).subarray(0, 60), why: /malformed/ },
    { what: 'the magic and nothing else', value: Buffer.from('k8s\0'), why: /malformed/ },
    { what: 'garbage', value: Buffer.from([0xff, 0xfe, 0x00, 0x01]), why: /neither/ },
    { what: 'JSON, not a ConfigMap', value: Buffer.from('{"kind":"Secret","data":{}}'), why: /not a ConfigMap/ },
    { what: 'huge', value: Buffer.alloc(MAX_VALUE_BYTES + 1), why: /more than/ },
  ];
  it.each(rows)('$what', ({ value, version, why }) => {
    const r = parseKubeadmConfig(value);
    if (version) expect(r).toEqual({ ok: true, info: { from: 'kubeadm', version } });
    else {
      expect(r.ok).toBe(false);
      expect(r.ok ? '' : r.why).toMatch(why!);
    }
  });
});

describe('formatClusterVersion', () => {
  it.each([
    ['4.17.2', undefined, '4.17.2'],
    ['4.17.2', '4.17.3', '4.17.2 -> 4.17.3'],
    [undefined, '4.17.0', '-> 4.17.0'],
    ['4.17.2', '4.17.2', '4.17.2'],
    [undefined, undefined, ''],
  ])('%s, desired %s: %s', (v, d, shown) => expect(formatClusterVersion(v, d)).toBe(shown));
});
