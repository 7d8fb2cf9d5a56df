import { S3Client } from '@aws-sdk/client-s3';
import type { FakeS3 } from './fake-s3.js';

/**
 * The real SDK client pointed at a fake S3 server, configured as
 * src/storage/s3/store.ts configures it (path style, checksums only when
 * required), with one attempt and short deadlines so a fault shows at once.
 */
export function fakeS3Client(server: Pick<FakeS3, 'endpoint'>, over: { maxAttempts?: number; requestTimeout?: number } = {}): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'anything', secretAccessKey: 'whatever' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: over.maxAttempts ?? 1,
    requestHandler: { connectionTimeout: 2_000, requestTimeout: over.requestTimeout ?? 10_000, throwOnRequestTimeout: true },
  });
}
