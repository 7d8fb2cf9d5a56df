import type { Config } from '../config/load.js';
import type { KitMember } from './restore-text.js';

/**
 * The member list (names, peer URLs) from the first configured endpoint that
 * answers, for the kit at the daemon's start. With coordination most nodes
 * rarely win a slot, so the preflight of their own runs would leave their
 * kits without members for a long time. Best effort: undefined when etcd
 * does not answer (the kit then uses the last list a run saw, or says it is
 * not known). Loaded on demand: gRPC is for the commands that talk to etcd.
 */
export async function askMembers(cfg: Config): Promise<KitMember[] | undefined> {
  const { EtcdClients } = await import('../etcd/client.js');
  let clients: InstanceType<typeof EtcdClients>;
  try {
    clients = new EtcdClients(cfg.etcd, cfg.etcd.timeoutSeconds * 1000);
  } catch {
    return undefined; // unreadable TLS files: the config load and the next run say so
  }
  try {
    for (const url of cfg.etcd.endpoints) {
      try {
        const named = (await clients.endpoint(url).memberList()).filter((m) => m.name !== '' && m.peerURLs.length > 0);
        if (named.length > 0) return named.map((m) => ({ name: m.name, peerURLs: m.peerURLs }));
      } catch {
        /* the next endpoint */
      }
    }
    return undefined;
  } finally {
    clients.close();
  }
}
