import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EtcdCluster } from './etcd.js';
import { writeConfig } from './cli.js';

/**
 * Node `i` of a test cluster: its daemon config in `dir` (work dir, control
 * socket, a static pod dir with one manifest for the etcdctl source), its own
 * etcd member first (the local member), the cluster's TLS files when it has
 * them, one local store shared by every node, metrics on a port the OS
 * picks, quick outbox retries. `over` replaces top-level keys
 * (coordination, continuous, schedule, stores, ...). Returns the file.
 */
export function masterConfig(o: { dir: string; cluster: EtcdCluster; i: number; node: string; store: string }, over: Record<string, unknown> = {}): string {
  const { dir, cluster, i } = o;
  mkdirSync(join(dir, 'manifests'), { recursive: true });
  writeFileSync(join(dir, 'manifests', 'kube-apiserver.yaml'), 'kind: Pod\n');
  const endpoints = [cluster.endpoints[i]!, ...cluster.endpoints.filter((_, j) => j !== i)];
  const tls = cluster.tls ? { caFile: cluster.tls.caFile, certFile: cluster.tls.certFile, keyFile: cluster.tls.keyFile } : {};
  return writeConfig(dir, {
    cluster: 'c1',
    node: o.node,
    workDir: join(dir, 'work'),
    schedule: '0 0 1 1 *', // no tick near: tests take their backups with the CLI unless they say otherwise
    source: { type: 'etcdctl', staticPodDir: join(dir, 'manifests'), timeout: '30s' },
    etcd: { endpoints, ...tls, timeout: '5s' },
    stores: [{ name: 'nfs', type: 'local', path: o.store }],
    retention: { keepLast: 1000, daily: 0, weekly: 0, monthly: 0 },
    local: { keep: 1, retryMin: '1s', retryMax: '2s' },
    metrics: { listen: '127.0.0.1:0' },
    control: { socket: join(dir, 'ctl', 'control.sock') },
    shutdownTimeout: '20s',
    recovery: { dir: '' },
    ...over,
  });
}
