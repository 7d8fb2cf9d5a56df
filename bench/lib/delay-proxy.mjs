// A TCP proxy on 127.0.0.1 that models a WAN link: every chunk it forwards,
// in either direction, leaves `delayMs` after it arrived (10 ms each way: a
// 20 ms round trip), in order per direction. A new connection costs one more
// round trip before its first client bytes reach the server (the TCP
// handshake the loopback connect skipped). Bandwidth is not limited.
//
// test/support/throttle-proxy.ts was not reused: it limits the rate of the
// server -> client direction only (a slow download), with a token-bucket pump
// that has no notion of a per-chunk due time; a latency link needs both
// directions delayed and ordered, and this one also counts what passes.
//
// Counting, per proxy: connections, bytes and chunks each way, and with
// `http: true` every HTTP/1.1 request the client sends (request line parsed,
// the body skipped by Content-Length or chunked framing), with its time, so
// a caller can count requests in a window and pick out e.g. manifest GETs.
// With `events: true` every forwarded chunk is logged as [time, dir, bytes]
// (for SSH, where requests cannot be seen, the bytes in a window).
import { connect, createServer } from 'node:net';

/** Parses the client -> server byte stream of one HTTP/1.1 connection into requests. */
function httpRequestParser(onRequest) {
  let state = 'head';
  let head = Buffer.alloc(0);
  let remaining = 0; // body bytes (or chunk bytes + CRLF) still to skip
  let line = Buffer.alloc(0); // a chunk-size or trailer line being read
  return (buf) => {
    let b = buf;
    while (b.length) {
      if (state === 'head') {
        head = head.length ? Buffer.concat([head, b]) : b;
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > 1 << 20) state = 'lost'; // not HTTP: stop parsing, keep forwarding
          return;
        }
        const text = head.subarray(0, end).toString('latin1');
        b = head.subarray(end + 4);
        head = Buffer.alloc(0);
        const [reqLine, ...headers] = text.split('\r\n');
        const [method, target] = reqLine.split(' ');
        const h = {};
        for (const l of headers) {
          const i = l.indexOf(':');
          if (i > 0) h[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        onRequest(method, target ?? '');
        if (/chunked/i.test(h['transfer-encoding'] ?? '')) state = 'chunk-size';
        else {
          remaining = Number(h['content-length'] ?? 0) || 0;
          state = remaining > 0 ? 'body' : 'head';
        }
      } else if (state === 'body' || state === 'chunk-data') {
        const n = Math.min(remaining, b.length);
        remaining -= n;
        b = b.subarray(n);
        if (remaining === 0) state = state === 'body' ? 'head' : 'chunk-size';
      } else if (state === 'chunk-size' || state === 'trailer') {
        const nl = b.indexOf('\n');
        if (nl < 0) {
          line = Buffer.concat([line, b]);
          return;
        }
        const l = Buffer.concat([line, b.subarray(0, nl + 1)]).toString('latin1').trim();
        line = Buffer.alloc(0);
        b = b.subarray(nl + 1);
        if (state === 'trailer') {
          if (l === '') state = 'head';
        } else {
          const size = parseInt(l.split(';')[0], 16);
          if (!(size >= 0)) state = 'lost';
          else if (size === 0) state = 'trailer';
          else {
            remaining = size + 2;
            state = 'chunk-data';
          }
        }
      } else return; // lost
    }
  };
}

/**
 * @param {{ targetPort: number, delayMs?: number, http?: boolean, events?: boolean, handshakeRtt?: boolean }} o
 */
export async function startDelayProxy({ targetPort, delayMs = 10, http = false, events = false, handshakeRtt = true }) {
  const c = { connections: 0, upBytes: 0, downBytes: 0, upChunks: 0, downChunks: 0 };
  const requests = []; // [epochMs, method, target]
  const chunkLog = []; // [epochMs, 'up'|'down', bytes]
  const sockets = new Set();

  /** One direction: chunks leave `delayMs` after they came, in order; ends and backpressure pass through. */
  function pipeDelayed(from, to, dir, notBefore) {
    const q = []; // { due, buf } | { due, end: true }
    let queued = 0;
    let timer;
    let waiting = false; // paused on `to`'s backpressure
    const flush = () => {
      timer = undefined;
      const now = performance.now();
      while (q.length && q[0].due <= now + 0.5) {
        const it = q.shift();
        if (it.end) {
          to.end();
          return;
        }
        queued -= it.buf.length;
        if (!to.write(it.buf) && !waiting) {
          waiting = true;
          from.pause();
          to.once('drain', () => {
            waiting = false;
            if (queued < 4 << 20) from.resume();
          });
        }
      }
      if (queued < 4 << 20 && !waiting) from.resume();
      if (q.length) timer = setTimeout(flush, Math.max(0, q[0].due - performance.now()));
    };
    const push = (it) => {
      q.push(it);
      if (!timer) timer = setTimeout(flush, Math.max(0, it.due - performance.now()));
    };
    const dueNow = () => Math.max(performance.now(), notBefore) + delayMs;
    from.on('data', (buf) => {
      if (dir === 'up') (c.upBytes += buf.length), c.upChunks++;
      else (c.downBytes += buf.length), c.downChunks++;
      if (events) chunkLog.push([Date.now(), dir, buf.length]);
      queued += buf.length;
      if (queued >= 4 << 20) from.pause();
      push({ due: dueNow(), buf });
    });
    from.on('end', () => push({ due: dueNow(), end: true }));
    return () => timer && clearTimeout(timer);
  }

  const server = createServer({ noDelay: true }, (client) => {
    c.connections++;
    const accepted = performance.now();
    const upstream = connect({ host: '127.0.0.1', port: targetPort, noDelay: true });
    client.setNoDelay(true);
    sockets.add(client);
    sockets.add(upstream);
    const parse = http ? httpRequestParser((method, target) => requests.push([Date.now(), method, target])) : undefined;
    if (parse) client.on('data', parse);
    const stopUp = pipeDelayed(client, upstream, 'up', handshakeRtt ? accepted + 2 * delayMs : 0);
    const stopDown = pipeDelayed(upstream, client, 'down', 0);
    let closed = 0;
    const gone = () => {
      if (++closed < 2) return;
      stopUp();
      stopDown();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    const kill = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', gone);
    upstream.on('close', gone);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    host: '127.0.0.1',
    port: server.address().port,
    delayMs,
    /** Counters so far (copy). */
    counters: () => ({ ...c, requests: requests.length }),
    /** HTTP requests seen, as [epochMs, method, target]; pass a start index to get the rest. */
    requests: (from = 0) => requests.slice(from),
    requestCount: () => requests.length,
    /** Chunks forwarded, as [epochMs, 'up'|'down', bytes] (events: true only). */
    chunks: (from = 0) => chunkLog.slice(from),
    chunkCount: () => chunkLog.length,
    /** Drops the logs (counters keep counting). */
    clearLogs() {
      requests.length = 0;
      chunkLog.length = 0;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r()));
    },
  };
}

/** Counter differences b - a. */
export function diffCounters(a, b) {
  return Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - (a[k] ?? 0)]));
}
