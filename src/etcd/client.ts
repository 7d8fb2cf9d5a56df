/**
 * The one etcd client of the project: gRPC, as etcdctl talks to etcd, with
 * the node's client certificate (etcd.caFile/certFile/keyFile).
 *
 * Built on the `etcd3` package (@grpc/grpc-js underneath, etcd's own protos):
 * it is maintained, pure JavaScript (nothing native to ship in the single
 * executable) and has what coordination needs next: leases, elections,
 * watches. Why not the v3 JSON gateway any more: from OpenShift 4.23 etcd
 * serves only gRPC on :2379 (the HTTP gateway moved to :2381); the gRPC API
 * is the same on etcd 3.4 (what the tests run), 3.5 and 3.6, so this path
 * covers all three. Differences that matter here are noted where they are
 * used (health: 3.5+ etcdctl also reports alarms, which we always do).
 *
 * Rules kept by every call below:
 * - one client per endpoint (`EtcdClients.endpoint(url)`): etcd3 balances a
 *   client's calls over its hosts, and a per-member question must reach
 *   that member;
 * - no retries inside etcd3 (its default retries and circuit breaker would
 *   stretch a call past its deadline): callers decide what to retry;
 * - every call has a gRPC deadline (connecting and the TLS handshake
 *   included), so an endpoint that accepts and never answers ends the call
 *   with a clear error; an AbortSignal ends it sooner;
 * - errors name the endpoint and what to check (`describeEtcdError`);
 * - uint64s stay decimal strings (clusterId, memberId, leader), as the JSON
 *   gateway gave them and as manifests and metrics already hold them.
 *
 * Loaded with `import()` by the code that needs it: commands that never talk
 * to etcd do not load gRPC.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type IKeyValue, type IOptions } from 'etcd3';

export interface EtcdTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** The config's `etcd` section, as far as a connection goes: client URLs (all of one scheme) and the TLS files. */
export interface EtcdConnection extends EtcdTls {
  endpoints: string[];
}

/** The members to ask one by one (status, leader), each through its own client: a pooled client may spend its deadline on a dead member. */
export interface Members {
  clients: Pick<EtcdClients, 'endpoint'>;
  endpoints: readonly string[];
}

/**
 * grpc-js sends the endpoint's host as TLS SNI even when it is an IP
 * address (etcd endpoints usually are), and Node warns about that once per
 * process on stderr (DEP0123). The server certificate is still checked
 * against the IP (its IP SANs); only the warning is dropped, nothing else.
 */
