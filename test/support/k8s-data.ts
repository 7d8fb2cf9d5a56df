/**
 * Kubernetes-shaped etcd contents, deterministic: what the API server stores
 * under /kubernetes.io/ (OpenShift) or /registry/ (kubeadm): pods with
 * managedFields, configmaps, secrets (base64 data), events and leases as
 * JSON, plus a share of opaque binary values (protobuf-encoded objects look
 * like this to a compressor). Real clusters' snapshots compress 3-15x; this
 * data is meant to sit in that range, not to flatter it.
 */
import { createHash } from 'node:crypto';
// `.ts`, not `.js`: the bench imports this file straight from Node 24 (type stripping), which does not map one to the other.
import { rng } from './rng.js';

const NAMESPACES = ['openshift-etcd', 'openshift-kube-apiserver', 'openshift-monitoring', 'openshift-ingress', 'default', 'payments', 'checkout', 'search', 'batch-jobs', 'kube-system'];
const IMAGES = ['quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:', 'registry.redhat.io/ubi9/ubi-minimal@sha256:', 'docker.io/library/nginx@sha256:'];

function hex(r: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(r() * 16).toString(16);
  return s;
}

function uid(r: () => number): string {
  return `${hex(r, 8)}-${hex(r, 4)}-${hex(r, 4)}-${hex(r, 4)}-${hex(r, 12)}`;
}

function time(r: () => number): string {
  return new Date(Date.UTC(2026, 10, 1) + Math.floor(r() * 25 * 86400_000)).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function managedFields(r: () => number, manager: string): unknown[] {
  return [
    { manager, operation: 'Update', apiVersion: 'v1', time: time(r), fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:labels': { '.': {}, 'f:app': {} } }, 'f:spec': { 'f:containers': { 'k:{"name":"main"}': { '.': {}, 'f:image': {}, 'f:name': {}, 'f:resources': {} } } } } },
    { manager: 'kubelet', operation: 'Update', apiVersion: 'v1', time: time(r), fieldsType: 'FieldsV1', subresource: 'status', fieldsV1: { 'f:status': { 'f:conditions': {}, 'f:containerStatuses': {}, 'f:phase': {}, 'f:podIP': {} } } },
  ];
}

function pod(r: () => number, ns: string, name: string): unknown {
  const image = IMAGES[Math.floor(r() * IMAGES.length)]! + hex(r, 64);
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: { name, namespace: ns, uid: uid(r), resourceVersion: String(Math.floor(r() * 9e6)), creationTimestamp: time(r), labels: { app: name.replace(/-[a-z0-9]+$/, ''), 'pod-template-hash': hex(r, 10) }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: name.replace(/-[a-z0-9]+$/, ''), uid: uid(r), controller: true, blockOwnerDeletion: true }], managedFields: managedFields(r, 'kube-controller-manager') },
    spec: {
      containers: [{ name: 'main', image, resources: { requests: { cpu: `${10 + Math.floor(r() * 500)}m`, memory: `${64 + Math.floor(r() * 960)}Mi` } }, env: Array.from({ length: 3 + Math.floor(r() * 6) }, (_, i) => ({ name: `ENV_${i}`, value: hex(r, 12) })), terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File', imagePullPolicy: 'IfNotPresent' }],
      restartPolicy: 'Always', terminationGracePeriodSeconds: 30, dnsPolicy: 'ClusterFirst', serviceAccountName: 'default', nodeName: `master-${Math.floor(r() * 3)}`, schedulerName: 'default-scheduler', priority: 0, enableServiceLinks: true, preemptionPolicy: 'PreemptLowerPriority',
    },
    status: { phase: 'Running', conditions: ['Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: time(r) })), hostIP: `10.0.${Math.floor(r() * 255)}.${Math.floor(r() * 255)}`, podIP: `10.128.${Math.floor(r() * 255)}.${Math.floor(r() * 255)}`, startTime: time(r), containerStatuses: [{ name: 'main', ready: true, restartCount: Math.floor(r() * 3), image, imageID: image, containerID: `cri-o://${hex(r, 64)}`, started: true, state: { running: { startedAt: time(r) } } }], qosClass: 'Burstable' },
  };
}

function configMap(r: () => number, ns: string, name: string): unknown {
  const data: Record<string, string> = {};
  for (let i = 0; i < 2 + Math.floor(r() * 4); i++) data[`config-${i}.yaml`] = Array.from({ length: 20 + Math.floor(r() * 60) }, (_, j) => `key${j}: value-${hex(r, 6)}`).join('\n');
  return { kind: 'ConfigMap', apiVersion: 'v1', metadata: { name, namespace: ns, uid: uid(r), resourceVersion: String(Math.floor(r() * 9e6)), creationTimestamp: time(r), managedFields: managedFields(r, 'kubectl-client-side-apply') }, data };
}

function secret(r: () => number, ns: string, name: string): unknown {
  // Certificates and keys: base64 of random bytes, the least compressible JSON in a cluster.
  const blob = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256))).toString('base64');
  return { kind: 'Secret', apiVersion: 'v1', type: 'kubernetes.io/tls', metadata: { name, namespace: ns, uid: uid(r), resourceVersion: String(Math.floor(r() * 9e6)), creationTimestamp: time(r) }, data: { 'tls.crt': blob(1200), 'tls.key': blob(1700) } };
}

