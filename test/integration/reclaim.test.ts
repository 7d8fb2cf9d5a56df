import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The daemon's memory reclaim (src/daemon/reclaim.ts) against V8 itself: a
 * node started with the launcher's --expose-gc, buffers that outlived their
 * use, one `after(Infinity)`: V8's memory-reducing GC must take the options
 * and free them (the unit tests inject a fake gc).
 */
const DIST = join(new URL('../..', import.meta.url).pathname, 'dist');
const SCRIPT = `
import { MemoryReclaimer } from ${JSON.stringify(join(DIST, 'daemon', 'reclaim.js'))};
import { createLogger } from ${JSON.stringify(join(DIST, 'log.js'))};
let now = 0;
const r = new MemoryReclaimer(createLogger({ level: 'silent' }), undefined, () => now);
let held = Array.from({ length: 64 }, (_, i) => Buffer.alloc(1 << 20, i));
await new Promise((res) => setTimeout(res, 50));
const before = process.memoryUsage().arrayBuffers;
held = undefined;
now = 2_000;
const ran = r.after(Infinity);
console.log(JSON.stringify({ available: r.available, ran, before, after: process.memoryUsage().arrayBuffers }));
`;

describe("memory reclaim with V8's own gc", () => {
  it('with --expose-gc it runs a full GC that frees buffers nothing holds any more', () => {
    const out = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', SCRIPT], { encoding: 'utf8' })) as { available: boolean; ran: boolean; before: number; after: number };
    expect(out).toMatchObject({ available: true, ran: true });
    expect(out.before).toBeGreaterThan(64 * 2 ** 20);
    expect(out.after).toBeLessThan(8 * 2 ** 20);
  });
  it('without the flag it is a no-op', () => {
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', SCRIPT], { encoding: 'utf8' })) as { available: boolean; ran: boolean };
    expect(out).toEqual(expect.objectContaining({ available: false, ran: false }));
  });
});
