import { defineConfig } from 'vitest/config';

// Integration tests mount real FUSE filesystems and watch every fork on the host;
// they run one file at a time so their receivers do not see each other's storms.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
