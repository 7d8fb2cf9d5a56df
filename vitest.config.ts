import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Integration tests start real etcd/sshd/S3 servers; two cores do not
    // take many of them at once.
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ['default'],
  },
});
