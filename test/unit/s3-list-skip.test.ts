import { describe, expect, it } from 'vitest';
import { afterSubtree, listSkippingSubtree } from '../../src/storage/s3/list-skip.js';
import type { ObjectInfo } from '../../src/storage/store.js';

const KEYS = ['c1/20260101T000000Z-m0/backup.tar', 'c1/20260101T000000Z-m0/manifest.json', 'c1/continuous/b/1-2.json', 'c1/continuous/b/1-2.seg', 'c1/continuous/b/3-4.json', 'c1/continuous-x/a', 'c1/continuous0/a', 'c1/zz/manifest.json'].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));

/** A server's listing in S3's byte order, from after `startAfter` (or, ignoring it, from the start); counts the objects it returned. */
function server(ignoresStartAfter: boolean) {
  const calls: (string | undefined)[] = [];
  let returned = 0;
  const listFrom = async function* (startAfter: string | undefined): AsyncIterable<ObjectInfo> {
    calls.push(startAfter);
    for (const key of KEYS) {
      if (!ignoresStartAfter && startAfter !== undefined && Buffer.compare(Buffer.from(key), Buffer.from(startAfter)) <= 0) continue;
      returned++;
      yield { key, size: 1 };
    }
  };
  return { listFrom, calls, returned: () => returned };
}

async function keys(it: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of it) out.push(o.key);
  return out;
}

describe('listSkippingSubtree (S3 StartAfter jump)', () => {
  const outside = KEYS.filter((k) => !k.startsWith('c1/continuous/'));
  it.each([
    ['a server that honours StartAfter', false, 2],
    ['a server that ignores StartAfter', true, 2],
  ])('%s: every key outside the subtree once, in order, none inside, at most two listings', async (_name, ignores, listings) => {
    const s = server(ignores);
    expect(await keys(listSkippingSubtree(s.listFrom, 'c1/continuous/'))).toEqual(outside);
    expect(s.calls).toEqual([undefined, afterSubtree('c1/continuous/')].slice(0, listings));
  });
  it('reads one key of the subtree, not the rest, when the server honours StartAfter', async () => {
    const s = server(false);
    await keys(listSkippingSubtree(s.listFrom, 'c1/continuous/'));
    // 2 backup keys + continuous-x (sorts before the subtree) + the first segment key (the jump) + continuous0 + zz
    expect(s.returned()).toBe(6);
  });
  it('without an exclude: one listing of everything', async () => {
    const s = server(false);
    expect(await keys(listSkippingSubtree(s.listFrom, undefined))).toEqual(KEYS);
    expect(s.calls).toEqual([undefined]);
  });
  it('siblings that share the directory name\'s text are listed: continuous-x/ sorts before the subtree, continuous0/ after the jump', async () => {
    const listed = await keys(listSkippingSubtree(server(false).listFrom, 'c1/continuous/'));
    expect(listed).toContain('c1/continuous-x/a');
    expect(listed).toContain('c1/continuous0/a');
    expect(Buffer.compare(Buffer.from('c1/continuous0/a'), Buffer.from(afterSubtree('c1/continuous/')))).toBeGreaterThan(0);
  });
});
