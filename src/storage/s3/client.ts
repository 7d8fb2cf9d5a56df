import { readFile } from 'node:fs/promises';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { BackupError } from '../../errors.js';
import type { S3StoreConfig } from './index.js';

/** Timeouts of one HTTP request; retries (maxAttempts) multiply them. */
export const S3_TIMEOUTS = {
  /** TCP (+TLS) connect. A dead endpoint fails in seconds, not minutes. */
  connectionMs: 5_000,
  /** From sending a request until the response headers arrive: covers uploading one part on a slow link. */
  requestMs: 10 * 60_000,
  /** A socket with no traffic at all for this long is given up (also while streaming a download). */
  idleMs: 2 * 60_000,
};
export const S3_MAX_ATTEMPTS = 3;

/** Reads one mounted Secret file; whitespace (the newline `kubectl create secret --from-file` keeps) is trimmed. */
async function readSecretFile(storeName: string, what: string, path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new BackupError('store-unavailable', `store ${storeName}: cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: `check that the Secret holding the S3 credentials is mounted at ${path} and readable by the daemon`,
    });
  }
  const value = text.trim();
  if (!value) {
    throw new BackupError('store-unavailable', `store ${storeName}: ${what} ${path} is empty`, { hint: 'put the credential into the file (the Secret key may be misnamed)' });
  }
  return value;
}

/**
 * The client the store uses, built from the store config alone. Exported so
 * tests and diagnostics talk to the server exactly as the store does.
 *
 * Credentials come from the configured files (re-read every few minutes, so a
 * rotated Secret is picked up without a restart) or, without files, from the
 * SDK's default chain (env, web identity / IRSA, instance profile...).
 * `onSecret` sees every secret value read, so error messages can be scrubbed.
 */
export function createS3Client(cfg: S3StoreConfig, onSecret?: (value: string) => void): S3Client {
  const config: S3ClientConfig = {
    region: cfg.region,
    forcePathStyle: cfg.forcePathStyle,
    // The SDK's own default (WHEN_SUPPORTED) sends streamed bodies aws-chunked with
    // trailing checksums, which many S3-compatible servers store verbatim: corrupt objects.
    requestChecksumCalculation: cfg.checksum,
    responseChecksumValidation: cfg.checksum,
    maxAttempts: S3_MAX_ATTEMPTS,
    followRegionRedirects: cfg.endpoint === undefined,
    requestHandler: {
      connectionTimeout: S3_TIMEOUTS.connectionMs,
      requestTimeout: S3_TIMEOUTS.requestMs,
      throwOnRequestTimeout: true,
      socketTimeout: S3_TIMEOUTS.idleMs,
    },
  };
  if (cfg.endpoint) config.endpoint = cfg.endpoint;
  if (cfg.accessKeyIdFile && cfg.secretAccessKeyFile) {
    const { accessKeyIdFile, secretAccessKeyFile, sessionTokenFile } = cfg;
    config.credentials = async () => {
      const [accessKeyId, secretAccessKey, sessionToken] = await Promise.all([
        readSecretFile(cfg.name, 'accessKeyIdFile', accessKeyIdFile),
        readSecretFile(cfg.name, 'secretAccessKeyFile', secretAccessKeyFile),
        sessionTokenFile ? readSecretFile(cfg.name, 'sessionTokenFile', sessionTokenFile) : Promise.resolve(undefined),
      ]);
      onSecret?.(secretAccessKey);
      if (sessionToken) onSecret?.(sessionToken);
      // The SDK refreshes credentials 5 minutes before `expiration`: re-read the files about every 5 minutes.
      return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}), expiration: new Date(Date.now() + 10 * 60_000) };
    };
  }
  return new S3Client(config);
}
