/**
 * Test support: real etcd (Debian etcd-server/etcd-client 3.4) clusters on
 * 127.0.0.1 for integration tests.
 *
 * - `startEtcdCluster()` starts N members (default 3) with TLS on client AND
 *   peer URLs (client-cert auth on both), waits until every member answers
 *   `/health` with `{"health":"true"}`, and gives helpers that talk gRPC
 *   (etcd-grpc.ts: put, txn, range) and to `etcdctl`.
 * - `restoreSnapshot()` + `startEtcdFromDataDir()` bring a snapshot back up as
 *   a single plain-http member so a test can read what a backup holds.
 *
 * Missing binaries are an error (never a skip): run scripts/install-deps.sh.
 * Every etcd process is SIGKILLed when the test process exits, and a tiny
 * `sh` watchdog kills it if the test process dies without running exit hooks.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { grpcClient, within } from './etcd-grpc.js';

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

export interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  running: boolean;
  /** stdout+stderr of the member process (appended across restarts). */
  logFile: string;
}

/** Client TLS material (the client certificate, for etcdctl / gRPC). */
export interface EtcdTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface EtcdctlOptions {
  /** Overrides the default endpoints (the running members' client URLs). */
  endpoints?: string[];
  /** Extra environment for etcdctl (ETCDCTL_* from the test process are dropped). */
  env?: NodeJS.ProcessEnv;
  /** Kill etcdctl after this long (default 120 s). */
  timeoutMs?: number;
}

export interface EtcdctlResult {
  stdout: string;
  stderr: string;
}

export interface EtcdCluster {
  members: EtcdMember[];
  /** Client URLs of all members (https when tls), in member order. */
  endpoints: string[];
  /** Client certificate for etcdctl / gRPC; undefined for plain http. */
  tls?: EtcdTlsFiles;
  /** Every certificate made for the cluster (CA key, server, peer, client). */
  certs?: TestCerts;
  /** Temp root (0700) holding certs and member dirs. Removed by stop(). */
  dir: string;
  /** ETCDCTL_API=3 etcdctl with --endpoints and TLS flags prepended. Throws EtcdctlError on non-zero exit. */
  etcdctl(args: string[], opts?: EtcdctlOptions): Promise<EtcdctlResult>;
  /** A put over gRPC (KV.Put). */
  put(key: string | Buffer, value: string | Buffer): Promise<void>;
  /**
   * Many puts, batched into gRPC KV.Txn transactions of <= 128 puts and
   * ~1 MiB each (one revision per transaction), `concurrency` (default 16)
   * transactions in flight. For the same key twice, the last entry wins.
   */
  putMany(entries: Array<[string | Buffer, string | Buffer]>, concurrency?: number): Promise<void>;
  /** All keys under `prefix` ('' = whole keyspace) at one revision; keys decoded as UTF-8. */
  getAll(prefix?: string): Promise<Map<string, Buffer>>;
  /** Current store revision (linearizable). */
  revision(): Promise<number>;
  /** SIGTERM the member and wait for it to exit (SIGKILL after 10 s). */
  stopMember(i: number): Promise<void>;
  /**
   * Restart a stopped member with the same data dir, ports and flags. Waits
   * for its /health when a quorum is running with it; otherwise (e.g. the
   * first of three stopped members) only until it listens on its peer URL.
   */
  startMember(i: number): Promise<void>;
  /** Kill every member (SIGKILL) and remove `dir` (kept when ETCD_TEST_KEEP=1). Idempotent. */
  stop(): Promise<void>;
}

export interface StartEtcdClusterOptions {
  /** Number of members, default 3. */
  members?: number;
  /** TLS on client and peer URLs with client-cert auth, default true. */
  tls?: boolean;
  /** --quota-backend-bytes (etcd's max is 8 GiB). */
  quotaBytes?: number;
  /** How long to wait for the cluster to become healthy, default 30 s. */
  timeoutMs?: number;
}

