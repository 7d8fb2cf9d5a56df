/**
 * The XML side of test/support/fake-s3.ts: S3 error documents, listings,
 * multipart documents, and the few request bodies S3 clients send
 * (DeleteObjects, CompleteMultipartUpload). Only what @aws-sdk/client-s3 v3
 * needs to parse an answer the way it parses AWS's.
 */

const NS = 'http://s3.amazonaws.com/doc/2006-03-01/';
const HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n';

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

export function unesc(s: string): string {
  return s
    .replace(/&#x([0-9a-fA-F]+);/g, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_, d: string) => String.fromCodePoint(Number(d)))
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

const el = (name: string, value: string | number | boolean | undefined): string => (value === undefined ? '' : `<${name}>${esc(String(value))}</${name}>`);

export function errorXml(code: string, message: string, extra: Record<string, string> = {}): string {
  const more = Object.entries(extra)
    .map(([k, v]) => el(k, v))
    .join('');
  return `${HEAD}<Error>${el('Code', code)}${el('Message', message)}${more}<RequestId>fake-s3</RequestId></Error>`;
}

/** Messages S3 uses for the codes tests ask for; anything else gets a generic one. */
export const MESSAGES: Record<string, string> = {
  InternalError: 'We encountered an internal error. Please try again.',
  SlowDown: 'Please reduce your request rate.',
  ServiceUnavailable: 'Service is unable to handle request.',
  AccessDenied: 'Access Denied',
  NoSuchKey: 'The specified key does not exist.',
  NoSuchBucket: 'The specified bucket does not exist',
  NoSuchUpload: 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
  PreconditionFailed: 'At least one of the pre-conditions you specified did not hold',
  InvalidPart: 'One or more of the specified parts could not be found.',
  InvalidPartOrder: 'The list of parts was not in ascending order.',
  EntityTooSmall: 'Your proposed upload is smaller than the minimum allowed object size.',
  MalformedXML: 'The XML you provided was not well-formed or did not validate against our published schema.',
  NotImplemented: 'A header or query you provided implies functionality that is not implemented.',
};

export interface Listed {
  key: string;
  size: number;
  modified: Date;
  etag: string;
}

export interface ListPage {
  contents: Listed[];
  commonPrefixes: string[];
  truncated: boolean;
  /** The key to continue after (becomes NextContinuationToken). */
  lastKey?: string;
}

/**
 * One page of ListObjectsV2 over `keys` (sorted), like S3: keys after
 * `after`, under `prefix`, folded at `delimiter`, at most `maxKeys` entries
 * (contents + common prefixes).
 */
export function listPage(all: Listed[], opts: { prefix: string; after?: string; delimiter?: string; maxKeys: number }): ListPage {
  const contents: Listed[] = [];
  const commonPrefixes: string[] = [];
  let truncated = false;
  let lastKey: string | undefined;
  for (const o of all) {
    if (!o.key.startsWith(opts.prefix)) continue;
    if (opts.after !== undefined && o.key <= opts.after) continue;
    let cp: string | undefined;
    if (opts.delimiter) {
      const i = o.key.indexOf(opts.delimiter, opts.prefix.length);
      if (i >= 0) cp = o.key.slice(0, i + opts.delimiter.length);
    }
    if (cp !== undefined && commonPrefixes.at(-1) === cp) continue;
    // a common prefix folds every later key under it: skip past them on the next page too
    if (opts.after !== undefined && cp !== undefined && opts.after.startsWith(cp)) continue;
    if (contents.length + commonPrefixes.length >= opts.maxKeys) {
      truncated = true;
      break;
    }
    if (cp !== undefined) {
      commonPrefixes.push(cp);
      lastKey = cp + '\uffff';
    } else {
      contents.push(o);
      lastKey = o.key;
    }
  }
  return { contents, commonPrefixes, truncated, lastKey: truncated ? lastKey : undefined };
}

export function listV2Xml(
  bucket: string,
  page: ListPage,
  q: { prefix: string; delimiter?: string; maxKeys: number; token?: string; startAfter?: string; urlEncode: boolean },
  next: { truncated: boolean; token?: string },
): string {
  const enc = (s: string) => (q.urlEncode ? encodeURIComponent(s).replace(/%2F/g, '/') : s);
  const body =
    el('Name', bucket) +
    el('Prefix', enc(q.prefix)) +
    el('Delimiter', q.delimiter === undefined ? undefined : enc(q.delimiter)) +
    el('StartAfter', q.startAfter === undefined ? undefined : enc(q.startAfter)) +
    el('EncodingType', q.urlEncode ? 'url' : undefined) +
    el('KeyCount', page.contents.length + page.commonPrefixes.length) +
    el('MaxKeys', q.maxKeys) +
    el('IsTruncated', next.truncated) +
    el('ContinuationToken', q.token) +
    el('NextContinuationToken', next.token) +
    page.contents
      .map(
        (o) =>
          `<Contents>${el('Key', enc(o.key))}${el('LastModified', o.modified.toISOString())}${el('ETag', o.etag)}${el('Size', o.size)}${el('StorageClass', 'STANDARD')}</Contents>`,
      )
      .join('') +
    page.commonPrefixes.map((p) => `<CommonPrefixes>${el('Prefix', enc(p))}</CommonPrefixes>`).join('');
  return `${HEAD}<ListBucketResult xmlns="${NS}">${body}</ListBucketResult>`;
}

export function initiateXml(bucket: string, key: string, uploadId: string): string {
  return `${HEAD}<InitiateMultipartUploadResult xmlns="${NS}">${el('Bucket', bucket)}${el('Key', key)}${el('UploadId', uploadId)}</InitiateMultipartUploadResult>`;
}

export function completeXml(endpoint: string, bucket: string, key: string, etag: string): string {
  return `${HEAD}<CompleteMultipartUploadResult xmlns="${NS}">${el('Location', `${endpoint}/${bucket}/${key}`)}${el('Bucket', bucket)}${el('Key', key)}${el('ETag', etag)}</CompleteMultipartUploadResult>`;
}

export function listUploadsXml(bucket: string, prefix: string, uploads: { key: string; uploadId: string; initiated: Date }[]): string {
  const items = uploads
    .map(
      (u) =>
        `<Upload>${el('Key', u.key)}${el('UploadId', u.uploadId)}<Initiator><ID>fake</ID><DisplayName>fake</DisplayName></Initiator><Owner><ID>fake</ID><DisplayName>fake</DisplayName></Owner>${el('StorageClass', 'STANDARD')}${el('Initiated', u.initiated.toISOString())}</Upload>`,
    )
    .join('');
  return `${HEAD}<ListMultipartUploadsResult xmlns="${NS}">${el('Bucket', bucket)}${el('Prefix', prefix)}<KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>${el('MaxUploads', 1000)}${el('IsTruncated', false)}${items}</ListMultipartUploadsResult>`;
}

export function deleteResultXml(deleted: string[], quiet: boolean): string {
  const items = quiet ? '' : deleted.map((k) => `<Deleted>${el('Key', k)}</Deleted>`).join('');
  return `${HEAD}<DeleteResult xmlns="${NS}">${items}</DeleteResult>`;
}

/** Keys and Quiet of a DeleteObjects body; undefined when it is not one. */
export function parseDelete(xml: string): { keys: string[]; quiet: boolean; versioned: boolean } | undefined {
  if (!/<Delete[\s>]/.test(xml)) return undefined;
  const keys = [...xml.matchAll(/<Object>[\s\S]*?<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Object>/g)].map((m) => unesc(m[1]!));
  return { keys, quiet: /<Quiet>\s*true\s*<\/Quiet>/i.test(xml), versioned: /<VersionId>/.test(xml) };
}

/** Parts of a CompleteMultipartUpload body, in document order; undefined when malformed. */
export function parseComplete(xml: string): { partNumber: number; etag: string; crc32?: string }[] | undefined {
  if (!/<CompleteMultipartUpload[\s>]/.test(xml)) return undefined;
  const parts: { partNumber: number; etag: string; crc32?: string }[] = [];
  for (const m of xml.matchAll(/<Part>([\s\S]*?)<\/Part>/g)) {
    const n = /<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(m[1]!);
    const e = /<ETag>([\s\S]*?)<\/ETag>/.exec(m[1]!);
    if (!n || !e) return undefined;
    const crc = /<ChecksumCRC32>([\s\S]*?)<\/ChecksumCRC32>/.exec(m[1]!);
    parts.push({ partNumber: Number(n[1]), etag: unesc(e[1]!).trim(), ...(crc ? { crc32: crc[1]!.trim() } : {}) });
  }
  return parts;
}
