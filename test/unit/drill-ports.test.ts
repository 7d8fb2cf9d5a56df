/**
 * The restore drill's etcd must never take the node's real etcd ports
 * (2379 client, 2380 peer) nor a port something already listens on, even
 * when the kernel's "free port" answer says otherwise.
 */
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORBIDDEN_DRILL_PORTS, isAllowedDrillPort, isPortFree, pickDrillPorts } from '../../src/drill/ports.js';

let busy: Server;
let busyPort: number;

beforeAll(async () => {
  busy = createServer();
  busyPort = await new Promise<number>((resolve) =>
    busy.listen({ host: '127.0.0.1', port: 0 }, () => resolve((busy.address() as { port: number }).port)),
  );
});

afterAll(() => new Promise<void>((resolve) => busy.close(() => resolve())));

/** A candidate source that hands out the given ports in order, then fails. */
function candidates(ports: number[]): () => Promise<number> {
  let i = 0;
  return async () => {
    if (i >= ports.length) throw new Error('out of candidates');
    return ports[i++]!;
  };
}

describe('drill port guard', () => {
  it('refuses the node etcd ports and their neighbours outright', () => {
    for (const p of [2379, 2380]) {
      expect(FORBIDDEN_DRILL_PORTS.has(p)).toBe(true);
      expect(isAllowedDrillPort(p)).toBe(false);
    }
    expect(isAllowedDrillPort(0)).toBe(false);
    expect(isAllowedDrillPort(80)).toBe(false);
    expect(isAllowedDrillPort(70000)).toBe(false);
    expect(isAllowedDrillPort(43210)).toBe(true);
  });

  it('knows a port in use from a free one', async () => {
    expect(await isPortFree(busyPort)).toBe(false);
  });

  it('skips 2379, 2380, a port in use and duplicates even when they are offered as free', async () => {
    // Two ports the kernel really has free right now.
    const [a, b] = await pickDrillPorts(2);
    expect(a).not.toBe(b);
    const got = await pickDrillPorts(2, { candidate: candidates([2379, 2380, busyPort, a!, a!, 2379, b!]) });
    expect(got).toEqual([a, b]);
  });

  it('never consults the "is it free" probe for a forbidden port', async () => {
    const probed: number[] = [];
    const [a, b] = await pickDrillPorts(2);
    await pickDrillPorts(2, {
      candidate: candidates([2379, 2380, a!, b!]),
      isFree: async (p) => {
        probed.push(p);
        return true;
      },
    });
    expect(probed).toEqual([a, b]);
  });

  it('gives up with drill-start-failed when only bad ports come', async () => {
    await expect(pickDrillPorts(1, { candidate: async () => 2379, maxAttempts: 20 })).rejects.toMatchObject({ reason: 'drill-start-failed' });
  });

  it('picks distinct, allowed, free loopback ports from the kernel', async () => {
    for (let i = 0; i < 20; i++) {
      const ports = await pickDrillPorts(2);
      expect(new Set(ports).size).toBe(2);
      for (const p of ports) {
        expect(isAllowedDrillPort(p)).toBe(true);
        expect(await isPortFree(p)).toBe(true);
      }
    }
  });
});
