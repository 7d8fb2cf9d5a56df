/**
 * Which node runs the restore drill of a schedule slot. Every master shares
 * the config (one ConfigMap), so without coordination all of them would
 * drill at once. Instead each derives the same answer from what the store
 * shows: the nodes that have committed backups, sorted, taking turns slot by
 * slot. A node that stops backing up drops out of the rotation by itself.
 */
export function drillNodeFor(nodes: readonly string[], slot: Date, intervalSeconds: number): string | undefined {
  const sorted = [...new Set(nodes)].sort();
  if (sorted.length === 0) return undefined;
  const index = Math.floor(slot.getTime() / 1000 / Math.max(1, intervalSeconds));
  return sorted[index % sorted.length];
}
