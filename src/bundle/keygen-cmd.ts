import { parseArgs } from 'node:util';
import { BackupError, messageOf } from '../errors.js';
import { generateKeyPair } from './sign.js';

export const KEYGEN_USAGE = `usage: etcd-backupd keygen --out PREFIX [--json]

Creates an ed25519 key pair for signing backup manifests:
  PREFIX      private key (PKCS#8 PEM, mode 0600); never overwritten
  PREFIX.pub  public key (SPKI PEM, mode 0644)
Put PREFIX on the masters as signing.keyFile, and PREFIX.pub in
signing.trustedKeys (and on the machines that restore).`;

const HINT = 'run `etcd-backupd keygen --help` for usage';

/** `etcd-backupd keygen`: returns the exit code; `out` prints one block of text. */
export async function keygenCommand(argv: string[], out: (s: string) => void): Promise<number> {
  let values: { out?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { out: { type: 'string', short: 'o' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: false,
      strict: true,
    }));
  } catch (e) {
    throw new BackupError('usage', messageOf(e), { hint: HINT });
  }
  if (values.help) {
    out(KEYGEN_USAGE);
    return 0;
  }
  const prefix = values.out;
  if (prefix === undefined || prefix === '') throw new BackupError('usage', '--out PREFIX is required', { hint: HINT });
  // A trailing slash names a directory: the key would be written as a file called "" or ".pub".
  if (/[/\\]$/.test(prefix)) throw new BackupError('usage', `--out ${prefix}: expected a file prefix, not a directory (e.g. ${prefix}signing)`, { hint: HINT });

  const r = await generateKeyPair(prefix);
  const next = `Put ${r.privatePath} on the masters as signing.keyFile, and ${r.publicPath} in signing.trustedKeys (and on the machines that restore).`;
  if (values.json) {
    out(JSON.stringify({ privatePath: r.privatePath, publicPath: r.publicPath, keyId: r.keyId, next }, null, 2));
  } else {
    out([`private key: ${r.privatePath}  (secret, mode 0600)`, `public key:  ${r.publicPath}`, `key id:      ${r.keyId}`, next].join('\n'));
  }
  return 0;
}
