import { Readable } from 'node:stream';
import { it } from 'vitest';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SftpStore } from '../../src/storage/sftp.js';
import { startSshd, removeSshdDir } from '../support/sshd.js';
const ex = promisify(execFile);
it('bench', async () => {
  const sshd = await startSshd();
  console.log('accepted in log:', sshd.log().includes('Accepted publickey'));
  const size = 200 * 1024 * 1024;
  const chunk = Buffer.alloc(1 << 20, 5);
  const mk = () => Readable.from((function* () { for (let i = 0; i < 200; i++) yield chunk; })());
  for (const cipher of [undefined, 'aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes128-ctr']) {
    const store = new SftpStore({ name: 'b', type: 'sftp', host: sshd.host, port: sshd.port, username: sshd.username, privateKeyFile: sshd.privateKeyFile, hostKey: sshd.hostKeyFingerprint, path: join(sshd.root, 'b'), timeout: '10s', verify: 'size', incompleteGrace: '1h' });
    if (cipher) (store as any).cipherOverride = cipher;
    await store.head('x');
    const s = (store as any).session;
    console.log('negotiated', cipher, s.client._protocol?._kex?.negotiated?.cs?.cipher, 'log has Accepted:', sshd.log().includes('Accepted publickey'));
    let t = Date.now();
    await store.put('p/f', mk(), size);
    const up = (Date.now() - t) / 1000;
    t = Date.now();
    let n = 0; for await (const c of await store.get('p/f')) n += c.length;
    const down = (Date.now() - t) / 1000;
    console.log(cipher, 'up', (200 / up).toFixed(1), 'down', (200 / down).toFixed(1));
    await store.close();
  }
  // OpenSSH client baseline
  const f = join(sshd.dir, 'big'); await ex('dd', ['if=/dev/zero', `of=${f}`, 'bs=1M', 'count=200']);
  let t = Date.now();
  await ex('sftp', ['-q', '-i', sshd.privateKeyFile, '-o', `UserKnownHostsFile=${sshd.knownHostsFile}`, '-P', String(sshd.port), '-b', '-', `${sshd.username}@127.0.0.1`], {}).catch(e => console.log(e.message));
  const p = ex('sftp', ['-q', '-i', sshd.privateKeyFile, '-o', `UserKnownHostsFile=${sshd.knownHostsFile}`, '-P', String(sshd.port), '-b', '/dev/stdin', `${sshd.username}@127.0.0.1`]);
  p.child.stdin!.end(`put ${f} ${join(sshd.root, 'big2')}\nget ${join(sshd.root,'big2')} ${f}.back\n`);
  t = Date.now(); await p; console.log('openssh sftp put+get 400MiB', (400 / ((Date.now() - t) / 1000)).toFixed(1));
  await sshd.stop(); await removeSshdDir(sshd);
}, 300000);
