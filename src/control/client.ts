import { createConnection } from 'node:net';
import { createInterface } from 'node:readline';
import type { ControlEvent, ControlRequest } from './protocol.js';

/**
 * Sends a request to a running daemon. Resolves `undefined` when no daemon
 * listens (no socket, or a stale one), so the CLI can do the work itself.
 */
export function callDaemon(path: string, req: ControlRequest, onEvent: (e: ControlEvent) => void): Promise<ControlEvent | undefined> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let connected = false;
    let final: ControlEvent | undefined;
    sock.once('connect', () => {
      connected = true;
      sock.write(JSON.stringify(req) + '\n');
      createInterface({ input: sock }).on('line', (line) => {
        let e: ControlEvent;
        try {
          e = JSON.parse(line) as ControlEvent;
        } catch {
          return;
        }
        if (e.type === 'result' || e.type === 'error') final = e;
        else onEvent(e);
      });
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (!connected && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) resolve(undefined);
      else reject(e);
    });
    sock.on('close', () => {
      if (!connected) return;
      if (final) resolve(final);
      else reject(new Error('the daemon closed the control connection without a result (did it stop?)'));
    });
  });
}
