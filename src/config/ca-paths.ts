/**
 * Where OpenShift keeps etcd's CA bundle on a master, for check-config's
 * advice when etcd.caFile is missing: OpenShift 4.17+ has no
 * etcd-serving-ca/ca-bundle.crt; the bundle is
 * etcd-all-bundles/server-ca-bundle.crt. Configs written for older releases
 * break on upgrade, so the message names the path that exists.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const STATIC_POD_RESOURCES = '/etc/kubernetes/static-pod-resources';
export const CA_BUNDLE_PATHS = ['etcd-certs/configmaps/etcd-all-bundles/server-ca-bundle.crt', 'etcd-certs/configmaps/etcd-serving-ca/ca-bundle.crt'] as const;

/**
 * The known CA bundle to use instead of `missing`: under the same
 * static-pod-resources directory when `missing` is one of the known paths
 * (a test root works too), else under /etc/kubernetes/static-pod-resources.
 */
export function caBundleInstead(missing: string, exists: (p: string) => boolean = existsSync): string | undefined {
  const known = CA_BUNDLE_PATHS.find((rel) => missing.endsWith(`/${rel}`));
  const base = known ? missing.slice(0, -known.length - 1) : STATIC_POD_RESOURCES;
  return CA_BUNDLE_PATHS.map((rel) => join(base, rel)).find((p) => p !== missing && exists(p));
}
