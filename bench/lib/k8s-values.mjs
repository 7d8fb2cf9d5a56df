// Kubernetes-shaped writes for the continuous-backup bench's load
// (bench/latency.mjs --values k8s): a pool of objects from
// test/support/k8s-data.ts (seed 7, under /kubernetes.io), updated round
// robin. The pool is larger than a segment holds (a segment is cut at 4 MiB
// of records, ~1500 such writes), so a segment never holds the same object
// twice and zstd gets no repeats a real cluster would not give it; and a JSON
// object's resourceVersion is rewritten on every write, as the API server does.
import { k8sData } from './dataset.mjs';

const RV = /"resourceVersion":"\d+"/;

/** `count` objects; write(n) gives the n-th write's key and value (fresh resourceVersion). */
export async function k8sPool(count) {
  const { kubernetesShaped } = await k8sData();
  const entries = [];
  const gen = kubernetesShaped(Number.MAX_SAFE_INTEGER, { prefix: '/kubernetes.io', seed: 7 });
  while (entries.length < count) {
    const e = gen.next().value;
    const json = e.value[0] === 0x7b; // '{': JSON objects; the rest is opaque binary
    entries.push({ key: Buffer.from(e.key), value: json ? e.value.toString('utf8') : e.value, json });
  }
  let rv = 10_000_000;
  return {
    entries,
    /** Total bytes of the values once (for the initial fill). */
    bytes: entries.reduce((s, e) => s + (e.json ? Buffer.byteLength(e.value) : e.value.length), 0),
    write(n) {
      const e = entries[n % entries.length];
      if (!e.json) return { key: e.key, value: e.value };
      return { key: e.key, value: Buffer.from(e.value.replace(RV, `"resourceVersion":"${rv++}"`)) };
    },
  };
}
