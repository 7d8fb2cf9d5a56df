import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdGateway } from '../../src/etcd/gateway.js';

// A loopback HTTP server standing in for a sick etcd gateway: answers that trickle or never end.
let server: Server;
let endpoint: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/trickle') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{');
      const t = setInterval(() => res.write(' '), 50); // never idle, never done
      res.on('close', () => clearInterval(t));
    } else if (req.url === '/huge') {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      let sent = 0;
      const more = () => {
        while (sent < 80 && res.write(chunk)) sent++;
        if (sent < 80) res.once('drain', more);
        else res.end('{}');
      };
      more();
    } else {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"health":"true"}');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('EtcdGateway', () => {
  it('answers', async () => {
    expect(await new EtcdGateway({}, 2000).call(endpoint, 'health')).toEqual({ health: 'true' });
  });

  it('a server that keeps sending a byte now and then cannot hold a call past its deadline', async () => {
    const t0 = Date.now();
    await expect(new EtcdGateway({}, 400).call(endpoint, 'trickle')).rejects.toThrow(`no answer from ${endpoint} within 400ms`);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('an answer larger than 64 MiB is refused, not buffered', async () => {
    await expect(new EtcdGateway({}, 20_000).call(endpoint, 'huge')).rejects.toThrow(/is larger than 67108864 bytes/);
  });

  it('the caller can abort a call', async () => {
    const ac = new AbortController();
    const p = new EtcdGateway({}, 20_000).call(endpoint, 'trickle', undefined, { signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    await expect(p).rejects.toThrow(/abort/i);
  });
});