function dropIpServernameWarning(): void {
  const emit = process.emitWarning.bind(process) as (...a: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const opts = rest[0];
    const code = typeof opts === 'object' && opts !== null ? (opts as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}
dropIpServernameWarning();

/** Larger answers are refused: a misbehaving endpoint must not fill the memory of a control-plane node. */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

/** What `etcdctl endpoint status` shows for one member. */
export interface MemberStatus {
  version: string;
  clusterId: string;
  memberId: string;
  /** The leader's member id as this member sees it ('0': none). */
  leader: string;
  dbSize: number;
  revision: number;
}

export interface MemberInfo {
  id: string;
  name: string;
  clientURLs: string[];
  /** What a restored member advertises to its peers (--initial-advertise-peer-urls, --initial-cluster). */
  peerURLs: string[];
  isLearner: boolean;
}

export interface RangeRequest {
  key: Buffer;
  /** Exclusive end; `\0` with key `\0` is the whole keyspace. */
  rangeEnd?: Buffer;
  /** 0: the current revision. */
  revision?: number;
  limit?: number;
  countOnly?: boolean;
  serializable?: boolean;
}

export interface KeyValue {
  key: Buffer;
  value: Buffer;
  modRevision: number;
}

export interface RangeResult {
  revision: number;
  count: number;
  more: boolean;
  kvs: KeyValue[];
}

export interface CallOpts {
  signal?: AbortSignal;
  /** This call's deadline, default the client's timeout. */
  timeoutMs?: number;
}

/** An etcd3 policy that runs the call once: no retry, no circuit breaker. */
const ONCE = { execute: <T>(fn: (ctx: { signal: AbortSignal; attempt: number }) => T) => fn({ signal: new AbortController().signal, attempt: 0 }) };

/** A client for one endpoint (one member). */
export class EtcdEndpoint {
  private readonly client: Etcd3;
  private readonly inFlight = new Set<GrpcCall>();
  constructor(
    readonly endpoint: string,
    credentials: IOptions['credentials'],
    private readonly timeoutMs: number,
  ) {
    this.client = new Etcd3({
      hosts: [endpoint],
      credentials,
      faultHandling: { host: () => ONCE as never, global: ONCE as never },
      grpcOptions: {
        'grpc.max_receive_message_length': MAX_ANSWER_BYTES,
        // No reconnect storm after a failed call: the next call dials again.
        'grpc.initial_reconnect_backoff_ms': 200,
      },
    });
  }

  /** Maintenance.Status: answered from the member's own state, even without a quorum. */
  async status(opts: CallOpts = {}): Promise<MemberStatus> {
    const s = await this.call('status', opts, (o) => this.client.maintenance.status(o));
    return {
      version: s.version,
      clusterId: s.header.cluster_id,
      memberId: s.header.member_id,
      leader: s.leader,
      dbSize: Number(s.dbSize),
      revision: Number(s.header.revision),
    };
  }

  async memberList(opts: CallOpts = {}): Promise<MemberInfo[]> {
    // This member's view of the membership (3.5 added an opt-in linearizable flag; off, the answer is the same as 3.4's).
    const r = await this.call('member list', opts, (o) => this.client.cluster.memberList({}, o));
    return (r.members ?? []).map((m) => ({ id: m.ID, name: m.name, clientURLs: m.clientURLs ?? [], peerURLs: m.peerURLs ?? [], isLearner: m.isLearner === true }));
  }

  /** Active alarms (NOSPACE, CORRUPT) of the cluster. */
  async alarms(opts: CallOpts = {}): Promise<string[]> {
    const r = await this.call('alarm list', opts, (o) => this.client.maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' }, o));
    return (r.alarms ?? []).filter((a) => a.alarm !== 'None').map((a) => `${a.alarm} (member ${a.memberID})`);
  }

  /**
   * What `etcdctl endpoint health` asks: a linearizable read of the key
   * "health", which needs the leader and a quorum. Permission denied counts
   * as healthy (the read went through consensus to be refused).
   */
  async quorumRead(opts: CallOpts = {}): Promise<void> {
    try {
      await this.call('quorum read', opts, (o) => this.client.kv.range({ key: Buffer.from('health') }, o));
    } catch (e) {
      if (/permission denied/i.test(causeText(e))) return;
      throw e;
    }
  }

  /**
   * What `etcdctl endpoint health` (3.5+) and etcd's own /health decide, in
   * their order: an active alarm (NOSPACE, CORRUPT) is unhealthy, so is a
   * member without a leader (the quorum read would only wait for its
   * deadline), else the quorum read must succeed. Returns why it is
   * unhealthy, undefined when healthy; never throws.
   */
  async health(opts: CallOpts & { readTimeoutMs?: number } = {}): Promise<string | undefined> {
    try {
      const alarms = await this.alarms(opts);
      if (alarms.length) return `active alarm(s): ${alarms.join(', ')}`;
      if ((await this.status(opts)).leader === '0') return 'no leader (raft)';
      await this.quorumRead({ ...opts, timeoutMs: opts.readTimeoutMs ?? opts.timeoutMs });
      return undefined;
    } catch (e) {
      return e instanceof EtcdCallError ? e.reason : causeText(e);
    }
  }

  async range(req: RangeRequest, opts: CallOpts = {}): Promise<RangeResult> {
    const r = await this.call('range', opts, (o) =>
      this.client.kv.range(
        {
          key: req.key,
          range_end: req.rangeEnd,
          revision: req.revision ?? 0,
          limit: req.limit ?? 0,
          count_only: req.countOnly === true,
          serializable: req.serializable === true,
        },
        o,
      ),
    );
    return {
      revision: Number(r.header.revision),
      count: Number(r.count),
      more: r.more === true,
      kvs: (r.kvs ?? []).map((kv: IKeyValue) => ({ key: kv.key, value: kv.value, modRevision: Number(kv.mod_revision) })),
    };
  }

  /**
   * One KV.Txn without compares: `ops` (puts without a lease, single-key
   * deletes) in order. Returns the revision the store is at after it (the
   * txn's own when it changed anything). Used by restore to a time
   * (src/continuous/replay.ts) against its throwaway etcd only.
   */
  async txn(ops: readonly ({ put: Buffer; value: Buffer } | { del: Buffer })[], opts: CallOpts = {}): Promise<number> {
    const success = ops.map((o) => ('del' in o ? { request_delete_range: { key: o.del } } : { request_put: { key: o.put, value: o.value } }));
    const r = await this.call('txn', opts, (o) => this.client.kv.txn({ compare: [], success, failure: [] }, o));
    return Number(r.header.revision);
  }

  /** Lease.LeaseLeases: the ids of every lease the member holds (decimal strings). */
  async leaseIds(opts: CallOpts = {}): Promise<string[]> {
    const r = await this.call('lease list', opts, (o) => this.client.leaseClient.leaseLeases(o));
    return (r.leases ?? []).map((l) => String(l.ID));
  }

  /**
   * One keep-alive of each lease over one Lease.LeaseKeepAlive stream,
   * ended after as many answers (or the deadline). A lease already gone
   * answers TTL 0 and is not an error.
   */
  async keepAliveOnce(ids: readonly string[], opts: CallOpts = {}): Promise<void> {
    if (ids.length === 0) return;
    await this.call('lease keep-alive', opts, async (o) => {
      const stream = await this.client.leaseClient.leaseKeepAlive(o);
      await new Promise<void>((resolve, reject) => {
        let answers = 0;
        stream.on('data', () => {
          if (++answers >= ids.length) {
            stream.end();
            resolve();
          }
        });
        stream.on('error', reject);
        stream.on('end', () => (answers >= ids.length ? resolve() : reject(new Error(`stream ended after ${answers} of ${ids.length} answers`))));
        for (const id of ids) stream.write({ ID: id });
      });
    });
  }

  /** Cancels calls still running and closes the connection. */
  close(): void {
    for (const c of this.inFlight) c.cancelWithStatus(GRPC_CANCELLED, 'client closed');
    this.inFlight.clear();
    this.client.close();
  }

  /** One RPC under a deadline (and the caller's signal); its failure described for a person. */
  private async call<T>(what: string, opts: CallOpts, fn: (o: { deadline: number }) => Promise<T>): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const signal = opts.signal;
    if (signal?.aborted) throw new Error(`${this.endpoint}: ${what} aborted`);
    // A per-call interceptor hands us grpc-js's call, so an abort (or close()) cancels the RPC
    // itself: nothing keeps a socket, a timer or the event loop busy until the deadline.
    let grpcCall: GrpcCall | undefined;
    const capture = (options: unknown, next: (o: unknown) => GrpcCall) => {
      grpcCall = next(options);
      this.inFlight.add(grpcCall);
      return grpcCall;
    };
    const callOptions = { deadline: Date.now() + timeoutMs, interceptors: [capture] } as unknown as { deadline: number };
    const onAbort = () => grpcCall?.cancelWithStatus(GRPC_CANCELLED, `${what} aborted`);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await fn(callOptions);
    } catch (e) {
      if (signal?.aborted) throw new Error(`${this.endpoint}: ${what} aborted`, { cause: e });
      throw new EtcdCallError(this.endpoint, what, timeoutMs, e);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (grpcCall) this.inFlight.delete(grpcCall);
    }
  }
}

/** The part of grpc-js's InterceptingCall used here. */
interface GrpcCall {
  cancelWithStatus(code: number, details: string): void;
}
/** grpc.status.CANCELLED */
const GRPC_CANCELLED = 1;

/** A failed call: `message` says which endpoint, what failed and what to check; `grpcMessage` is what gRPC said. */
export class EtcdCallError extends Error {
  readonly grpcMessage: string;
  /** The message without the endpoint in front (for details that name it already). */
  get reason(): string {
    return this.message.startsWith(`${this.endpoint} `) ? this.message.slice(this.endpoint.length + 1) : this.message;
  }
  constructor(
    readonly endpoint: string,
    readonly what: string,
    timeoutMs: number,
    cause: unknown,
  ) {
    super(describeEtcdError(endpoint, what, timeoutMs, cause), { cause });
    this.name = 'EtcdCallError';
    this.grpcMessage = causeText(cause);
  }
}

function causeText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A gRPC or TLS failure in words a person can act on. grpc-js reports
 * connection and TLS failures as UNAVAILABLE with the socket's error in the
 * text ("No connection established. Last error: ..."), a silent endpoint as
 * DEADLINE_EXCEEDED.
 */
export function describeEtcdError(endpoint: string, what: string, timeoutMs: number, e: unknown): string {
  // grpc-js's text, less its noise: newlines from OpenSSL, a timestamp, an empty resolution note.
  const raw = causeText(e)
    .replace(/\s+/g, ' ')
    .replace(/ \(\d{4}-\d\d-\d\dT[\d:.]+Z\)/g, '')
    .replace(/\.? ?Resolution note: ?$/, '')
    .trim();
  const at = `${endpoint} (${what})`;
  const tail = ` [${raw.slice(0, 300)}]`;
  const tls = endpoint.startsWith('https:');
  if (/DEADLINE_EXCEEDED|deadline exceeded/i.test(raw)) {
    return `${at}: no answer within ${timeoutMs}ms: check that etcd runs there and that the port serves etcd's gRPC API${tls ? ' over TLS' : ''} (on OpenShift 4.23+ :2379 is gRPC, :2381 the HTTP gateway)${tail}`;
  }
  if (/ECONNREFUSED/.test(raw)) return `${at}: connection refused: is etcd running and listening on this address?${tail}`;
  if (/ENOTFOUND|EAI_AGAIN/.test(raw)) return `${at}: the host name does not resolve${tail}`;
  if (/EHOSTUNREACH|ENETUNREACH/.test(raw)) return `${at}: no route to the host${tail}`;
  if (/self[- ]signed certificate|unable to (get|verify)|certificate verify failed|UNABLE_TO_VERIFY|unknown ca|CERT_SIGNATURE_FAILURE|issuer certificate/i.test(raw)) {
    return `${at}: TLS: etcd's server certificate is not signed by a CA in etcd.caFile: check that caFile is the etcd server CA bundle${tail}`;
  }
  if (/altnames|does not match certificate|ERR_TLS_CERT_ALTNAME_INVALID|Hostname\/IP/i.test(raw)) {
    return `${at}: TLS: etcd's server certificate does not name this host: use an endpoint address the certificate covers${tail}`;
  }
  if (/certificate (has )?expired|CERT_HAS_EXPIRED|not yet valid/i.test(raw)) return `${at}: TLS: a certificate is expired or not yet valid (server or etcd.certFile)${tail}`;
  if (/bad certificate|certificate required|certificate unknown|alert number 4[0-9]|tlsv1 alert|sslv3 alert/i.test(raw)) {
    return `${at}: TLS: etcd refused the client certificate: check etcd.certFile and etcd.keyFile (an etcd client certificate signed by etcd's CA)${tail}`;
  }
  if (/wrong version number|packet length too long|unknown protocol|http request/i.test(raw)) {
    return `${at}: TLS handshake failed: the endpoint does not speak TLS here: use http:// or the TLS port${tail}`;
  }
  if (!tls && /UNAVAILABLE|Protocol error|RST_STREAM|Connection dropped|ECONNRESET|socket hang up/i.test(raw)) {
    return `${at}: connection closed: the endpoint may require TLS (use https:// with etcd.caFile/certFile/keyFile) or not serve gRPC${tail}`;
  }
  if (tls && /ECONNRESET|socket hang up|Connection dropped|closed/i.test(raw)) {
    return `${at}: the connection was closed during or after the TLS handshake: check etcd.certFile and etcd.keyFile (etcd asks for a client certificate) and that the port serves etcd's gRPC API${tail}`;
  }
  if (/UNAVAILABLE/.test(raw)) return `${at}: unavailable: ${raw.slice(0, 300)}`;
  return `${at}: ${raw.slice(0, 300)}`;
}

/** Reads the TLS files (errors name the file and the key). */
export function credentialsOf(tls: EtcdTls): IOptions['credentials'] {
  const read = (key: keyof EtcdTls): Buffer | undefined => {
    const f = tls[key];
    if (!f) return undefined;
    try {
      return readFileSync(f);
    } catch (e) {
      throw new Error(`etcd.${key} ${f}: ${(e as Error).message}`);
    }
  };
  const ca = read('caFile');
  const cert = read('certFile');
  const key = read('keyFile');
  if (!ca && !cert && !key) return undefined;
  if (!cert !== !key) throw new Error('etcd.certFile and etcd.keyFile go together: set both or neither');
  // A missing CA means the system's trusted roots (grpc-js createSsl(null, ...)).
  return { rootCertificate: ca as Buffer, certChain: cert, privateKey: key };
}

/**
 * Clients for any number of endpoints with the same TLS material and
 * default deadline; `close()` closes all of them.
 */
export class EtcdClients {
  private readonly credentials: IOptions['credentials'];
  private readonly open = new Map<string, EtcdEndpoint>();
  constructor(
    tls: EtcdTls,
    readonly timeoutMs: number,
  ) {
    this.credentials = credentialsOf(tls);
  }

  endpoint(url: string): EtcdEndpoint {
    let c = this.open.get(url);
    if (!c) {
      // Plain http endpoints get no TLS even when files are configured (etcd3 refuses a mix in one client).
      c = new EtcdEndpoint(url, url.startsWith('https:') ? this.credentials : undefined, this.timeoutMs);
      this.open.set(url, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.open.values()) c.close();
    this.open.clear();
  }
}

export interface PooledClientOptions {
  /** Backstop deadline for every unary call that does not set its own (default 10 s). */
  callTimeoutMs?: number;
  /** How long to wait for a connection (default 5 s). */
  dialTimeoutMs?: number;
}

/**
 * One etcd3 client over all of `conn.endpoints`, for the calls that need the
 * cluster rather than one member: coordination's transactions, leases and
 * watches (src/coord/). etcd3 balances the calls over the hosts and fails
 * over between them. Every unary call gets a deadline. The caller closes it.
 * Throws on unreadable TLS files or mixed schemes.
 */
export function makePooledClient(conn: EtcdConnection, opts: PooledClientOptions = {}): Etcd3 {
  if (conn.endpoints.length === 0) throw new Error('etcd: no endpoints');
  const tls = conn.endpoints.map((e) => e.startsWith('https://'));
  if (tls.some((t) => t !== tls[0])) throw new Error('etcd: endpoints mix http:// and https://');
  const callTimeoutMs = opts.callTimeoutMs ?? 10_000;
  const options: IOptions = {
    hosts: conn.endpoints,
    dialTimeout: opts.dialTimeoutMs ?? 5_000,
    defaultCallOptions: (c) => (c.isStream ? {} : { deadline: new Date(Date.now() + callTimeoutMs) }),
    grpcOptions: { 'grpc.max_receive_message_length': MAX_ANSWER_BYTES },
  };
  if (tls[0]) {
    if (!conn.caFile || !conn.certFile || !conn.keyFile) throw new Error('etcd: https:// endpoints need caFile, certFile and keyFile');
    options.credentials = credentialsOf(conn);
  }
  return new Etcd3(options);
}
