/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { constantSeries } from '../../src/carbon/series.js';
import type { FleetSpec } from '../../src/sim/fleet.js';
import { runEvaluation, runSpec } from '../../src/sim/harness.js';
import { headline, htmlReport, markdownTable } from '../../src/sim/report.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../helpers/browser.js';

const fleet: FleetSpec = {
  model: 'm',
  sites: [
    { id: 'clean', region: 'FR', gramsPerKWh: 50 },
    { id: 'dirty', region: 'DE', gramsPerKWh: 500 },
  ],
  backends: [
    { id: 'c', site: 'clean', mode: '4xA100', maxConcurrency: 16 },
    { id: 'd', site: 'dirty', mode: '4xH100', maxConcurrency: 16 },
  ],
};
const requests = Array.from({ length: 300 }, (_, i) => ({ arrivalMs: i * 400, promptTokens: 300 + (i % 7) * 100, outputTokens: 20 + ((i * 31) % 200) }));
const evaluation = runEvaluation({
  trace: { name: 'synthetic', requests, durationMs: requests.at(-1)!.arrivalMs },
  fleet,
  carbon: new Map([['clean', constantSeries(50)], ['dirty', constantSeries(500)]]),
  runs: ['baseline', 'least-loaded'].map((n) => runSpec(n)),
  utilisation: 0.5,
});

describe('evaluation report', () => {
  it('scales the trace to the requested utilisation and reports every run against the baseline', async () => {
    const e = await evaluation;
    expect(e.offeredRps / e.capacityRps).toBeCloseTo(0.5, 6);
    const table = markdownTable(e);
    expect(table.split('\n')).toHaveLength(4);
    expect(table).toMatch(/^\| least-loaded \| [\d.]+ \([+-][\d.]+%\)/m);
    const line = headline(e);
    expect(Object.keys(line.policies)).toEqual(['baseline', 'least-loaded']);
    for (const p of Object.values(line.policies)) {
      expect(p.completed + p.rejected).toBe(300);
      expect(p.sloAttainment).toBeGreaterThanOrEqual(0);
      expect(p.sloAttainment).toBeLessThanOrEqual(1);
    }
  });

  it('inlines Chart.js (a development dependency here) and draws its charts with no note of their absence', async () => {
    const html = await htmlReport(await evaluation);
    expect(html).toContain('Chart.js v4');
    expect(html.match(/<canvas id=/g)).toHaveLength(4);
    expect(html).not.toContain('class="missing"');
  });

  it.skipIf(!CHROMIUM)('opens in a browser with no network and draws every chart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-report-'));
    const file = join(dir, 'report.html');
    await writeFile(file, await htmlReport(await evaluation, ['note']));
    const browser = await chromium.launch({ executablePath: CHROMIUM!, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(err.message));
      await page.route('**/*', (route) => (route.request().url().startsWith('file:') ? route.continue() : route.abort()));
      await page.goto(`file://${file}`);
      await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 });
      // 4 fleet-wide charts and one per site; each has drawn pixels.
      const drawn = await page.evaluate(() =>
        [...document.querySelectorAll('canvas')].map((c) => {
          const ctx = c.getContext('2d')!;
          const pixels = ctx.getImageData(0, 0, c.width, c.height).data;
          let ink = 0;
          for (let i = 3; i < pixels.length; i += 4) if (pixels[i]! > 0) ink++;
          return ink;
        }),
      );
      expect(drawn).toHaveLength(6);
      for (const ink of drawn) expect(ink).toBeGreaterThan(1_000);
      expect(errors).toEqual([]);
      expect(await page.locator('table tr').count()).toBe(3);
    } finally {
      await browser.close();
    }
  });
});
