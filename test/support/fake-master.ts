/**
 * The fake "/" of an OpenShift master for the faithful cluster-backup.sh
 * stand-in (test/fixtures/cluster-backup.sh with FAKE_ROOT): etcd.env and
 * etcd-common-tools, the static pod manifests naming their current revision,
 * an older revision beside each (which must not be archived), the node's
 * localhost.kubeconfig, and the state the `oc` stand-in answers from.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { ROOT } from './cli.js';

export const RESOURCES = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'] as const;
export const CURRENT_REVISION: Record<(typeof RESOURCES)[number], number> = { 'kube-apiserver': 7, 'kube-controller-manager': 5, 'kube-scheduler': 4, etcd: 3 };

export interface FakeMaster {
  root: string;
  /** Env for the script: FAKE_ROOT and PATH with the `oc` stand-in first. */
  env: Record<string, string>;
  /** The Progressing status `oc get co <op>` answers. */
  setProgressing(op: string, status: 'True' | 'False'): void;
  setApiDown(down: boolean): void;
  /** Rewrites etcd.env for another endpoint (e.g. one nothing listens on). */
  setEndpoint(endpoint: string): void;
}

export interface FakeMasterTls {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export function makeFakeMaster(root: string, endpoint: string, tls?: FakeMasterTls): FakeMaster {
  const k = join(root, 'etc', 'kubernetes');
  const spr = join(k, 'static-pod-resources');
  const scripts = join(spr, 'etcd-certs', 'configmaps', 'etcd-scripts');
  const kubeconfigs = join(spr, 'kube-apiserver-certs', 'secrets', 'node-kubeconfigs');
  const ocState = join(kubeconfigs, 'fake-oc');
  mkdirSync(scripts, { recursive: true });
  mkdirSync(join(k, 'manifests'), { recursive: true });
  mkdirSync(ocState, { recursive: true });
  writeFileSync(join(kubeconfigs, 'localhost.kubeconfig'), 'apiVersion: v1\nkind: Config\n');
  writeFileSync(join(scripts, 'etcd-common-tools'), '# dl_etcdctl and friends live here upstream\n');
  const writeEnv = (ep: string) =>
    writeFileSync(
      join(scripts, 'etcd.env'),
      [
        'export NODE_NAME=master0',
        'export NODE_master0_IP=127.0.0.1',
        `export FAKE_ETCD_ENDPOINT="${ep}"`,
        ...(tls ? [`export ETCDCTL_CACERT="${tls.caFile}"`, `export ETCDCTL_CERT="${tls.certFile}"`, `export ETCDCTL_KEY="${tls.keyFile}"`] : []),
        '',
      ].join('\n'),
    );
  writeEnv(endpoint);
  for (const res of RESOURCES) {
    const rev = CURRENT_REVISION[res];
    for (const r of [rev - 1, rev]) {
      const d = join(spr, `${res}-pod-${r}`);
      mkdirSync(join(d, 'secrets', 'serving-cert'), { recursive: true });
      writeFileSync(join(d, `${res}-pod.yaml`), `kind: Pod\nmetadata:\n  name: ${res}\n  annotations:\n    revision: "${r}"\n`);
      writeFileSync(join(d, 'secrets', 'serving-cert', 'tls.key'), '-----BEGIN PRIVATE KEY-----\nZmFrZQ==\n-----END PRIVATE KEY-----\n', { mode: 0o600 });
    }
    writeFileSync(join(k, 'manifests', `${res}-pod.yaml`), `spec:\n  volumes:\n  - hostPath:\n      path: /etc/kubernetes/static-pod-resources/${res}-pod-${rev}\n`);
  }
  const bin = join(ROOT, 'test', 'fixtures');
  return {
    root,
    // PATH: the fixtures dir holds `oc`; the rest of PATH still finds etcdctl.
    env: { FAKE_ROOT: root, PATH: `${bin}${delimiter}${process.env.PATH ?? ''}` },
    setProgressing: (op, status) => writeFileSync(join(ocState, op), status),
    setApiDown: (down) => (down ? writeFileSync(join(ocState, 'api-down'), '') : rmSync(join(ocState, 'api-down'), { force: true })),
    setEndpoint: writeEnv,
  };
}
