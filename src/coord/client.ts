/**
 * The etcd3 (gRPC) client coordination uses, made from the config's `etcd`
 * section. Kept tiny so that it can be swapped for the project's shared etcd
 * client (src/etcd/) once that is on etcd3 too: everything in src/coord/
 * takes an `Etcd3` instance and closes only what it opened.
 */
import { Etcd3, type IOptions } from 'etcd3';
import { credentialsOf } from '../etcd/client.js';

export interface EtcdConnection {
  /** http:// or https:// client URLs; all of one scheme. */
  endpoints: string[];
  /** PEM files, required for https:// endpoints (as in the config's `etcd` section). */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface ClientOptions {
  /** Backstop deadline for every unary call that does not set its own (default 10 s). */
  callTimeoutMs?: number;
  /** How long to wait for a connection (default 5 s). */
  dialTimeoutMs?: number;
}

/** A new etcd3 client for `conn`. The caller closes it (`client.close()`). Throws on unreadable TLS files or mixed schemes. */
export function makeEtcdClient(conn: EtcdConnection, opts: ClientOptions = {}): Etcd3 {
  if (conn.endpoints.length === 0) throw new Error('etcd: no endpoints');
  const tls = conn.endpoints.map((e) => e.startsWith('https://'));
  if (tls.some((t) => t !== tls[0])) throw new Error('etcd: endpoints mix http:// and https://');
  const callTimeoutMs = opts.callTimeoutMs ?? 10_000;
  const options: IOptions = {
    hosts: conn.endpoints,
    dialTimeout: opts.dialTimeoutMs ?? 5_000,
    defaultCallOptions: (c) => (c.isStream ? {} : { deadline: new Date(Date.now() + callTimeoutMs) }),
  };
  if (tls[0]) {
    if (!conn.caFile || !conn.certFile || !conn.keyFile) throw new Error('etcd: https:// endpoints need caFile, certFile and keyFile');
    options.credentials = credentialsOf(conn);
  }
  return new Etcd3(options);
}
