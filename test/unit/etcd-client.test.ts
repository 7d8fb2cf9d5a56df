import { createServer as createH2Server, type Http2Server } from 'node:http2';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeEtcdError, EtcdClients } from '../../src/etcd/client.js';
import { checkEtcdHealth } from '../../src/etcd/health.js';

// Loopback servers standing in for a sick etcd: one accepts TCP and never says a byte (no TLS
// handshake, no HTTP/2 preface), one speaks HTTP/2 and never answers a call. Every call must end
// at its deadline with a detail naming the endpoint; real etcd is in the integration tests.
let silent: Server;
let h2: Http2Server;
const sockets = new Set<Socket>();
let silentPort: number;
let h2Port: number;

beforeAll(async () => {
  silent = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  silentPort = (silent.address() as AddressInfo).port;
  h2 = createH2Server();
  h2.on('stream', () => {
    /* accepted, never answered */
  });
  await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
  h2Port = (h2.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => silent.close(() => r()));
  await new Promise<void>((r) => h2.close(() => r()));
});

async function timed<T>(p: Promise<T>): Promise<{ ms: number; error?: Error; value?: T }> {
  const t0 = Date.now();
  try {
    const value = await p;
    return { ms: Date.now() - t0, value };
  } catch (e) {
    return { ms: Date.now() - t0, error: e as Error };
  }
}

describe('EtcdClients (gRPC) deadlines', () => {
  for (const scheme of ['http', 'https'] as const) {
    it(`a ${scheme} endpoint that accepts and never answers: the call ends at its deadline`, async () => {
      const clients = new EtcdClients({}, 400);
      const ep = `${scheme}://127.0.0.1:${silentPort}`;
      try {
        const r = await timed(clients.endpoint(ep).status());
        expect(r.error?.message).toMatch(new RegExp(`^${ep} \\(status\\): no answer within 400ms`));
        expect(r.ms).toBeGreaterThanOrEqual(350);
        expect(r.ms).toBeLessThan(3000);
      } finally {
        clients.close();
      }
    });
  }

  it('a gRPC server that takes the call and never answers: DEADLINE_EXCEEDED as a clear detail', async () => {
    const clients = new EtcdClients({}, 500);
    try {
      const r = await timed(clients.endpoint(`http://127.0.0.1:${h2Port}`).range({ key: Buffer.from('a') }));
      expect(r.error?.message).toMatch(/\(range\): no answer within 500ms: check that etcd runs there/);
      expect(r.ms).toBeLessThan(3000);
    } finally {
      clients.close();
    }
  });

  it('aborting the signal ends a call before its deadline', async () => {
    const clients = new EtcdClients({}, 20_000);
    try {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 200);
      const r = await timed(clients.endpoint(`http://127.0.0.1:${h2Port}`).status({ signal: ac.signal }));
      expect(r.error?.message).toMatch(/status aborted/);
      expect(r.ms).toBeLessThan(2000);
    } finally {
      clients.close();
    }
  });

  it('preflight against a silent endpoint finishes within its deadline and says why', async () => {
    const clients = new EtcdClients({}, 500);
    try {
      const r = await timed(checkEtcdHealth(clients, [`https://127.0.0.1:${silentPort}`, `http://127.0.0.1:${h2Port}`]));
      expect(r.ms).toBeLessThan(4000);
      expect(r.value!.checks).toHaveLength(1);
      const [c] = r.value!.checks;
      expect(c).toMatchObject({ name: 'endpoint-health', ok: false });
      expect(c!.detail).toMatch(/^no configured etcd endpoint answers: https:\/\/127\.0\.0\.1:\d+ \(status\): no answer within 500ms.*; http:\/\/127\.0\.0\.1:\d+ \(status\): no answer within 500ms/);
    } finally {
      clients.close();
    }
  });

  it('a closed port: connection refused', async () => {
    const clients = new EtcdClients({}, 2000);
    try {
      const r = await timed(clients.endpoint('http://127.0.0.1:1').status());
      expect(r.error?.message).toMatch(/^http:\/\/127\.0\.0\.1:1 \(status\): connection refused/);
    } finally {
      clients.close();
    }
  });

  it('unreadable TLS files are named', () => {
    expect(() => new EtcdClients({ caFile: '/nonexistent/ca.crt' }, 1000)).toThrow(/etcd\.caFile \/nonexistent\/ca\.crt: ENOENT/);
  });
});

describe('describeEtcdError', () => {
  const ep = 'https://10.0.0.1:2379';
  const cases: [string, RegExp][] = [
    ['4 DEADLINE_EXCEEDED: Deadline exceeded after 2.000s', /no answer within 2000ms/],
    ['14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 10.0.0.1:2379', /connection refused/],
    ['14 UNAVAILABLE: No connection established. Last error: Error: unable to verify the first certificate', /not signed by a CA in etcd\.caFile/],
    ['14 UNAVAILABLE: No connection established. Last error: Error: self-signed certificate in certificate chain', /etcd\.caFile/],
    ["14 UNAVAILABLE: No connection established. Last error: Error: Hostname/IP does not match certificate's altnames: IP: 10.0.0.1 is not in the cert's list", /does not name this host/],
    ['14 UNAVAILABLE: No connection established. Last error: ...ssl/tls alert bad certificate...SSL alert number 42', /refused the client certificate: check etcd\.certFile and etcd\.keyFile/],
    ['14 UNAVAILABLE: No connection established. Last error: ...tls_validate_record_header:wrong version number', /does not speak TLS/],
  ];
  for (const [raw, want] of cases) {
    it(raw.slice(0, 90), () => {
      const d = describeEtcdError(ep, 'status', 2000, new Error(raw));
      expect(d).toMatch(want);
      expect(d.startsWith(`${ep} (status): `)).toBe(true);
    });
  }
  it('plain http to a TLS-only port', () => {
    expect(describeEtcdError('http://10.0.0.1:2379', 'status', 2000, new Error('14 UNAVAILABLE: No connection established. Last error: Protocol error'))).toMatch(/may require TLS/);
  });
});
