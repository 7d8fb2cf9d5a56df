import { describe, expect, it } from 'vitest';
import { classifyScriptFailure } from '../../src/source/script-failure.js';
import { stallStep, type StallState } from '../../src/source/stall.js';

describe('classifyScriptFailure: the real cluster-backup.sh messages', () => {
  const cases: [string, number, string[], string, RegExp][] = [
    [
      'rollout',
      1,
      ['found nothing yet', 'Currently the kube-apiserver operator is progressing. A reliable backup requires that a rollout is not in progress.  Aborting!'],
      'source-rollout-in-progress',
      /kube-apiserver operator is rolling out[\s\S]*backup --force/,
    ],
    ['api down', 1, ['Could not find the status of the kube-apiserver. Check if the API server is running. Pass the --force flag to skip checks.'], 'source-apiserver-unavailable', /oc get co/],
    ['no kubeconfig', 1, ['Valid kubeconfig is not found in kube-apiserver-certs. Exiting!'], 'source-apiserver-unavailable', /localhost\.kubeconfig/],
    ['no manifest', 1, ['error finding manifests for the kube-scheduler pod. please check if it is running.'], 'source-failed', /kube-scheduler static pod manifest/],
    ['no deps', 1, ['required dependencies not found, please ensure this script is run on a node with a functional etcd static pod'], 'source-failed', /etcd\.env/],
    ['corrupt', 1, ['Backup integrity verification failed. Backup appears corrupted. Aborting!', 'snapshot failed with exit code 1'], 'snapshot-corrupt', /snapshot status/],
    ['etcdctl exit 5', 5, ['Error: context deadline exceeded'], 'source-failed', /exit 5[\s\S]*endpoint health/],
    ['anything else', 2, ['tar: something odd'], 'source-failed', /^read the script output/],
  ];
  it.each(cases)('%s', (_name, code, tail, reason, hint) => {
    const f = classifyScriptFailure(code, tail);
    expect(f.reason).toBe(reason);
    expect(f.hint).toMatch(hint);
  });

  it('the exit 5 hint is not given for a refusal', () => {
    expect(classifyScriptFailure(1, ['Could not find the status of the etcd. Check if the API server is running.']).hint).not.toMatch(/exit 5/);
  });
});

describe('stallStep: no growth of the snapshot .part for stallMs', () => {
  const S = (size: number, since: number): StallState => ({ size, since });
  const cases: [string, StallState | undefined, number | undefined, number, StallState | undefined, boolean][] = [
    ['no file yet: not armed', undefined, undefined, 10_000, undefined, false],
    ['first file: armed now', undefined, 0, 5_000, S(0, 5_000), false],
    ['grows: clock restarts', S(100, 0), 200, 9_000, S(200, 9_000), false],
    ['same size, under the limit', S(100, 0), 100, 9_999, S(100, 0), false],
    ['same size, at the limit', S(100, 0), 100, 10_000, S(100, 0), true],
    ['empty .part never grows', S(0, 0), 0, 60_000, S(0, 0), true],
    ['.part gone (renamed: the save is done) disarms', S(100, 0), undefined, 10_000, undefined, false],
    ['a new .part after that arms again', undefined, 0, 20_000, S(0, 20_000), false],
    ['shrinks: a change, clock restarts', S(100, 0), 50, 20_000, S(50, 20_000), false],
  ];
  it.each(cases)('%s', (_name, prev, size, now, next, stalled) => {
    expect(stallStep(prev, size, now, 10_000)).toEqual({ next, stalled });
  });
});
