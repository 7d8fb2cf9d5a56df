/**
 * The cluster's version as etcd itself holds it, so a backup records it
 * without `oc` and without the API server (issue 19). Pure: bytes of one
 * etcd value in, a version or the reason there is none out. Never a guess:
 * anything that is not exactly the expected shape gives no version.
 *
 * - OpenShift: the ClusterVersion object `version`, a custom resource, which
 *   the API server stores as JSON. `status.history` is newest first; the
 *   version the cluster runs is the newest entry with state "Completed"
 *   (`oc get clusterversion` shows the same). `status.desired.version` is
 *   where it is going: recorded as well when it differs (an upgrade in
 *   progress, or one that failed part way).
 * - kubeadm: the `kubeadm-config` ConfigMap in kube-system, whose
 *   `ClusterConfiguration` (YAML) names `kubernetesVersion`. Built-in types
 *   are stored as protobuf by default (the `k8s\0` envelope), JSON when the
 *   API server was told to: both are decoded field by field, bounded, and
 *   the version must look like `v1.30.2`.
 */
import { parse as parseYaml } from 'yaml';

/** Where OpenShift's API server keeps the ClusterVersion object (the `/kubernetes.io` prefix is OpenShift's etcd prefix). */
export const OPENSHIFT_CLUSTERVERSION_KEY = '/kubernetes.io/config.openshift.io/clusterversions/version';
/** Where a kubeadm cluster's API server keeps kubeadm-config (the default `/registry` prefix). */
export const KUBEADM_CONFIG_KEY = '/registry/configmaps/kube-system/kubeadm-config';

/** Larger values are not read: a ClusterVersion with its whole history is tens of KiB, a ConfigMap at most 1 MiB. */
export const MAX_VALUE_BYTES = 1 << 20;

export type ClusterVersionFrom = 'openshift' | 'kubeadm';

export interface ClusterVersionInfo {
  from: ClusterVersionFrom;
  /** The version the cluster last completed (OpenShift) or runs (kubeadm); absent when none is recorded (an install under way). */
  version?: string;
  /** OpenShift: status.desired.version, only when it differs from `version`. */
  desired?: string;
}

export type VersionOutcome = { ok: true; info: ClusterVersionInfo } | { ok: false; why: string };

/** OpenShift release versions: 4.17.3, 4.18.0-rc.2, 4.16.0-0.nightly-2024-06-01-123456. */
const OPENSHIFT_VERSION_RE = /^\d{1,4}\.\d{1,4}\.\d{1,6}(?:-[0-9A-Za-z][0-9A-Za-z.-]{0,79})?(?:\+[0-9A-Za-z.-]{1,64})?$/;
/** Kubernetes versions as kubeadm records them: v1.30.2, v1.31.0-rc.1. A label (`stable`) is not a version. */
const KUBE_VERSION_RE = /^v\d{1,4}\.\d{1,4}\.\d{1,6}(?:-[0-9A-Za-z][0-9A-Za-z.-]{0,63})?(?:\+[0-9A-Za-z.-]{1,64})?$/;

/**
 * What any recorded version must also be (the manifest schema holds it to
 * this): version characters only, at most 128. `list` prints it, so a
 * hostile store cannot put control characters on a terminal.
 */
export const VERSION_TEXT_RE = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,127}$/;

const no = (why: string): VersionOutcome => ({ ok: false, why });
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const versionOrUndefined = (v: unknown, re: RegExp): string | undefined => (typeof v === 'string' && re.test(v) && VERSION_TEXT_RE.test(v) ? v : undefined);

/** The ClusterVersion JSON as OpenShift stores it. */
export function parseOpenShiftClusterVersion(value: Buffer): VersionOutcome {
  if (value.length > MAX_VALUE_BYTES) return no(`the value is ${value.length} bytes, more than ${MAX_VALUE_BYTES}`);
  let doc: unknown;
  try {
    doc = JSON.parse(value.toString('utf8'));
  } catch {
    return no('the value is not JSON');
  }
  if (!isObject(doc) || doc.kind !== 'ClusterVersion' || typeof doc.apiVersion !== 'string' || !doc.apiVersion.startsWith('config.openshift.io/')) {
    return no('the value is not a config.openshift.io ClusterVersion');
  }
  const status = doc.status;
  if (!isObject(status)) return no('the ClusterVersion has no status');
  const history = Array.isArray(status.history) ? status.history : [];
  // Newest first: the first Completed entry is the last upgrade (or install) that finished.
  const completed = history.find((h) => isObject(h) && h.state === 'Completed') as Record<string, unknown> | undefined;
  const version = completed ? versionOrUndefined(completed.version, OPENSHIFT_VERSION_RE) : undefined;
  if (completed && version === undefined) return no('the newest completed history entry has no valid version');
  const desired = isObject(status.desired) ? versionOrUndefined(status.desired.version, OPENSHIFT_VERSION_RE) : undefined;
  if (version === undefined && desired === undefined) return no('the ClusterVersion records no completed version and no valid desired version');
  return { ok: true, info: { from: 'openshift', ...(version ? { version } : {}), ...(desired && desired !== version ? { desired } : {}) } };
}

