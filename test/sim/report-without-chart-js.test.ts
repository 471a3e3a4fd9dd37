import { describe, expect, it, vi } from 'vitest';
import { constantSeries } from '../../src/carbon/series.js';
import { runEvaluation, runSpec } from '../../src/sim/harness.js';
import { htmlReport } from '../../src/sim/report.js';

// As where freesh is installed without its optional peer dependency chart.js.
vi.mock('node:module', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:module')>();
  return {
    ...actual,
    createRequire(from: string | URL) {
      const require = actual.createRequire(from);
      const resolve = (id: string, options?: { paths?: string[] }) => {
        if (id === 'chart.js') throw Object.assign(new Error("Cannot find module 'chart.js'"), { code: 'MODULE_NOT_FOUND' });
        return require.resolve(id, options);
      };
      return Object.assign((id: string) => require(id) as unknown, require, { resolve: Object.assign(resolve, { paths: require.resolve.paths }) });
    },
  };
});

const requests = Array.from({ length: 40 }, (_, i) => ({ arrivalMs: i * 500, promptTokens: 400, outputTokens: 50 + i }));
const evaluation = runEvaluation({
  trace: { name: 'synthetic', requests, durationMs: requests.at(-1)!.arrivalMs },
  fleet: {
    model: 'm',
    sites: [{ id: 'clean', region: 'FR', gramsPerKWh: 50 }],
    backends: [{ id: 'c', site: 'clean', mode: '4xA100', maxConcurrency: 16 }],
  },
  carbon: new Map([['clean', constantSeries(50)]]),
  runs: [runSpec('baseline')],
  utilisation: 0.5,
});

describe('evaluation report without chart.js', () => {
  it('keeps the table and notes, says in the page why there are no charts, and tells stderr once', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const html = await htmlReport(await evaluation, ['a note']);
      await htmlReport(await evaluation);
      expect(html).toContain('<p>a note</p>');
      expect(html.match(/<tr>/g)).toHaveLength(2);
      expect(html).toMatch(/<p class="missing">No charts: chart\.js is not installed [^<]*npm install chart\.js/);
      expect(html).not.toContain('<canvas');
      expect(html).not.toContain('<script');
      expect(html.trimEnd().endsWith('</body></html>')).toBe(true);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(/^freesh: the HTML report has no charts: chart\.js is not installed/);
    } finally {
      warn.mockRestore();
    }
  });
});
