/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DashboardState } from '../../src/dashboard/state.js';
import { type RunningProxy, startProxy } from '../../src/proxy/standalone.js';
import { DEMO_MODEL, type DemoFleet, startDemoFleet } from '../../src/sim/demo-fleet.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../helpers/browser.js';
import { post } from '../helpers/servers.js';

/** Where the screenshot is kept (ignored by git); FREESH_UPDATE_SCREENSHOT=1 also copies it to docs/ for the README. */
const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-artifacts');

interface ChartData {
  readonly labels: unknown[];
  readonly datasets: { label?: string; data: (number | null)[] }[];
  readonly ink: number;
}

declare global {
  interface Window {
    freeshDashboard: { state: DashboardState; updates: number };
  }
}

const body = (extra: Record<string, unknown>) => JSON.stringify({ model: DEMO_MODEL, messages: [{ role: 'user', content: 'Write a haiku about the sea' }], ...extra });

async function traffic(url: string, n: number, offset = 0): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, async (_, k) => {
      const i = k + offset;
      const res = await post(`${url}/v1/chat/completions`, body({ max_tokens: 8 + (i % 5) * 12, stream: i % 4 !== 0 }), {
        'x-freesh-tenant': ['team-a', 'team-b', 'team-c'][i % 3]!,
        'x-freesh-slo': ['interactive', 'standard', 'batch'][i % 3]!,
      });
      expect(res.status).toBe(200);
    }),
  );
}

