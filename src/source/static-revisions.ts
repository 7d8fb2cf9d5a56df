/**
 * Which static pod revisions cluster-backup.sh archived: it finds each
 * control-plane pod's current revision from its manifest and archives
 * `static-pod-resources/<pod>-pod-<N>/` for kube-apiserver,
 * kube-controller-manager, kube-scheduler and etcd (tar -C /etc/kubernetes).
 * The archive is the ground truth of what a restore gets, so the revisions
 * are read from its entry names, never from the script's output.
 */
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';

const REVISION_DIR_RE = /^(?:\.\/)?static-pod-resources\/([a-z0-9][a-z0-9-]{0,62}?)-pod-(\d{1,9})(?:\/|$)/;
/** An archive with more entries is not cluster-backup.sh's (it holds four pods' certificates and configs): stop reading. */
export const MAX_ENTRIES = 100_000;

/** `static-pod-resources/etcd-pod-3/secrets/...` -> {pod: 'etcd', revision: 3}; anything else: undefined. Pure. */
export function revisionOfEntry(name: string): { pod: string; revision: number } | undefined {
  const m = REVISION_DIR_RE.exec(name);
  return m ? { pod: m[1]!, revision: Number(m[2]) } : undefined;
}

/**
 * Pod name -> revision from the entry names. A pod found with two
 * revisions is left out: which one the restore uses is not for us to guess.
 */
export function revisionsOf(names: Iterable<string>): Record<string, number> {
  const seen = new Map<string, Set<number>>();
  for (const n of names) {
    const r = revisionOfEntry(n);
    if (!r) continue;
    const s = seen.get(r.pod) ?? new Set<number>();
    s.add(r.revision);
    seen.set(r.pod, s);
  }
  const out: Record<string, number> = {};
  for (const [pod, revs] of [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) if (revs.size === 1) out[pod] = [...revs][0]!;
  return out;
}

/** Reads the entry names of the static_kuberesources tar.gz (bodies skipped, memory flat) and gives the revisions archived. */
export async function archivedRevisions(path: string, signal?: AbortSignal): Promise<Record<string, number>> {
  const names: string[] = [];
  const extract = tar.extract();
  extract.on('entry', (header, body, next) => {
    if (names.length >= MAX_ENTRIES) {
      extract.destroy(new Error(`more than ${MAX_ENTRIES} entries`));
      return;
    }
    names.push(header.name);
    body.on('end', next);
    body.resume();
  });
  await pipeline(createReadStream(path), createGunzip(), extract, { signal });
  return revisionsOf(names);
}