/** kubeadm-config, stored as protobuf (`k8s\0` envelope) or JSON. */
export function parseKubeadmConfig(value: Buffer): VersionOutcome {
  if (value.length > MAX_VALUE_BYTES) return no(`the value is ${value.length} bytes, more than ${MAX_VALUE_BYTES}`);
  let yamlText: string | undefined;
  if (value.subarray(0, 4).equals(K8S_PROTOBUF_MAGIC)) {
    const r = clusterConfigurationFromProtobuf(value.subarray(4));
    if (!r.ok) return no(r.why);
    yamlText = r.text;
  } else {
    let doc: unknown;
    try {
      doc = JSON.parse(value.toString('utf8'));
    } catch {
      return no('the value is neither a Kubernetes protobuf nor JSON');
    }
    if (!isObject(doc) || doc.kind !== 'ConfigMap' || !isObject(doc.data)) return no('the value is not a ConfigMap with data');
    if (typeof doc.data.ClusterConfiguration !== 'string') return no('the ConfigMap has no ClusterConfiguration');
    yamlText = doc.data.ClusterConfiguration;
  }
  return kubernetesVersionOf(yamlText);
}

function kubernetesVersionOf(yamlText: string): VersionOutcome {
  let cc: unknown;
  try {
    // One document, no aliases: a hostile ConfigMap cannot expand itself.
    cc = parseYaml(yamlText, { maxAliasCount: 0, uniqueKeys: true });
  } catch {
    return no('ClusterConfiguration is not YAML');
  }
  if (!isObject(cc) || cc.kind !== 'ClusterConfiguration') return no('ClusterConfiguration is not a kubeadm ClusterConfiguration');
  const version = versionOrUndefined(cc.kubernetesVersion, KUBE_VERSION_RE);
  if (!version) return no('ClusterConfiguration has no kubernetesVersion of the form v1.2.3');
  return { ok: true, info: { from: 'kubeadm', version } };
}

const K8S_PROTOBUF_MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

interface Field {
  no: number;
  /** Wire type 2 (length-delimited) only; other wire types are skipped. */
  bytes?: Buffer;
}

/** The fields of one protobuf message, bounds-checked; undefined for bytes that are not a well-formed message. */
function fields(buf: Buffer): Field[] | undefined {
  const out: Field[] = [];
  let i = 0;
  const varint = (): number | undefined => {
    let r = 0;
    let mul = 1;
    for (let n = 0; n < 10 && i < buf.length; n++) {
      const b = buf[i++]!;
      r += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return r;
      mul *= 128;
    }
    return undefined;
  };
  while (i < buf.length) {
    const tag = varint();
    if (tag === undefined || tag < 8) return undefined;
    const wire = tag & 7;
    if (wire === 0) {
      if (varint() === undefined) return undefined;
      out.push({ no: Math.floor(tag / 8) });
    } else if (wire === 2) {
      const len = varint();
      if (len === undefined || i + len > buf.length) return undefined;
      out.push({ no: Math.floor(tag / 8), bytes: buf.subarray(i, i + len) });
      i += len;
    } else if (wire === 1 || wire === 5) {
      i += wire === 1 ? 8 : 4;
      if (i > buf.length) return undefined;
      out.push({ no: Math.floor(tag / 8) });
    } else {
      return undefined; // groups: not in these messages
    }
  }
  return out;
}

const only = (fs: Field[], no: number): Buffer | undefined => {
  const hits = fs.filter((f) => f.no === no && f.bytes !== undefined);
  return hits.length === 1 ? hits[0]!.bytes : undefined;
};

/**
 * runtime.Unknown{typeMeta=1{apiVersion=1, kind=2}, raw=2} around a
 * v1.ConfigMap{metadata=1, data=2 (map entries {key=1, value=2})}: the
 * ClusterConfiguration entry's text. Every step must match exactly once.
 */
function clusterConfigurationFromProtobuf(body: Buffer): { ok: true; text: string } | { ok: false; why: string } {
  const unknown = fields(body);
  const typeMeta = unknown && only(unknown, 1);
  const raw = unknown && only(unknown, 2);
  const tm = typeMeta && fields(typeMeta);
  if (!unknown || !raw || !tm) return { ok: false, why: 'the protobuf envelope is malformed' };
  const kind = only(tm, 2)?.toString('utf8');
  const apiVersion = only(tm, 1)?.toString('utf8');
  if (kind !== 'ConfigMap' || apiVersion !== 'v1') return { ok: false, why: `the protobuf holds a ${apiVersion ?? '?'} ${kind ?? '?'}, not a v1 ConfigMap` };
  const cm = fields(raw);
  if (!cm) return { ok: false, why: 'the ConfigMap protobuf is malformed' };
  const texts: string[] = [];
  for (const entry of cm.filter((f) => f.no === 2 && f.bytes)) {
    const kv = fields(entry.bytes!);
    if (!kv) return { ok: false, why: 'a ConfigMap data entry is malformed' };
    if (only(kv, 1)?.toString('utf8') === 'ClusterConfiguration') {
      const v = only(kv, 2);
      if (v === undefined) return { ok: false, why: 'the ClusterConfiguration entry has no value' };
      texts.push(v.toString('utf8'));
    }
  }
  if (texts.length !== 1) return { ok: false, why: texts.length ? 'the ConfigMap names ClusterConfiguration twice' : 'the ConfigMap has no ClusterConfiguration' };
  return { ok: true, text: texts[0]! };
}

/** How `list` shows it: `4.17.2`, `4.17.2 -> 4.17.3` during an upgrade, `-> 4.17.3` while installing. */
export function formatClusterVersion(version: string | undefined, desired: string | undefined): string {
  if (desired && desired !== version) return `${version ?? ''} -> ${desired}`.trim();
  return version ?? '';
}