export interface StartEtcdFromDataDirOptions {
  /** Member name used at restore time (`etcdctl snapshot restore --name`), default 'n1'. */
  name?: string;
  /**
   * Peer URL used at restore time (`--initial-advertise-peer-urls`, and in
   * `--initial-cluster name=URL`). Must be http://127.0.0.1:PORT. When omitted
   * a fresh port is used (etcd does not check it against a restored member).
   */
  peerUrl?: string;
  /** Client port, default a fresh free port. */
  clientPort?: number;
  /** --quota-backend-bytes. */
  quotaBytes?: number;
  /** How long to wait for `/health`, default 30 s. */
  timeoutMs?: number;
}

/** A single plain-http etcd member serving an existing data dir. */
export interface EtcdSingle {
  name: string;
  /** Client URL (http://127.0.0.1:PORT). */
  endpoint: string;
  endpoints: string[];
  peerUrl: string;
  dataDir: string;
  logFile: string;
  etcdctl(args: string[], opts?: EtcdctlOptions): Promise<EtcdctlResult>;
  put(key: string | Buffer, value: string | Buffer): Promise<void>;
  putMany(entries: Array<[string | Buffer, string | Buffer]>, concurrency?: number): Promise<void>;
  getAll(prefix?: string): Promise<Map<string, Buffer>>;
  revision(): Promise<number>;
  /** Stops etcd and removes its log dir; the data dir (the caller's) is left alone. Idempotent. */
  stop(): Promise<void>;
}

export interface RestoredSnapshot {
  /** The data dir written by `etcdctl snapshot restore`. */
  dataDir: string;
  name: string;
  peerUrl: string;
  /** Output of the restore command. */
  stdout: string;
  stderr: string;
}

export interface TestCerts {
  dir: string;
  caFile: string;
  caKeyFile: string;
  /** Server cert: SAN IP:127.0.0.1, IP:::1, DNS:localhost; EKU serverAuth+clientAuth. */
  serverCertFile: string;
  serverKeyFile: string;
  /** Peer cert: same SANs, serverAuth+clientAuth. */
  peerCertFile: string;
  peerKeyFile: string;
  /** Client cert: CN=root, clientAuth. */
  clientCertFile: string;
  clientKeyFile: string;
}

export class EtcdctlError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'EtcdctlError';
  }
}

// ---------------------------------------------------------------------------
// Tools, ports, certificates
// ---------------------------------------------------------------------------

const EXTRA_BIN_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const toolCache = new Map<string, string>();

function isExecutableFile(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Absolute path of `bin` (a name looked up on PATH and the sbin dirs, or a path); throws if missing. */
export function ensureTool(bin: string): string {
  const cached = toolCache.get(bin);
  if (cached) return cached;
  let found: string | undefined;
  if (bin.includes('/')) {
    const abs = path.resolve(bin);
    if (isExecutableFile(abs)) found = abs;
  } else {
    const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_BIN_DIRS];
    for (const d of dirs) {
      const p = path.join(d, bin);
      if (isExecutableFile(p)) {
        found = p;
        break;
      }
    }
  }
  if (!found) throw new Error(`${bin} is not installed; run scripts/install-deps.sh`);
  toolCache.set(bin, found);
  return found;
}

const handedOutPorts = new Set<number>();

/**
 * Test ports come from below the kernel's ephemeral range (32768-60999 on
 * Linux): a stopped member keeps its port until it restarts, and meanwhile
 * any connection's local port or another test's port-0 server could take a
 * port from the ephemeral range ("bind: address already in use" on a
 * restart, seen in CI). Each vitest worker has its own block of ports, so
 * workers never hand out the same one; within a block they go round from a
 * random start, each checked free when handed out.
 */
const PORT_FIRST = 20_000;
const PORT_BLOCK = 800;
const PORT_BLOCKS = 15; // 20000-31999
let portCursor = -1;

