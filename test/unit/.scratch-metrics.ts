import { BackupMetrics } from '../../src/metrics/metrics.js';
const m = new BackupMetrics({ cluster: 'c', node: 'n' });
m.initStores(['s3', 'nfs']);
m.recordRun({ id: 'x', result: 'success', trigger: 'schedule', startedAt: new Date(Date.now()-5000).toISOString(), finishedAt: new Date().toISOString(), phases: { preflight: 0.2, source: 2 }, stores: { s3: { result: 'success', uploadSeconds: 1, verifySeconds: 0.5 } },
  preflight: { checks: [{ name: 'quorum', ok: true, detail: '' }, { name: 'members-reachable', ok: false, detail: 'unreachable: a, b' }], forced: false } });
m.setOutbox({ count: 1, bytes: 100, oldest: new Date() });
process.stdout.write(await m.render());
