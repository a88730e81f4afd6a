import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    globalSetup: ['tests/integration/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration files share one embedded PostgreSQL; each file uses its own database.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
