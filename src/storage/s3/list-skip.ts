import { isExcluded, type ObjectInfo } from '../store.js';

/**
 * S3 lists in key order and has no "stop at" bound: an excluded subtree is
 * left by starting a second listing after it (StartAfter), so it costs at
 * most the one page that reaches into it, however many objects it holds.
 * `listFrom(startAfter)` is one whole listing of the prefix from after that
 * key (undefined: from the start).
 */
export async function* listSkippingSubtree(listFrom: (startAfter: string | undefined) => AsyncIterable<ObjectInfo>, exclude: string | undefined): AsyncIterable<ObjectInfo> {
  let startAfter: string | undefined;
  for (let jumped = false; ; jumped = true) {
    let reached = false;
    const after = startAfter === undefined ? undefined : Buffer.from(startAfter);
    for await (const o of listFrom(startAfter)) {
      // A server that ignores StartAfter would give what was listed already: S3's order is the UTF-8 bytes'.
      if (after && Buffer.compare(Buffer.from(o.key), after) <= 0) continue;
      if (!isExcluded(o.key, exclude)) {
        yield o;
        continue;
      }
      // Keys under it are filtered anyway; the jump is made once, so a server that ignores StartAfter cannot loop.
      if (jumped) continue;
      reached = true;
      break;
    }
    if (!reached) return;
    startAfter = afterSubtree(exclude!);
  }
}

/**
 * A StartAfter past every key of the subtree `dir` (ending in '/') that a
 * listing should skip. S3 orders keys by their UTF-8 bytes and U+10FFFF is
 * the greatest code point: every key of the subtree sorts before it, but
 * one that continues with U+10FFFF itself (the caller filters those), and
 * every key outside the subtree that sorts after `dir` sorts after it.
 */
export function afterSubtree(dir: string): string {
  return `${dir}\u{10FFFF}`;
}
