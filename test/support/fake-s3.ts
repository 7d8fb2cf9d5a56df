/**
 * A small S3 look-alike on 127.0.0.1 that misbehaves on command: a real
 * HTTP server (node:http) in the test process, path-style (`/bucket/key`),
 * speaking enough S3 for @aws-sdk/client-s3 v3 and @aws-sdk/lib-storage as
 * src/storage/s3/store.ts uses them. Any credentials are accepted (no signature
 * check). Objects live in memory (`objects`, full keys including the store
 * prefix), as do unfinished multipart uploads (`uploads`), every request is
 * logged (`requests`), and `faults` make chosen
 * requests fail, hang, trickle, or lie, switchable at any time.
 *
 * s3rver (test/support/s3.ts) is the faithful server; this one exists for
 * the failures a real server will not produce on request, and for S3 Object
 * Lock, which s3rver lacks: `startFakeS3({ objectLock: true })` is a bucket
 * created with Object Lock, enforced as AWS does (test/support/fake-s3-lock.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  MESSAGES,
  completeXml,
  deleteResultXml,
  errorXml,
  initiateXml,
  listPage,
  listUploadsXml,
  listV2Xml,
  parseComplete,
  parseDelete,
} from './fake-s3-xml.js';

import { faultControl, type FakeS3Faults, type FaultImpl } from './fake-s3-faults.js';
import { FakeObjectLock, type FakeError, type FakeLock } from './fake-s3-lock.js';

export { startThrottleProxy, type ThrottleProxy } from './throttle-proxy.js';
export type { Fault, FaultAction, FaultMatch, FakeS3Faults } from './fake-s3-faults.js';

export type S3Op =
  | 'ListBuckets'
  | 'HeadBucket'
  | 'ListObjectsV2'
  | 'ListMultipartUploads'
  | 'DeleteObjects'
  | 'PutObject'
  | 'HeadObject'
  | 'GetObject'
  | 'DeleteObject'
  | 'CreateMultipartUpload'
  | 'UploadPart'
  | 'CompleteMultipartUpload'
  | 'AbortMultipartUpload'
  | 'Unsupported';

export interface FakeObject {
  body: Buffer;
  modified: Date;
  /** Quoted, as S3 sends it: `"<md5>"`, or `"<md5 of part md5s>-N"` after a multipart upload. */
  etag: string;
  contentType?: string;
  /** Object Lock retention it was written with (a lock-enabled fake: `startFakeS3({ objectLock: true })`). */
  lock?: FakeLock;
}

/** A multipart upload begun and neither completed nor aborted. */
export interface FakeUpload {
  /** Full key, with the store prefix. */
  key: string;
  initiated: Date;
  parts: Map<number, { body: Buffer; etag: string; crc32?: string }>;
  /** The retention the completed object gets. */
  lock?: FakeLock;
  /** x-amz-checksum-algorithm of CreateMultipartUpload: completion must list each part's checksum. */
  checksumAlgorithm?: string;
}

export interface LoggedRequest {
  method: string;
  op: S3Op;
  /** Object key (full, with the store prefix); for bucket-level requests the `prefix` query, else ''. */
  key: string;
  query: Record<string, string>;
  /** HTTP status answered; 0 while unanswered (hanging, trickling) or when the client went away first. */
  status: number;
  at: Date;
  /** DeleteObjects: the keys its body named. */
  keys?: string[];
}

export interface FakeS3 {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  bucket: string;
  /** Any value works; given for configs that want credential files. */
  accessKeyId: string;
  secretAccessKey: string;
  objects: Map<string, FakeObject>;
  /** Unfinished multipart uploads by upload id: CompleteMultipartUpload and AbortMultipartUpload remove theirs. */
  uploads: ReadonlyMap<string, FakeUpload>;
  requests: LoggedRequest[];
  faults: FakeS3Faults;
  /** Object Lock and versioning (fake-s3-lock.ts): versions, delete markers; `enabled` with `objectLock: true`. */
  lock: FakeObjectLock;
  /** Drops objects, unfinished uploads, the request log and every fault. */
  reset(): void;
  close(): Promise<void>;
}

const MIN_PART = 5 * 1024 * 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
    req.on('close', () => (req.complete ? undefined : reject(new Error('client went away'))));
  });
}

