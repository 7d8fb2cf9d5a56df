import { expect } from 'vitest';
import { BackupError } from '../../src/errors.js';

/** What `p` rejects with; throws when it resolves (the operation should have failed). */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

/** The BackupError `p` rejects with; the test fails when `p` resolves or rejects with anything else. */
export async function backupErrorOf(p: Promise<unknown>): Promise<BackupError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'the operation should have failed with a BackupError').toBeInstanceOf(BackupError);
  return e as BackupError;
}

/** What an AWS SDK call rejects with, as the fake S3 tests compare it: error name, HTTP status, message. */
export async function sdkRejectionOf(p: Promise<unknown>): Promise<{ name: string; status?: number; message: string }> {
  const err = (await rejectionOf(p)) as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
  return { name: err.name, status: err.$metadata?.httpStatusCode, message: err.message };
}