function portBlockStart(): number {
  const pool = Number(process.env.VITEST_POOL_ID);
  const id = Number.isInteger(pool) && pool >= 0 ? pool : process.pid;
  return PORT_FIRST + (id % PORT_BLOCKS) * PORT_BLOCK;
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** A free TCP port on 127.0.0.1, outside the ephemeral range; never the same one twice in this process. */
export async function freePort(): Promise<number> {
  const start = portBlockStart();
  if (portCursor < 0) portCursor = Math.floor(Math.random() * PORT_BLOCK);
  for (let attempt = 0; attempt < PORT_BLOCK; attempt++) {
    const port = start + (portCursor++ % PORT_BLOCK);
    if (handedOutPorts.has(port)) continue;
    if (await canBind(port)) {
      handedOutPorts.add(port);
      return port;
    }
  }
  throw new Error(`freePort: no free port left in ${start}-${start + PORT_BLOCK - 1}`);
}

const OPENSSL_CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = etcd-backupd-test
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[leaf_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
authorityKeyIdentifier = keyid
[leaf_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
`;

/**
 * Makes a CA, a server cert and a peer cert (SAN IP:127.0.0.1, IP:::1,
 * DNS:localhost) and a client cert (CN=root) with openssl (EC P-256, 7 days)
 * in `dir` (created 0700). Every file is 0600.
 */
export function makeCerts(dir: string): TestCerts {
  const openssl = ensureTool('openssl');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => path.join(dir, n);
  const cnf = f('openssl.cnf');
  fs.writeFileSync(cnf, OPENSSL_CNF, { mode: 0o600 });
  const run = (args: string[]) => {
    try {
      execFileSync(openssl, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OPENSSL_CONF: cnf } });
    } catch (err) {
      const e = err as { stderr?: Buffer; message: string };
      throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr?.toString() ?? e.message}`);
    }
  };
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const certs: TestCerts = {
    dir,
    caFile: f('ca.crt'),
    caKeyFile: f('ca.key'),
    serverCertFile: f('server.crt'),
    serverKeyFile: f('server.key'),
    peerCertFile: f('peer.crt'),
    peerKeyFile: f('peer.key'),
    clientCertFile: f('client.crt'),
    clientKeyFile: f('client.key'),
  };
  run(['req', '-x509', '-config', cnf, '-extensions', 'v3_ca', ...newKey, '-keyout', certs.caKeyFile,
    '-out', certs.caFile, '-days', '7', '-subj', '/CN=etcd-backupd-test-ca']);
  const leaf = (name: string, cn: string, ext: string, certFile: string, keyFile: string) => {
    const csr = f(`${name}.csr`);
    run(['req', '-new', '-config', cnf, ...newKey, '-keyout', keyFile, '-out', csr, '-subj', `/CN=${cn}`]);
    run(['x509', '-req', '-in', csr, '-CA', certs.caFile, '-CAkey', certs.caKeyFile,
      '-set_serial', `0x${randomBytes(12).toString('hex')}`, '-days', '7',
      '-extfile', cnf, '-extensions', ext, '-out', certFile]);
    fs.rmSync(csr, { force: true });
  };
  leaf('server', 'etcd-server', 'leaf_server', certs.serverCertFile, certs.serverKeyFile);
  leaf('peer', 'etcd-peer', 'leaf_server', certs.peerCertFile, certs.peerKeyFile);
  leaf('client', 'root', 'leaf_client', certs.clientCertFile, certs.clientKeyFile);
  for (const name of fs.readdirSync(dir)) fs.chmodSync(f(name), 0o600);
  return certs;
}

// ---------------------------------------------------------------------------
// etcdctl
// ---------------------------------------------------------------------------

function cleanEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('ETCDCTL_') || k.startsWith('ETCD_')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * Runs `ETCDCTL_API=3 etcdctl [--endpoints=..] [--cacert --cert --key] ...args`.
 * Throws EtcdctlError (with exitCode, stdout, stderr) on a non-zero exit.
 */
