import type { Manifest } from '../bundle/manifest.js';
import { checkSignature, loadTrustedKeys, type SignatureStatus, type TrustedKeys } from '../bundle/sign.js';
import type { Config } from '../config/load.js';

/**
 * What `list` shows per backup: `trusted`/`untrusted` when trusted keys are
 * configured; without any, a signature cannot be checked (`unchecked`), and
 * a backup without one is `none` either way.
 */
export type SignedStatus = SignatureStatus | 'unchecked';

/** The keys whose signatures count. Without any, signatures are not enforced (the default). */
export interface Trust {
  keys?: TrustedKeys;
}

export async function loadTrust(cfg: Pick<Config, 'signing'>): Promise<Trust> {
  const files = cfg.signing.trustedKeys;
  return files.length ? { keys: await loadTrustedKeys(files) } : {};
}

export function isEnforced(trust: Trust | undefined): boolean {
  return trust?.keys !== undefined && trust.keys.size > 0;
}

export function signedStatus(m: Manifest, trust: Trust | undefined): SignedStatus {
  if (!isEnforced(trust)) return m.signature ? 'unchecked' : 'none';
  return checkSignature(m, trust!.keys!);
}

/** Whether this backup counts as good: always without trusted keys, only when trusted with them. */
export function counts(m: Manifest, trust: Trust | undefined): boolean {
  return !isEnforced(trust) || signedStatus(m, trust) === 'trusted';
}