/** `objectLock`: the bucket was created with Object Lock enabled (and so is versioned), as fake-s3-lock.ts describes. */
export async function startFakeS3(opts: { bucket?: string; objectLock?: boolean } = {}): Promise<FakeS3> {
  const bucket = opts.bucket ?? 'etcd-backups';
  const lock = new FakeObjectLock(opts.objectLock === true);
  const objects = new Map<string, FakeObject>();
  const uploads = new Map<string, FakeUpload>();
  const requests: LoggedRequest[] = [];
  const { faults, list: faultList } = faultControl();
  let endpoint = '';

  function opOf(method: string, key: string, q: Record<string, string>, hasBucket: boolean): S3Op {
    if (!hasBucket) return method === 'GET' ? 'ListBuckets' : 'Unsupported';
    if (!key) {
      if (method === 'HEAD') return 'HeadBucket';
      if (method === 'GET' && 'uploads' in q) return 'ListMultipartUploads';
      if (method === 'GET' && q['list-type'] === '2') return 'ListObjectsV2';
      if (method === 'POST' && 'delete' in q) return 'DeleteObjects';
      return 'Unsupported';
    }
    switch (method) {
      case 'PUT':
        if ('partNumber' in q && 'uploadId' in q) return 'UploadPart';
        return 'PutObject';
      case 'POST':
        if ('uploads' in q) return 'CreateMultipartUpload';
        if ('uploadId' in q) return 'CompleteMultipartUpload';
        return 'Unsupported';
      case 'DELETE':
        return 'uploadId' in q ? 'AbortMultipartUpload' : 'DeleteObject';
      case 'GET':
        return 'uploadId' in q ? 'Unsupported' : 'GetObject';
      case 'HEAD':
        return 'HeadObject';
      default:
        return 'Unsupported';
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = (req.method ?? 'GET').toUpperCase();
    const q: Record<string, string> = {};
    for (const [k, v] of url.searchParams) q[k] = v;
    const segs = url.pathname.split('/').slice(1);
    const reqBucket = segs[0] ? decodeURIComponent(segs[0]) : '';
    const key = segs.slice(1).map(decodeURIComponent).join('/');
    const op = opOf(method, key, q, reqBucket !== '');
    const entry: LoggedRequest = { method, op, key: key || (q.prefix ?? ''), query: q, status: 0, at: new Date() };
    requests.push(entry);
    let bodyPending = ['PUT', 'POST'].includes(method);

    const send = (status: number, body: string | Buffer = '', headers: Record<string, string | number> = {}) => {
      if (res.destroyed) return;
      entry.status = status;
      const h: Record<string, string | number> = { 'x-amz-request-id': 'fake-s3', ...headers };
      if (body.length > 0 && !h['Content-Type']) h['Content-Type'] = 'application/xml';
      // A body the client was told not to send (no 100 Continue) leaves the connection unusable: close it.
      if (bodyPending && expectContinue) h.Connection = 'close';
      if (method === 'HEAD') {
        res.writeHead(status, h);
        res.end();
        return;
      }
      h['Content-Length'] = Buffer.byteLength(body);
      res.writeHead(status, h);
      res.end(body);
    };
    const refuse = (e: FakeError) => fail(e.status, e.code, e.message);
    const fail = async (status: number, code: string, message?: string, extra: Record<string, string> = {}) => {
      // Without Expect: 100-continue the body is on its way: read it, so the connection stays usable.
      if (bodyPending && !expectContinue) {
        await readBody(req).catch(() => undefined);
        bodyPending = false;
      }
      send(status, method === 'HEAD' ? '' : errorXml(code, message ?? MESSAGES[code] ?? code, { ...extra, ...(key ? { Key: key } : {}) }));
    };
    const body = async (): Promise<Buffer> => {
      if (expectContinue) res.writeContinue();
      const b = await readBody(req);
      bodyPending = false;
      return b;
    };

    if (op === 'ListBuckets') {
      return send(200, `<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult><Owner><ID>fake</ID></Owner><Buckets><Bucket><Name>${bucket}</Name><CreationDate>2020-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>`);
    }
    if (reqBucket !== bucket) return fail(404, 'NoSuchBucket', undefined, { BucketName: reqBucket });

    const fault = faultList().find((f) => f.matches(op, method, entry.key, q));
    if (fault) fault.take();
    if (fault?.action.kind === 'error') return fail(fault.action.status, fault.action.code, fault.action.message);
    if (fault?.action.kind === 'hang') {
      await fault.waitRelease(res);
      if (res.destroyed || res.writableEnded) return;
    }

    switch (op) {
      case 'HeadBucket':
        return send(200);
      case 'HeadObject':
      case 'GetObject': {
        const o = objects.get(key);
        if (fault?.action.kind === 'head-200' && op === 'HeadObject') {
          const len = o?.body.length ?? fault.action.contentLength ?? 1024;
          return send(200, '', { 'Content-Length': len, 'Last-Modified': (o?.modified ?? new Date()).toUTCString(), ETag: o?.etag ?? '"00000000000000000000000000000000"', 'Content-Type': 'binary/octet-stream' });
        }
        if ('versionId' in q) return fail(501, 'NotImplemented', 'reading a version by id is not implemented by the fake (tests read s3.lock.versions)');
        if (!o) return op === 'HeadObject' ? send(404) : fail(404, 'NoSuchKey');
        let data = o.body;
        let status = 200;
        const headers: Record<string, string | number> = { 'Last-Modified': o.modified.toUTCString(), ETag: o.etag, 'Content-Type': o.contentType ?? 'binary/octet-stream', 'Accept-Ranges': 'bytes', ...lock.headers(key) };
        const range = op === 'GetObject' ? /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '') : null;
        if (range && o.body.length > 0) {
          const start = range[1] === '' ? Math.max(0, o.body.length - Number(range[2])) : Number(range[1]);
          const end = range[1] === '' || range[2] === '' ? o.body.length - 1 : Math.min(Number(range[2]), o.body.length - 1);
          if (start > end || start >= o.body.length) return fail(416, 'InvalidRange', 'The requested range is not satisfiable');
          data = o.body.subarray(start, end + 1);
          status = 206;
          headers['Content-Range'] = `bytes ${start}-${end}/${o.body.length}`;
        }
        if (op === 'HeadObject') return send(200, '', { ...headers, 'Content-Length': o.body.length });
        if (fault?.action.kind === 'trickle') return trickle(res, entry, fault, data, status, headers);
        return send(status, data, headers);
      }
      case 'PutObject': {
        if (req.headers['x-amz-copy-source']) return fail(501, 'NotImplemented', 'CopyObject is not implemented by the fake');
        if (String(req.headers['x-amz-content-sha256'] ?? '').startsWith('STREAMING-') || /aws-chunked/.test(String(req.headers['content-encoding'] ?? ''))) {
          return fail(501, 'NotImplemented', 'aws-chunked bodies are not implemented by the fake (use requestChecksumCalculation WHEN_REQUIRED)');
        }
        if (req.headers['if-none-match'] === '*' && objects.has(key)) return fail(412, 'PreconditionFailed', undefined, { Condition: 'If-None-Match' });
        const asked = lock.lockFrom(req.headers);
        if (asked.error) return refuse(asked.error);
        const b = await body();
        const integrity = lock.integrity(req.headers, b, 'PutObject');
        if (integrity.error) return refuse(integrity.error);
        const want = req.headers['content-md5'];
        if (typeof want === 'string' && createHash('md5').update(b).digest('base64') !== want) return fail(400, 'BadDigest', 'The Content-MD5 you specified did not match what we received.');
        // The condition again: another PUT may have landed while this body arrived.
        if (req.headers['if-none-match'] === '*' && objects.has(key)) return fail(412, 'PreconditionFailed', undefined, { Condition: 'If-None-Match' });
        const etag = `"${md5(b)}"`;
        const o: FakeObject = { body: b, modified: new Date(), etag, contentType: req.headers['content-type'], ...(asked.lock ? { lock: asked.lock } : {}) };
        objects.set(key, o);
        return send(200, '', { ETag: etag, ...integrity.echo, ...lock.stored(key, o) });
      }
      case 'DeleteObject': {
        const r = lock.delete(key, q.versionId, req.headers, (k) => objects.delete(k));
        if (r.error) return refuse(r.error);
        const now = lock.currentObject(key); // a version deleted by id may uncover the one before it
        if (now) objects.set(key, now);
        return send(r.status, '', r.headers);
      }
      case 'DeleteObjects': {
        const parsed = parseDelete((await body()).toString('utf8'));
        if (!parsed) return fail(400, 'MalformedXML');
        entry.keys = parsed.keys;
        if (parsed.versioned) return fail(501, 'NotImplemented', 'DeleteObjects with version ids is not implemented by the fake');
        for (const k of parsed.keys) lock.delete(k, undefined, req.headers, (x) => objects.delete(x));
        return send(200, deleteResultXml(parsed.keys, parsed.quiet));
      }
      case 'ListObjectsV2': {
        const maxKeys = Math.min(1000, q['max-keys'] !== undefined ? Math.max(0, Number(q['max-keys']) || 0) : 1000);
        const token = q['continuation-token'];
        let after: string | undefined = q['start-after'];
        if (token !== undefined && !(fault?.action.kind === 'list-loop')) {
          const decoded = Buffer.from(token, 'base64url').toString('utf8');
          if (!decoded.startsWith('k:')) return fail(400, 'InvalidArgument', 'The continuation token provided is incorrect');
          after = decoded.slice(2);
        }
        const sorted = [...objects.entries()]
          .map(([k, o]) => ({ key: k, size: o.body.length, modified: o.modified, etag: o.etag }))
          .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
        const prefix = q.prefix ?? '';
        // A looping listing serves the first page again and again.
        const page = listPage(sorted, { prefix, after: fault?.action.kind === 'list-loop' ? q['start-after'] : after, delimiter: q.delimiter || undefined, maxKeys });
        let next: { truncated: boolean; token?: string } = { truncated: page.truncated, token: page.lastKey !== undefined ? Buffer.from(`k:${page.lastKey}`).toString('base64url') : undefined };
        if (fault?.action.kind === 'list-loop') next = { truncated: true, token: fault.action.variant === 'same-token' ? 'bG9vcA' : undefined };
        return send(200, listV2Xml(bucket, page, { prefix, delimiter: q.delimiter || undefined, maxKeys, token, startAfter: q['start-after'], urlEncode: q['encoding-type'] === 'url' }, next));
      }
      case 'CreateMultipartUpload': {
        const asked = lock.lockFrom(req.headers);
        if (asked.error) return refuse(asked.error);
        await body();
        const uploadId = randomBytes(12).toString('hex');
        const algorithm = req.headers['x-amz-checksum-algorithm'];
        uploads.set(uploadId, { key, initiated: new Date(), parts: new Map(), lock: asked.lock, checksumAlgorithm: typeof algorithm === 'string' ? algorithm.toUpperCase() : undefined });
        return send(200, initiateXml(bucket, key, uploadId));
      }
      case 'UploadPart': {
        const u = uploads.get(q.uploadId!);
        if (!u || u.key !== key) return fail(404, 'NoSuchUpload');
        const n = Number(q.partNumber);
        if (!Number.isInteger(n) || n < 1 || n > 10_000) return fail(400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive');
        const b = await body();
        const integrity = lock.integrity(req.headers, b, 'UploadPart');
        if (integrity.error) return refuse(integrity.error);
        if (u.checksumAlgorithm === 'CRC32' && !integrity.echo['x-amz-checksum-crc32']) return fail(400, 'InvalidRequest', 'Checksum Type mismatch occurred, expected checksum Type: crc32, actual checksum Type: null');
        const etag = `"${md5(b)}"`;
        // Uploads can be aborted while a part arrives.
        if (uploads.get(q.uploadId!) !== u) return fail(404, 'NoSuchUpload');
        u.parts.set(n, { body: b, etag, crc32: integrity.echo['x-amz-checksum-crc32'] });
        return send(200, '', { ETag: etag, ...integrity.echo });
      }
      case 'CompleteMultipartUpload': {
        const u = uploads.get(q.uploadId!);
        const text = (await body()).toString('utf8');
        if (!u || u.key !== key) return fail(404, 'NoSuchUpload');
        const parts = parseComplete(text);
        if (!parts || parts.length === 0) return fail(400, 'MalformedXML');
        const bodies: Buffer[] = [];
        for (let i = 0; i < parts.length; i++) {
          const p = parts[i]!;
          if (i > 0 && p.partNumber <= parts[i - 1]!.partNumber) return fail(400, 'InvalidPartOrder');
          const have = u.parts.get(p.partNumber);
          if (!have || have.etag !== (p.etag.startsWith('"') ? p.etag : `"${p.etag}"`)) return fail(400, 'InvalidPart');
          if (u.checksumAlgorithm === 'CRC32' && p.crc32 !== have.crc32) return fail(400, 'InvalidPart', `part ${p.partNumber}: the upload was begun with CRC32; its checksum must be given and match`);
          if (i < parts.length - 1 && have.body.length < MIN_PART) return fail(400, 'EntityTooSmall', undefined, { ProposedSize: String(have.body.length), MinSizeAllowed: String(MIN_PART) });
          bodies.push(have.body);
        }
        if (req.headers['if-none-match'] === '*' && objects.has(key)) return fail(412, 'PreconditionFailed', undefined, { Condition: 'If-None-Match' });
        const whole = Buffer.concat(bodies);
        const etag = `"${createHash('md5')
          .update(Buffer.concat(parts.map((p) => Buffer.from(u.parts.get(p.partNumber)!.etag.slice(1, -1), 'hex'))))
          .digest('hex')}-${parts.length}"`;
        uploads.delete(q.uploadId!);
        const o: FakeObject = { body: whole, modified: new Date(), etag, ...(u.lock ? { lock: u.lock } : {}) };
        objects.set(key, o);
        return send(200, completeXml(endpoint, bucket, key, etag), lock.stored(key, o));
      }
      case 'AbortMultipartUpload': {
        const u = uploads.get(q.uploadId!);
        if (!u || u.key !== key) return fail(404, 'NoSuchUpload');
        uploads.delete(q.uploadId!);
        return send(204);
      }
      case 'ListMultipartUploads': {
        const prefix = q.prefix ?? '';
        const list = [...uploads.entries()]
          .filter(([, u]) => u.key.startsWith(prefix))
          .map(([uploadId, u]) => ({ key: u.key, uploadId, initiated: u.initiated }))
          .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.initiated.getTime() - b.initiated.getTime()));
        return send(200, listUploadsXml(bucket, prefix, list));
      }
      default:
        return fail(501, 'NotImplemented', `${method} ${url.pathname}${url.search} is not implemented by the fake`);
    }
  }

  /** Sends `data` at the fault's rate while it is on; the rest at once when it is switched off; stops when the client goes. */
  async function trickle(res: ServerResponse, entry: LoggedRequest, fault: FaultImpl, data: Buffer, status: number, headers: Record<string, string | number>) {
    const rate = (fault.action as { bytesPerSecond: number }).bytesPerSecond;
    res.writeHead(status, { ...headers, 'Content-Length': data.length });
    const tickMs = Math.max(50, 1000 / rate);
    const perTick = Math.max(1, Math.round((rate * tickMs) / 1000));
    let pos = 0;
    while (pos < data.length && !res.destroyed) {
      // a `times` fault that ran out keeps trickling what it started; off()/clear() speeds it up
      if (fault.released) break;
      res.write(data.subarray(pos, pos + perTick));
      pos += perTick;
      await sleep(tickMs);
    }
    if (res.destroyed) return;
    entry.status = status;
    res.end(data.subarray(pos));
  }

  const server = createServer((req, res) => void handle(req, res, false).catch((e) => errorOut(res, e)));
  server.on('checkContinue', (req, res) => void handle(req, res, true).catch((e) => errorOut(res, e)));
  // Idle keep-alive sockets stay open for the whole test: a server closing them after a few
  // seconds races a client reusing one ("socket hang up" with maxAttempts 1, a flake).
  // A connection dropped under the client is a fault a test injects, not an accident of timing.
  server.keepAliveTimeout = 120_000;
  function errorOut(res: ServerResponse, e: unknown) {
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    // The client going away mid-body is not the fake's failure; anything else is reported as S3 would.
    const text = errorXml('InternalError', `fake-s3: ${(e as Error)?.message ?? String(e)}`);
    res.writeHead(500, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(text), Connection: 'close' });
    res.end(text);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    port,
    bucket,
    accessKeyId: 'FAKEACCESSKEY',
    secretAccessKey: 'fake-secret-access-key',
    objects,
    uploads,
    requests,
    faults,
    lock,
    reset() {
      faults.clear();
      lock.clear();
      objects.clear();
      uploads.clear();
      requests.length = 0;
    },
    async close() {
      faults.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
