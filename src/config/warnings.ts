import { storeType } from '../storage/stores.js';
import type { Config } from './load.js';

/** Valid but risky settings: said by check-config (and logged by the daemon at start). */
export function configWarnings(cfg: Config): string[] {
  const out: string[] = [];
  const remote = cfg.stores.filter((s) => storeType(s.type).remote).map((s) => s.name);
  if (remote.length && !cfg.signing.keyFile) {
    out.push(
      `store ${remote.join(', ')} is remote and backups are not signed (signing.keyFile): anyone who can write there can plant a backup that \`fetch latest\` restores; create a key pair with \`etcd-backupd keygen --out PREFIX\``,
    );
  }
  if (cfg.signing.keyFile && !cfg.signing.trustedKeys.length) {
    out.push('backups are signed but no signing.trustedKeys are set: signatures are not checked; add the .pub file of the signing key');
  }
  return out;
}
