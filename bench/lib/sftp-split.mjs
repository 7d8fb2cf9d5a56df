#!/usr/bin/env node
// Splits an SFTP delivery of a bundle into its steps, in one process on the
// built code: connect (the first head), putFile on that fresh connection,
// putFile again on the same connection, the server's sha256 over exec.
//   node bench/lib/sftp-split.mjs '{"workDir": DIR, "store": {sftp store config}, "bundle": PATH}'
// bench/run.mjs's stand gives the store config (srv.stores.sftp).
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './util.mjs';

const args = JSON.parse(process.argv[2]);
await mkdir(args.workDir, { recursive: true });
const load = (p) => import(pathToFileURL(join(ROOT, 'dist', p)).href);
const { createStore } = await load('storage/index.js');
const { parseConfig } = await load('config/load.js');
const cfg = parseConfig({ cluster: 'p', node: 'n', workDir: args.workDir, source: { type: 'etcdctl', staticPodDir: args.workDir }, etcd: { endpoints: ['http://127.0.0.1:2379'] }, stores: [args.store] }, '<sftp-split>');
const store = await createStore(cfg.stores[0]);
const out = {};
let t = performance.now();
const lap = (k) => {
  const n = performance.now();
  out[k] = +((n - t) / 1000).toFixed(3);
  t = n;
};
await store.head('split/none');
lap('connect + first stat');
await store.putFile('split/a/b', args.bundle);
lap('putFile, fresh connection (mkdir, open, write, fsync, close, rename)');
await store.putFile('split/c/b', args.bundle);
lap('putFile again, same connection');
if (store.serverSha256) {
  await store.serverSha256('split/c/b').catch((e) => (out.serverSha256Error = e.message));
  lap("server's sha256 over exec");
}
await store.close?.();
console.log(JSON.stringify(out));
