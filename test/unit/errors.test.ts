import { describe, expect, it } from 'vitest';
import { BackupError, reasonOf } from '../../src/errors.js';

describe('reasonOf', () => {
  it('returns the stable reason of a BackupError and internal otherwise', () => {
    expect(reasonOf(new BackupError('source-timeout', 'x'))).toBe('source-timeout');
    expect(reasonOf(new Error('x'))).toBe('internal');
  });
});
