/**
 * A TCP proxy on 127.0.0.1 that delays every chunk by `oneWayMs` in each
 * direction (order kept): a link with a round trip of 2 x oneWayMs, to make
 * the number of round trips of a protocol show as time. It also counts
 * "turns": how often the direction of traffic changed, about two per round
 * trip of a request-response protocol.
 */
import { connect, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface LatencyProxy {
  port: number;
  host: string;
  /** Direction changes of the traffic seen so far, over all connections (client -> server -> client is 2). */
  turns(): number;
  close(): Promise<void>;
}

export async function startLatencyProxy(opts: { targetPort: number; oneWayMs: number; host?: string }): Promise<LatencyProxy> {
  const host = opts.host ?? '127.0.0.1';
  const sockets = new Set<Socket>();
  let turns = 0;
  let lastDir: 'up' | 'down' | undefined;

  /** One direction: chunks leave in arrival order, each oneWayMs after it came (one timer at a time, so never reordered). */
  const relay = (from: Socket, to: Socket, dir: 'up' | 'down'): void => {
    const queue: { at: number; chunk?: Buffer }[] = [];
    let timer: NodeJS.Timeout | undefined;
    const pump = (): void => {
      timer = undefined;
      while (queue.length && queue[0]!.at <= Date.now()) {
        const { chunk } = queue.shift()!;
        if (to.destroyed) continue;
        if (chunk) to.write(chunk);
        else to.end();
      }
      if (queue.length) timer = setTimeout(pump, Math.max(1, queue[0]!.at - Date.now()));
    };
    const push = (chunk?: Buffer): void => {
      queue.push({ at: Date.now() + opts.oneWayMs, chunk });
      if (!timer) timer = setTimeout(pump, opts.oneWayMs);
    };
    from.on('data', (chunk: Buffer) => {
      if (lastDir !== dir) {
        turns++;
        lastDir = dir;
      }
      push(chunk);
    });
    from.on('end', () => push());
  };

  const server = createServer((client) => {
    const upstream = connect({ host, port: opts.targetPort });
    for (const s of [client, upstream]) {
      s.setNoDelay(true); // no Nagle: the delay is the only one
      sockets.add(s);
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      s.on('close', () => sockets.delete(s));
    }
    relay(client, upstream, 'up');
    relay(upstream, client, 'down');
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    host,
    turns: () => turns,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
