import { describe, expect, it } from 'vitest';
import { healthFrom } from '../../src/coord/probe.js';

describe('healthFrom (the probe acquireSlot asks)', () => {
  it('the local member is the leader when it names itself', () => {
    expect(healthFrom({ leader: '42', memberId: '42' }, undefined)).toEqual({ role: 'leader', quorum: true });
  });
  it('a follower names another member', () => {
    expect(healthFrom({ leader: '42', memberId: '7' }, undefined)).toEqual({ role: 'follower', quorum: true });
  });
  it('a local member without a leader is unhealthy; quorum is what the others say', () => {
    expect(healthFrom({ leader: '0', memberId: '7' }, '0')).toEqual({ role: 'unhealthy', quorum: false });
    expect(healthFrom({ leader: '0', memberId: '7' }, undefined)).toEqual({ role: 'unhealthy', quorum: false });
    expect(healthFrom({ leader: '0', memberId: '7' }, '42')).toEqual({ role: 'unhealthy', quorum: true });
  });
  it('a local member that does not answer is unhealthy; the cluster may still have quorum (the node waits, it does not back up alone)', () => {
    expect(healthFrom(undefined, '42')).toEqual({ role: 'unhealthy', quorum: true });
    expect(healthFrom(undefined, undefined)).toEqual({ role: 'unhealthy', quorum: false });
  });
});
