/**
 * A tiny TCP proxy on 127.0.0.1 that can slow down what the server sends
 * back (server -> client), e.g. to make an SFTP download trickle through a
 * real sshd. Client -> server bytes always pass at full speed. Backpressure
 * is kept: while bytes wait, the server side is paused.
 */
import { connect, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface ThrottleProxy {
  port: number;
  host: string;
  /**
   * Limits server -> client bytes to `bytesPerSecond` (undefined: full speed again, queued bytes flushed).
   * With `afterBytes`, each connection's first `afterBytes` downstream bytes still pass at full speed
   * (an SSH handshake, a listing, a manifest), and only what follows trickles.
   */
  setDownstreamRate(bytesPerSecond: number | undefined, opts?: { afterBytes?: number }): void;
  /** Downstream bytes forwarded so far, over all connections. */
  downstreamBytes(): number;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

export async function startThrottleProxy(opts: { targetPort: number; host?: string }): Promise<ThrottleProxy> {
  const host = opts.host ?? '127.0.0.1';
  let rate: number | undefined;
  let afterBytes = 0;
  let total = 0;
  let accepted = 0;
  const pumps = new Set<() => void>();
  const sockets = new Set<Socket>();

  const server = createServer((client) => {
    accepted++;
    const upstream = connect({ host, port: opts.targetPort });
    sockets.add(client);
    sockets.add(upstream);
    const gone = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
      pumps.delete(pump);
      if (timer) clearTimeout(timer);
    };
    client.on('error', gone);
    upstream.on('error', gone);
    client.on('close', gone);
    // The server closing is passed on once the client has had every queued byte (see pump).
    upstream.on('close', () => sockets.delete(upstream));
    client.pipe(upstream);

    let seen = 0; // downstream bytes of this connection
    const queue: Buffer[] = [];
    let queued = 0;
    let timer: NodeJS.Timeout | undefined;
    let upstreamEnded = false;

    const forward = (b: Buffer) => {
      total += b.length;
      if (!client.write(b)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    };
    // Moves queued bytes on: all of them at full speed, else one tick's worth per tick.
    function pump() {
      if (timer) {
        clearTimeout(timer);
        timer = undefined;
      }
      if (client.destroyed) return;
      if (rate === undefined) {
        while (queue.length) forward(queue.shift()!);
        queued = 0;
      } else if (queued > 0) {
        const tickMs = Math.max(20, 1000 / rate);
        let budget = Math.max(1, Math.round((rate * tickMs) / 1000));
        while (budget > 0 && queue.length) {
          const head = queue[0]!;
          const n = Math.min(budget, head.length);
          forward(head.subarray(0, n));
          if (n === head.length) queue.shift();
          else queue[0] = head.subarray(n);
          queued -= n;
          budget -= n;
        }
        if (queued > 0) timer = setTimeout(pump, tickMs);
      }
      if (queued < 64 * 1024 && !upstreamEnded) upstream.resume();
      if (queued === 0 && upstreamEnded) client.end();
    }
    pumps.add(pump);

    upstream.on('data', (chunk: Buffer) => {
      let b = chunk;
      if (rate === undefined || seen < afterBytes) {
        const free = rate === undefined ? b.length : Math.min(b.length, afterBytes - seen);
        if (queued === 0) {
          forward(b.subarray(0, free));
          seen += free;
          b = b.subarray(free);
        }
      }
      if (b.length === 0) return;
      seen += b.length;
      queue.push(b);
      queued += b.length;
      if (queued >= 64 * 1024) upstream.pause();
      if (!timer) pump();
    });
    upstream.on('end', () => {
      upstreamEnded = true;
      if (queued === 0) client.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    host: '127.0.0.1',
    setDownstreamRate(bytesPerSecond, o = {}) {
      if (bytesPerSecond !== undefined && !(bytesPerSecond > 0)) throw new Error(`setDownstreamRate: expected a positive rate, got ${bytesPerSecond}`);
      rate = bytesPerSecond;
      afterBytes = o.afterBytes ?? 0;
      for (const p of pumps) p();
    },
    downstreamBytes: () => total,
    connections: () => accepted,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