export function runEtcdctl(
  args: string[],
  opts: EtcdctlOptions & { tls?: EtcdTlsFiles } = {},
): Promise<EtcdctlResult> {
  const bin = ensureTool('etcdctl');
  const flags: string[] = [];
  if (opts.endpoints && opts.endpoints.length > 0) flags.push(`--endpoints=${opts.endpoints.join(',')}`);
  if (opts.tls) {
    flags.push(`--cacert=${opts.tls.caFile}`, `--cert=${opts.tls.certFile}`, `--key=${opts.tls.keyFile}`);
  }
  const all = [...flags, ...args];
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      all,
      {
        env: cleanEnv({ ETCDCTL_API: '3', ...opts.env }),
        maxBuffer: 256 * 1024 * 1024,
        timeout: opts.timeoutMs ?? 120_000,
        killSignal: 'SIGKILL',
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean };
          const code = typeof e.code === 'number' ? e.code : null;
          reject(
            new EtcdctlError(
              `etcdctl ${all.join(' ')} failed (${code !== null ? `exit ${code}` : e.killed ? 'killed (timeout)' : String(e.code ?? e.message)}): ${stderr.trim() || stdout.trim()}`,
              code,
              stdout,
              stderr,
            ),
          );
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}

/**
 * `etcdctl snapshot restore SNAPSHOT --data-dir DATADIR --name NAME
 * --initial-cluster NAME=PEER --initial-advertise-peer-urls PEER`.
 * `dataDir` must not exist yet (etcdctl refuses an existing one). Pass the
 * result's name and peerUrl to startEtcdFromDataDir().
 */
export async function restoreSnapshot(
  snapshotFile: string,
  dataDir: string,
  opts: { name?: string; peerUrl?: string } = {},
): Promise<RestoredSnapshot> {
  const name = opts.name ?? 'n1';
  const peerUrl = opts.peerUrl ?? `http://127.0.0.1:${await freePort()}`;
  const { stdout, stderr } = await runEtcdctl([
    'snapshot', 'restore', snapshotFile,
    '--data-dir', dataDir,
    '--name', name,
    '--initial-cluster', `${name}=${peerUrl}`,
    '--initial-advertise-peer-urls', peerUrl,
  ]);
  return { dataDir, name, peerUrl, stdout, stderr };
}