describe.skipIf(!CHROMIUM)('the dashboard in a real browser (Debian Chromium)', () => {
  let fleet: DemoFleet;
  let proxy: RunningProxy;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];
  const offProxy: string[] = [];

  beforeAll(async () => {
    fleet = await startDemoFleet({ port: 0, timeScale: 0.01 });
    // The demo's config, polled and sampled faster so the test sees updates sooner.
    proxy = await startProxy({ ...fleet.config, dashboard: { enabled: true, refreshMs: 300, carbonSampleMs: 500 } });
    await traffic(proxy.url, 24);
    browser = await chromium.launch({ executablePath: CHROMIUM!, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    // Nothing may leave the proxy: any other request is recorded and refused.
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(proxy.url)) return route.continue();
      offProxy.push(url);
      return route.abort();
    });
    await page.goto(`${proxy.url}/dashboard`);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await proxy?.shutdown(1_000);
    await fleet?.close();
  });

  const json = async (): Promise<DashboardState> => (await (await fetch(`${proxy.url}/dashboard/api/state`)).json()) as DashboardState;
  const charts = (): Promise<Record<string, ChartData>> =>
    page.evaluate(() => {
      const out: Record<string, ChartData> = {};
      for (const canvas of document.querySelectorAll('canvas')) {
        const chart = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: ChartData } | undefined } }).Chart.getChart(canvas);
        const ctx = canvas.getContext('2d')!;
        const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let ink = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i]! > 0) ink++;
        out[canvas.id] = { labels: chart ? [...chart.data.labels] : [], datasets: chart ? chart.data.datasets.map((d) => ({ label: d.label, data: [...d.data] })) : [], ink };
      }
      return out;
    });

  it('draws every chart from the live JSON state, the numbers matching the endpoint', async () => {
    const truth = await json();
    // Wait for a poll after the traffic ended, so the page and the endpoint see the same totals.
    await page.waitForFunction((served) => window.freeshDashboard.state.fleet.served === served, truth.fleet.served, { timeout: 10_000 });
    const shown = await page.evaluate(() => window.freeshDashboard.state);
    expect(truth.fleet.served).toBe(24);
    expect(shown.fleet).toEqual(truth.fleet);
    expect(shown.slo).toEqual(truth.slo);
    expect(shown.tenants).toEqual(truth.tenants);

    const c = await charts();
    expect(Object.keys(c).sort()).toEqual(['chart-carbon', 'chart-latency', 'chart-load', 'chart-share', 'chart-slo', 'chart-tenants']);
    for (const id of ['chart-carbon', 'chart-share', 'chart-latency', 'chart-slo', 'chart-tenants']) expect(c[id]!.ink, id).toBeGreaterThan(1_000);
    expect(c['chart-share']!.labels).toEqual(truth.sites.map((s) => s.id));
    expect(c['chart-share']!.datasets[0]!.data).toEqual(truth.sites.map((s) => s.recentShare! * 100));
    expect(c['chart-carbon']!.datasets.map((d) => d.data.at(-1))).toEqual(truth.sites.map((s) => s.gramsPerKWh));
    expect(c['chart-carbon']!.datasets.map((d) => d.data.at(-1))).toEqual([261, 395, 49]);
    expect(c['chart-load']!.labels).toEqual(truth.backends.map((b) => b.id));
    expect(c['chart-load']!.datasets[0]!.data).toEqual(shown.backends.map((b) => b.inFlight));
    expect(c['chart-latency']!.datasets[0]!.data).toEqual(shown.backends.map((b) => b.ttftMs?.p50 ?? null));
    expect(c['chart-latency']!.datasets[1]!.data).toEqual(shown.backends.map((b) => b.tbtMs?.p50 ?? null));
    // Streamed completions were measured somewhere (the demo places them at its cleanest site).
    expect(c['chart-latency']!.datasets[0]!.data.some((v) => v !== null && v > 0)).toBe(true);
    expect(c['chart-slo']!.labels).toEqual(truth.slo.map((s) => s.class));
    expect(c['chart-slo']!.datasets[0]!.data).toEqual(truth.slo.map((s) => (s.attainment === null ? null : s.attainment * 100)));
    expect(c['chart-tenants']!.labels).toEqual(truth.tenants.tenants.map((t) => t.tenant));
    expect(c['chart-tenants']!.datasets[0]!.data).toEqual(truth.tenants.tenants.map((t) => t.outputTokens));

    expect(await page.textContent('#fleet-served')).toBe('24');
    expect(await page.textContent('#fleet-energy')).toBe((truth.fleet.energyJ / 1000).toFixed(2));
    expect(await page.textContent('#fleet-carbon')).toBe(truth.fleet.carbonG.toFixed(3));
    expect(await page.locator('#backends tbody tr').count()).toBe(7);
    expect(await page.locator('#sites tbody tr').count()).toBe(3);
    expect(await page.textContent('#plan')).toMatch(/^(optimal|degraded|initial), made \d+ s ago/);
  });

  it('shows a real decision in the inspector: every candidate, each scorer, the pick', async () => {
    const truth = await json();
    await page.waitForFunction((id) => window.freeshDashboard.state.decisions[0]?.requestId === id, truth.decisions[0]!.requestId, { timeout: 10_000 });
    const d = truth.decisions[0]!;
    expect(await page.locator('#decisions li').count()).toBe(truth.decisions.length);
    expect(await page.textContent('#decision-pick')).toContain(`Picked ${d.picked} at ${d.site} by freesh`);
    expect(await page.textContent('#decision-pick')).toContain(`least-loaded would have picked ${d.baseline!.backend}`);
    const rows = page.locator('#decision-candidates tbody tr');
    expect(await rows.count()).toBe(7);
    expect(await page.textContent(`#decision-candidates tr[data-backend="${d.picked}"]`)).toContain('✔');
    const scorers = Object.keys(d.candidates.find((c) => c.backend === d.picked)!.scores!);
    const header = await page.locator('#decision-candidates thead th').allTextContents();
    expect(header).toEqual(['backend', 'dropped by', ...scorers, 'score']);
    const cells = await page.locator(`#decision-candidates tr[data-backend="${d.picked}"] td`).allTextContents();
    expect(cells.at(-1)).toBe(d.candidates.find((c) => c.backend === d.picked)!.score!.toFixed(3));
    // Another decision, chosen by the operator.
    const other = truth.decisions[3]!;
    await page.click(`#decisions li[data-request="${other.requestId}"]`);
    expect(await page.textContent('#decision')).toContain(`Request ${other.requestId} `);
    expect(await page.textContent('#decision')).not.toContain('haiku');
  });

  it('without chart.js, says the charts are off and still shows the live figures', async () => {
    const bare = await browser.newPage();
    const pageErrors: string[] = [];
    bare.on('pageerror', (err) => pageErrors.push(err.message));
    await bare.route('**/*', (route) => (route.request().url().endsWith('/dashboard/chart.js') || !route.request().url().startsWith(proxy.url) ? route.abort() : route.continue()));
    try {
      await bare.goto(`${proxy.url}/dashboard`);
      await bare.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
      expect(await bare.textContent('#no-charts')).toMatch(/^Charts are off: chart\.js could not be loaded/);
      expect(await bare.textContent('#fleet-served')).toBe(String((await json()).fleet.served));
      expect(await bare.locator('#backends tbody tr').count()).toBe(7);
      expect(await bare.locator('#decision-candidates tbody tr').count()).toBe(7);
      expect(pageErrors).toEqual([]);
    } finally {
      await bare.close();
    }
  });

  it('follows new traffic live, and keeps a screenshot', async () => {
    await traffic(proxy.url, 6, 24);
    await page.waitForFunction(() => document.getElementById('fleet-served')!.textContent === '30', undefined, { timeout: 10_000 });
    await page.click('#decisions li:first-child');
    await mkdir(ARTIFACTS, { recursive: true });
    const file = join(ARTIFACTS, 'dashboard.png');
    const docs = Boolean(process.env.FREESH_UPDATE_SCREENSHOT);
    // For the README's picture, a burst past the clean site's capacity, caught while it runs.
    const burst = docs ? traffic(proxy.url, 240, 30) : Promise.resolve();
    if (docs) await page.waitForFunction(() => window.freeshDashboard.state.backends.some((b) => b.queued > 0 || b.inFlight > 20), undefined, { timeout: 10_000 });
    await page.screenshot({ path: file, fullPage: true });
    await burst;
    if (docs) await copyFile(file, join(import.meta.dirname, '..', '..', 'docs', 'dashboard.png'));
    expect(errors).toEqual([]);
    expect(offProxy).toEqual([]);
  });
});
