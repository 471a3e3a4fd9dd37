import { defineConfig } from 'vitest/config';

/**
 * The tests mutation testing runs: those that exercise the core in this process. Left out: the CLI
 * and demo tests (they run the compiled build in child processes, which mutants of the sources never
 * reach), the predictor's (TF.js training, slow, and no core module under mutation), the report's
 * (a browser).
 */
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/cli/**', 'test/proxy/demo.test.ts', 'test/predict/**', 'test/sim/report*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
  },
});