// ---------------------------------------------------------------------------
// Process tracking
// ---------------------------------------------------------------------------

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of liveChildren) {
        try {
          c.kill('SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  // Watchdog: if this process dies without running exit hooks (SIGKILL,
  // SIGTERM from a test runner), kill the child. It ends by itself as soon
  // as the child is gone. Reparenting (our death) is seen through its ppid.
  if (child.pid !== undefined) {
    const script =
      'while :; do read -r _ _ _ pp _ < /proc/$$/stat || exit 0; ' +
      'kill -0 "$2" 2>/dev/null || exit 0; ' +
      '[ "$pp" = "$1" ] || { kill -9 "$2" 2>/dev/null; exit 0; }; sleep 1; done';
    try {
      const w = spawn('/bin/sh', ['-c', script, 'etcd-test-watchdog', String(process.pid), String(child.pid)], {
        stdio: 'ignore',
        detached: true,
      });
      w.on('error', () => undefined);
      w.unref();
    } catch {
      /* the exit hook still covers the normal case */
    }
  }
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (hasExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = () => {
      clearTimeout(t);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

async function terminate(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  child.kill('SIGTERM');
  if (await waitExit(child, 10_000)) return;
  child.kill('SIGKILL');
  await waitExit(child, 5_000);
}

async function logTail(file: string, lines = 40): Promise<string> {
  try {
    const data = await fsp.readFile(file, 'utf8');
    const tail = data.slice(-16_384).split('\n');
    return tail.slice(-lines).join('\n');
  } catch (err) {
    return `(no log: ${(err as Error).message})`;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// HTTP(S) to a member: /health and /version (startup waits); gRPC for the keyspace
// ---------------------------------------------------------------------------

interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

interface HttpResult {
  status: number;
  body: string;
}

function httpCall(
  url: string,
  method: 'GET' | 'POST',
  body: unknown,
  tls: TlsMaterial | undefined,
  agent: http.Agent | undefined,
  timeoutMs = 10_000,
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: http.OutgoingHttpHeaders = {};
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    const base: https.RequestOptions = {
      method,
      hostname: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      headers,
      agent,
    };
    const req =
      u.protocol === 'https:'
        ? https.request({ ...base, ca: tls?.ca, cert: tls?.cert, key: tls?.key, rejectUnauthorized: true })
        : http.request(base);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs}ms: ${method} ${url}`)));
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.end(payload);
  });
}

function isTransient(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  const msg = String(e?.message ?? '');
  return (
    ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT'].includes(String(e?.code)) ||
    /socket hang up|leader changed|no leader|timed out|timeout|unavailable|not capable|deadline|ECONNREFUSED|closed/i.test(msg)
  );
}

function toBuf(v: string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // no upper bound: everything >= key
}

/** gRPC/etcdctl client over a changing set of endpoints. */
class Client {
  private readonly grpc = new Map<string, Etcd3>();
  constructor(
    private readonly liveEndpoints: () => string[],
    private readonly tlsMat: TlsMaterial | undefined,
    private readonly tlsFiles: EtcdTlsFiles | undefined,
  ) {}

  /** `fn` on a running member's gRPC client, retried over the members on transient errors for 15 s. */
  async call<T>(what: string, fn: (c: Etcd3) => Promise<T>): Promise<T> {
    const deadline = Date.now() + 15_000;
    let lastErr: unknown;
    for (let attempt = 0; ; attempt++) {
      const eps = this.liveEndpoints();
      if (eps.length === 0) throw new Error(`etcd ${what}: no running member`);
      const ep = eps[attempt % eps.length]!;
      let c = this.grpc.get(ep);
      if (!c) {
        c = grpcClient(ep, this.tlsMat);
        this.grpc.set(ep, c);
      }
      try {
        return await fn(c);
      } catch (err) {
        if (!isTransient(err)) throw new Error(`etcd ${what} at ${ep}: ${(err as Error).message}`);
        lastErr = err;
      }
      if (Date.now() > deadline) throw new Error(`etcd ${what} failed: ${(lastErr as Error)?.message}`);
      await sleep(Math.min(50 * (attempt + 1), 250));
    }
  }

  async put(key: string | Buffer, value: string | Buffer): Promise<void> {
    await this.call('put', (c) => c.kv.put({ key: toBuf(key), value: toBuf(value) }, within()));
  }

  /**
   * Puts in transactions (KV.Txn) of at most 128 puts (etcd's
   * default --max-txn-ops) and ~1 MiB of keys+values (under the default
   * --max-request-bytes 1.5 MiB); `concurrency` transactions in flight.
   * Each transaction is one revision. A later entry for the same key wins.
   */
  async putMany(entries: Array<[string | Buffer, string | Buffer]>, concurrency = 16): Promise<void> {
    const MAX_OPS = 128;
    const MAX_BYTES = 1024 * 1024;
    // Duplicate keys inside one txn are rejected by etcd; keep the last value.
    const dedup = new Map<string, [Buffer, Buffer]>();
    for (const [k, v] of entries) {
      const kb = toBuf(k);
      const key = kb.toString('base64');
      dedup.delete(key);
      dedup.set(key, [kb, toBuf(v)]);
    }
    const batches: Array<Array<[Buffer, Buffer]>> = [];
    let cur: Array<[Buffer, Buffer]> = [];
    let bytes = 0;
    for (const kv of dedup.values()) {
      const size = kv[0].length + kv[1].length;
      if (cur.length > 0 && (cur.length >= MAX_OPS || bytes + size > MAX_BYTES)) {
        batches.push(cur);
        cur = [];
        bytes = 0;
      }
      cur.push(kv);
      bytes += size;
    }
    if (cur.length > 0) batches.push(cur);
    let next = 0;
    const worker = async () => {
      while (next < batches.length) {
        const batch = batches[next++]!;
        await this.call('txn', (c) => c.kv.txn({ success: batch.map(([k, v]) => ({ request_put: { key: k, value: v } })) }, within()));
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, batches.length)) }, worker));
  }

  async getAll(prefix = ''): Promise<Map<string, Buffer>> {
    const start = prefix === '' ? Buffer.from([0]) : Buffer.from(prefix, 'utf8');
    const end = prefix === '' ? Buffer.from([0]) : prefixEnd(start);
    const out = new Map<string, Buffer>();
    let key = start;
    let rev: string | undefined;
    for (;;) {
      const from = key;
      const res = await this.call('range', (c) => c.kv.range({ key: from, range_end: end, limit: 1000, revision: rev ?? 0 }, within()));
      rev ??= res.header.revision;
      const kvs = res.kvs ?? [];
      for (const kv of kvs) out.set(kv.key.toString('utf8'), kv.value);
      if (!res.more || kvs.length === 0) return out;
      key = Buffer.concat([kvs[kvs.length - 1]!.key, Buffer.from([0])]);
    }
  }

  async revision(): Promise<number> {
    const res = await this.call('range', (c) => c.kv.range({ key: Buffer.from([0]), limit: 1 }, within()));
    const r = Number(res.header.revision);
    if (!Number.isFinite(r)) throw new Error(`etcd: no revision in range response ${JSON.stringify(res.header)}`);
    return r;
  }

  etcdctl(args: string[], opts: EtcdctlOptions = {}): Promise<EtcdctlResult> {
    return runEtcdctl(args, { ...opts, endpoints: opts.endpoints ?? this.liveEndpoints(), tls: this.tlsFiles });
  }

  close(): void {
    for (const c of this.grpc.values()) c.close();
    this.grpc.clear();
  }
}

// ---------------------------------------------------------------------------
// Members
// ---------------------------------------------------------------------------

interface MemberState {
  member: EtcdMember;
  args: string[];
  child?: ChildProcess;
}

function spawnMember(st: MemberState): ChildProcess {
  const etcd = ensureTool('etcd');
  const fd = fs.openSync(st.member.logFile, 'a', 0o600);
  let child: ChildProcess;
  try {
    fs.writeSync(fd, `\n===== ${new Date().toISOString()} etcd ${st.args.join(' ')}\n`);
    child = spawn(etcd, st.args, { stdio: ['ignore', fd, fd], env: cleanEnv() });
  } finally {
    fs.closeSync(fd);
  }
  child.on('error', () => undefined); // surfaced through exitCode / health wait
  track(child);
  st.child = child;
  st.member.running = true;
  child.once('exit', () => {
    if (st.child === child) st.member.running = false;
  });
  return child;
}

async function probe(url: string, tls: TlsMaterial | undefined): Promise<HttpResult> {
  return httpCall(url, 'GET', undefined, tls, undefined, 2_000);
}

function tcpConnects(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1_000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/**
 * Waits until the member answers /health {"health":"true"}, or, for
 * 'listening', only until it accepts connections on its peer URL (etcd 3.4
 * serves clients, even /version, only once a quorum has elected a leader).
 */
async function waitMemberReady(
  st: MemberState,
  tls: TlsMaterial | undefined,
  want: 'healthy' | 'listening',
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const m = st.member;
  let last = 'no answer yet';
  for (;;) {
    const child = st.child;
    if (!child || hasExited(child)) {
      throw new Error(
        `etcd member ${m.name} exited during startup (code ${child?.exitCode}, signal ${child?.signalCode})\n` +
          `--- last lines of ${m.logFile} ---\n${await logTail(m.logFile)}`,
      );
    }
    try {
      if (want === 'healthy') {
        const res = await probe(`${m.clientUrl}/health`, tls);
        last = `/health ${res.status} ${res.body.trim()}`;
        if (res.status === 200 && (JSON.parse(res.body) as { health?: string }).health === 'true') return;
      } else {
        last = `no TCP connection to peer URL ${m.peerUrl}`;
        if (await tcpConnects(m.peerUrl)) return;
      }
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `etcd member ${m.name} (${m.clientUrl}) not ${want} after ${timeoutMs}ms; last: ${last}\n` +
          `--- last lines of ${m.logFile} ---\n${await logTail(m.logFile)}`,
      );
    }
    await sleep(100);
  }
}

function baseArgs(
  name: string,
  dataDir: string,
  clientUrl: string,
  peerUrl: string,
  quotaBytes: number | undefined,
): string[] {
  const a = [
    '--name', name,
    '--data-dir', dataDir,
    '--listen-client-urls', clientUrl,
    '--advertise-client-urls', clientUrl,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    // Fast elections, still tolerant of a busy 2-core machine.
    '--heartbeat-interval', '100',
    '--election-timeout', '1000',
    '--logger', 'zap',
    '--log-outputs', 'stderr',
  ];
  if (quotaBytes !== undefined) a.push('--quota-backend-bytes', String(quotaBytes));
  return a;
}

async function makeTempRoot(prefix: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  await fsp.chmod(dir, 0o700);
  return dir;
}

// ---------------------------------------------------------------------------
// startEtcdCluster
// ---------------------------------------------------------------------------

export async function startEtcdCluster(opts: StartEtcdClusterOptions = {}): Promise<EtcdCluster> {
  const n = opts.members ?? 3;
  const useTls = opts.tls ?? true;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  if (!Number.isInteger(n) || n < 1) throw new Error(`startEtcdCluster: bad member count ${n}`);
  ensureTool('etcd');
  ensureTool('etcdctl');

  const dir = await makeTempRoot('etcd-test-');
  let certs: TestCerts | undefined;
  let tlsFiles: EtcdTlsFiles | undefined;
  let tlsMat: TlsMaterial | undefined;
  if (useTls) {
    certs = makeCerts(path.join(dir, 'certs'));
    tlsFiles = { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile };
    tlsMat = {
      ca: fs.readFileSync(certs.caFile),
      cert: fs.readFileSync(certs.clientCertFile),
      key: fs.readFileSync(certs.clientKeyFile),
    };
  }
  const scheme = useTls ? 'https' : 'http';
  const states: MemberState[] = [];
  for (let i = 0; i < n; i++) {
    const name = `n${i}`;
    const mdir = path.join(dir, name);
    await fsp.mkdir(mdir, { mode: 0o700 });
    const member: EtcdMember = {
      name,
      clientUrl: `${scheme}://127.0.0.1:${await freePort()}`,
      peerUrl: `${scheme}://127.0.0.1:${await freePort()}`,
      dataDir: path.join(mdir, 'data'),
      running: false,
      logFile: path.join(mdir, 'etcd.log'),
    };
    states.push({ member, args: [] });
  }
  const initialCluster = states.map((s) => `${s.member.name}=${s.member.peerUrl}`).join(',');
  const token = `etcd-test-${randomBytes(6).toString('hex')}`;
  for (const st of states) {
    const m = st.member;
    st.args = [
      ...baseArgs(m.name, m.dataDir, m.clientUrl, m.peerUrl, opts.quotaBytes),
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', token,
    ];
    if (certs) {
      st.args.push(
        '--cert-file', certs.serverCertFile,
        '--key-file', certs.serverKeyFile,
        '--trusted-ca-file', certs.caFile,
        '--client-cert-auth',
        '--peer-cert-file', certs.peerCertFile,
        '--peer-key-file', certs.peerKeyFile,
        '--peer-trusted-ca-file', certs.caFile,
        '--peer-client-cert-auth',
      );
    }
  }

  const members = states.map((s) => s.member);
  const client = new Client(
    () => members.filter((m) => m.running).map((m) => m.clientUrl),
    tlsMat,
    tlsFiles,
  );
  let stopped = false;
  // Tear-down kills outright: SIGTERM on all members at once makes etcd 3.4
  // try leader transfers to members that are going away (~7 s).
  const stopAll = async () => {
    await Promise.all(
      states.map(async (st) => {
        if (st.child && !hasExited(st.child)) {
          st.child.kill('SIGKILL');
          await waitExit(st.child, 5_000);
        }
      }),
    );
    for (const st of states) st.member.running = false;
  };

  try {
    for (const st of states) spawnMember(st);
    await Promise.all(states.map((st) => waitMemberReady(st, tlsMat, 'healthy', timeoutMs)));
  } catch (err) {
    await stopAll();
    client.close();
    if (process.env.ETCD_TEST_KEEP !== '1') await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  }

  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl),
    tls: tlsFiles,
    certs,
    dir,
    etcdctl: (args, o) => client.etcdctl(args, o),
    put: (k, v) => client.put(k, v),
    putMany: (e, c) => client.putMany(e, c),
    getAll: (p) => client.getAll(p),
    revision: () => client.revision(),
    async stopMember(i: number) {
      const st = states[i];
      if (!st) throw new Error(`stopMember: no member ${i}`);
      if (st.child) await terminate(st.child);
      st.member.running = false;
    },
    async startMember(i: number) {
      if (stopped) throw new Error('startMember: cluster was stopped');
      const st = states[i];
      if (!st) throw new Error(`startMember: no member ${i}`);
      if (st.child && !hasExited(st.child)) return;
      spawnMember(st);
      const running = members.filter((m) => m.running).length;
      // /health needs a leader, which needs a quorum of running members.
      const want = running > n / 2 ? 'healthy' : 'listening';
      await waitMemberReady(st, tlsMat, want, timeoutMs);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
      client.close();
      if (process.env.ETCD_TEST_KEEP !== '1') await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  return cluster;
}

// ---------------------------------------------------------------------------
// startEtcdFromDataDir
// ---------------------------------------------------------------------------

/**
 * Starts one plain-http member on an existing data dir, e.g. one written by
 * restoreSnapshot() (or `etcdctl snapshot restore --data-dir D --name n1
 * --initial-cluster n1=http://127.0.0.1:Q --initial-advertise-peer-urls
 * http://127.0.0.1:Q`): pass the same name and peerUrl. Waits for /health.
 */
export async function startEtcdFromDataDir(
  dataDir: string,
  opts: StartEtcdFromDataDirOptions = {},
): Promise<EtcdSingle> {
  ensureTool('etcd');
  if (!fs.existsSync(path.join(dataDir, 'member'))) {
    throw new Error(`startEtcdFromDataDir: ${dataDir} holds no etcd data (no member/ dir)`);
  }
  const name = opts.name ?? 'n1';
  const peerUrl = opts.peerUrl ?? `http://127.0.0.1:${await freePort()}`;
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(peerUrl)) {
    throw new Error(`startEtcdFromDataDir: peerUrl must be http://127.0.0.1:PORT, got ${peerUrl}`);
  }
  const clientUrl = `http://127.0.0.1:${opts.clientPort ?? (await freePort())}`;
  const logDir = await makeTempRoot('etcd-restored-');
  const member: EtcdMember = {
    name,
    clientUrl,
    peerUrl,
    dataDir,
    running: false,
    logFile: path.join(logDir, 'etcd.log'),
  };
  const st: MemberState = {
    member,
    args: [
      ...baseArgs(name, dataDir, clientUrl, peerUrl, opts.quotaBytes),
      '--initial-cluster', `${name}=${peerUrl}`,
    ],
  };
  const client = new Client(() => (member.running ? [clientUrl] : []), undefined, undefined);
  try {
    spawnMember(st);
    await waitMemberReady(st, undefined, 'healthy', opts.timeoutMs ?? 30_000);
  } catch (err) {
    if (st.child) await terminate(st.child);
    client.close();
    await fsp.rm(logDir, { recursive: true, force: true });
    throw err;
  }
  let stopped = false;
  return {
    name,
    endpoint: clientUrl,
    endpoints: [clientUrl],
    peerUrl,
    dataDir,
    logFile: member.logFile,
    etcdctl: (args, o) => client.etcdctl(args, o),
    put: (k, v) => client.put(k, v),
    putMany: (e, c) => client.putMany(e, c),
    getAll: (p) => client.getAll(p),
    revision: () => client.revision(),
    async stop() {
      if (stopped) return;
      stopped = true;
      if (st.child) await terminate(st.child);
      member.running = false;
      client.close();
      if (process.env.ETCD_TEST_KEEP !== '1') await fsp.rm(logDir, { recursive: true, force: true });
    },
  };
}