function event(r: () => number, ns: string, name: string): unknown {
  return { kind: 'Event', apiVersion: 'v1', metadata: { name: `${name}.${hex(r, 16)}`, namespace: ns, uid: uid(r), resourceVersion: String(Math.floor(r() * 9e6)), creationTimestamp: time(r) }, involvedObject: { kind: 'Pod', namespace: ns, name, uid: uid(r), apiVersion: 'v1', fieldPath: 'spec.containers{main}' }, reason: ['Pulled', 'Created', 'Started', 'Killing', 'BackOff'][Math.floor(r() * 5)], message: `Container image "${IMAGES[0]}${hex(r, 64)}" already present on machine`, source: { component: 'kubelet', host: `master-${Math.floor(r() * 3)}` }, firstTimestamp: time(r), lastTimestamp: time(r), count: 1 + Math.floor(r() * 20), type: 'Normal' };
}

function lease(r: () => number, ns: string, name: string): unknown {
  return { kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', metadata: { name, namespace: ns, uid: uid(r), resourceVersion: String(Math.floor(r() * 9e6)), creationTimestamp: time(r) }, spec: { holderIdentity: `${name}_${uid(r)}`, leaseDurationSeconds: 15, acquireTime: time(r), renewTime: time(r), leaseTransitions: Math.floor(r() * 40) } };
}

export interface K8sEntry {
  key: string;
  value: Buffer;
}

/**
 * About `bytes` of Kubernetes-shaped entries under `prefix` (`/kubernetes.io`
 * as OpenShift has it), in batches the caller can put as it goes (memory stays
 * flat for a gigabyte). 1 in 10 values is opaque binary, as protobuf objects are.
 */
export function* kubernetesShaped(bytes: number, opts: { prefix?: string; seed?: number } = {}): Generator<K8sEntry> {
  const r = rng(opts.seed ?? 42);
  const prefix = opts.prefix ?? '/kubernetes.io';
  let made = 0;
  for (let i = 0; made < bytes; i++) {
    const ns = NAMESPACES[Math.floor(r() * NAMESPACES.length)]!;
    const name = `${['api', 'web', 'worker', 'cron', 'router'][Math.floor(r() * 5)]}-${hex(r, 5)}-${hex(r, 5)}`;
    const pick = r();
    let kind: string;
    let value: Buffer;
    if (pick < 0.1) {
      kind = 'binary';
      // Protobuf-like: field tags and lengths around runs of random and repeated bytes.
      const body = Buffer.alloc(400 + Math.floor(r() * 1600));
      for (let j = 0; j < body.length; j++) body[j] = j % 7 === 0 ? 0x0a : r() < 0.5 ? Math.floor(r() * 256) : 0x61 + (j % 26);
      value = Buffer.concat([Buffer.from('k8s\u0000'), body]);
    } else {
      const [k, obj] =
        pick < 0.45 ? ['pods', pod(r, ns, name)] : pick < 0.6 ? ['configmaps', configMap(r, ns, name)] : pick < 0.7 ? ['secrets', secret(r, ns, name)] : pick < 0.9 ? ['events', event(r, ns, name)] : ['leases', lease(r, ns, name)];
      kind = k as string;
      value = Buffer.from(JSON.stringify(obj));
    }
    made += value.length;
    yield { key: `${prefix}/${kind}/${ns}/${name}-${i}`, value };
  }
}

/** A short digest of a dataset's parameters, for bench reports. */
export function datasetId(bytes: number, seed = 42): string {
  return createHash('sha256').update(`${bytes}:${seed}`).digest('hex').slice(0, 8);
}
