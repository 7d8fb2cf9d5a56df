/**
 * What an SDK or network error means, as S3 and S3-compatible servers (and
 * Node's sockets) spell it: the store turns these facts into BackupErrors.
 */

/** Error codes that mean "the credentials or the policy are wrong", as S3 and S3-compatible servers name them. */
export const AUTH_CODES = new Set([
  'AccessDenied',
  'Forbidden',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'CredentialsProviderError',
]);
/** Node/SDK error codes of a server that cannot be reached at all. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'TimeoutError',
  'RequestTimeout',
]);
/** What a server says when it lacks an operation (s3rver, some gateways). */
const UNSUPPORTED_CODES = new Set(['NotImplemented', 'MethodNotAllowed', 'XNotImplemented']);

export interface ErrorFacts {
  code: string;
  status?: number;
  detail?: string;
}

export function facts(e: unknown): ErrorFacts {
  const err = e as { name?: string; code?: unknown; message?: string; errors?: unknown[]; $metadata?: { httpStatusCode?: number } };
  const status = err?.$metadata?.httpStatusCode;
  let code: string;
  if (status !== undefined && err.name && err.name !== 'Error') {
    code = err.name; // S3ServiceException: name is the S3 error code
  } else if (typeof err?.code === 'string') {
    code = err.code; // ECONNREFUSED and friends
  } else if (Array.isArray(err?.errors) && typeof (err.errors[0] as { code?: unknown })?.code === 'string') {
    code = (err.errors[0] as { code: string }).code; // AggregateError of happy-eyeballs connects
  } else {
    code = err?.name && err.name !== 'Error' ? err.name : 'Error';
  }
  let detail = err?.message && err.message !== code ? err.message : undefined;
  if (!detail && Array.isArray(err?.errors)) {
    detail = err.errors.map((x) => (x as Error)?.message).filter(Boolean).join('; ') || undefined;
  }
  if (detail === 'UnknownError' || detail === 'Unknown') detail = undefined;
  return { code, status, detail };
}

/** A conditional create (If-None-Match: *) met an existing object. */
export function isPreconditionFailed(f: ErrorFacts): boolean {
  return f.status === 412 || f.code === 'PreconditionFailed' || f.code === 'ConditionalRequestConflict';
}

export function isNotFound(f: ErrorFacts): boolean {
  return f.status === 404 || f.code === 'NotFound' || f.code === 'NoSuchKey';
}

export function isUnsupported(f: ErrorFacts): boolean {
  return UNSUPPORTED_CODES.has(f.code) || f.status === 501 || f.status === 405;
}

export function isNetwork(f: ErrorFacts): boolean {
  return NETWORK_CODES.has(f.code) || (f.status !== undefined && f.status >= 500);
}
